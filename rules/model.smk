from snakemake.settings.types import DeploymentMethod

from gmmpipe.cmdstan import cmdstan_identity, compile_options

try:
    COMPILE_OPTIONS = compile_options(config)
except ConfigError as err:
    raise WorkflowError(str(err))

# The CmdStan the compile uses: the one found here (CMDSTAN or ~/.cmdstan), or under
# `--sdm conda` the one envs/cmdstan.yaml pins (Snakemake hashes that file's content itself).
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    CMDSTAN = {"conda": "envs/cmdstan.yaml"}
else:
    CMDSTAN = cmdstan_identity()


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
        cmdstan=CMDSTAN,
    script:
        "../scripts/compile.py"
