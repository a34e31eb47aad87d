"""Snakemake adapter: SBC of one method from its batches (ranks, tests, histograms)."""

import pandas as pd

from gmmpipe.io import atomic_path
from gmmpipe.sbc import plot_rank_histograms, save_figure, summarize
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
sbc, method = snakemake.params.sbc, snakemake.wildcards.method
table = pd.concat([pd.read_csv(path) for path in snakemake.input.batches], ignore_index=True)
for path, frame in [
    (snakemake.output.ranks, table),
    (snakemake.output.tests, summarize(table, sbc["draws"], sbc["bins"])),
]:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
fig = plot_rank_histograms(table, method, sbc["draws"], sbc["bins"])
save_figure(fig, snakemake.output.figure)
