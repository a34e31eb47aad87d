"""Snakemake adapter: the provenance record (versions, hashes, commit, config, wall times)."""

from gmmpipe.provenance import write_provenance
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
write_provenance(
    json_path=snakemake.output.json,
    html_path=snakemake.output.html,
    overview_path=snakemake.output.diagnostics,
    cmdstan=snakemake.input.cmdstan,
    stan=snakemake.input.stan,
    fits=dict(zip(snakemake.params.fits, snakemake.input.fits, strict=True)),
    diagnostics=dict(zip(snakemake.params.fits, snakemake.input.diagnostics, strict=True)),
    benchmarks=snakemake.input.benchmarks,
    config=snakemake.config,
    git=snakemake.params.git,
)
