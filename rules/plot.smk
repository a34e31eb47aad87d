# Figures per dataset (results/figures/{dataset}/K{K}/<name>.png): the seed notebook's seven plots and
# ArviZ trace/rank plots per NUTS fit. One job per dataset and K draws all of them (one Python start-up;
# data and fits read once). Which figures a dataset gets depends on its methods; which fits each
# figure shows, its report category and label are set in rules/common.smk (FIGURE_NEEDS,
# FIGURE_METHODS, FIGURE_REPORT); report/figures.rst captions each kind.


rule figures:
    input:
        data="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
        posteriors=fit_files("posterior.nc"),
        fits=fit_files("fit.json"),
        diagnostics=fit_files("diagnostics.json"),
        elbo=fit_files("elbo.csv", "advi"),
    output:
        figures=report(
            directory(FIGURES),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category=figure_category,
            subcategory="{dataset}",
            labels=figure_labels,
        ),
    log:
        "logs/figures/{dataset}/K{K}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}.tsv"
    priority: 1  # the longest job after the fits: before membership and tables
    conda:
        "../envs/plots.yaml"
    params:
        figures=figure_methods,
        methods=fit_methods(),
        settings=config["plots"],
    script:
        "../scripts/plot.py"
