# Figures: the data once per dataset (results/figures/{dataset}/data.png, the seed notebook's
# figure 1) and, per dataset and K (results/figures/{dataset}/K{K}/<name>.png), the notebook's
# other six plots and ArviZ trace/rank plots per NUTS fit. One job per dataset and K draws all of
# those (one Python start-up; data and fits read once). Which figures a dataset gets depends on its
# methods; which fits each figure shows, its report category and label are set in
# rules/common.smk (FIGURE_NEEDS, FIGURE_METHODS, FIGURE_REPORT); report/figures.rst captions each
# kind, report/figures/data.rst the data.


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


rule data_figure:
    input:
        data="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
    output:
        report(
            DATA_FIGURE,
            caption="../report/figures/data.rst",
            category="data",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "K": "all",
                "figure": "data and true means",
            },
        ),
    log:
        "logs/figures/{dataset}/data.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/data.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        settings=config["plots"],
    script:
        "../scripts/data_figure.py"
