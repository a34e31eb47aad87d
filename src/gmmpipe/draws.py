"""Draws of one fit: reading CmdStan's CSV output and putting every draw in one labelling.

The lowest floor of the fitted-draws code: fit, diagnostics, and every consumer of the draws
import from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gmmpipe.relabel import (
    apply_permutations,
    component_features,
    match_to_reference,
    relabel_permutations,
)

#: CmdStan's ``sig_figs`` for every run: its default, 6 significant digits, rounds a mean near
#: 10 000 to 0.1, coarser than its posterior sd on such data.
SIG_FIGS = 18


def chains_or_halves(value: np.ndarray) -> np.ndarray:
    """(chain, draw, ...) draws as they are, or a single chain as two half-length chains: what
    R-hat needs, since it compares chains."""
    if value.shape[0] > 1:
        return value
    half = value.shape[1] // 2
    return np.stack([value[0, :half], value[0, half : 2 * half]])


SAMPLE_STATS = {  # CmdStan column -> ArviZ name
    "lp__": "lp",
    "accept_stat__": "acceptance_rate",
    "stepsize__": "step_size",
    "treedepth__": "tree_depth",
    "n_leapfrog__": "n_steps",
    "divergent__": "diverging",
    "energy__": "energy",
    "log_p__": "log_p",
    "log_g__": "log_g",
    "log_q__": "log_q",  # Laplace: the normal approximation's log density
    "lp_approx__": "lp_approx",
}


@dataclass
class Draws:
    """Parameter draws (chains x draws x ...) and per-draw statistics of one fit."""

    mu: np.ndarray  # (chain, draw, K, D)
    theta: np.ndarray  # (chain, draw, K)
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # (chain, draw)
    extra: dict[str, Any] = field(default_factory=dict)
    sigma: np.ndarray | None = None  # (chain, draw, K, D) scales; diagonal, full, tied
    omega: np.ndarray | None = None  # (chain, draw, K, D, D) correlations; full and tied

    def components(self) -> dict[str, np.ndarray]:
        """The per-component parameters present, by their Stan names (``Omega`` = L L')."""
        named = {"mu": self.mu, "theta": self.theta, "sigma": self.sigma, "Omega": self.omega}
        return {name: value for name, value in named.items() if value is not None}


def read_draws(csv_files: list[Path], algorithm: str, k: int, d: int) -> Draws:
    """Read CmdStan output CSVs into :class:`Draws` (works without CmdStan, e.g. on fixtures).

    For ADVI the first row (the variational mean) is kept apart in ``extra["mean"]``.
    """
    frames = [pd.read_csv(f, comment="#") for f in sorted(csv_files)]
    extra: dict[str, Any] = {}
    if algorithm == "advi":
        (frame,) = frames
        mean = _component_parameters([frame.iloc[[0]]], k, d)
        extra["mean"] = {name: value[0, 0].tolist() for name, value in mean.items()}
        frames = [frame.iloc[1:]]
    n_draws = min(len(f) for f in frames)
    frames = [f.iloc[:n_draws] for f in frames]
    params = _component_parameters(frames, k, d)
    stats = {
        name: np.stack([f[col].to_numpy(dtype=float) for f in frames])
        for col, name in SAMPLE_STATS.items()
        if col in frames[0].columns
    }
    return Draws(
        mu=params["mu"],
        theta=params["theta"],
        stats=stats,
        extra=extra,
        sigma=params.get("sigma"),
        omega=params.get("Omega"),
    )


def _component_parameters(frames: list[pd.DataFrame], k: int, d: int) -> dict[str, np.ndarray]:
    """mu, theta and, when the fit has them, sigma and Omega (from L_Omega), (chain, draw, ...).

    A tied covariance's one sigma and L_Omega are repeated for every component."""
    out = {
        "mu": np.stack([_columns(f, "mu", (k, d)) for f in frames]),
        "theta": np.stack([_columns(f, "theta", (k,)) for f in frames]),
    }
    k_sigma = k if f"sigma.{k}.1" in frames[0].columns else 1
    repeat = np.zeros(k, dtype=int) if k_sigma == 1 else np.arange(k)
    if "sigma.1.1" in frames[0].columns:
        out["sigma"] = np.stack([_columns(f, "sigma", (k_sigma, d)) for f in frames])[:, :, repeat]
    if "L_Omega.1.1.1" in frames[0].columns:
        chol = np.stack([_columns(f, "L_Omega", (k_sigma, d, d)) for f in frames])[:, :, repeat]
        omega = chol @ np.swapaxes(chol, -1, -2)
        scale = np.sqrt(np.diagonal(omega, axis1=-2, axis2=-1))  # 1 up to the CSV's rounding
        out["Omega"] = omega / (scale[..., :, None] * scale[..., None, :])
    return out


def _columns(frame: pd.DataFrame, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Columns ``name.i.j`` of a CmdStan CSV as an array (rows, *shape), in row-major order."""
    indices = np.ndindex(*shape)
    cols = [".".join([name, *(str(i + 1) for i in idx)]) for idx in indices]
    return frame[cols].to_numpy(dtype=float).reshape((len(frame), *shape))


def relabel(draws: Draws) -> Draws:
    """Put every draw in one common labelling (see :mod:`gmmpipe.relabel`)."""
    k = draws.mu.shape[2]
    lp = draws.stats.get("lp")
    if lp is None or np.all(lp == 0):  # ADVI writes lp__ = 0, Laplace only log_p__
        lp = draws.stats.get("log_p", lp)
    components = draws.components()
    flat = {name: value.reshape(-1, *value.shape[2:]) for name, value in components.items()}
    perms = relabel_permutations(
        flat["mu"],
        flat["theta"],
        None if lp is None else lp.reshape(-1),
        sigma=flat.get("sigma"),
        omega=flat.get("Omega"),
    )
    permuted = {
        name: apply_permutations(value, perms).reshape(components[name].shape)
        for name, value in flat.items()
    }
    extra = dict(draws.extra)
    extra["relabelled_draws"] = int((perms != np.arange(k)).any(axis=1).sum())
    if "mean" in extra:
        extra["mean"] = _relabel_point(extra["mean"], permuted)
    return Draws(
        mu=permuted["mu"],
        theta=permuted["theta"],
        stats=draws.stats,
        extra=extra,
        sigma=permuted.get("sigma"),
        omega=permuted.get("Omega"),
    )


def _relabel_point(point: Mapping[str, Any], draws: Mapping[str, np.ndarray]) -> dict:
    """Relabel a point estimate (the ADVI mean) to match the relabelled draws (all parameters)."""
    flat = {name: value.reshape(-1, *value.shape[2:]) for name, value in draws.items()}
    reference = component_features(flat["mu"], flat["theta"], flat.get("sigma"), flat.get("Omega"))
    values = {name: np.asarray(point[name])[None] for name in flat}
    features = component_features(
        values["mu"], values["theta"], values.get("sigma"), values.get("Omega")
    )
    scale = np.maximum(reference.std(axis=0), 1e-9)
    (perm,) = match_to_reference(features, reference.mean(axis=0), scale)
    return {name: np.asarray(value)[perm].tolist() for name, value in point.items()}
