"""gmmpipe.arrays: draws flattened over chains, thinned evenly, and their covariances."""

from __future__ import annotations

import numpy as np

from gmmpipe.arrays import covariances, even_index, flat_params, thin


def test_even_index_spans_the_draws_evenly():
    index = even_index(1500, 1000)
    assert len(index) == 1000 and index[0] == 0 and index[-1] == 1499
    assert set(np.diff(index)) == {1, 2}  # not the first 1000 draws (mostly the first chains)
    np.testing.assert_array_equal(even_index(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(even_index(3, 10), [0, 1, 2])
    assert len(even_index(0, 10)) == 0


def test_thin_keeps_the_same_draws_of_every_parameter():
    rng = np.random.default_rng(0)
    params = {"mu": rng.normal(size=(50, 2, 3)), "theta": rng.dirichlet([1, 1], size=50)}
    thinned = thin(params, 7)
    index = even_index(50, 7)
    for name, value in params.items():
        np.testing.assert_array_equal(thinned[name], value[index])


def test_flat_params_merges_chains_in_order():
    mu = np.arange(2 * 3 * 1 * 1, dtype=float).reshape(2, 3, 1, 1)  # (chain, draw, K, D)
    flat = flat_params({"mu": mu, "theta": np.ones((2, 3, 1)), "lp": np.zeros((2, 3))})
    assert set(flat) == {"mu", "theta"}  # component parameters only
    np.testing.assert_array_equal(flat["mu"][:, 0, 0], np.arange(6))  # chain 1, then chain 2


def test_covariances_of_identity_diagonal_and_full_components():
    mu = np.zeros((4, 2, 2))  # (S, K, D)
    np.testing.assert_array_equal(covariances({"mu": mu}), np.broadcast_to(np.eye(2), (4, 2, 2, 2)))
    sigma = np.broadcast_to([[1.0, 2.0], [3.0, 0.5]], (4, 2, 2))
    diagonal = covariances({"mu": mu, "sigma": sigma})
    np.testing.assert_allclose(diagonal[0, 1], np.diag([9.0, 0.25]))
    omega = np.broadcast_to([[1.0, -0.5], [-0.5, 1.0]], (4, 2, 2, 2))
    full = covariances({"mu": mu, "sigma": sigma, "Omega": omega})
    np.testing.assert_allclose(full[2, 0], [[1.0, -1.0], [-1.0, 4.0]])
