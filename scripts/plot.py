"""Snakemake adapter: draw one figure (named by params.figure) of one dataset."""

from gmmpipe.plots import make_figure
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
make_figure(
    snakemake.params.figure,
    snakemake.output.png,
    data=snakemake.input.data,
    truth=snakemake.input.truth,
    posteriors=dict(zip(snakemake.params.methods, snakemake.input.posteriors, strict=True)),
    settings=snakemake.params.settings,
)
