"""Snakemake adapter: per-point membership probabilities of one fit."""

from gmmpipe.membership import write_membership
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
write_membership(
    data=snakemake.input.data,
    dataset_json=snakemake.input.dataset,
    posterior=snakemake.input.posterior,
    table=snakemake.output.table,
    summary=snakemake.output.summary,
    max_draws=snakemake.params.draws,
)
