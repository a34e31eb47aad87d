"""Snakemake adapter: simulation-based calibration of one method (ranks, tests, histograms)."""

from gmmpipe.io import atomic_path
from gmmpipe.sbc import plot_rank_histograms, run_sbc, save_figure, summarize
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
sbc, method = snakemake.params.sbc, snakemake.wildcards.method
table = run_sbc(snakemake.input.exe, sbc, {method: snakemake.params.method})
for path, frame in [
    (snakemake.output.ranks, table),
    (snakemake.output.tests, summarize(table, sbc["draws"], sbc["bins"])),
]:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
fig = plot_rank_histograms(table, method, sbc["draws"], sbc["bins"])
save_figure(fig, snakemake.output.figure)
