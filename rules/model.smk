from gmmpipe.cmdstan import cmdstan_identity, compile_options

try:
    COMPILE_OPTIONS = compile_options(config)
except ConfigError as err:
    raise WorkflowError(str(err))


# The executable depends on the program, its header, the compile options and the CmdStan that
# builds it (version, path, make/local): a change of any reruns the compile (params are a rerun
# trigger), and `--cache` (SNAKEMAKE_OUTPUT_CACHE) reuses an executable built from the same.
rule compile:
    input:
        stan="stan/gmm.stan",
        header="stan/user_header.hpp",
    output:
        exe="results/model/gmm",
        versions="results/model/cmdstan.json",
    log:
        "logs/model/compile.log",
    cache: True
    conda:
        "../envs/cmdstan.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        options=COMPILE_OPTIONS,
        cmdstan=cmdstan_identity(),
    script:
        "../scripts/compile.py"
