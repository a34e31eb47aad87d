"""Posterior predictive checks: replicated data from the draws against the observed data.

Per coordinate j, everything works on the mixture's marginal, which is exact for every
covariance model: y_j ~ sum_k theta_k normal(mu_kj, sigma_kj) (sigma_kj = 1 for the identity).

- Summaries: mean, sd and the 5%, 50% and 95% quantiles of the observed column against the same
  statistics of replicated datasets of the same size; p = Pr(T(y_rep) >= T(y)).
- A check that can fail: the Kolmogorov-Smirnov distance between a dataset and the model's
  marginal CDF under draw s, for the observed data and for data replicated under draw s (a
  realized discrepancy, Gelman, Meng and Stern 1996). Reported as the posterior predictive
  p-value Pr(D_rep >= D_obs), and, for the gate, as the observed distance's excess over the
  replicated ones in their sds, z = (median D_obs - mean D_rep) / sd(D_rep): with 200 draws a
  p-value cannot go below 1/200, so a gate on it fails about one correct fit in 200 per
  coordinate (seen on seed_large), while z > 5 is about a 2e-4 event for a correct model
  (Kolmogorov tail) and gross misfits give z in the tens.
- PIT: u_nj = (1/S) sum_s F_s,j(y_nj), uniform when the model describes the data (close to uniform
  rather than exactly, as the observation is also in the fit; LOO-PIT would need every point's
  log-likelihood draws, which is too heavy at N = 1e5).

Draws are thinned to at most 200 and the observations subsampled (the replicates have the
subsample's size) to at most 5 000 rows for the distances and PIT and 20 000 rows for the
summaries; every random choice derives from `seed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import ndtr

from gmmpipe.arrays import thin

MAX_DRAWS = 200
MAX_ROWS = 5000
MAX_SUMMARY_ROWS = 20_000
STATISTICS = ("mean", "sd", "q05", "q50", "q95")


def _statistics(y: np.ndarray) -> np.ndarray:
    """The summaries (len(STATISTICS), ...) of samples along axis -1."""
    q = np.quantile(y, [0.05, 0.5, 0.95], axis=-1)
    return np.stack([y.mean(axis=-1), y.std(axis=-1, ddof=1), *q])


def thinned(posterior: Mapping[str, np.ndarray], n: int = MAX_DRAWS) -> dict[str, np.ndarray]:
    """At most `n` evenly spaced draws of mu (S, K, D), theta (S, K) and marginal scales
    sigma (S, K, D) (ones for the identity covariance), from (chain, draw, ...) arrays."""
    mu = np.asarray(posterior["mu"]).reshape(-1, *np.shape(posterior["mu"])[-2:])
    theta = np.asarray(posterior["theta"]).reshape(len(mu), -1)
    sigma = posterior.get("sigma")
    sigma = np.ones_like(mu) if sigma is None else np.asarray(sigma).reshape(mu.shape)
    return thin({"mu": mu, "theta": theta, "sigma": sigma}, n)


def replicate(draws: Mapping[str, np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Replicated marginals (S, D, n): n points per draw from each coordinate's mixture."""
    mu, theta, sigma = draws["mu"], draws["theta"], draws["sigma"]
    s, k, d = mu.shape
    out = np.empty((s, d, n))
    for i in range(s):
        cumulative = np.cumsum(theta[i]) / theta[i].sum()
        z = np.minimum(np.searchsorted(cumulative, rng.random(n), side="right"), k - 1)
        out[i] = (mu[i][z] + sigma[i][z] * rng.standard_normal((n, d))).T
    return out


def marginal_cdf(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """F(x) of one coordinate's mixture: x (..., n), mu/sigma/theta (K,) -> (..., n)."""
    return (theta * ndtr((x[..., None] - mu) / sigma)).sum(axis=-1)


def _ks(sorted_x: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Kolmogorov-Smirnov distance of sorted samples (..., n) from CDF values at them."""
    n = sorted_x.shape[-1]
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(n) / n
    return np.maximum(upper.max(axis=-1), lower.max(axis=-1))


def posterior_predictive(
    y: np.ndarray, posterior: Mapping[str, np.ndarray], *, seed: int
) -> dict[str, Any]:
    """The checks above for observations `y` (N, D) and draws (chain, draw, ...) of mu, theta
    and, when fitted, sigma.

    Returns ``summaries`` (one row per coordinate and statistic: observed, replicated mean and
    5%/95% quantiles, p-value), ``ks_p`` and ``ks_z`` (per coordinate), ``pit`` (rows, D) and
    ``replicated`` (a few replicated marginals, (S', D, rows), for figures).
    """
    rng = np.random.default_rng([seed, 19])
    y = np.asarray(y, dtype=float)
    n, d = y.shape
    draws = thinned(posterior)
    s = len(draws["mu"])
    big = y[rng.choice(n, size=MAX_SUMMARY_ROWS, replace=False)] if n > MAX_SUMMARY_ROWS else y
    observed = _statistics(big.T)  # (stat, D)
    rep_stats = np.empty((s, len(STATISTICS), d))
    for i in range(s):  # one draw at a time: S x N x D at once is too much at N = 1e5
        one = {name: value[i : i + 1] for name, value in draws.items()}
        rep_stats[i] = _statistics(replicate(one, len(big), rng)[0])
    rows = n if n <= MAX_ROWS else MAX_ROWS
    sub = y[rng.choice(n, size=rows, replace=False)] if n > MAX_ROWS else y
    sub_sorted = np.sort(sub, axis=0).T  # (D, rows)
    rep = np.sort(replicate(draws, rows, rng), axis=-1)  # (S, D, rows)
    ks_obs = np.empty((s, d))
    ks_rep = np.empty((s, d))
    pit = np.zeros((rows, d))
    for i in range(s):
        for j in range(d):
            args = (draws["mu"][i, :, j], draws["sigma"][i, :, j], draws["theta"][i])
            ks_obs[i, j] = _ks(sub_sorted[j], marginal_cdf(sub_sorted[j], *args))
            ks_rep[i, j] = _ks(rep[i, j], marginal_cdf(rep[i, j], *args))
            pit[:, j] += marginal_cdf(sub[:, j], *args) / s
    summaries = []
    for a, stat in enumerate(STATISTICS):
        for j in range(d):
            values = rep_stats[:, a, j]
            summaries.append(
                {
                    "coordinate": j,
                    "statistic": stat,
                    "observed": float(observed[a, j]),
                    "replicated_mean": float(values.mean()),
                    "replicated_q05": float(np.quantile(values, 0.05)),
                    "replicated_q95": float(np.quantile(values, 0.95)),
                    "p_value": float(np.mean(values >= observed[a, j])),
                }
            )
    return {
        "draws": s,
        "rows": rows,
        "summaries": summaries,
        "ks_p": np.mean(ks_rep >= ks_obs, axis=0).tolist(),
        "ks_z": (
            (np.median(ks_obs, axis=0) - ks_rep.mean(axis=0)) / ks_rep.std(axis=0, ddof=1)
        ).tolist(),
        "pit": pit,
        "replicated": rep[: min(s, 40)],
        "observed_rows": sub,
    }


def record(result: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """The JSON-ready part of a check's result (for fit.json), coordinates by name."""
    return {
        "draws": result["draws"],
        "rows": result["rows"],
        "ks_p": dict(zip(names, result["ks_p"], strict=True)),
        "ks_z": dict(zip(names, result["ks_z"], strict=True)),
        "summaries": [
            {**row, "coordinate": names[row["coordinate"]]} for row in result["summaries"]
        ],
    }


def plot_ppc(
    y: np.ndarray,
    posteriors: Mapping[str, Mapping[str, np.ndarray]],
    seeds: Mapping[str, int],
    z_max: float = 5.0,
) -> Any:
    """Figure: per NUTS fit (rows of two) and coordinate (columns), the observed data's histogram
    over 40 replicated datasets' histograms, with the KS p-value; below, the PIT histogram
    (flat when the model describes the data)."""
    import matplotlib.pyplot as plt

    d = y.shape[1]
    fig, axes = plt.subplots(
        2 * len(posteriors), d, figsize=(3.2 * d, 5.0 * len(posteriors)), squeeze=False
    )
    for row, (method, posterior) in enumerate(posteriors.items()):
        result = posterior_predictive(y, posterior, seed=seeds[method])
        observed = result["observed_rows"]
        for j in range(d):
            ax, pit_ax = axes[2 * row, j], axes[2 * row + 1, j]
            bins = np.histogram_bin_edges(observed[:, j], bins=40)
            centers = 0.5 * (bins[1:] + bins[:-1])
            for rep in result["replicated"][:, j]:
                counts, _ = np.histogram(rep, bins=bins, density=True)
                ax.plot(centers, counts, color="tab:blue", alpha=0.15, linewidth=0.8)
            counts, _ = np.histogram(observed[:, j], bins=bins, density=True)
            ax.plot(centers, counts, color="black", linewidth=1.8, drawstyle="steps-mid")
            ax.set_xlabel(f"x{j + 1}: data (black), replicated (blue)")
            p, z = result["ks_p"][j], result["ks_z"][j]
            color = "red" if z > z_max else "black"
            ax.set_title(f"{method}: x{j + 1}, KS p = {p:.3g}, z = {z:.2g}", color=color)
            pit_ax.hist(result["pit"][:, j], bins=20, range=(0, 1), density=True, color="0.6")
            pit_ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
            pit_ax.set_xlabel(f"PIT of x{j + 1}")
        axes[2 * row, 0].set_ylabel("density")
        axes[2 * row + 1, 0].set_ylabel("PIT density")
    fig.tight_layout()
    return fig
