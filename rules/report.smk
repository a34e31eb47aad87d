# Provenance of the run for the HTML report (`snakemake --report results/report.html`, run
# after the workflow): versions, Stan program hash, git commit, config, per-job wall times and
# an overview of every diagnostics check. Runs last: it needs every fit, table and figure.


rule provenance:
    input:
        cmdstan="results/model/cmdstan.json",
        stan="stan/gmm.stan",
        header="stan/user_header.hpp",
        fits=all_fit_files("fit.json"),
        diagnostics=all_fit_files("diagnostics.json"),
        benchmarks=[f"results/benchmarks/{d}/K{k}/{m}.tsv" for d, k, m in FITS]
        + plot_benchmarks(),
    output:
        json=PROVENANCE["json"],
        html=report(
            PROVENANCE["html"],
            caption="../report/provenance.rst",
            category="provenance",
            labels={"record": "versions, hashes, commit, config, wall times"},
        ),
        diagnostics=report(
            PROVENANCE["diagnostics"],
            caption="../report/tables/diagnostics_overview.rst",
            category="diagnostics",
            subcategory="all datasets",
            labels={"dataset": "all", "table": "every check of every fit"},
        ),
    log:
        "logs/provenance.log",
    conda:
        "../envs/tables.yaml"
    params:
        fits=[f"{d}/K{k}/{m}" for d, k, m in FITS],
        git=git_state,
    script:
        "../scripts/provenance.py"
