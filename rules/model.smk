rule compile:
    input:
        stan="stan/gmm.stan",
    output:
        exe="results/model/gmm",
        versions="results/model/cmdstan.json",
    log:
        "logs/model/compile.log",
    params:
        options=config["compile"],
    conda:
        "../environment.yml"
    script:
        "../scripts/compile.py"
