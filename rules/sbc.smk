# Simulation-based calibration, on demand (not part of `rule all`):
#   snakemake --cores all sbc
# builds results/sbc/summary.md (one verdict per method) and, per method in `sbc.methods`,
# the ranks, the chi-square uniformity test of every test quantity and the rank histograms.
# The replications run as jobs of `sbc.batch_size` replications each (rule sbc_batch); on a
# cluster, the `sbc` job group packs several batches into one submission (group-components
# in profiles/slurm). The model is compiled once, by rule compile, before any batch runs.

from gmmpipe.sbc_plan import (
    REPLICATION_KEYS,
    batch_count,
    batch_replications,
    check_sbc_config,
)

# The cross-key checks of `sbc:` fail only a run that asks for the SBC (rule sbc's input
# raises the error), not the default target.
try:
    SBC_METHODS = check_sbc_config(config)
except ConfigError:
    SBC_METHODS = {}


rule sbc_batch:
    input:
        exe="results/model/gmm",
    output:
        ranks="results/sbc/{method}/batches/{batch}.csv",
    log:
        "logs/sbc/{method}/batch_{batch}.log",
    benchmark:
        "results/benchmarks/sbc/{method}/batch_{batch}.tsv"
    wildcard_constraints:
        method=_alternation(SBC_METHODS),
        batch=r"\d+",
    group:
        "sbc"
    conda:
        "../envs/cmdstan.yaml"
    threads: lambda wildcards: method_threads(SBC_METHODS[wildcards.method])
    resources:
        mem_mb=1000,
        # minutes: generous for NUTS at about 5 s per replication, more on each retry
        runtime=lambda wildcards, attempt: attempt * (10 + config["sbc"]["batch_size"]),
    params:
        # Only what decides a replication's result: growing `replications` keeps the
        # batches already done.
        sbc={key: config["sbc"][key] for key in REPLICATION_KEYS},
        method=lambda wildcards: SBC_METHODS[wildcards.method],
        replications=lambda wildcards: list(
            batch_replications(config["sbc"], int(wildcards.batch))
        ),
    script:
        "../scripts/sbc_batch.py"


rule sbc_method:
    input:
        batches=lambda wildcards: expand(
            "results/sbc/{method}/batches/{batch}.csv",
            method=wildcards.method,
            batch=range(batch_count(config["sbc"])),
        ),
    output:
        ranks="results/sbc/{method}/ranks.csv",
        tests="results/sbc/{method}/uniformity.csv",
        figure=report(
            "results/sbc/{method}/rank_histograms.png",
            caption="../report/sbc.rst",
            category="calibration",
            labels={"method": "{method}", "figure": "SBC rank histograms"},
        ),
    log:
        "logs/sbc/{method}.log",
    wildcard_constraints:
        method=_alternation(SBC_METHODS),
    localrule: True
    conda:
        "../envs/tables.yaml"
    params:
        sbc=config["sbc"],
    script:
        "../scripts/sbc.py"


rule sbc:
    input:
        tests=lambda wildcards: [
            f"results/sbc/{method}/uniformity.csv"
            for method in check_sbc_config(config)
        ],
    output:
        csv="results/sbc/summary.csv",
        markdown="results/sbc/summary.md",
    log:
        "logs/sbc/summary.log",
    localrule: True
    conda:
        "../envs/tables.yaml"
    script:
        "../scripts/sbc_summary.py"
