"""Snakemake adapter: draw the data figure of one dataset (the same for every K)."""

from gmmpipe.plots import make_figure
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
make_figure(
    "data",
    snakemake.output[0],
    data=snakemake.input.data,
    truth=snakemake.input.truth,
    settings=snakemake.params.settings,
)
