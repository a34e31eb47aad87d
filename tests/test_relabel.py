"""Relabelling on all component parameters: synthetic draws with known permutations."""

from __future__ import annotations

import numpy as np
import pytest

from gmmpipe.draws import Draws, relabel
from gmmpipe.relabel import apply_permutations, match_to_reference, relabel_permutations


def _scrambled(rng, n, mu, theta, sigma=None, omega=None, *, sd=0.03):
    """Draws around the given components, each draw's components in a random order."""
    k = len(theta)
    draws = {
        "mu": mu + sd * rng.standard_normal((n, *mu.shape)),
        "theta": rng.dirichlet(np.asarray(theta) * 2000, size=n),
    }
    if sigma is not None:
        draws["sigma"] = sigma * np.exp(sd * rng.standard_normal((n, *sigma.shape)))
    if omega is not None:
        draws["omega"] = np.repeat(omega[None], n, axis=0)
    truth = np.array([rng.permutation(k) for _ in range(n)])  # draw s shows component truth[s, j]
    inverse = np.argsort(truth, axis=1)
    scrambled = {name: apply_permutations(value, truth) for name, value in draws.items()}
    return draws, scrambled, inverse


def test_narrow_and_wide_components_at_the_same_location():
    rng = np.random.default_rng(3)
    mu = np.array([[0.0, 0.0], [0.05, -0.05], [4.0, 4.0]])
    sigma = np.array([[0.2, 0.2], [2.0, 2.0], [1.0, 1.0]])
    theta = [0.45, 0.35, 0.20]
    draws, scrambled, _ = _scrambled(rng, 2000, mu, theta, sigma, sd=0.08)
    perms = relabel_permutations(
        scrambled["mu"], scrambled["theta"], sigma=scrambled["sigma"], omega=None
    )
    relabelled = apply_permutations(scrambled["sigma"], perms)
    np.testing.assert_array_equal(relabelled, draws["sigma"])  # every draw back in place
    # matching the means alone cannot tell the narrow from the wide component
    means_only = match_to_reference(scrambled["mu"], mu)
    wrong = (apply_permutations(scrambled["sigma"], means_only)[:, :2, 0] != sigma[:2, 0]).any(1)
    assert wrong.mean() > 0.2


def test_components_that_differ_only_in_correlation():
    rng = np.random.default_rng(4)
    mu = np.zeros((2, 2))
    sigma = np.ones((2, 2))
    omega = np.array([[[1.0, 0.8], [0.8, 1.0]], [[1.0, -0.8], [-0.8, 1.0]]])
    draws, scrambled, _ = _scrambled(rng, 500, mu, [0.6, 0.4], sigma, omega)
    perms = relabel_permutations(
        scrambled["mu"], scrambled["theta"], sigma=scrambled["sigma"], omega=scrambled["omega"]
    )
    np.testing.assert_array_equal(apply_permutations(scrambled["omega"], perms), draws["omega"])


@pytest.mark.parametrize("k", [2, 4, 7])  # 7: linear assignment instead of enumeration
def test_well_separated_means_and_ordering_by_weight(k):
    rng = np.random.default_rng(k)
    mu = 5.0 * rng.standard_normal((k, 2))
    theta = np.arange(k, 0, -1) / np.arange(k, 0, -1).sum()
    draws, scrambled, _ = _scrambled(rng, 300, mu, theta)
    perms = relabel_permutations(scrambled["mu"], scrambled["theta"])
    np.testing.assert_array_equal(apply_permutations(scrambled["mu"], perms), draws["mu"])


@pytest.mark.parametrize("k", [3, 7])  # enumerated permutations, and linear assignment
def test_a_non_finite_draw_leaves_the_others_relabelled(k):
    rng = np.random.default_rng(k)
    mu = 5.0 * rng.standard_normal((k, 2))
    theta = np.arange(k, 0, -1) / np.arange(k, 0, -1).sum()
    draws, scrambled, _ = _scrambled(rng, 400, mu, theta)
    scrambled["mu"][7, 0, 0] = np.nan
    perms = relabel_permutations(scrambled["mu"], scrambled["theta"])
    relabelled = apply_permutations(scrambled["mu"], perms)
    others = np.arange(400) != 7
    np.testing.assert_array_equal(relabelled[others], draws["mu"][others])
    np.testing.assert_array_equal(perms[7], np.arange(k))


def test_relabel_draws_keeps_chains_and_all_parameters_aligned():
    rng = np.random.default_rng(5)
    mu = np.array([[0.0], [0.1]])
    sigma = np.array([[0.3], [3.0]])
    _, scrambled, _ = _scrambled(rng, 400, mu, [0.5, 0.5], sigma, sd=0.05)
    fit = Draws(
        mu=scrambled["mu"].reshape(2, 200, 2, 1),
        theta=scrambled["theta"].reshape(2, 200, 2),
        sigma=scrambled["sigma"].reshape(2, 200, 2, 1),
        stats={"lp": rng.normal(size=(2, 200))},
    )
    out = relabel(fit)
    sd = out.sigma[..., 0]
    assert (sd[..., 0] < 1).all() or (sd[..., 0] > 1).all()  # one component = one scale
    # every draw's (mean, scale) pairs are the same pairs, only their order changed
    pairs = [np.stack([d.mu[..., 0], d.sigma[..., 0]], axis=-1) for d in (fit, out)]
    np.testing.assert_array_equal(*(np.sort(p.view("f8,f8"), axis=-2) for p in pairs))
    assert out.mu.shape == fit.mu.shape == (2, 200, 2, 1)
    np.testing.assert_array_equal(out.stats["lp"], fit.stats["lp"])
