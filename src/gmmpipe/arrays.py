"""Arrays of posterior draws: the component parameters flattened over chains, evenly thinned,
and the covariance matrices they imply. The lowest floor: numpy only, no gmmpipe module.

The parameters go by their names in posterior.nc: mu (..., K, D), theta (..., K) and, when
fitted, sigma (..., K, D) and Omega (..., K, D, D), with Sigma_k = diag(sigma_k) Omega_k
diag(sigma_k).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

COMPONENT_PARAMETERS = ("mu", "theta", "sigma", "Omega")


def flat_params(posterior: Any) -> dict[str, np.ndarray]:
    """The component parameters of a posterior (an InferenceData posterior, or any mapping of
    (chain, draw, ...) arrays) with chains and draws merged: (S, ...)."""
    out = {}
    for name in COMPONENT_PARAMETERS:
        if name in posterior:
            value = np.asarray(posterior[name])
            out[name] = value.reshape(-1, *value.shape[2:])
    return out


def even_index(total: int, n: int) -> np.ndarray:
    """Indices of at most `n` of `total` draws, evenly spaced from the first to the last."""
    return np.unique(np.linspace(0, total - 1, min(total, n)).round().astype(int))


def thin(params: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """At most `n` evenly spaced draws (leading axis) of every array of `params`."""
    total = len(next(iter(params.values())))
    keep = even_index(total, n)
    return {name: np.asarray(value)[keep] for name, value in params.items()}


def covariances(params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Sigma_k (..., K, D, D) of the draws (..., K, D) in `params`: the identity without sigma,
    diagonal without Omega."""
    mu = np.asarray(params["mu"])
    identity = np.broadcast_to(np.eye(mu.shape[-1]), (*mu.shape, mu.shape[-1]))
    if "sigma" not in params:
        return identity
    sigma = np.asarray(params["sigma"])
    omega = np.asarray(params["Omega"]) if "Omega" in params else identity
    return sigma[..., :, None] * omega * sigma[..., None, :]
