"""Label switching: relabel draws to one common labelling, then order components by weight.

Strategy (recorded in every fit as ``labelling``): the mixture likelihood is invariant to
permuting the components, so chains (or Pathfinder paths) may settle in different labellings.
Every component of every draw is described by all of its parameters -- the mean, the log
weight and, when fitted, the log scales and the Fisher-z transformed correlations -- and each
draw's components are matched to a reference labelling by the permutation that minimizes the
standardized squared distance to the reference components. The reference starts at the draw
with the highest log density (distances standardized by each feature's spread over all draws
and components); it is then re-estimated as the per-component mean and standard deviation of
the relabelled draws until no draw changes (a Stephens/Celeux-style fixed point). So two
components at the same location but with different scales are told apart by their scales.
Finally, component 1 is the one with the largest mean weight, component 2 the next, and so on.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
from scipy.optimize import linear_sum_assignment

logger = logging.getLogger(__name__)

STRATEGY = (
    "per-draw relabelling to a common reference by the permutation minimizing the standardized "
    "squared distance over all component parameters (means, log weights, log scales, Fisher-z "
    "correlations; iterated to a fixed point), components then ordered by decreasing mean weight"
)
_MAX_ENUMERATED_K = 6
_TINY = 1e-12


def component_features(
    mu: np.ndarray,
    theta: np.ndarray,
    sigma: np.ndarray | None = None,
    omega: np.ndarray | None = None,
) -> np.ndarray:
    """The parameters of each component on unbounded scales, (S, K, F): mu, log theta and,
    when given, log sigma and atanh of Omega's lower triangle."""
    parts = [mu, np.log(np.clip(theta, _TINY, None))[..., None]]
    if sigma is not None:
        parts.append(np.log(np.clip(sigma, _TINY, None)))
    if omega is not None and omega.shape[-1] > 1:
        rows, cols = np.tril_indices(omega.shape[-1], k=-1)
        parts.append(np.arctanh(np.clip(omega[..., rows, cols], -0.999999, 0.999999)))
    return np.concatenate(parts, axis=-1)


def match_to_reference(
    features: np.ndarray, reference: np.ndarray, scale: np.ndarray | None = None
) -> np.ndarray:
    """For each draw, the permutation `p` minimizing
    sum_k sum_f ((features[p[k], f] - reference[k, f]) / scale[k, f])^2 (scale 1 if None)."""
    n_draws, k, _ = features.shape
    weight = 1.0 / np.square(scale) if scale is not None else np.ones_like(reference)
    # cost[s, j, k]: distance of draw s's component j to reference component k
    diff = features[:, :, None, :] - reference[None, None, :, :]
    cost = (diff**2 * weight[None, None]).sum(axis=-1)
    if k <= _MAX_ENUMERATED_K:
        perms = np.array(list(itertools.permutations(range(k))))
        totals = cost[:, perms, np.arange(k)].sum(axis=-1)
        return perms[totals.argmin(axis=1)]
    out = np.empty((n_draws, k), dtype=int)
    for s in range(n_draws):
        rows, cols = linear_sum_assignment(cost[s])
        out[s, cols] = rows
    return out


def relabel_permutations(
    mu: np.ndarray,
    theta: np.ndarray,
    lp: np.ndarray | None = None,
    *,
    sigma: np.ndarray | None = None,
    omega: np.ndarray | None = None,
    max_iter: int = 50,
) -> np.ndarray:
    """Permutations that put every draw in one common labelling.

    Parameters
    ----------
    mu : array (S, K, D) of component means, draws flattened over chains.
    theta : array (S, K) of weights.
    lp : optional array (S,) of log densities; the best draw seeds the reference.
    sigma : optional array (S, K, D) of component scales.
    omega : optional array (S, K, D, D) of component correlation matrices.

    Returns
    -------
    perms : int array (S, K); draw s's new component k is its old component ``perms[s, k]``.
    """
    n_draws, k, _ = mu.shape
    if k == 1:
        return np.zeros((n_draws, 1), dtype=int)
    features = component_features(mu, theta, sigma, omega)
    finite = np.isfinite(features).all(axis=(1, 2))
    if not finite.all():  # such a draw would make every scale and cost NaN
        logger.warning(
            "%d of %d draws have non-finite parameters; they keep their own labelling",
            int((~finite).sum()),
            n_draws,
        )
        perms = np.tile(np.arange(k), (n_draws, 1))
        if finite.any():
            perms[finite] = relabel_permutations(
                mu[finite],
                theta[finite],
                None if lp is None else lp[finite],
                sigma=None if sigma is None else sigma[finite],
                omega=None if omega is None else omega[finite],
                max_iter=max_iter,
            )
        return perms
    spread = features.reshape(-1, features.shape[-1]).std(axis=0)
    floor = np.maximum(spread, _TINY) * 1e-3
    scale = np.tile(np.maximum(spread, _TINY), (k, 1))
    start = int(np.nanargmax(lp)) if lp is not None and np.isfinite(lp).any() else 0
    reference = features[start]
    perms = np.tile(np.arange(k), (n_draws, 1))
    for _ in range(max_iter):
        new = match_to_reference(features, reference, scale)
        relabelled = apply_permutations(features, new)
        reference = relabelled.mean(axis=0)
        if n_draws > 1:
            scale = np.maximum(relabelled.std(axis=0), floor)
        if np.array_equal(new, perms):
            break
        perms = new
    order = np.argsort(-np.take_along_axis(theta, perms, axis=1).mean(axis=0), kind="stable")
    perms = perms[:, order]
    switched = int((perms != np.arange(k)).any(axis=1).sum())
    if switched:
        logger.info("relabelled %d of %d draws", switched, n_draws)
    return perms


def apply_permutations(values: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Permute the component axis (axis 1) of `values` (S, K, ...) draw by draw."""
    index = perms.reshape(perms.shape + (1,) * (values.ndim - 2))
    return np.take_along_axis(values, index, axis=1)
