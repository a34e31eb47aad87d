"""Snakemake adapter: compare one dataset's fits over K by LOO and suggest a K."""

import tempfile

from gmmpipe.compare import run_compare
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
params = snakemake.params.compare
with tempfile.TemporaryDirectory(prefix="gmmpipe-refits-") as workdir:
    run_compare(
        data=snakemake.input.data,
        dataset_json=snakemake.input.dataset,
        posteriors=dict(zip(params["ks"], snakemake.input.posteriors, strict=True)),
        diagnostics=dict(zip(params["ks"], snakemake.input.diagnostics, strict=True)),
        settings=params["settings"],
        outputs=dict(snakemake.output.items()),
        dataset=snakemake.wildcards.dataset,
        method=params["method"],
        refit_args={
            "exe_file": snakemake.input.exe,
            "dataset_spec": params["dataset_spec"],
            "method_spec": params["method_spec"],
            "seed": params["seed"],
            "workdir": workdir,
        },
        dpi=snakemake.params.dpi,
    )
