"""Snakemake adapter: compile the Stan program once and record the CmdStan/stanc versions."""

from gmmpipe.cmdstan import cmdstan_versions, compile_model
from gmmpipe.io import write_json
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
options = snakemake.params.options
compile_model(
    snakemake.input.stan,
    snakemake.output.exe,
    stan_threads=options["stan_threads"],
    cpp_flags=options["cpp_flags"],
)
write_json(snakemake.output.versions, {**cmdstan_versions(), "options": options})
