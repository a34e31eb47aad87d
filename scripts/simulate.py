"""Snakemake adapter: simulate one dataset from its config entry."""

from gmmpipe.config import check_priors
from gmmpipe.data import simulate, write_dataset
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
spec = snakemake.params.spec
dataset = simulate(spec["simulate"])
check_priors(snakemake.wildcards.dataset, spec, dataset.y, dataset.names)
write_dataset(dataset, snakemake.output.csv, snakemake.output.truth)
