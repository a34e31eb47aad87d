"""Summaries: one table per fit (ArviZ), and per-dataset comparisons across methods."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

HDI_PROB = 0.94
SUMMARY_COLUMNS = [
    "mean",
    "sd",
    "hdi_3%",
    "hdi_97%",
    "mcse_mean",
    "mcse_sd",
    "ess_bulk",
    "ess_tail",
    "r_hat",
]


def summarize_fit(idata: az.InferenceData, algorithm: str) -> pd.DataFrame:
    """One row per parameter: mean, sd, HDI, MCSE, ESS bulk/tail and R-hat (NaN where undefined)."""
    n_draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    if algorithm == "nuts":
        table = az.summary(idata, hdi_prob=HDI_PROB)
    elif n_draws > 1:
        table = az.summary(idata, kind="stats", hdi_prob=HDI_PROB)
    else:
        flat = {name: np.ravel(var.values) for name, var in idata.posterior.data_vars.items()}
        index = [
            n for name, var in idata.posterior.data_vars.items() for n in _flat_names(name, var)
        ]
        table = pd.DataFrame({"mean": np.concatenate(list(flat.values()))}, index=index)
    table.index.name = "parameter"
    return table.reindex(columns=SUMMARY_COLUMNS)


def _flat_names(name: str, var) -> list[str]:  # type: ignore[no-untyped-def]
    """ArviZ-style names ``mu[1, x1]`` of a variable's elements."""
    dims = [d for d in var.dims if d not in ("chain", "draw")]
    if not dims:
        return [name]
    grids = np.meshgrid(*[var.coords[d].values for d in dims], indexing="ij")
    return [f"{name}[{', '.join(str(g) for g in idx)}]" for idx in zip(*(g.ravel() for g in grids), strict=False)]
