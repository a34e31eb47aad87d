"""The diagnostics gate: R-hat, ESS, divergences, tree depth, E-BFMI, chains in different modes
and the posterior predictive check for NUTS; Pareto k-hat for ADVI, Pathfinder and Laplace, and
ADVI's convergence; convergence for optimization; degenerate components for every method."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from gmmpipe.draws import Draws, chains_or_halves
from gmmpipe.vi import advi_converged, pareto_khat

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def _check(
    name: str, value: float, threshold: float, passed: bool, detail: str = ""
) -> dict[str, Any]:
    out = {
        "name": name,
        "value": float(value),
        "threshold": float(threshold),
        "passed": bool(passed),
    }
    return {**out, "detail": detail} if detail else out


def mode_check(draws: Draws, threshold: float) -> dict[str, Any] | None:
    """Chains in different modes, after relabelling: each chain's mean of lp__ and of every
    mean and weight against the median of the other chains' means, in within-chain posterior
    sds. The value is the largest shift; the detail names every chain beyond `threshold`.
    None for a single chain."""
    chains = draws.mu.shape[0]
    if chains < 2:
        return None
    k, d = draws.mu.shape[-2:]
    quantities = {"lp__": draws.stats["lp"]} if "lp" in draws.stats else {}
    for c in range(k):
        quantities[f"theta[{c + 1}]"] = draws.theta[:, :, c]
        for j in range(d):
            quantities[f"mu[{c + 1}, {j + 1}]"] = draws.mu[:, :, c, j]
    worst = np.zeros(chains)
    worst_name = [""] * chains
    worst_text = [""] * chains
    for name, values in quantities.items():
        means = values.mean(axis=1)
        within = float(np.sqrt(values.var(axis=1, ddof=1).mean()))
        if within == 0:  # constant in every chain (theta when K = 1)
            continue
        for c in range(chains):
            others = float(np.median(np.delete(means, c)))
            shift = abs(means[c] - others) / within
            if np.isnan(shift):  # non-finite draws: not a chain in one mode with the others
                shift = np.inf
            if shift > worst[c]:
                worst[c], worst_name[c] = shift, name
                worst_text[c] = f"{name} mean {means[c]:.4g} vs {others:.4g} in the others"
    bad = [c for c in range(chains) if worst[c] > threshold]
    detail = "; ".join(f"chain {c + 1}: {worst_text[c]} ({worst[c]:.3g} posterior sd)" for c in bad)
    return _check("chain_modes", worst.max(), threshold, not bad, detail)


def component_checks(draws: Draws, y: np.ndarray, thresholds: Mapping[str, Any]) -> list[dict]:
    """Degenerate components: the fewest expected points N theta_k of any component, and the
    largest distance of a component's mean from its nearest observation (in the data's sds per
    column, Euclidean), both at the posterior mean."""
    n = len(y)
    theta = draws.theta.reshape(-1, draws.theta.shape[-1]).mean(axis=0)
    mu = draws.mu.reshape(-1, *draws.mu.shape[-2:]).mean(axis=0)
    points = n * theta
    sd = y.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = y / sd
    nearest = np.array([np.sqrt(((z - m / sd) ** 2).sum(axis=1).min()) for m in mu])
    few, far = thresholds["component_points_min"], thresholds["mean_distance_max"]
    light = [  # `not >=`: a NaN (non-finite draws) fails too
        f"component {c + 1}: weight {theta[c]:.3g} ({points[c]:.3g} of {n} points)"
        for c in np.flatnonzero(~(points >= few))
    ]
    distant = [
        f"component {c + 1}: mean {np.array2string(mu[c], precision=4, separator=', ')} is "
        f"{nearest[c]:.3g} data sd from the nearest observation"
        for c in np.flatnonzero(~(nearest <= far))
    ]
    return [
        _check("component_points_min", points.min(), few, not light, "; ".join(light)),
        _check("mean_distance_max", nearest.max(), far, not distant, "; ".join(distant)),
    ]


def ppc_check(ppc: Mapping[str, Any], thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """The posterior predictive check (:mod:`gmmpipe.ppc`): the largest per-coordinate excess of
    the data's distance from the model's marginal over replicated data's, in their sds."""
    z, p = np.asarray(ppc["ks_z"], dtype=float), np.asarray(ppc["ks_p"], dtype=float)
    limit = thresholds["ppc_z_max"]
    detail = "; ".join(
        f"coordinate {j + 1}: the data are {z[j]:.3g} sd farther from the model's marginal than "
        f"replicated data (p = {p[j]:.3g} over {ppc['draws']} draws)"
        for j in np.flatnonzero(~(z <= limit))  # a NaN (non-finite draws) fails too
    )
    return _check("ppc_z_max", z.max(), limit, not detail, detail)


#: Defaults of the thresholds added with the mode, component and predictive checks (as in
#: config/schema.yaml), for callers that pass older threshold mappings.
THRESHOLDS = {
    "mode_shift_max": 1.0,
    "component_points_min": 5.0,
    "mean_distance_max": 1.0,
    "ppc_z_max": 5.0,
}


def nuts_checks(draws: Draws, thresholds: Mapping[str, Any], max_treedepth: int) -> list[dict]:
    """R-hat, bulk/tail ESS of every parameter, divergences, tree-depth hits and E-BFMI.

    R-hat needs two chains: a single chain's is that of its two halves (rank-normalized split
    R-hat, as for several chains, so it still flags a chain that drifts)."""
    posterior = _free_parameters(draws)
    halves = {name: chains_or_halves(value) for name, value in posterior.items()}
    rhat, rhat_at = _extreme(halves, az.rhat, np.argmax)
    ess_bulk, bulk_at = _extreme(posterior, lambda v: az.ess(v, method="bulk"), np.argmin)
    ess_tail, tail_at = _extreme(posterior, lambda v: az.ess(v, method="tail"), np.argmin)
    divergences = int(draws.stats["diverging"].sum())
    treedepth_frac = float((draws.stats["tree_depth"] >= max_treedepth).mean())
    ebfmi = float(np.min(az.bfmi(draws.stats["energy"])))
    return [
        _named_check(
            "r_hat_max", rhat, thresholds["rhat_max"], rhat <= thresholds["rhat_max"], rhat_at
        ),
        _named_check(
            "ess_bulk_min",
            ess_bulk,
            thresholds["ess_bulk_min"],
            ess_bulk >= thresholds["ess_bulk_min"],
            bulk_at,
        ),
        _named_check(
            "ess_tail_min",
            ess_tail,
            thresholds["ess_tail_min"],
            ess_tail >= thresholds["ess_tail_min"],
            tail_at,
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


def _named_check(name: str, value: float, threshold: float, passed: bool, at: str) -> dict:
    """A check over every parameter element; a failed one names the element it is worst at."""
    return _check(name, value, threshold, passed, "" if passed or not at else f"at {at}")


def _extreme(posterior: Mapping[str, np.ndarray], statistic: Any, arg: Any) -> tuple[float, str]:
    """The largest (`arg` np.argmax) or smallest (np.argmin) value of an ArviZ `statistic`
    (rhat, ess) over every parameter element, and the element's name, e.g. ``sigma[3, 2]``
    (components and coordinates from 1). NaN, and the first such element, where the statistic
    is undefined: draws that never move or are not finite, which no threshold passes."""
    values, names = [], []
    for name, value in posterior.items():
        result = np.asarray(statistic(az.convert_to_dataset({name: value}))[name])
        if name == "Omega":  # (K, L): the L = D (D - 1) / 2 elements below the diagonal
            d = round((1 + np.sqrt(1 + 8 * result.shape[-1])) / 2)
            below = list(zip(*np.tril_indices(d, k=-1), strict=True))
        for index in np.ndindex(result.shape):
            values.append(float(result[index]))
            if name == "Omega":
                index = (index[0], *below[index[1]])
            names.append(f"{name}[{', '.join(str(i + 1) for i in index)}]" if index else name)
    undefined = np.flatnonzero(np.isnan(values))
    if undefined.size or not values:
        return float("nan"), names[undefined[0]] if undefined.size else ""
    at = int(arg(values))
    return values[at], names[at]


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
    y: np.ndarray | None = None,
    ppc: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the checks that apply to `algorithm`; returns ``{"passed", "checks", "failures"}``.

    With the data `y` the degenerate-component checks run too, and with a posterior predictive
    result `ppc` (:func:`gmmpipe.ppc.posterior_predictive`) its check.
    """
    thresholds = {**THRESHOLDS, **thresholds}
    if algorithm == "nuts":
        checks = nuts_checks(draws, thresholds, method_spec["max_treedepth"])
        modes = mode_check(draws, thresholds["mode_shift_max"])
        checks += [modes] if modes else []
    elif algorithm == "advi":
        converged = advi_converged(console)
        checks = [
            _check("converged", converged, 1, converged),
            khat_check((draws.stats["log_p"] - draws.stats["log_g"]).ravel(), thresholds),
        ]
    elif algorithm == "laplace":  # draws from the normal approximation at the mode
        checks = [khat_check((draws.stats["log_p"] - draws.stats["log_q"]).ravel(), thresholds)]
    elif algorithm == "pathfinder":  # the ratios before importance resampling, when resampled
        log_ratios = draws.extra.get("log_ratios", draws.stats["lp"] - draws.stats["lp_approx"])
        checks = [khat_check(np.ravel(log_ratios), thresholds)]
    else:
        converged = (  # CmdStan says "terminated normally" also when it hit the iteration limit
            "Optimization terminated normally" in console
            and "Maximum number of iterations hit" not in console
        )
        checks = [_check("converged", converged, 1, converged)]
    if y is not None:
        checks += component_checks(draws, np.asarray(y, dtype=float), thresholds)
    if ppc is not None:
        checks.append(ppc_check(ppc, thresholds))
    failures = [
        f"{c['name']} = {c['value']:.4g} (threshold {c['threshold']:.4g})"
        + (f": {c['detail']}" if c.get("detail") else "")
        for c in checks
        if not c["passed"]
    ]
    return {"algorithm": algorithm, "passed": not failures, "checks": checks, "failures": failures}
