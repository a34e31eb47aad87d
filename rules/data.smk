rule simulate:
    output:
        csv="results/data/{dataset}.csv",
        truth="results/data/{dataset}.json",
    log:
        "logs/data/{dataset}.log",
    wildcard_constraints:
        dataset=_alternation(SIMULATED),
    conda:
        "../environment.yml"
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    script:
        "../scripts/simulate.py"


def data_file(wildcards):
    """The user's data file of a dataset (validated: it exists, `~` expanded)."""
    return config["datasets"][wildcards.dataset]["file"]["path"]


def data_checksum(wildcards):
    """The data file's SHA-256: a changed file is ingested again even if its mtime is old."""
    from gmmpipe.io import file_checksum

    return file_checksum(data_file(wildcards))


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
    conda:
        "../environment.yml"
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
        checksum=data_checksum,
    script:
        "../scripts/ingest.py"
