"""The diagnostics gate: R-hat, ESS, divergences, tree depth and E-BFMI for NUTS; Pareto k-hat
and convergence for ADVI, Pathfinder and Laplace; convergence for optimization."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from gmmpipe.draws import Draws
from gmmpipe.vi import advi_converged, pareto_khat

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def _check(name: str, value: float, threshold: float, passed: bool) -> dict[str, Any]:
    return {
        "name": name,
        "value": float(value),
        "threshold": float(threshold),
        "passed": bool(passed),
    }


def nuts_checks(draws: Draws, thresholds: Mapping[str, Any], max_treedepth: int) -> list[dict]:
    """R-hat, bulk/tail ESS of every parameter, divergences, tree-depth hits and E-BFMI."""
    posterior = _free_parameters(draws)
    rhat = max(float(np.nanmax(az.rhat(v).to_array())) for v in _datasets(posterior))
    ess_bulk = min(
        float(np.nanmin(az.ess(v, method="bulk").to_array())) for v in _datasets(posterior)
    )
    ess_tail = min(
        float(np.nanmin(az.ess(v, method="tail").to_array())) for v in _datasets(posterior)
    )
    divergences = int(draws.stats["diverging"].sum())
    treedepth_frac = float((draws.stats["tree_depth"] >= max_treedepth).mean())
    ebfmi = float(np.min(az.bfmi(draws.stats["energy"])))
    return [
        _check("r_hat_max", rhat, thresholds["rhat_max"], rhat <= thresholds["rhat_max"]),
        _check(
            "ess_bulk_min",
            ess_bulk,
            thresholds["ess_bulk_min"],
            ess_bulk >= thresholds["ess_bulk_min"],
        ),
        _check(
            "ess_tail_min",
            ess_tail,
            thresholds["ess_tail_min"],
            ess_tail >= thresholds["ess_tail_min"],
        ),
        _check(
            "divergences",
            divergences,
            thresholds["max_divergences"],
            divergences <= thresholds["max_divergences"],
        ),
        _check(
            "max_treedepth_frac",
            treedepth_frac,
            thresholds["max_treedepth_frac"],
            treedepth_frac <= thresholds["max_treedepth_frac"],
        ),
        _check("ebfmi_min", ebfmi, thresholds["ebfmi_min"], ebfmi >= thresholds["ebfmi_min"]),
    ]


def _free_parameters(draws: Draws) -> dict[str, np.ndarray]:
    """The parameters to check: Omega's constant diagonal and upper triangle left out."""
    posterior = draws.components()
    if posterior["theta"].shape[-1] == 1:  # K = 1: the weight is the constant 1
        del posterior["theta"]
    if "Omega" in posterior:
        lower = np.tril_indices(posterior["Omega"].shape[-1], k=-1)
        posterior["Omega"] = posterior["Omega"][..., lower[0], lower[1]]
        if posterior["Omega"].shape[-1] == 0:
            del posterior["Omega"]
    return posterior


def _datasets(posterior: Mapping[str, np.ndarray]) -> list[Any]:
    """One xarray Dataset per variable, with (chain, draw) leading dims."""
    return [az.convert_to_dataset({name: value}) for name, value in posterior.items()]


def khat_check(log_ratios: np.ndarray, thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """PSIS k-hat of an approximation's importance ratios against the k-hat threshold."""
    khat = pareto_khat(log_ratios)
    return _check("pareto_khat", khat, thresholds["khat_max"], khat <= thresholds["khat_max"])


def check(
    algorithm: str,
    draws: Draws,
    console: str,
    thresholds: Mapping[str, Any],
    method_spec: Mapping[str, Any],
) -> dict[str, Any]:
    """Run the checks that apply to `algorithm`; returns ``{"passed", "checks", "failures"}``."""
    if algorithm == "nuts":
        checks = nuts_checks(draws, thresholds, method_spec["max_treedepth"])
    elif algorithm == "advi":
        converged = advi_converged(console)
        checks = [
            _check("converged", converged, 1, converged),
            khat_check((draws.stats["log_p"] - draws.stats["log_g"]).ravel(), thresholds),
        ]
    elif algorithm == "laplace":  # draws from the normal approximation at the mode
        checks = [khat_check((draws.stats["log_p"] - draws.stats["log_q"]).ravel(), thresholds)]
    elif algorithm == "pathfinder":
        checks = [khat_check((draws.stats["lp"] - draws.stats["lp_approx"]).ravel(), thresholds)]
    else:
        converged = (  # CmdStan says "terminated normally" also when it hit the iteration limit
            "Optimization terminated normally" in console
            and "Maximum number of iterations hit" not in console
        )
        checks = [_check("converged", converged, 1, converged)]
    failures = [
        f"{c['name']} = {c['value']:.4g} (threshold {c['threshold']:.4g})"
        for c in checks
        if not c["passed"]
    ]
    return {"algorithm": algorithm, "passed": not failures, "checks": checks, "failures": failures}
