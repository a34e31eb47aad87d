# Figures per dataset (results/figures/{dataset}/): the seed notebook's seven plots and ArviZ
# trace/rank plots per NUTS fit. One script draws them all (gmmpipe.plots); which figures a
# dataset gets depends on its methods (FIGURE_NEEDS in rules/common.smk).


rule plot_data:
    input:
        data="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
        posteriors=[],
    output:
        png=figure("data", "data", "data and true means"),
    log:
        "logs/figures/{dataset}/K{K}/data.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/data.tsv"
    conda:
        "../environment.yml"
    params:
        figure="data",
        methods=[],
        settings=config["plots"],
    script:
        "../scripts/plot.py"


use rule plot_data as plot_nuts_mu with:
    input:
        data="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
        posteriors=fit_files("posterior.nc", "nuts"),
        fits=fit_files("fit.json", "nuts"),
    output:
        png=figure("nuts_mu", "NUTS", "NUTS draws of the means"),
    log:
        "logs/figures/{dataset}/K{K}/nuts_mu.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/nuts_mu.tsv"
    params:
        figure="nuts_mu",
        methods=fit_methods("nuts"),
        settings=config["plots"],


use rule plot_data as plot_density with:
    input:
        data="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
        posteriors=fit_files("posterior.nc", "nuts"),
        fits=fit_files("fit.json", "nuts"),
    output:
        png=figure("density", "NUTS", "fitted mixture density"),
    log:
        "logs/figures/{dataset}/K{K}/density.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/density.tsv"
    params:
        figure="density",
        methods=fit_methods("nuts"),
        settings=config["plots"],


use rule plot_data as plot_weights with:
    input:
        data="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
        posteriors=fit_files("posterior.nc"),
        fits=fit_files("fit.json"),
    output:
        png=figure("weights", "comparison", "mixture weights"),
    log:
        "logs/figures/{dataset}/K{K}/weights.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/weights.tsv"
    params:
        figure="weights",
        methods=fit_methods(),
        settings=config["plots"],


use rule plot_weights as plot_posterior_means with:
    output:
        png=figure("posterior_means", "comparison", "posterior means over the data"),
    log:
        "logs/figures/{dataset}/K{K}/posterior_means.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/posterior_means.tsv"
    params:
        figure="posterior_means",
        methods=fit_methods(),
        settings=config["plots"],


use rule plot_weights as plot_marginals with:
    output:
        png=figure("marginals", "comparison", "NUTS vs VI marginals"),
    log:
        "logs/figures/{dataset}/K{K}/marginals.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/marginals.tsv"
    params:
        figure="marginals",
        methods=fit_methods(),
        settings=config["plots"],


use rule plot_weights as plot_vi_contours with:
    output:
        png=figure("vi_contours", "ADVI", "VI posterior contours of the means"),
    log:
        "logs/figures/{dataset}/K{K}/vi_contours.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/vi_contours.tsv"
    params:
        figure="vi_contours",
        methods=fit_methods(),
        settings=config["plots"],


use rule plot_data as plot_elbo with:
    input:
        data="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
        posteriors=fit_files("posterior.nc", "advi"),
        elbo=fit_files("elbo.csv", "advi"),
    output:
        png=figure("elbo", "ADVI", "ELBO traces"),
    log:
        "logs/figures/{dataset}/K{K}/elbo.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/elbo.tsv"
    params:
        figure="elbo",
        methods=fit_methods("advi"),
        settings=config["plots"],


use rule plot_data as plot_trace with:
    input:
        data="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
        posteriors=[f"{FIT_DIR}/posterior.nc"],
    output:
        png=figure("trace_{method}", "diagnostics", "NUTS trace ({method})", "trace"),
    log:
        "logs/figures/{dataset}/K{K}/trace_{method}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/trace_{method}.tsv"
    wildcard_constraints:
        method=methods_of("nuts"),
    params:
        figure="trace",
        methods=lambda wildcards: [wildcards.method],
        settings=config["plots"],


use rule plot_trace as plot_rank with:
    output:
        png=figure("rank_{method}", "diagnostics", "NUTS rank plots ({method})", "rank"),
    log:
        "logs/figures/{dataset}/K{K}/rank_{method}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/K{K}/rank_{method}.tsv"
    params:
        figure="rank",
        methods=lambda wildcards: [wildcards.method],
        settings=config["plots"],
