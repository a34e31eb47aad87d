# Simulation-based calibration, on demand (not part of `rule all`):
#   snakemake --cores all sbc
# builds results/sbc/summary.md (one verdict per method) and, per method in `sbc.methods`,
# the ranks, the chi-square uniformity test of every parameter and the rank histograms.

from gmmpipe.sbc import check_sbc_config

# A bad `sbc:` section fails only a run that asks for the SBC (rule sbc's input raises the
# error), not the default target.
try:
    SBC_METHODS = check_sbc_config(config)
except ConfigError:
    SBC_METHODS = {}


rule sbc_method:
    input:
        exe="results/model/gmm",
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
    benchmark:
        "results/benchmarks/sbc/{method}.tsv"
    wildcard_constraints:
        method=_alternation(SBC_METHODS),
    conda:
        "../envs/sbc.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        sbc=config["sbc"],
        method=lambda wildcards: SBC_METHODS[wildcards.method],
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
    conda:
        "../envs/sbc.yaml"
    script:
        "../scripts/sbc_summary.py"
