"""Snakemake adapter: draw every figure of one dataset (params.figures: name -> kind, methods)."""

from gmmpipe.plots import make_figures
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
make_figures(
    snakemake.params.figures,
    snakemake.output.figures,
    data=snakemake.input.data,
    truth=snakemake.input.truth,
    posteriors=dict(zip(snakemake.params.methods, snakemake.input.posteriors, strict=True)),
    settings=snakemake.params.settings,
)
