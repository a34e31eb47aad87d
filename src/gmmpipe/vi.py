"""Variational inference output: the ELBO trace in CmdStan's console output, PSIS k-hat, and
Pathfinder's importance resampling."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from gmmpipe.draws import Draws

_HEADER = re.compile(r"^\s*iter\s+ELBO\s+delta_ELBO_mean\s+delta_ELBO_med\s+notes\s*$")
_ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*?)\s*$")
_MAX_ITER = "The maximum number of iterations is reached"
ELBO_COLUMNS = ["iteration", "elbo", "delta_elbo_mean", "delta_elbo_med", "notes"]


def parse_elbo(console: str) -> pd.DataFrame:
    """The ELBO trace of CmdStan ADVI's console output.

    Returns a frame with columns iteration, elbo, delta_elbo_mean, delta_elbo_med (relative
    changes) and notes (e.g. ``MEAN ELBO CONVERGED``), one row per ELBO evaluation.
    """
    rows = []
    in_table = False
    for line in console.splitlines():
        if _HEADER.match(line):
            in_table = True
            continue
        if not in_table:
            continue
        match = _ROW.match(line)
        if match is None:
            if rows:
                break
            continue
        it, elbo, dmean, dmed, notes = match.groups()
        rows.append((int(it), float(elbo), float(dmean), float(dmed), notes))
    return pd.DataFrame(rows, columns=ELBO_COLUMNS)


def advi_converged(console: str) -> bool:
    """True when CmdStan ADVI stopped on its relative tolerance, not at the iteration limit."""
    elbo = parse_elbo(console)
    converged_note = elbo["notes"].str.contains("CONVERGED").any() if len(elbo) else False
    return bool(converged_note) and _MAX_ITER not in console


def pareto_khat(log_ratios: np.ndarray) -> float:
    """PSIS Pareto k-hat of importance ratios p/q given as log p - log q (Vehtari et al.)."""
    import arviz as az

    log_ratios = np.asarray(log_ratios, dtype=float)
    finite = log_ratios[np.isfinite(log_ratios)]
    if finite.size < log_ratios.size or finite.size < 10:
        return float("inf")
    _, khat = az.psislw(finite - finite.max())
    return float(khat)


def importance_resample(draws: Draws, n: int, rng: np.random.Generator) -> Draws:
    """`n` draws, with replacement, from Pathfinder's draws from its normal approximations
    (CmdStan's ``psis_resample = false`` output), weighted by their PSIS-smoothed importance
    ratios exp(lp - lp_approx), as CmdStan's own resampling does (Zhang et al. 2022).

    The ratios of all the approximations' draws go to ``extra["log_ratios"]``: their k-hat
    judges the approximation. That of the resampled draws does not (it repeats draws).
    """
    import arviz as az

    log_ratios = (draws.stats["lp"] - draws.stats["lp_approx"]).ravel()
    finite = np.isfinite(log_ratios)
    weights = finite.astype(float)  # too few finite ratios to smooth: the finite ones alike
    if finite.sum() >= 10:
        smoothed, _ = az.psislw(log_ratios[finite] - log_ratios[finite].max())
        weights[finite] = np.exp(smoothed - smoothed.max())
    if not weights.any():
        weights[:] = 1.0
    index = rng.choice(log_ratios.size, size=n, p=weights / weights.sum())

    def take(values: np.ndarray) -> np.ndarray:
        return values.reshape(-1, *values.shape[2:])[index][None]

    components = {name: take(value) for name, value in draws.components().items()}
    return Draws(
        mu=components["mu"],
        theta=components["theta"],
        stats={name: take(value) for name, value in draws.stats.items()},
        extra={**draws.extra, "log_ratios": log_ratios},
        sigma=components.get("sigma"),
        omega=components.get("Omega"),
    )
