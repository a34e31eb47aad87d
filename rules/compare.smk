# How many components, and which point belongs where. Per dataset with more than one K, one
# job compares the fits of every K of `model.K` (of the compared method, `compare.method`) by
# PSIS-LOO of the marginal log-likelihood, with exact refits / K-fold CV as fallbacks,
# subsampling LOO for large N, and ArviZ stacking weights; it suggests a K with its evidence
# (with a single K it runs only when its files are asked for). Per fit, one job writes every
# point's membership probabilities.


rule compare:
    input:
        exe="results/model/gmm",
        data="results/data/{dataset}.csv",
        dataset="results/data/{dataset}.json",
        posteriors=compared_fits("posterior.nc"),
        diagnostics=compared_fits("diagnostics.json"),
    output:
        table=f"{COMPARE}/loo.csv",
        khat=f"{COMPARE}/khat.csv",
        suggestion=f"{COMPARE}/suggestion.json",
        html=report(
            f"{COMPARE}/loo.html",
            caption="../report/tables/loo.rst",
            category="choosing K",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "K": "all", "table": "K compared by LOO"},
        ),
        figure=report(
            f"{COMPARE}/loo.png",
            caption="../report/figures/loo.rst",
            category="choosing K",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "K": "all",
                "table": "elpd, weights, k-hat by K",
            },
        ),
    log:
        "logs/compare/{dataset}.log",
    benchmark:
        "results/benchmarks/compare/{dataset}.tsv"
    conda:
        "../envs/cmdstan.yaml"
    threads: lambda wildcards: method_threads(config["methods"][COMPARE_METHOD])
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        compare=compare_params,
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/compare.py"


rule membership:
    input:
        data="results/data/{dataset}.csv",
        dataset="results/data/{dataset}.json",
        posterior=f"{FIT_DIR}/posterior.nc",
    output:
        table=f"{FIT_DIR}/membership.csv",
        summary=f"{FIT_DIR}/membership.json",
    log:
        "logs/membership/{dataset}/K{K}/{method}.log",
    conda:
        "../envs/tables.yaml"
    params:
        draws=config["compare"]["membership_draws"],
    script:
        "../scripts/membership.py"
