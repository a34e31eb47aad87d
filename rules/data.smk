rule simulate:
    output:
        csv="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
    log:
        "logs/data/{dataset}.log",
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    wildcard_constraints:
        dataset=_alternation(SIMULATED),
    conda:
        "../environment.yml"
    script:
        "../scripts/simulate.py"


rule ingest:
    input:
        lambda wildcards: config["datasets"][wildcards.dataset]["file"]["path"],
    output:
        csv="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
    log:
        "logs/data/{dataset}.log",
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    wildcard_constraints:
        dataset=_alternation(USER_FILES),
    conda:
        "../environment.yml"
    script:
        "../scripts/ingest.py"
