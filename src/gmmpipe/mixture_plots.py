"""Fitted mixture densities over the data, for any D and any covariance option.

D = 1: histogram of the data with the posterior mixture density (mean and 90% band over
draws) and each component's weighted density at the posterior mean. D >= 2: a pairs plot,
marginal histograms with the fitted marginal densities on the diagonal and, below it, the data
with every component's 2-sd ellipse (posterior-mean mean and covariance).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from scipy import stats

from gmmpipe.arrays import covariances, flat_params, thin

logger = logging.getLogger(__name__)

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
_PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
MAX_PAIRS_D = 6


def component_colors(k: int) -> list[str]:
    """The colour of components 1..k, the same in every figure (components ordered by weight):
    Okabe-Ito's seven, then tab20's."""
    if k <= len(_PALETTE):
        return _PALETTE[:k]
    cmap = plt.get_cmap("tab20")
    return _PALETTE + [matplotlib.colors.to_hex(cmap(i % 20)) for i in range(k - len(_PALETTE))]


def posterior_arrays(posterior: Any) -> dict[str, np.ndarray]:
    """mu (S, K, D), theta (S, K) and Sigma (S, K, D, D) from an InferenceData posterior
    (or any mapping of arrays with leading chain and draw axes)."""
    params = flat_params(posterior)
    return {"mu": params["mu"], "theta": params["theta"], "Sigma": covariances(params)}


def marginal_densities(grid: np.ndarray, arrays: Mapping[str, np.ndarray], j: int) -> np.ndarray:
    """Mixture density of coordinate j on `grid` for every draw: (S, len(grid))."""
    mu, theta, cov = arrays["mu"][:, :, j], arrays["theta"], arrays["Sigma"][:, :, j, j]
    dens = stats.norm.pdf(grid[None, None, :], mu[..., None], np.sqrt(cov)[..., None])
    return (theta[..., None] * dens).sum(axis=1)


def _ellipse(ax: Any, mean: np.ndarray, cov: np.ndarray, color: str) -> None:
    values, vectors = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    width, height = 2 * 2 * np.sqrt(values[::-1])
    ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, color=color, lw=2, zorder=5))


def plot_fitted_density(
    y: np.ndarray,
    posterior: Any,
    *,
    title: str = "",
    max_draws: int = 200,
    max_points: int = 3000,
) -> Figure:
    """The data with the fitted mixture (see the module docstring); returns the Figure."""
    arrays = thin(posterior_arrays(posterior), max_draws)
    mean = {name: value.mean(axis=0) for name, value in arrays.items()}
    k, d = mean["mu"].shape
    colors = component_colors(k)
    shown = min(d, MAX_PAIRS_D)
    if d > shown:
        logger.info("pairs plot limited to the first %d of %d coordinates", shown, d)
    size = 2.6 if shown > 1 else 6.0
    fig, axes = plt.subplots(
        shown, shown, figsize=(size * shown + 0.5, size * shown), squeeze=False
    )
    rng = np.random.default_rng(0)
    points = y if len(y) <= max_points else y[rng.choice(len(y), max_points, replace=False)]
    for j in range(shown):
        ax = axes[j, j]
        lo, hi = np.quantile(y[:, j], [0.001, 0.999])
        pad = 0.15 * (hi - lo + 1e-9)
        grid = np.linspace(lo - pad, hi + pad, 300)
        bins = min(80, max(10, len(y) // 10))
        ax.hist(y[:, j], bins=bins, density=True, color="0.88", edgecolor="0.7", lw=0.4)
        dens = marginal_densities(grid, arrays, j)
        band = np.quantile(dens, [0.05, 0.95], axis=0)
        ax.fill_between(
            grid, band[0], band[1], color="#56B4E9", alpha=0.45, lw=0, label="90% of draws"
        )
        ax.plot(grid, dens.mean(axis=0), color="black", lw=1.8, label="fitted mixture")
        for i in range(k):
            comp = mean["theta"][i] * stats.norm.pdf(
                grid, mean["mu"][i, j], np.sqrt(mean["Sigma"][i, j, j])
            )
            ax.plot(grid, comp, color=colors[i], ls="--", lw=1.3, label=f"component {i + 1}")
        ax.set_xlabel(f"x{j + 1}")
        for i in range(shown):
            if i < j:
                axes[i, j].set_visible(False)
            elif i > j:
                ax2 = axes[i, j]
                ax2.scatter(points[:, j], points[:, i], s=4, color="0.6", alpha=0.5, lw=0)
                for c in range(k):
                    sub = np.ix_([j, i], [j, i])
                    _ellipse(ax2, mean["mu"][c, [j, i]], mean["Sigma"][c][sub], colors[c])
                ax2.set_xlabel(f"x{j + 1}")
                ax2.set_ylabel(f"x{i + 1}")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.suptitle(title or f"Fitted mixture density: n = {len(y):,}, D = {d}, K = {k}")
    fig.tight_layout()
    return fig
