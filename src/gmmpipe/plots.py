"""Figures of the pipeline: the seed notebook's seven plots, generalized to any K and D, plus
ArviZ trace and rank plots. One palette gives every component the same colour in every figure;
methods are told apart by marker and line style. Every function returns a matplotlib Figure."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from gmmpipe.arrays import even_index, flat_params
from gmmpipe.data import coordinate_names, load_dataset
from gmmpipe.io import atomic_path, read_json
from gmmpipe.mixture_plots import component_colors, plot_fitted_density
from gmmpipe.ppc import plot_ppc
from gmmpipe.summarize import (
    MethodFit,
    align_components,
    aligned_truth,
    load_fits,
    reference_method,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

logger = logging.getLogger(__name__)

DATA_COLOR = "#8c8c8c"
TRUTH_STYLE = {"marker": "X", "s": 140, "c": "black", "edgecolors": "white", "zorder": 6}
_MARKERS = ["o", "s", "D", "^", "v", "P", "*", "h"]
_LINESTYLES = ["-", "--", ":", "-."]
MAX_DRAWS_SHOWN = 1000  # posterior draws drawn per component in scatter plots
VI_ALGORITHMS = ("advi", "pathfinder", "laplace")
# Coordinates whose sds differ by more than this get an axis scale each; closer ones share one.
SHARED_SCALE_RATIO = 2.0


def method_styles(methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """A marker and a line style per method, in the given order."""
    return {
        m: {"marker": _MARKERS[i % len(_MARKERS)], "linestyle": _LINESTYLES[i % len(_LINESTYLES)]}
        for i, m in enumerate(methods)
    }


def method_label(fit: MethodFit) -> str:
    """A method's legend label; a failed diagnostics gate is part of the label."""
    return fit.method if fit.passed else f"{fit.method} (diagnostics FAILED)"


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> None:
    """Write `fig` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


# --- Building blocks -------------------------------------------------------------------------


def axis_units(y: np.ndarray) -> np.ndarray | None:
    """Units of the x and y axes for the first two coordinates: None (one shared scale, so
    circles stay round) unless their sds differ by more than :data:`SHARED_SCALE_RATIO`, then
    the two sds (each axis on its coordinate's own scale)."""
    if y.ndim != 2 or y.shape[1] < 2 or len(y) < 2:
        return None
    sd = y[:, :2].std(axis=0)
    if not np.all(sd > 0) or sd.max() <= SHARED_SCALE_RATIO * sd.min():
        return None
    return sd


def draw_data(ax: Axes, y: np.ndarray, *, max_points: int = 5000) -> None:
    """The observations: a scatter of the first two coordinates, a hexbin density when there
    are more than `max_points`, a histogram when D = 1. The axes share one scale when
    :func:`axis_units` says so."""
    if y.shape[1] == 1:
        ax.hist(y[:, 0], bins=min(80, max(10, len(y) // 10)), color=DATA_COLOR, alpha=0.5)
        ax.set_xlabel("x1")
        ax.set_ylabel("count")
        return
    if len(y) > max_points:
        lo, hi = np.quantile(y[:, :2], [0.0005, 0.9995], axis=0)
        ax.hexbin(
            y[:, 0],
            y[:, 1],
            gridsize=90,
            bins="log",
            mincnt=1,
            cmap="Greys",
            extent=(lo[0], hi[0], lo[1], hi[1]),
            linewidths=0,
        )
    else:
        alpha = float(np.clip(30 / np.sqrt(len(y)), 0.15, 0.6))
        ax.scatter(y[:, 0], y[:, 1], s=14, c=DATA_COLOR, alpha=alpha, linewidths=0)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    if axis_units(y) is None:
        ax.set_aspect("equal", adjustable="box")


def _draws(fit: MethodFit, var: str) -> np.ndarray:
    """All draws of `var` (mu or theta) stacked over chains: (S, K, ...)."""
    return flat_params(fit.posterior)[var]


def _thin(values: np.ndarray, n: int = MAX_DRAWS_SHOWN) -> np.ndarray:
    """At most `n` evenly spaced draws."""
    return values[even_index(len(values), n)]


def _ellipse(ax: Axes, mean: np.ndarray, cov: np.ndarray, color: str, **kwargs: Any) -> None:
    """Contours of a bivariate normal at 1, 2 and 3 standard deviations (Mahalanobis)."""
    vals, vecs = np.linalg.eigh(cov)
    angle = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    shape = vecs @ np.diag(np.sqrt(np.maximum(vals, 0)))
    for level, alpha in ((1, 0.35), (2, 0.18), (3, 0.08)):
        xy = mean[:, None] + level * shape @ circle
        ax.fill(xy[0], xy[1], color=color, alpha=alpha, linewidth=0, **kwargs)
        ax.plot(xy[0], xy[1], color=color, linewidth=1.2, **kwargs)


def _density_line(ax: Axes, values: np.ndarray, color: str, **kwargs: Any) -> None:
    """A kernel density estimate of 1-D draws (a vertical line for a point estimate)."""
    values = values[np.isfinite(values)]
    if len(values) < 2 or np.ptp(values) == 0:
        ax.axvline(values[0] if len(values) else np.nan, color=color, **kwargs)
        return
    pad = 0.15 * np.ptp(values)
    grid = np.linspace(values.min() - pad, values.max() + pad, 200)
    ax.plot(grid, stats.gaussian_kde(values)(grid), color=color, **kwargs)


def _zoom_limits(
    ax: Axes,
    anchor: np.ndarray,
    *others: np.ndarray,
    far: float = 8.0,
    units: np.ndarray | None = None,
) -> list[int]:
    """Square limits (in `units` per axis, see :func:`axis_units`) around the `anchor` points
    (S, 2) and those `others` that lie within `far` anchor half-widths of it; returns the
    indices of `others` left out (off scale)."""
    unit = np.ones(2) if units is None else np.asarray(units, dtype=float)

    def box(points: np.ndarray) -> np.ndarray:
        points = points.reshape(-1, 2) / unit
        q = (0.002, 0.998) if len(points) > 50 else (0.0, 1.0)
        return np.quantile(points, q, axis=0)

    lo, hi = box(anchor)
    center, half = (lo + hi) / 2, max(float(np.max(hi - lo)) / 2, 1e-6)
    left_out = []
    for i, points in enumerate(others):
        b = box(points)
        if np.max(np.abs(b - center)) > far * half:
            left_out.append(i)
            continue
        lo, hi = np.minimum(lo, b[0]), np.maximum(hi, b[1])
    center, half = (lo + hi) / 2, max(float(np.max(hi - lo)) / 2 * 1.15, 1e-6)
    ax.set_xlim((center[0] - half) * unit[0], (center[0] + half) * unit[0])
    ax.set_ylim((center[1] - half) * unit[1], (center[1] + half) * unit[1])
    return left_out


def _data_limits(ax: Axes, y: np.ndarray, points: Mapping[str, np.ndarray]) -> None:
    """Keep the overview on the data (and truth): limits from the data's extent; points of
    `points` (label -> (n, 2) array) outside it are named in a note instead of zooming out."""
    if y.shape[1] == 1 or not len(y):
        return
    lo, hi = np.quantile(y[:, :2], [0.0005, 0.9995], axis=0)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    off = [
        label
        for label, p in points.items()
        if np.any((np.asarray(p)[..., :2] < lo) | (np.asarray(p)[..., :2] > hi))
    ]
    if off:
        _note(ax, "off scale: " + ", ".join(off))


def _note(ax: Axes, text: str) -> None:
    """A red note in the lower left corner of a panel (not counted by the layout)."""
    note = ax.text(
        0.02,
        0.02,
        text,
        transform=ax.transAxes,
        color="#b00020",
        fontsize="small",
        va="bottom",
        bbox={"facecolor": "white", "alpha": 0.85, "linewidth": 0},
        zorder=10,
    )
    note.set_in_layout(False)


def _overview_and_zooms(rows: int, k: int, *, size: float = 3.6) -> tuple[Figure, np.ndarray]:
    """A grid: one overview column over the data and one zoomed column per component."""
    fig, axes = plt.subplots(
        rows, k + 1, figsize=(size * (k + 1) + 0.8, size * rows + 0.6), squeeze=False
    )
    return fig, axes


def _legend_below(fig: Figure, handles: list[Any], labels: list[str]) -> None:
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(len(labels), 4),
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )


def _component_handles(k: int) -> tuple[list[Any], list[str]]:
    colors = component_colors(k)
    handles = [plt.Line2D([], [], color=c, marker="o", linestyle="") for c in colors]
    return handles, [f"component {i + 1}" for i in range(k)]


# --- The seed's figures ------------------------------------------------------------------------


def plot_data(y: np.ndarray, truth: Mapping[str, Any], *, max_points: int = 5000) -> Figure:
    """Figure 1: the data with the true component means (when the data were simulated)."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    draw_data(ax, y, max_points=max_points)
    true = aligned_truth(truth, None)
    if true:
        colors = component_colors(len(true["mu"]))
        for i, (m, w) in enumerate(zip(true["mu"], true["theta"], strict=True)):
            label = f"true mean {i + 1} (weight {w:.2f})"
            if y.shape[1] == 1:
                ax.axvline(m[0], color=colors[i], linewidth=2.5, label=label)
            else:
                ax.scatter(
                    m[0], m[1], s=160, c=colors[i], edgecolors="black", zorder=5, label=label
                )
        ax.legend(loc="best")
    ax.set_title(f"Data: n = {len(y):,}, D = {y.shape[1]}" + ("" if true else " (truth unknown)"))
    return fig


def plot_nuts_means(
    y: np.ndarray, fit: MethodFit, truth: Mapping[str, Any], *, max_points: int = 5000
) -> Figure:
    """Figure 2: NUTS posterior draws of the component means over the data."""
    mu = _draws(fit, "mu")
    k = mu.shape[1]
    colors = component_colors(k)
    fig, axes = _overview_and_zooms(1, k)
    ax = axes[0, 0]
    draw_data(ax, y, max_points=max_points)
    units = axis_units(y)
    true = aligned_truth(truth, fit.mean_mu())
    for i in range(k):
        draws = _thin(mu[:, i])
        if y.shape[1] == 1:
            twin = ax.twinx()
            twin.hist(draws[:, 0], bins=40, color=colors[i], alpha=0.6, density=True)
            twin.set_yticks([])
            zoom = axes[0, i + 1]
            zoom.hist(mu[:, i, 0], bins=50, color=colors[i], alpha=0.7, density=True)
            if true:
                zoom.axvline(true["mu"][i, 0], color="black", linestyle="--")
            zoom.set_xlabel(f"mu[{i + 1}, x1]")
        else:
            ax.scatter(draws[:, 0], draws[:, 1], s=6, c=colors[i], alpha=0.25, linewidths=0)
            zoom = axes[0, i + 1]
            zoom.scatter(draws[:, 0], draws[:, 1], s=6, c=colors[i], alpha=0.35, linewidths=0)
            if true:
                zoom.scatter(*true["mu"][i, :2], **TRUTH_STYLE)
                if _zoom_limits(zoom, draws[:, :2], true["mu"][i, :2][None], units=units):
                    _note(zoom, "true mean off scale")
            else:
                _zoom_limits(zoom, draws[:, :2], units=units)
            zoom.set_xlabel("x1")
            zoom.set_ylabel("x2")
        zoom.set_title(f"component {i + 1}: posterior of mu (zoom)")
    if true and y.shape[1] > 1:
        ax.scatter(true["mu"][:, 0], true["mu"][:, 1], **TRUTH_STYLE, label="truth")
    _data_limits(ax, y, {"posterior draws": mu})
    ax.set_title(f"{method_label(fit)}: posterior draws of mu over the data")
    handles, labels = _component_handles(k)
    if true:
        handles.append(plt.Line2D([], [], marker="X", color="black", linestyle=""))
        labels.append("true mean")
    _legend_below(fig, handles, labels)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_weights(fits: Mapping[str, MethodFit], truth: Mapping[str, Any]) -> Figure:
    """Figure 3: mixture weights per method: posterior mean and 94% HDI, truth dashed."""
    methods = list(fits)
    ref = reference_method(fits)
    k = fits[methods[0]].posterior.sizes["component"]
    colors = component_colors(k)
    styles = method_styles(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(methods) + 2), 4.8))
    width = 0.7 / k
    for j, method in enumerate(methods):
        theta = _draws(fits[method], "theta")
        for i in range(k):
            x = j + (i - (k - 1) / 2) * width
            mean = theta[:, i].mean()
            if len(theta) > 1:
                lo, hi = az.hdi(theta[:, i], hdi_prob=0.94)
                ax.errorbar(
                    x,
                    mean,
                    yerr=[[mean - lo], [hi - mean]],
                    color=colors[i],
                    capsize=4,
                    linewidth=2,
                )
            ax.scatter(x, mean, color=colors[i], marker=styles[method]["marker"], s=60, zorder=4)
    true = aligned_truth(truth, fits[ref].mean_mu()) if ref else {}
    if true:
        for i in range(k):
            ax.axhline(true["theta"][i], color=colors[i], linestyle="--", linewidth=1)
    ax.set_xticks(
        range(len(methods)), [method_label(fits[m]).replace(" (", "\n(") for m in methods]
    )
    ax.set_ylabel("weight theta")
    ax.set_ylim(0, 1)
    ax.set_title(
        "Mixture weights: posterior mean and 94% HDI" + (" (dashed: truth)" if true else "")
    )
    handles, labels = _component_handles(k)
    ax.legend(handles, labels, loc="best")
    fig.tight_layout()
    return fig


def plot_elbo(fits: Mapping[str, MethodFit]) -> Figure:
    """Figure 4: ELBO traces of the ADVI fits with the convergence point marked."""
    advi = [f for f in fits.values() if f.algorithm == "advi"]
    fig, axes = plt.subplots(
        1, max(1, len(advi)), figsize=(5.5 * max(1, len(advi)), 4.2), squeeze=False
    )
    for ax, fit in zip(axes[0], advi, strict=False):
        elbo = fit.elbo if fit.elbo is not None else pd.DataFrame()
        ax.set_title(f"{method_label(fit)} ({fit.info.get('settings', {}).get('variational', '')})")
        ax.set_xlabel("iteration")
        ax.set_ylabel("ELBO")
        if elbo.empty:
            ax.text(0.5, 0.5, "no ELBO trace recorded", ha="center", transform=ax.transAxes)
            continue
        ax.plot(elbo["iteration"], elbo["elbo"], marker=".", color="#333333")
        notes = elbo["notes"].fillna("").astype(str)
        done = elbo[notes.str.contains("CONVERGED")]
        stop = done.iloc[0] if len(done) else elbo.iloc[-1]
        label = (
            f"converged at {int(stop['iteration'])} ({notes[stop.name].lower()})"
            if len(done)
            else f"stopped at {int(stop['iteration'])} without converging"
        )
        ax.axvline(
            stop["iteration"], color="#D55E00" if not len(done) else "#009E73", linestyle="--"
        )
        ax.scatter(
            stop["iteration"],
            stop["elbo"],
            s=80,
            zorder=5,
            color="#D55E00" if not len(done) else "#009E73",
            label=label,
        )
        tail = elbo["elbo"].to_numpy()[len(elbo) // 5 :]
        if len(tail) > 1 and np.ptp(tail) > 0:
            lo, hi = tail.min(), tail.max()
            ax.set_ylim(lo - 0.5 * (hi - lo), hi + 0.3 * (hi - lo))
        ax.legend(loc="lower right")
    if not advi:
        axes[0, 0].text(0.5, 0.5, "no ADVI fit", ha="center", transform=axes[0, 0].transAxes)
    fig.tight_layout()
    return fig


def _vi_component_1d(
    overview: Axes,
    zoom: Axes,
    q: np.ndarray,
    nuts: np.ndarray | None,
    color: str,
    method: str,
    i: int,
) -> None:
    """Component `i`'s q(mu) in 1-D: a normal density over the data and over NUTS in its zoom."""
    mean, sd = q[:, 0].mean(), q[:, 0].std()
    twin = overview.twinx()
    grid = np.linspace(mean - 4 * sd, mean + 4 * sd, 200)
    density = stats.norm.pdf(grid, mean, sd)
    twin.plot(grid, density, color=color)
    twin.set_yticks([])
    if nuts is not None:
        zoom.hist(nuts[:, 0], bins=50, density=True, color=color, alpha=0.3, label="NUTS")
    zoom.plot(grid, density, color=color, linewidth=2, label=method)
    zoom.set_xlabel(f"mu[{i + 1}, x1]")
    zoom.legend(loc="upper right", fontsize="small")


def _vi_component_2d(
    overview: Axes,
    zoom: Axes,
    q: np.ndarray,
    nuts: np.ndarray | None,
    color: str,
    units: np.ndarray | None,
) -> None:
    """A component's q(mu) in 2-D: 1-3 sd contours over NUTS draws, on the overview and zoom."""
    mean, cov = q[:, :2].mean(axis=0), np.cov(q[:, :2], rowvar=False)
    box = mean[None] + 3.2 * np.sqrt(np.diag(cov))[None] * [[1, 1], [-1, -1]]
    draws = _thin(nuts[:, :2]) if nuts is not None else None
    for ax in (overview, zoom):
        if draws is not None:
            ax.scatter(draws[:, 0], draws[:, 1], s=5, c="black", alpha=0.2, linewidths=0, zorder=3)
        _ellipse(ax, mean, cov, color, zorder=4)
    if nuts is None:
        _zoom_limits(zoom, box, units=units)
    elif _zoom_limits(zoom, nuts[:, :2], box, far=40.0, units=units):
        _note(
            zoom,
            f"q off scale:\nmean ({mean[0]:.3g}, {mean[1]:.3g})\n"
            f"sd ({np.sqrt(cov[0, 0]):.3g}, {np.sqrt(cov[1, 1]):.3g})",
        )
    zoom.set_xlabel("x1")
    zoom.set_ylabel("x2")


def plot_vi_contours(
    y: np.ndarray, fits: Mapping[str, MethodFit], *, max_points: int = 5000
) -> Figure:
    """Figure 5: each VI method's posterior of the component means as normal contours (1, 2,
    3 sd of its draws), over the data and NUTS draws; one row per method, zooms per component."""
    ref = reference_method(fits)
    nuts = fits[ref] if ref and fits[ref].algorithm == "nuts" else None
    nuts_mu = _draws(nuts, "mu") if nuts else None
    vi = [f for f in fits.values() if f.algorithm in VI_ALGORITHMS]
    k = next(iter(fits.values())).posterior.sizes["component"]
    colors = component_colors(k)
    fig, axes = _overview_and_zooms(max(1, len(vi)), k)
    units = axis_units(y)
    for row, fit in zip(axes, vi, strict=False):
        mu = _draws(fit, "mu")
        draw_data(row[0], y, max_points=max_points)
        row[0].set_title(f"{method_label(fit)}: q(mu) over the data")
        for i in range(k):
            nuts_i = nuts_mu[:, i] if nuts_mu is not None else None
            if y.shape[1] == 1:
                _vi_component_1d(row[0], row[i + 1], mu[:, i], nuts_i, colors[i], fit.method, i)
            else:
                _vi_component_2d(row[0], row[i + 1], mu[:, i], nuts_i, colors[i], units)
            row[i + 1].set_title(f"component {i + 1} (zoom)")
        _data_limits(row[0], y, {f"q(mu[{i + 1}])": mu[:, i].mean(axis=0)[None] for i in range(k)})
    if not vi:
        axes[0, 0].text(0.5, 0.5, "no VI fit", ha="center", transform=axes[0, 0].transAxes)
    handles, labels = _component_handles(k)
    if nuts is not None:
        handles.append(plt.Line2D([], [], color="black", marker=".", linestyle="", alpha=0.5))
        labels.append(f"{nuts.method} draws")
    _legend_below(fig, handles, labels)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _mark_mean(
    overview: Axes,
    zoom: Axes,
    mean: np.ndarray,
    sd: np.ndarray,
    row: int,
    style: Mapping[str, str],
    color: str,
    *,
    one_d: bool,
) -> None:
    """One method's mean of a component on the overview and, ± 1 sd, in its zoom (1-D: at `row`)."""
    if one_d:
        overview.axvline(mean[0], color=color, linestyle=style["linestyle"])
        zoom.errorbar(mean[0], row, xerr=sd[0], fmt=style["marker"], color=color, capsize=3)
        return
    overview.scatter(
        mean[0], mean[1], marker=style["marker"], c=color, s=60, edgecolors="black", zorder=5
    )
    zoom.errorbar(
        mean[0],
        mean[1],
        xerr=sd[0],
        yerr=sd[1],
        fmt=style["marker"],
        color=color,
        capsize=3,
        markersize=8,
        markeredgecolor="black",
        zorder=4,
    )


def _finish_means_zoom(
    zoom: Axes,
    i: int,
    spans: Mapping[str, np.ndarray],
    ref: str | None,
    true_mu: np.ndarray | None,
    *,
    one_d: bool,
    units: np.ndarray | None,
) -> None:
    """Component `i`'s zoom: title, truth, labels; 2-D: limits around `ref` (in `units`), far-off
    ones noted."""
    methods = list(spans)
    zoom.set_title(f"component {i + 1}: mean ± 1 sd")
    if one_d:
        zoom.set_yticks(range(len(methods)), methods)
        if true_mu is not None:
            zoom.axvline(true_mu[0], color="black", linestyle="--")
        zoom.set_xlabel("x1")
        return
    if true_mu is not None:
        zoom.scatter(*true_mu[:2], **TRUTH_STYLE)
    zoom.set_xlabel("x1")
    zoom.set_ylabel("x2")
    anchor = spans[ref][:, :2] if ref else np.zeros((1, 2))
    center = anchor.mean(axis=0)
    anchor = center + 3 * (anchor - center)
    others = [span[:, :2] for span in spans.values()]
    if true_mu is not None:
        others.append(true_mu[:2][None])
    names = [*methods, "truth"]
    left_out = _zoom_limits(zoom, anchor, *others, far=10.0, units=units)
    if left_out:
        _note(zoom, "off scale: " + ", ".join(names[j] for j in left_out))


def _means_legend(
    fig: Figure,
    fits: Mapping[str, MethodFit],
    styles: Mapping[str, Mapping[str, str]],
    k: int,
    *,
    truth: bool,
) -> None:
    """The legend of the posterior means: methods' markers, components' colours, the truth."""
    handles = [
        plt.Line2D([], [], marker=styles[m]["marker"], color="#555555", linestyle="") for m in fits
    ]
    labels = [method_label(fit) for fit in fits.values()]
    ch, cl = _component_handles(k)
    handles, labels = handles + ch, labels + cl
    if truth:
        handles.append(plt.Line2D([], [], marker="X", color="black", linestyle=""))
        labels.append("true mean")
    _legend_below(fig, handles, labels)


def plot_posterior_means(
    y: np.ndarray,
    fits: Mapping[str, MethodFit],
    truth: Mapping[str, Any],
    *,
    max_points: int = 5000,
) -> Figure:
    """Figure 6: the (possibly large) data as a density with every method's posterior means;
    zooms per component show mean ± 1 sd per method against the truth."""
    methods = list(fits)
    ref = reference_method(fits)
    k = fits[methods[0]].posterior.sizes["component"]
    colors = component_colors(k)
    styles = method_styles(methods)
    true = aligned_truth(truth, fits[ref].mean_mu()) if ref else {}
    fig, axes = _overview_and_zooms(1, k, size=4.2)
    overview, zooms = axes[0, 0], axes[0, 1:]
    draw_data(overview, y, max_points=max_points)
    overview.set_title(f"n = {len(y):,}: posterior means of every method")
    one_d = y.shape[1] == 1
    boxes: dict[str, np.ndarray] = {}  # method -> (K, 2, D): mean - sd and mean + sd
    for j, method in enumerate(methods):
        mu = _draws(fits[method], "mu")
        mean, sd = mu.mean(axis=0), mu.std(axis=0)
        boxes[method] = np.stack([mean - sd, mean + sd], axis=1)
        for i, zoom in enumerate(zooms):
            _mark_mean(overview, zoom, mean[i], sd[i], j, styles[method], colors[i], one_d=one_d)
    units = axis_units(y)
    for i, zoom in enumerate(zooms):
        true_mu = true["mu"][i] if true else None
        spans = {m: boxes[m][i] for m in methods}
        _finish_means_zoom(zoom, i, spans, ref, true_mu, one_d=one_d, units=units)
        if true_mu is not None and not one_d:
            overview.scatter(*true_mu[:2], **TRUTH_STYLE)
    if not one_d:
        _data_limits(overview, y, {m: boxes[m].mean(axis=1) for m in methods if m in boxes})
    _means_legend(fig, fits, styles, k, truth=bool(true))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_marginals(fits: Mapping[str, MethodFit]) -> Figure:
    """Figure 7: NUTS vs each VI method, side by side: one row per parameter, one column per
    VI method; NUTS filled, the approximation as a line, MAP (if any) dotted."""
    ref = reference_method(fits)
    nuts = fits[ref] if ref else None
    others = [f for f in fits.values() if f.algorithm in VI_ALGORITHMS]
    maps = [f for f in fits.values() if f.algorithm == "optimize"]
    k = nuts.posterior.sizes["component"] if nuts else 1
    colors = component_colors(k)
    params = _scalar_parameters(nuts) if nuts else []
    cols = max(1, len(others))
    fig, axes = plt.subplots(
        max(1, len(params)),
        cols,
        figsize=(3.6 * cols + 0.5, 2.3 * max(1, len(params)) + 0.5),
        squeeze=False,
    )
    for r, (name, index, comp) in enumerate(params):
        base = nuts.posterior[index[0]].values[(..., *index[1:])].ravel()
        for c, fit in enumerate(others):
            ax = axes[r, c]
            color = colors[comp - 1]
            ax.hist(
                base,
                bins=50,
                density=True,
                histtype="stepfilled",
                color=color,
                alpha=0.35,
                label=nuts.method,
            )
            values = fit.posterior[index[0]].values[(..., *index[1:])].ravel()
            _density_line(ax, values, color, linewidth=2, label=fit.method)
            for point in maps:
                ax.axvline(
                    point.posterior[index[0]].values[(..., *index[1:])].ravel()[0],
                    color="black",
                    linestyle=":",
                    label=point.method,
                )
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{nuts.method} vs {method_label(fit)}", fontsize="medium")
            if c == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.legend(fontsize="x-small", loc="upper right")
    if not params or not others:
        axes[0, 0].text(
            0.5, 0.5, "needs a NUTS and a VI fit", ha="center", transform=axes[0, 0].transAxes
        )
    fig.tight_layout()
    return fig


def _scalar_parameters(fit: MethodFit) -> list[tuple[str, tuple[Any, ...], int]]:
    """(label, (var, component index, [dim index]), component) for every scalar parameter."""
    out: list[tuple[str, tuple[Any, ...], int]] = []
    post = fit.posterior
    dims = list(post["dim"].values)
    for i, comp in enumerate(post["component"].values):
        for j, dim in enumerate(dims):
            out.append((f"mu[{comp}, {dim}]", ("mu", i, j), int(comp)))
    if post.sizes["component"] > 1:  # K = 1: theta is the constant 1
        for i, comp in enumerate(post["component"].values):
            out.append((f"theta[{comp}]", ("theta", i), int(comp)))
    return out


def _varied(fit: MethodFit) -> list[str]:
    """The variables of the trace and rank plots: mu and theta, mu only when K = 1."""
    return ["mu", "theta"] if fit.posterior.sizes["component"] > 1 else ["mu"]


def plot_nuts_trace(fit: MethodFit) -> Figure:
    """ArviZ trace plot of the NUTS draws, one row per parameter element (colours: chains)."""
    with az.rc_context({"plot.max_subplots": 200}):
        axes = az.plot_trace(
            az.InferenceData(posterior=fit.posterior), var_names=_varied(fit), compact=False
        )
    fig = np.ravel(axes)[0].figure
    fig.suptitle(f"{method_label(fit)}: trace (colours are chains)", y=1.0)
    fig.tight_layout()
    return fig


def plot_nuts_rank(fit: MethodFit) -> Figure:
    """ArviZ rank plots of the NUTS draws (uniform ranks across chains mean good mixing)."""
    with az.rc_context({"plot.max_subplots": 200}):
        axes = az.plot_rank(az.InferenceData(posterior=fit.posterior), var_names=_varied(fit))
    fig = np.ravel(axes)[0].figure
    fig.suptitle(f"{method_label(fit)}: rank plots per chain", y=1.0)
    fig.tight_layout()
    return fig


# --- Dispatch from the workflow ----------------------------------------------------------------


def _coordinate_names(dataset: Mapping[str, Any], d: int) -> list[str]:
    """The coordinates' names recorded in a dataset's JSON, else x1..xD."""
    return list(dataset.get("coordinates") or coordinate_names(d))


def name_axes(fig: Figure, names: Sequence[str]) -> None:
    """Put the data's coordinate names on the axes labels drawn with x1..xD."""

    def rename(label: str) -> str:
        return re.sub(
            r"\bx(\d+)\b",
            lambda m: names[int(m.group(1)) - 1] if int(m.group(1)) <= len(names) else m.group(0),
            label,
        )

    for ax in fig.axes:
        ax.set_xlabel(rename(ax.get_xlabel()))
        ax.set_ylabel(rename(ax.get_ylabel()))


Builder = Callable[[np.ndarray, dict[str, MethodFit], dict[str, Any], int], Figure]

FIGURES: dict[str, Builder] = {
    "data": lambda y, fits, truth, mp: plot_data(y, truth, max_points=mp),
    "nuts_mu": lambda y, fits, truth, mp: plot_nuts_means(
        y, fits[reference_method(fits)], truth, max_points=mp
    ),
    "weights": lambda y, fits, truth, mp: plot_weights(fits, truth),
    "elbo": lambda y, fits, truth, mp: plot_elbo(fits),
    "vi_contours": lambda y, fits, truth, mp: plot_vi_contours(y, fits, max_points=mp),
    "posterior_means": lambda y, fits, truth, mp: plot_posterior_means(
        y, fits, truth, max_points=mp
    ),
    "marginals": lambda y, fits, truth, mp: plot_marginals(fits),
    "density": lambda y, fits, truth, mp: plot_fitted_density(
        y, fits[reference_method(fits)].posterior, max_points=mp
    ),
    "ppc": lambda y, fits, truth, mp: plot_ppc(
        y,
        {m: {v: f.posterior[v].values for v in f.posterior.data_vars} for m, f in fits.items()},
        {m: int(f.info["seed"]) for m, f in fits.items()},
        next(
            (
                c["threshold"]
                for f in fits.values()
                for c in f.diagnostics.get("checks", [])
                if c["name"] == "ppc_z_max"
            ),
            5.0,
        ),
    ),
    "trace": lambda y, fits, truth, mp: plot_nuts_trace(next(iter(fits.values()))),
    "rank": lambda y, fits, truth, mp: plot_nuts_rank(next(iter(fits.values()))),
}


def _draw(
    kind: str,
    output: str | Path,
    y: np.ndarray,
    fits: Mapping[str, MethodFit],
    truth: Mapping[str, Any],
    settings: Mapping[str, Any],
    names: Sequence[str],
) -> None:
    """Draw figure `kind` (a key of :data:`FIGURES`) of `fits`, aligned, with the data's
    coordinate `names` on its axes, and save it."""
    fig = FIGURES[kind](y, align_components(fits), truth, settings.get("max_points", 5000))
    name_axes(fig, names)
    save_figure(fig, output, dpi=settings.get("dpi", 120))
    logger.info("wrote %s", output)


def make_figure(
    name: str,
    output: str | Path,
    *,
    data: str | Path | None = None,
    truth: str | Path | None = None,
    posteriors: Mapping[str, str | Path] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Build figure `name` (a key of :data:`FIGURES`) from the workflow's files and save it."""
    y = load_dataset(data, truth).y if data else np.empty((0, 2))
    truth_values = read_json(truth) if truth else {}
    names = _coordinate_names(truth_values, y.shape[1])
    _draw(name, output, y, load_fits(posteriors or {}), truth_values, dict(settings or {}), names)


def make_figures(
    figures: Mapping[str, tuple[str, Sequence[str]]],
    folder: str | Path,
    *,
    data: str | Path,
    truth: str | Path,
    posteriors: Mapping[str, str | Path],
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Draw every figure of one dataset into `folder`, reading the data and fits once.

    `figures` maps a file name (``<name>.png`` is written) to the figure's kind (a key of
    :data:`FIGURES`) and the methods it shows. The folder appears only once all are drawn.
    """
    y = load_dataset(data, truth).y
    truth_values = read_json(truth)
    names = _coordinate_names(truth_values, y.shape[1])
    fits = load_fits(posteriors)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for name, (kind, methods) in figures.items():
            chosen = {method: fits[method] for method in methods}
            _draw(kind, tmp / f"{name}.png", y, chosen, truth_values, dict(settings or {}), names)
