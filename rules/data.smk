rule simulate:
    output:
        csv="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
    log:
        "logs/data/{dataset}.log",
    wildcard_constraints:
        dataset=_alternation(SIMULATED),
    priority: 4  # the data before the compile: data the priors cannot use fail in seconds
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    script:
        "../scripts/simulate.py"


rule ingest:
    input:
        data_file,
    output:
        csv="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
    log:
        "logs/data/{dataset}.log",
    wildcard_constraints:
        dataset=_alternation(USER_FILES),
    priority: 4
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
        checksum=data_checksum,
    script:
        "../scripts/ingest.py"
