"""Snakemake adapter: SBC of one method from its batches (ranks, tests, histograms)."""

import pandas as pd

from gmmpipe.io import write_csv
from gmmpipe.plots import save_figure
from gmmpipe.sbc import plot_rank_histograms, summarize
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
sbc, method = snakemake.params.sbc, snakemake.wildcards.method
table = pd.concat([pd.read_csv(path) for path in snakemake.input.batches], ignore_index=True)
write_csv(snakemake.output.ranks, table)
write_csv(snakemake.output.tests, summarize(table, sbc["draws"], sbc["bins"]))
save_figure(plot_rank_histograms(table, method, sbc["draws"], sbc["bins"]), snakemake.output.figure)
