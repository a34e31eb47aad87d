# Per-dataset tables: every parameter x method (truth, MAP, NUTS, ADVI, Pathfinder), with
# ESS/R-hat, k-hat, wall times and each method's error relative to NUTS; and every check.


rule summarize:
    input:
        truth="results/data/{dataset}.json",
        posteriors=fit_files("posterior.nc"),
        fits=fit_files("fit.json"),
        diagnostics=fit_files("diagnostics.json"),
    output:
        csv=report(
            f"{TABLES}_comparison.csv",
            caption="../report/tables/comparison.rst",
            category="comparison",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "K": "{K}",
                "table": "methods compared (CSV)",
            },
        ),
        markdown=report(
            f"{TABLES}_comparison.md",
            caption="../report/tables/comparison.rst",
            category="comparison",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "K": "{K}",
                "table": "methods compared (Markdown)",
            },
        ),
        html=report(
            f"{TABLES}_comparison.html",
            caption="../report/tables/comparison.rst",
            category="comparison",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "K": "{K}", "table": "methods compared"},
        ),
        diagnostics_csv=report(
            f"{TABLES}_diagnostics.csv",
            caption="../report/tables/diagnostics.rst",
            category="diagnostics",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "K": "{K}",
                "table": "diagnostics checks (CSV)",
            },
        ),
        diagnostics_html=report(
            f"{TABLES}_diagnostics.html",
            caption="../report/tables/diagnostics.rst",
            category="diagnostics",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "K": "{K}", "table": "diagnostics checks"},
        ),
    log:
        "logs/tables/{dataset}/K{K}.log",
    benchmark:
        "results/benchmarks/tables/{dataset}/K{K}.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        methods=fit_methods(),
    script:
        "../scripts/summarize.py"
