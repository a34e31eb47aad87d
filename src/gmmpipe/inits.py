"""Robust starts: multi-start optimization from k-means++ points, and per-chain inits near the best
optimum.

Strategy (recorded in every fit that uses it as ``starts.strategy``):

1. ``n_starts`` points are drawn on the data: k-means++ seeding on the standardized columns,
   refined by a few Lloyd iterations (on at most 2 000 rows), each cluster giving a mean, a
   weight and per-coordinate scales.
2. CmdStan's L-BFGS optimizer runs from each point (the posterior mode on the weights' log-odds
   scale, as the ``optimize`` method). The optima are matched to the best one's labelling and
   merged when their means agree to 5% of the data's sd; each distinct optimum is recorded with
   its log density and how many starts reached it.
3. The ``optimize`` method reports the best optimum; NUTS chain c starts at the best optimum
   jittered by about one posterior sd (mu by sigma_k / sqrt(N theta_k), the weights' log-odds by
   1 / sqrt(N theta_k), log sigma by 1 / sqrt(2 N theta_k)), so that chains start distinct but in
   the mode's typical set, not from CmdStan's uniform(-2, 2) on the unconstrained scale.

Pathfinder starts far from the mode, as CmdStan's random inits do (an L-BFGS path started at an
optimum stops at once), but with the component sds on the data's scale (:func:`path_starts`).

Every random choice derives from the fit's seed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gmmpipe.data import working_scale
from gmmpipe.draws import SIG_FIGS, read_draws
from gmmpipe.relabel import match_to_reference

logger = logging.getLogger(__name__)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

STRATEGY = (
    "CmdStan L-BFGS from k-means++ points on the standardized data; distinct optima kept; chains "
    "start at the best optimum jittered by about one posterior sd"
)
PATH_STRATEGY = (
    "CmdStan's random inits, uniform(-2, 2) on the unconstrained scale (the means' is the data's), "
    "except sigma[k, j] = s_j exp(uniform(-2, 2)) on each column's sd s_j; one draw per path"
)
_KMEANS_ROWS = 2000
_LLOYD_ITERATIONS = 5
_SAME_OPTIMUM = 0.05  # means within this many data sds: the same optimum


def inits_from(posterior: str | Path | None) -> dict[str, Any] | None:
    """Initial values at the posterior mean of an earlier fit (e.g. the MAP); None: none."""
    if posterior is None:
        return None
    idata = az.from_netcdf(posterior)
    mean = idata.posterior.mean(("chain", "draw"))
    theta = np.clip(mean["theta"].values, 1e-8, None)
    point = {"mu": mean["mu"].values.tolist(), "theta": (theta / theta.sum()).tolist()}
    for name in ("sigma", "Omega"):  # diagonal and full covariance
        if name in mean:
            point[name] = mean[name].values.tolist()
    return point


def stan_inits(
    point: Mapping[str, Any], model_spec: Mapping[str, Any], y: np.ndarray
) -> dict[str, Any]:
    """Initial values in stan/gmm.stan's parameter names from a point with ``mu``, ``theta``
    and optionally ``sigma`` and ``Omega`` (components sorted by mu[, 1] when ordered, which
    the program samples on the :func:`~gmmpipe.data.working_scale` of the data `y`; for a tied
    covariance, pooled over the components)."""
    mu, theta = np.asarray(point["mu"], dtype=float), np.asarray(point["theta"], dtype=float)
    theta = np.clip(theta, 1e-8, None) / np.clip(theta, 1e-8, None).sum()  # CSV rounding
    extra = {n: np.asarray(point[n], dtype=float) for n in ("sigma", "Omega") if n in point}
    ordered = bool(model_spec.get("ordered", False))
    if ordered:
        order = np.argsort(mu[:, 0], kind="stable")
        mu, theta = mu[order], theta[order]
        extra = {n: v[order] for n, v in extra.items()}
    log_theta = np.log(theta)
    inits: dict[str, Any] = {
        "phi": log_theta[1:] - log_theta[0],
        "mu_free": mu[:, 1:] if ordered else mu,
    }
    covariance = model_spec.get("covariance", "identity")
    if ordered:
        mean, unit = working_scale(y, covariance)
        inits["mu_first_z"] = (mu[:, 0] - mean[0]) / unit[0]
    if covariance == "tied":  # the weighted mean of the components' covariances
        extra = {n: _pooled(v, theta, n == "sigma") for n, v in extra.items()}
    if covariance != "identity" and "sigma" in extra:
        inits["sigma"] = extra["sigma"]
    if covariance in ("full", "tied") and "Omega" in extra:
        inits["L_Omega"] = np.linalg.cholesky(extra["Omega"])
    return {n: v.tolist() for n, v in inits.items() if v.size}


def _pooled(value: np.ndarray, theta: np.ndarray, scale: bool) -> np.ndarray:
    """One row (1, ...) from per-component rows: theta-weighted mean of the variances (scales)
    or of the correlation matrices (a correlation matrix again)."""
    if scale:
        return np.sqrt(np.tensordot(theta, value**2, axes=1))[None]
    return np.tensordot(theta, value, axes=1)[None]


def kmeanspp_point(y: np.ndarray, k: int, rng: np.random.Generator) -> dict[str, Any]:
    """A start on the data: k-means++ seeding and a few Lloyd iterations on standardized
    columns; each cluster gives a mean, a weight and per-coordinate scales."""
    n, d = y.shape
    rows = y[rng.choice(n, size=_KMEANS_ROWS, replace=False)] if n > _KMEANS_ROWS else y
    scale = rows.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (rows - rows.mean(axis=0)) / scale
    centers = [z[rng.integers(len(z))]]
    for _ in range(1, k):
        dist = np.min(((z[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
        total = dist.sum()
        p = dist / total if total > 0 else None
        centers.append(z[rng.choice(len(z), p=p)])
    centers_arr = np.array(centers)
    for _ in range(_LLOYD_ITERATIONS):
        labels = ((z[:, None, :] - centers_arr[None]) ** 2).sum(-1).argmin(axis=1)
        for j in range(k):
            if np.any(labels == j):
                centers_arr[j] = z[labels == j].mean(axis=0)
    labels = ((z[:, None, :] - centers_arr[None]) ** 2).sum(-1).argmin(axis=1)
    counts = np.bincount(labels, minlength=k).astype(float)
    theta = np.maximum(counts, 0.1 * len(z) / k)
    sigma = np.empty((k, d))
    for j in range(k):
        members = rows[labels == j]
        spread = members.std(axis=0) if len(members) > 1 else scale
        sigma[j] = np.clip(spread, 0.05 * scale, None)
    return {
        "mu": centers_arr * scale + rows.mean(axis=0),
        "theta": theta / theta.sum(),
        "sigma": sigma,
        "Omega": np.tile(np.eye(d), (k, 1, 1)),
    }


def _point(draws: Any) -> dict[str, np.ndarray]:
    """The single point of an optimization's draws."""
    return {name: value[0, 0] for name, value in draws.components().items()}


def distinct_optima(optima: list[dict[str, Any]], data_sd: np.ndarray) -> list[dict[str, Any]]:
    """Merge optima (each with ``lp`` and a point) whose means agree, after matching labels to
    the best optimum; best first, each with the number of starts that reached it."""
    optima = sorted(optima, key=lambda o: -o["lp"])
    kept: list[dict[str, Any]] = []
    for optimum in optima:
        point = optimum["point"]
        if kept:
            (perm,) = match_to_reference(point["mu"][None], kept[0]["point"]["mu"])
            point = {name: np.asarray(value)[perm] for name, value in point.items()}
        for other in kept:
            gap = np.abs(point["mu"] - other["point"]["mu"]) / data_sd
            if gap.max() < _SAME_OPTIMUM:
                other["starts"] += 1
                break
        else:
            kept.append({"lp": optimum["lp"], "point": point, "starts": 1})
    return kept


def jittered_inits(
    point: Mapping[str, np.ndarray], n: int, chains: int, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """One start per chain: `point` jittered by about one posterior sd (see module docstring)."""
    theta = np.asarray(point["theta"], dtype=float)
    mu = np.asarray(point["mu"], dtype=float)
    n_k = np.maximum(theta * n, 1.0)
    scale = np.asarray(point.get("sigma", np.ones_like(mu)), dtype=float)
    out = []
    for _ in range(chains):
        log_theta = np.log(theta) + rng.normal(size=theta.shape) / np.sqrt(n_k)
        start = {
            "mu": mu + rng.normal(size=mu.shape) * scale / np.sqrt(n_k)[:, None],
            "theta": np.exp(log_theta - np.logaddexp.reduce(log_theta)),
        }
        if "sigma" in point:
            noise = rng.normal(size=scale.shape) / np.sqrt(2 * n_k)[:, None]
            start["sigma"] = scale * np.exp(noise)
        if "Omega" in point:
            start["Omega"] = np.asarray(point["Omega"], dtype=float)
        out.append(start)
    return out


def multistart(
    model: Any,
    data_file: str | Path,
    y: np.ndarray,
    model_spec: Mapping[str, Any],
    *,
    n_starts: int,
    seed: int,
    out: Path,
    iter: int = 2000,
) -> list[dict[str, Any]]:
    """Optimize from `n_starts` k-means++ points (CmdStan L-BFGS, outputs under `out`); returns
    the distinct optima, best first (see :func:`distinct_optima`). Failed starts are logged."""
    k, d = int(model_spec["K"]), y.shape[1]
    rng = np.random.default_rng([seed, 17])
    optima = []
    for i in range(n_starts):
        start = kmeanspp_point(y, k, rng)
        folder = out / f"start_{i + 1}"
        folder.mkdir(parents=True)
        try:
            model.optimize(
                data=str(data_file),
                inits=stan_inits(start, model_spec, y),
                seed=int(rng.integers(1, 2**31 - 1)),
                output_dir=folder,
                algorithm="lbfgs",
                iter=iter,
                jacobian=False,
                require_converged=False,
                sig_figs=SIG_FIGS,
            )
        except RuntimeError as err:
            logger.warning("start %d: optimization failed: %s", i + 1, err)
            continue
        draws = read_draws(sorted(folder.glob("*.csv")), "optimize", k, d)
        lp = float(draws.stats["lp"][0, 0])
        if np.isfinite(lp):
            optima.append({"lp": lp, "point": _point(draws)})
    sd = y.std(axis=0)
    return distinct_optima(optima, np.where(sd > 0, sd, 1.0))


def path_starts(
    y: np.ndarray, model_spec: Mapping[str, Any], num_paths: int, seed: int
) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """Pathfinder's starts: sigma drawn per path as CmdStan would draw it, but on the data's
    working scale (:data:`PATH_STRATEGY`); the other parameters are left to CmdStan's random
    inits. CmdStan's own sigma is exp(uniform(-2, 2)) in the data's units, 0.14 to 7.4 for a
    column of sd 800, where L-BFGS cannot take a first step. Returns the record for fit.json and
    the inits, one per path; (None, None) for identity covariance, which has no sigma."""
    covariance = model_spec.get("covariance", "identity")
    if covariance == "identity":
        return None, None
    rows = 1 if covariance == "tied" else int(model_spec["K"])
    _, unit = working_scale(y, covariance)
    rng = np.random.default_rng([seed, 20])
    inits = [
        {"sigma": (unit * np.exp(rng.uniform(-2, 2, (rows, y.shape[1])))).tolist()}
        for _ in range(num_paths)
    ]
    return {"strategy": PATH_STRATEGY, "chain_inits": inits}, inits


def record(optima: list[dict[str, Any]], n_starts: int) -> dict[str, Any]:
    """The optima for fit.json: log density, gap to the best, starts reaching it, and the point."""
    best = optima[0]["lp"] if optima else np.nan
    return {
        "strategy": STRATEGY,
        "n_starts": n_starts,
        "optima": [
            {
                "lp": o["lp"],
                "lp_gap": best - o["lp"],
                "starts": o["starts"],
                **{name: np.asarray(v).tolist() for name, v in o["point"].items()},
            }
            for o in optima
        ],
    }
