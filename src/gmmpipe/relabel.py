"""Label switching: relabel draws to one common labelling, then order components by weight.

Strategy (recorded in every fit as ``labelling``): the mixture likelihood is invariant to
permuting the components, so chains (or Pathfinder paths) may settle in different labellings.
Each draw's components are matched to a reference labelling by the permutation that minimizes
the squared distance between its component means and the reference means; the reference
starts at the draw with the highest log density and is re-estimated as the mean of the
relabelled draws until no draw changes (a Stephens-style fixed point). Finally, component 1 is
the one with the largest mean weight, component 2 the next, and so on.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
from scipy.optimize import linear_sum_assignment

logger = logging.getLogger(__name__)

STRATEGY = (
    "per-draw relabelling to a common reference by the permutation minimizing the squared "
    "distance between component means (iterated to a fixed point), components then ordered by "
    "decreasing mean weight"
)
_MAX_ENUMERATED_K = 6


def match_to_reference(mu: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each draw, the permutation `p` minimizing sum_k |mu[p[k]] - reference[k]|^2."""
    n_draws, k, _ = mu.shape
    # cost[s, j, k]: squared distance of draw s's component j to reference component k
    cost = ((mu[:, :, None, :] - reference[None, None, :, :]) ** 2).sum(axis=-1)
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
    mu: np.ndarray, theta: np.ndarray, lp: np.ndarray | None = None, *, max_iter: int = 50
) -> np.ndarray:
    """Permutations that put every draw in one common labelling.

    Parameters
    ----------
    mu : array (S, K, D) of component means, draws flattened over chains.
    theta : array (S, K) of weights.
    lp : optional array (S,) of log densities; the best draw seeds the reference.

    Returns
    -------
    perms : int array (S, K); draw s's new component k is its old component ``perms[s, k]``.
    """
    n_draws, k, _ = mu.shape
    if k == 1:
        return np.zeros((n_draws, 1), dtype=int)
    start = int(np.nanargmax(lp)) if lp is not None and np.isfinite(lp).any() else 0
    reference = mu[start]
    perms = np.tile(np.arange(k), (n_draws, 1))
    for _ in range(max_iter):
        new = match_to_reference(mu, reference)
        reference = np.take_along_axis(mu, new[:, :, None], axis=1).mean(axis=0)
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
