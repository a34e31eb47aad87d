"""Snakemake adapter: fit one dataset with one method through CmdStan."""

from gmmpipe.data import load_dataset
from gmmpipe.fit import fit_dataset
from gmmpipe.inits import inits_from
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
spec = snakemake.params.dataset
fit_dataset(
    snakemake.input.exe,
    load_dataset(snakemake.input.data, snakemake.input.dataset, k=spec["model"]["K"]),
    dataset_spec=spec,
    method_spec=snakemake.params.method,
    seed=snakemake.params.seed,
    thresholds=snakemake.params.diagnostics,
    inits=inits_from(snakemake.input.get("init")),
    outputs=dict(snakemake.output.items()),
)
