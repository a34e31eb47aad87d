"""Snakemake adapter: one batch of SBC replications of one method (their ranks)."""

from gmmpipe.io import write_csv
from gmmpipe.sbc import run_sbc
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
table = run_sbc(
    snakemake.input.exe,
    snakemake.params.sbc,
    {snakemake.wildcards.method: snakemake.params.method},
    snakemake.params.replications,
)
write_csv(snakemake.output.ranks, table)
