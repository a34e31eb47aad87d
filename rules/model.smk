rule compile:
    input:
        stan="stan/gmm.stan",
        header="stan/user_header.hpp",
    output:
        exe="results/model/gmm",
        versions="results/model/cmdstan.json",
    log:
        "logs/model/compile.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        options=config["compile"],
    script:
        "../scripts/compile.py"
