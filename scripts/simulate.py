"""Snakemake adapter: simulate one dataset from its config entry."""

from gmmpipe.data import simulate, write_dataset
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
write_dataset(
    simulate(snakemake.params.spec["simulate"]), snakemake.output.csv, snakemake.output.truth
)
