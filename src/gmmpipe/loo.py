"""How many components: PSIS-LOO of the marginal log-likelihood, its fallbacks, subsampling
LOO for large N, ArviZ stacking weights, and a suggested K.

The pointwise log-likelihood ``log p(y_n | theta_s) = log_sum_exp_k (log theta_k + log N(y_n |
mu_k, Sigma_k))`` is invariant to the components' labels; it is computed here from the draws
(identity, diagonal or full covariance) in chunks of points, so no N x S matrix is ever held
or written. Estimates of one fit, by priority:

* ``psis``: PSIS-LOO (Vehtari et al. 2017, 2024); every point's Pareto k-hat is compared with
  min(1 - 1/log10 S, 0.7).
* ``psis+refits``: points above that threshold (at most ``max_refits``) get their exact
  leave-one-out elpd from a refit without them.
* ``kfold``: with more such points in any K, every K of the dataset is estimated by K-fold
  cross-validation over the same folds.
* ``subsampling``: above ``subsample_above`` points, PSIS-LOO on a simple random subsample
  combined with the log-likelihood at the posterior mean of every point by the difference
  estimator (Magnusson et al. 2019), whose subsampling SE is reported.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import logsumexp

from gmmpipe.arrays import thin

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import arviz as az


def _arviz() -> Any:
    """ArviZ, imported when first needed: it loads matplotlib and scipy.stats, which the
    membership job (log_joint) does without."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


#: Parameters of the draws by their names in posterior.nc: mu (S, K, D), theta (S, K) and,
#: when fitted, sigma (S, K, D) and Omega (S, K, D, D).
Params = Mapping[str, np.ndarray]
#: A refit without the points at the given indices; returns the refit's draws (flattened).
Refit = Callable[[np.ndarray], Params]

_CHUNK_ELEMENTS = 2_000_000  # draws x points x components evaluated at once


def khat_threshold(n_draws: int) -> float:
    """The Pareto k-hat above which PSIS is unreliable for S draws: min(1 - 1/log10 S, 0.7)."""
    return float(min(1 - 1 / math.log10(n_draws), 0.7))


def log_joint(y: np.ndarray, params: Params) -> np.ndarray:
    """log theta_k + log N(y_n | mu_k, Sigma_k) for every draw, point and component: (S, n, K).

    The covariance follows from the parameters present: identity (mu, theta), diagonal
    (+ sigma) or full (+ sigma and Omega, Sigma_k = diag(sigma_k) Omega_k diag(sigma_k)).
    """
    mu, theta = params["mu"], params["theta"]
    d = mu.shape[-1]
    diff = y[None, :, None, :] - mu[:, None, :, :]  # (S, n, K, D)
    log_det = np.zeros(theta.shape)  # log |Sigma_k|^(1/2)
    sigma, omega = params.get("sigma"), params.get("Omega")
    # L_Sigma = diag(sigma) L_Omega: scaled first, so that a draw whose scales overflowed (a
    # stuck chain) gets -inf rather than breaking the factorization
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if sigma is not None:
            diff = diff / sigma[:, None, :, :]
            log_det = log_det + np.log(sigma).sum(axis=-1)
        if omega is not None:
            chol = np.linalg.cholesky(omega)
            diff = np.einsum("skij,snkj->snki", np.linalg.inv(chol), diff)
            log_det = log_det + np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
        quad = np.einsum("snkd,snkd->snk", diff, diff)
        log_theta = np.log(theta)  # a weight of 0 contributes nothing
        joint = (log_theta - log_det)[:, None, :] - 0.5 * quad - 0.5 * d * np.log(2 * np.pi)
    return np.where(np.isnan(joint), -np.inf, joint)


def log_lik_chunks(
    y: np.ndarray, params: Params, *, chunk: int | None = None
) -> Any:  # Iterator[tuple[slice, np.ndarray]]
    """Yield (points, log p(y[points] | theta_s)) as (S, n_chunk) blocks over all of `y`."""
    s, k = params["theta"].shape
    d = params["mu"].shape[-1]
    chunk = chunk or max(1, _CHUNK_ELEMENTS // (s * k * d))
    for start in range(0, len(y), chunk):
        points = slice(start, min(start + chunk, len(y)))
        yield points, logsumexp(log_joint(y[points], params), axis=-1)


def log_lik(y: np.ndarray, params: Params) -> np.ndarray:
    """The pointwise marginal log-likelihood (S, n) of the points `y` (use for few points)."""
    return np.concatenate([block for _, block in log_lik_chunks(y, params)], axis=1)


def _log_mean_exp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    return logsumexp(values, axis=axis) - np.log(values.shape[axis])


def psis_loo_points(
    y: np.ndarray, params: Params, *, reff: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSIS-LOO of every point of `y`: (elpd_i, Pareto k-hat_i, lppd_i), chunk by chunk."""
    az = _arviz()
    n = len(y)
    elpd, khat, lppd = np.empty(n), np.empty(n), np.empty(n)
    for points, ll in log_lik_chunks(y, params):
        log_weights, k = az.psislw(-ll.T, reff)  # samples on the last axis
        elpd[points] = logsumexp(log_weights + ll.T, axis=1)
        khat[points] = k
        lppd[points] = _log_mean_exp(ll, axis=0)
    return elpd, khat, lppd


def point_log_lik(y: np.ndarray, params: Params) -> np.ndarray:
    """log p(y_n | posterior mean of the parameters), the cheap surrogate of subsampling LOO."""
    mean = {name: value.mean(axis=0, keepdims=True) for name, value in params.items()}
    if "Omega" in mean:  # the mean of correlation matrices is one; renormalize the rounding
        scale = np.sqrt(np.diagonal(mean["Omega"], axis1=-2, axis2=-1))
        mean["Omega"] = mean["Omega"] / (scale[..., :, None] * scale[..., None, :])
    mean["theta"] = mean["theta"] / mean["theta"].sum(axis=-1, keepdims=True)
    return np.concatenate([block[0] for _, block in log_lik_chunks(y, mean)])


def srs_difference_estimate(
    approx: np.ndarray, exact: np.ndarray, index: np.ndarray
) -> dict[str, float]:
    """Difference estimator of sum_n elpd_n from a simple random subsample without replacement
    (Magnusson et al. 2019; the loo R package's ``srs_diff_est``).

    approx: the surrogate of every point (N,); exact: the elpd of the subsampled points (m,);
    index: their positions. Returns the estimate ``elpd``, its ``se`` (the usual SE of an
    elpd, sqrt(N var elpd_n)) and ``subsampling_se`` (the SE due to subsampling).
    """
    n, m = len(approx), len(exact)
    e = exact - approx[index]
    t_approx = approx.sum()
    t_e = n * e.mean()
    estimate = t_approx + t_e
    var_estimate = n**2 * (1 - m / n) * e.var(ddof=1) / m if m > 1 else 0.0
    t_approx2 = np.square(approx).sum()
    var_y = (t_approx2 + n * np.mean(exact**2 - approx[index] ** 2)) - (1 / n) * (
        t_e**2 - var_estimate + 2 * t_approx * estimate - t_approx**2
    )
    return {
        "elpd": float(estimate),
        "se": float(np.sqrt(max(var_y, 0.0))),
        "subsampling_se": float(np.sqrt(max(var_estimate, 0.0))),
    }


def relative_efficiency(params: Params, chains: int) -> float:
    """The relative efficiency r_eff for PSIS: bulk ESS / S averaged over the means and weights
    (ArviZ's loo takes the mean ESS of each point's log-likelihood instead: close, and costlier);
    1 with fewer than two chains (an approximation's independent draws)."""
    az = _arviz()
    if chains < 2:
        return 1.0
    s = params["theta"].shape[0]
    ess = [
        np.asarray(az.ess(value.reshape(chains, s // chains, -1)[..., j])).item()
        for value in (params["mu"], params["theta"])
        for j in range(int(np.prod(value.shape[1:])))
    ]
    return float(np.clip(np.nanmean(ess) / s, 1e-3, None))


@dataclass
class FitLoo:
    """The LOO estimate of one fit (one K)."""

    k: int
    estimate: str  # psis, psis+refits, kfold, subsampling (+refits)
    elpd: float
    se: float
    p_loo: float
    n_draws: int
    threshold: float
    index: np.ndarray  # points with a pointwise elpd (all, or the subsample)
    elpd_i: np.ndarray
    khat: np.ndarray  # PSIS Pareto k-hat of the points in `index` (kept after refits, k-fold)
    n_bad: int  # points above the k-hat threshold in PSIS (before any refit or k-fold)
    subsampling_se: float = 0.0
    approx: np.ndarray | None = None  # the subsampling surrogate of every point
    refitted: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def psis_loo(
    y: np.ndarray,
    params: Params,
    *,
    k: int,
    reff: float = 1.0,
    subsample: np.ndarray | None = None,
) -> FitLoo:
    """PSIS-LOO of one fit over all points, or over `subsample` with the difference estimator."""
    s = params["theta"].shape[0]
    index = np.arange(len(y)) if subsample is None else np.asarray(subsample)
    elpd_i, khat, lppd_i = psis_loo_points(y[index], params, reff=reff)
    threshold = khat_threshold(s)
    n = len(y)
    p_loo = float((lppd_i - elpd_i).mean() * n)
    if subsample is None:
        elpd, se, sub_se, approx = float(elpd_i.sum()), float(np.sqrt(n * elpd_i.var())), 0.0, None
    else:
        approx = point_log_lik(y, params)
        est = srs_difference_estimate(approx, elpd_i, index)
        elpd, se, sub_se = est["elpd"], est["se"], est["subsampling_se"]
    return FitLoo(
        k=k,
        estimate="psis" if subsample is None else "subsampling",
        elpd=elpd,
        se=se,
        p_loo=p_loo,
        n_draws=s,
        threshold=threshold,
        index=index,
        elpd_i=elpd_i,
        khat=khat,
        n_bad=int((khat > threshold).sum()),
        subsampling_se=sub_se,
        approx=approx,
    )


def refit_points(y: np.ndarray, result: FitLoo, refit: Refit) -> FitLoo:
    """Replace the PSIS elpd of the points above the k-hat threshold by exact LOO refits."""
    bad = np.flatnonzero(result.khat > result.threshold)
    elpd_i = result.elpd_i.copy()
    for j in bad:
        point = int(result.index[j])
        draws = refit(np.array([point]))
        elpd_i[j] = float(_log_mean_exp(log_lik(y[[point]], draws), axis=0)[0])
    n = len(y)
    if result.approx is None:
        elpd, se, sub_se = float(elpd_i.sum()), float(np.sqrt(n * elpd_i.var())), 0.0
    else:
        est = srs_difference_estimate(result.approx, elpd_i, result.index)
        elpd, se, sub_se = est["elpd"], est["se"], est["subsampling_se"]
    return FitLoo(
        **{
            **result.__dict__,
            "estimate": f"{result.estimate}+refits",
            "elpd": elpd,
            "se": se,
            "subsampling_se": sub_se,
            "elpd_i": elpd_i,
            "refitted": [int(result.index[j]) for j in bad],
            "notes": [
                *result.notes,
                f"{len(bad)} point(s) above k-hat {result.threshold:.2f} refitted",
            ],
        }
    )


def kfold_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of every point (0..folds-1), balanced and random, the same for every K."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % folds)


def kfold_cv(y: np.ndarray, folds: np.ndarray, refit: Refit, *, k: int, n_draws: int) -> FitLoo:
    """K-fold cross-validation: every fold's points scored by the refit without them."""
    n = len(y)
    elpd_i = np.empty(n)
    for fold in np.unique(folds):
        held_out = np.flatnonzero(folds == fold)
        draws = refit(held_out)
        for points, ll in log_lik_chunks(y[held_out], draws):
            elpd_i[held_out[points]] = _log_mean_exp(ll, axis=0)
    return FitLoo(
        k=k,
        estimate=f"kfold-{len(np.unique(folds))}",
        elpd=float(elpd_i.sum()),
        se=float(np.sqrt(n * elpd_i.var())),
        p_loo=float("nan"),
        n_draws=n_draws,
        threshold=khat_threshold(max(n_draws, 11)),
        index=np.arange(n),
        elpd_i=elpd_i,
        khat=np.full(n, np.nan),
        n_bad=0,
    )


def loo_over_k(
    y: np.ndarray,
    fits: Mapping[int, Params],
    *,
    settings: Mapping[str, Any],
    chains: Mapping[int, int] | None = None,
    refits: Mapping[int, Refit] | None = None,
) -> dict[int, FitLoo]:
    """The LOO estimate of every K's fit, with the fallbacks of the module docstring.

    `fits` maps K to its draws (flattened over chains); `chains` K to the fit's number of
    chains (for r_eff); `refits` K to a function refitting without given points (no refits
    without it). `settings` is the validated ``compare`` config.
    """
    n = len(y)
    subsample = None
    if n > settings["subsample_above"]:
        rng = np.random.default_rng(settings["seed"])
        subsample = np.sort(rng.choice(n, size=min(settings["subsample_size"], n), replace=False))
    results = {}
    for k, params in fits.items():
        draws = thin(params, settings["max_draws"])
        stride = params["theta"].shape[0] / draws["theta"].shape[0]
        n_chains = (chains or {}).get(k, 1)
        reff = relative_efficiency(params, n_chains) * stride if n_chains > 1 else 1.0
        results[k] = psis_loo(y, draws, k=k, reff=min(reff, 1.0), subsample=subsample)
    refits = refits or {}
    bad = {k: r.n_bad for k, r in results.items() if r.n_bad}
    if not bad:
        return results
    limit = settings["max_refits"]
    if not refits or limit == 0:
        for r in results.values():
            if r.n_bad:
                r.notes.append(
                    f"{r.n_bad} point(s) above k-hat {r.threshold:.2f}: the PSIS estimate may be "
                    "unreliable (no refits)"
                )
        return results
    if max(bad.values()) <= limit:
        return {k: refit_points(y, r, refits[k]) if r.n_bad else r for k, r in results.items()}
    logger.info("k-hat above threshold for %s points per K: K-fold CV for every K", bad)
    folds = kfold_folds(n, settings["kfold"], settings["seed"])
    out = {}
    for k, r in results.items():
        cv = kfold_cv(y, folds, refits[k], k=k, n_draws=r.n_draws)
        cv.notes.append(
            f"PSIS had {r.n_bad} point(s) above k-hat {r.threshold:.2f} "
            f"(more than max_refits = {limit} in some K)"
        )
        cv.khat = np.full(n, np.nan)
        cv.khat[r.index] = r.khat
        cv.n_bad = r.n_bad
        out[k] = cv
    return out


def chain_stacking(
    y: np.ndarray,
    params: Params,
    *,
    max_points: int = 2000,
    max_draws: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Stacking of chains that sit in different modes (Yao, Vehtari and Gelman 2022, JMLR 23:79).

    `params` holds every parameter per chain, (chains, draws, ...). Each chain's pointwise
    PSIS-LOO elpd (at most `max_draws` draws per chain, on at most `max_points` points drawn
    at random) gives ArviZ's stacking weights of the chains; the stacked estimate of theta and
    mu is the weighted mean of the chains' means. Returns the weights and those means.
    """
    az = _arviz()
    chains = params["theta"].shape[0]
    rng = np.random.default_rng(seed)
    points = np.sort(rng.choice(len(y), size=min(max_points, len(y)), replace=False))
    k = params["theta"].shape[-1]
    per_chain = {
        f"chain {c + 1}": _elpd_data(
            psis_loo(y[points], thin({n: v[c] for n, v in params.items()}, max_draws), k=k)
        )
        for c in range(chains)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(per_chain, method="stacking", scale="log")
    weights = np.array([float(table.loc[name, "weight"]) for name in per_chain])
    weights = weights / weights.sum()
    stacked = {
        name: np.tensordot(weights, params[name].mean(axis=1), axes=1).tolist()
        for name in ("theta", "mu")
    }
    return {
        "method": "stacking of chains on PSIS-LOO (Yao, Vehtari and Gelman 2022)",
        "points": len(points),
        "weights": weights.round(4).tolist(),
        **stacked,
    }


def _elpd_data(result: FitLoo) -> az.ELPDData:
    """An ArviZ ELPDData of a LOO estimate (pointwise over its points), for az.compare."""
    az = _arviz()
    n = len(result.index)
    return az.ELPDData(
        data=[
            result.elpd,
            result.se,
            result.p_loo,
            result.n_draws,
            n,
            bool(result.n_bad),
            xr.DataArray(result.elpd_i, dims=["__obs__"], name="loo_i"),
            xr.DataArray(np.nan_to_num(result.khat, nan=0.0), dims=["__obs__"]),
            "log",
            result.threshold,
        ],
        index=[
            "elpd_loo",
            "se",
            "p_loo",
            "n_samples",
            "n_data_points",
            "warning",
            "loo_i",
            "pareto_k",
            "scale",
            "good_k",
        ],
    )


def compare_k(
    results: Mapping[int, FitLoo], *, n: int, margin: float = 4.0
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The comparison table over K (elpd, SE, elpd_diff, its SE, stacking weight, ...) and the
    suggested K: the smallest K whose elpd is within `margin` or 2 SE of the difference of the
    best one.

    Stacking weights come from ArviZ ``compare(..., method="stacking")`` on the pointwise elpd
    (of the subsample when subsampled); the differences' SEs are sqrt(n var(elpd_i difference)),
    as ArviZ's, or the difference estimator's when subsampled.
    """
    az = _arviz()
    ks = sorted(results)
    names = {k: f"K={k}" for k in ks}
    if len(ks) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = az.compare(
                {names[k]: _elpd_data(results[k]) for k in ks}, method="stacking", scale="log"
            )
        weights = {k: float(table.loc[names[k], "weight"]) for k in ks}
    else:
        weights = {ks[0]: 1.0}
    best = max(ks, key=lambda k: results[k].elpd)
    rows = []
    for k in ks:
        r = results[k]
        diff_i = results[best].elpd_i - r.elpd_i
        if k == best:
            diff, dse, diff_sub_se = 0.0, 0.0, 0.0
        elif r.approx is not None and results[best].approx is not None:
            est = srs_difference_estimate(results[best].approx - r.approx, diff_i, r.index)
            diff, dse, diff_sub_se = est["elpd"], est["se"], est["subsampling_se"]
        else:
            diff = results[best].elpd - r.elpd
            dse, diff_sub_se = float(np.sqrt(len(diff_i) * diff_i.var())), 0.0
        rows.append(
            {
                "K": k,
                "elpd": r.elpd,
                "se": r.se,
                "elpd_diff": diff,
                "diff_se": dse,
                "subsampling_se": r.subsampling_se,
                "diff_subsampling_se": diff_sub_se,
                "weight": weights[k],
                "p_loo": r.p_loo,
                "estimate": r.estimate,
                "points": len(r.index),
                "n": n,
                "draws": r.n_draws,
                "khat_threshold": r.threshold,
                "khat_max": float(np.nanmax(r.khat)) if np.isfinite(r.khat).any() else np.nan,
                "khat_bad": r.n_bad,
                "refitted": len(r.refitted),
                "notes": "; ".join(r.notes),
            }
        )
    table = pd.DataFrame(rows)
    close = table[(table["elpd_diff"] <= np.maximum(margin, 2 * table["diff_se"]))]
    suggested = int(close["K"].min())
    row = table.set_index("K").loc[suggested]
    table["suggested"] = table["K"] == suggested
    evidence = {
        "suggested_K": suggested,
        "best_K": int(best),
        "elpd_diff_to_best": float(row["elpd_diff"]),
        "diff_se": float(row["diff_se"]),
        "margin": float(margin),
        "rule": (
            f"the smallest K whose elpd is within {margin:g} or 2 SE of the difference of the "
            "best K's elpd"
        ),
        "estimates": {str(k): results[k].estimate for k in ks},
        "stacking_weights": {str(k): weights[k] for k in ks},
    }
    return table, evidence


def khat_table(results: Mapping[int, FitLoo]) -> pd.DataFrame:
    """The Pareto k-hat of every evaluated point of every K, with the threshold and estimate."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "K": r.k,
                    "point": r.index + 1,
                    "khat": r.khat,
                    "threshold": r.threshold,
                    "above": r.khat > r.threshold,
                    "elpd_i": r.elpd_i,
                    "refitted": np.isin(r.index, r.refitted),
                }
            )
            for r in results.values()
        ],
        ignore_index=True,
    )


def suggestion_text(evidence: Mapping[str, Any], ks: Sequence[int]) -> str:
    """One sentence stating the suggestion and its evidence (not a verdict)."""
    return (
        f"Suggested K = {evidence['suggested_K']} of {list(ks)}: {evidence['rule']} "
        f"(best K = {evidence['best_K']}; elpd difference {evidence['elpd_diff_to_best']:.1f} "
        f"± {evidence['diff_se']:.1f}). A suggestion from predictive accuracy, not a test of "
        "the number of clusters."
    )
