"""Where the workflow writes a fit, and the names it gives or reads: names, folders and file
suffixes only (stdlib, no numerical imports).

The Snakemake controller imports this module at parse time; with ``--sdm conda`` it runs with
nothing but Snakemake installed.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The outputs of one fit by name: what :func:`gmmpipe.fit.fit_dataset` writes (``elbo`` for
#: ADVI only).
FIT_FILES = {
    "posterior": "posterior.nc",
    "summary": "summary.csv",
    "diagnostics": "diagnostics.json",
    "fit": "fit.json",
    "elbo": "elbo.csv",
    "cmdstan": "cmdstan",
}


#: Names of membership.csv's own columns, which no column of a user's file may have.
MEMBERSHIP_NAMES = re.compile(r"^(point|label|entropy|p\d+(_q05|_q95)?)$")

#: Suffixes (any case) of the Parquet files read and written; every other file is CSV.
PARQUET_SUFFIXES = (".parquet", ".pq")

#: Where the workflow writes one fit (dataset, component count K, method).
FIT_DIR = "results/fits/{dataset}/K{K}/{method}"


def fit_dir(dataset: str, k: int | str, method: str) -> str:
    """The folder of one fit of the workflow, relative to its working directory."""
    return FIT_DIR.format(dataset=dataset, K=k, method=method)


def fit_paths(folder: str | Path) -> dict[str, Path]:
    """The output paths of a fit written into `folder`, as :func:`gmmpipe.fit.fit_dataset`
    takes them."""
    return {name: Path(folder) / file for name, file in FIT_FILES.items()}


def is_number(text: str) -> bool:
    """Whether a CSV header cell reads as a number: a header row of numbers is data."""
    try:
        float(text)
    except ValueError:
        return False
    return True
