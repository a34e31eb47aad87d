"""Datasets: the seed notebook reproduced bit for bit, general simulation, validated reading."""

from __future__ import annotations

import numpy as np
import pytest

from gmmpipe.data import (
    Dataset,
    load_dataset,
    read_dataset,
    simulate,
    simulate_mixture,
    simulate_seed_notebook,
    stan_data,
    write_dataset,
)
from gmmpipe.errors import DataError


def _notebook(n_small: int = 100, n_large: int = 100_000):
    """The notebook's own code, copied verbatim: both datasets from one stream."""
    rng = np.random.RandomState(123)
    ms = np.array([[-1, -1.5], [1, 1]])
    ps = np.array([0.2, 0.8])
    out = []
    for n_samples in (n_small, n_large):
        zs = np.array([rng.multinomial(1, ps) for _ in range(n_samples)]).T
        xs = [
            z[:, np.newaxis] * rng.multivariate_normal(m, np.eye(2), size=n_samples)
            for z, m in zip(zs, ms, strict=True)
        ]
        out.append((np.sum(np.dstack(xs), axis=2), zs))
    return out


@pytest.fixture(scope="module")
def notebook():
    return _notebook()


def test_seed_small_fractions_are_the_notebooks():
    data = simulate_seed_notebook(100)
    fractions = np.bincount(data.z, minlength=2) / data.n
    assert fractions.tolist() == [0.13, 0.87]


def test_seed_small_first_rows_match_notebook_and_literal(notebook):
    data = simulate_seed_notebook(100)
    np.testing.assert_array_equal(data.y, notebook[0][0])
    np.testing.assert_allclose(
        data.y[:3],
        [[-0.32907883, 1.27803371], [-0.07476659, 1.66831687], [1.95583236, 0.12238641]],
        atol=5e-9,
    )


def test_seed_large_continues_the_stream(notebook):
    data = simulate_seed_notebook(100_000, drawn_before=[100])
    np.testing.assert_array_equal(data.y, notebook[1][0])
    np.testing.assert_array_equal(data.z, notebook[1][1].argmax(axis=0))
    # drawn without the small set first, it would differ
    assert not np.array_equal(simulate_seed_notebook(100_000).y[:5], data.y[:5])


def test_written_csv_round_trips_exactly(tmp_path):
    data = simulate_seed_notebook(100)
    write_dataset(data, tmp_path / "d.csv", tmp_path / "d.json")
    back = load_dataset(tmp_path / "d.csv", tmp_path / "d.json", k=2)
    np.testing.assert_array_equal(back.y, data.y)
    np.testing.assert_array_equal(back.z, data.z)
    header = (tmp_path / "d.csv").read_text().splitlines()[0]
    assert header == "x1,x2,z"


@pytest.mark.parametrize("k,d", [(1, 1), (3, 2), (2, 3)])
def test_simulate_mixture_any_k_d(k, d):
    rng = np.random.default_rng(0)
    means = rng.normal(scale=5, size=(k, d)).tolist()
    weights = (np.ones(k) / k).tolist()
    data = simulate_mixture(20_000, means, weights, seed=3)
    assert data.y.shape == (20_000, d)
    for j in range(k):
        np.testing.assert_allclose(data.y[data.z == j].mean(axis=0), means[j], atol=0.05)
    again = simulate(
        {"generator": "mixture", "n": 20_000, "means": means, "weights": weights, "seed": 3}
    )
    np.testing.assert_array_equal(again.y, data.y)


def test_simulate_mixture_covariance():
    cov = [[[2.0, 0.9], [0.9, 1.0]]]
    data = simulate_mixture(50_000, [[0.0, 0.0]], [1.0], covariances=cov, seed=1)
    np.testing.assert_allclose(np.cov(data.y.T), cov[0], atol=0.05)


def test_stan_data_shapes():
    data = Dataset(y=np.zeros((5, 2)))
    sd = stan_data(data, {"K": 2, "mu_sd": 1.0, "alpha": 0.1})
    assert (sd["N"], sd["D"], sd["K"], sd["grainsize"], sd["membership"]) == (5, 2, 2, 0, 0)


@pytest.mark.parametrize(
    "content,message",
    [
        ("x1,x2\n1,2\nnan,3\n", "row 3, column 'x1'"),
        ("x1,x2\n1,2\n3,inf\n", "row 3, column 'x2'"),
        ("x1,x2\n1,2\n3,abc\n", "'abc' is not a finite number"),
        ("x1,x2\n", "header only"),
        ("", "empty"),
        ("x1,x2\n1,2\n", "fewer than the K = 2"),
        ("x1,x2,x3\n1,2,3\n4,5,6\n", "expected D = 2"),
    ],
)
def test_bad_data_names_file_and_place(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_dataset(path, k=2, d=2)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_dataset(tmp_path / "nope.csv", k=2)
