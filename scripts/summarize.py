"""Snakemake adapter: one dataset's comparison table (CSV, Markdown, HTML) and diagnostics."""

from gmmpipe.io import read_json
from gmmpipe.summarize import load_fits, write_comparison
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
fits = load_fits(dict(zip(snakemake.params.methods, snakemake.input.posteriors, strict=True)))
write_comparison(
    fits,
    read_json(snakemake.input.truth),
    dataset=snakemake.wildcards.dataset,
    **dict(snakemake.output.items()),
)
