"""Membership probabilities from relabelled draws, the adjusted Rand index, and the data's
column names carried into the outputs (no CmdStan)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from fixtures.report.fake_fits import write_fake_dataset
from scipy.special import softmax
from scipy.stats import multivariate_normal

from gmmpipe import membership
from gmmpipe.arrays import flat_params
from gmmpipe.data import Dataset, read_dataset, write_dataset
from gmmpipe.draws import Draws
from gmmpipe.fit import to_inference_data
from gmmpipe.membership import adjusted_rand_index, responsibilities, softmax_components


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
        ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),  # names of the labels do not matter
        ([0, 0, 1, 1], [0, 0, 1, 2], 0.5714285714285715),  # scikit-learn's documented value
        ([0, 0, 1, 2], [0, 0, 1, 1], 0.5714285714285715),
        ([0, 1, 2, 3], [0, 0, 0, 0], 0.0),
        ([0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1], -1 / 9),  # (2 - 2.4) / (6 - 2.4) by hand
    ],
)
def test_adjusted_rand_index(a, b, expected):
    assert adjusted_rand_index(np.array(a), np.array(b)) == pytest.approx(expected)


def test_responsibilities_of_one_point_estimate_are_bayes_rule(monkeypatch):
    rng = np.random.default_rng(0)
    mu = np.array([[0.0, 0.0], [2.0, 1.0], [-2.0, 3.0]])
    theta = np.array([0.5, 0.3, 0.2])
    sigma = np.array([[1.0, 0.5], [0.7, 1.2], [1.0, 1.0]])
    params = {"mu": mu[None], "theta": theta[None], "sigma": sigma[None]}
    y = rng.normal(size=(53, 2)) * 2
    monkeypatch.setattr(membership, "_CHUNK_ELEMENTS", 3 * 2 * 10)  # chunks of 10 points
    got = responsibilities(y, params)
    dens = np.stack(
        [theta[k] * multivariate_normal(mu[k], np.diag(sigma[k] ** 2)).pdf(y) for k in range(3)],
        axis=1,
    )
    expected = dens / dens.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got["mean"], expected, rtol=1e-10)
    np.testing.assert_allclose(got["lower"], expected, rtol=1e-10)  # one draw: no interval
    np.testing.assert_array_equal(got["label"], expected.argmax(axis=1) + 1)
    np.testing.assert_allclose(got["entropy"], -(expected * np.log(expected)).sum(axis=1))


def test_intervals_cover_the_spread_of_the_draws():
    rng = np.random.default_rng(1)
    s = 400
    params = {
        "mu": np.array([[-1.0], [1.0]]) + 0.3 * rng.standard_normal((s, 2, 1)),
        "theta": np.full((s, 2), 0.5),
    }
    got = responsibilities(np.array([[0.0], [-3.0]]), params, max_draws=200)
    assert got["lower"][0, 0] < 0.4 < 0.6 < got["upper"][0, 0]  # the midpoint is uncertain
    assert got["mean"][1, 0] > 0.99 and got["label"][1] == 1
    assert got["entropy"][0] > got["entropy"][1]


def test_membership_files_and_ari_on_well_separated_data(tmp_path):
    fake = write_fake_dataset(tmp_path / "d", k=3, n=400, methods={"nuts": "nuts"})
    info = membership.write_membership(
        data=fake["data"],
        dataset_json=fake["truth"],
        posterior=fake["posteriors"]["nuts"],
        table=tmp_path / "membership.csv",
        summary=tmp_path / "membership.json",
    )
    table = pd.read_csv(tmp_path / "membership.csv")
    assert list(table.columns[:4]) == ["point", "x1", "x2", "z"]
    for k in (1, 2, 3):
        assert {f"p{k}", f"p{k}_q05", f"p{k}_q95"} <= set(table.columns)
    np.testing.assert_allclose(table[["p1", "p2", "p3"]].sum(axis=1), 1, atol=1e-5)
    assert info["ari"] >= 0.9
    assert json.loads((tmp_path / "membership.json").read_text())["ari"] == info["ari"]
    assert sum(info["label_counts"].values()) == 400


@pytest.mark.parametrize("k", [1, 2, 3, 12])
def test_softmax_over_components_is_scipys(k):
    """The same numbers as scipy's softmax, also with components of weight 0 (log -inf)."""
    log_p = np.random.default_rng(k).normal(scale=30, size=(7, 50, k))
    log_p[0, :5, 0] = -np.inf
    expected = softmax(log_p, axis=-1)
    np.testing.assert_allclose(softmax_components(log_p.copy()), expected, rtol=1e-15, atol=0)
    if k < 8:  # numpy sums fewer than 8 numbers in order, as the loop does
        assert np.array_equal(softmax_components(log_p.copy()), expected, equal_nan=True)


def test_membership_is_cheap_at_large_n():
    """N = 1e5 with 200 draws and K = 3 runs in chunks (memory bounded by _CHUNK_ELEMENTS)."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=(100_000, 2))
    params = {"mu": rng.normal(size=(1000, 3, 2)), "theta": rng.dirichlet(np.ones(3), size=1000)}
    got = responsibilities(y, params, max_draws=200)
    assert got["mean"].shape == (100_000, 3) and np.isfinite(got["entropy"]).all()


def test_user_column_names_carry_through(tmp_path):
    source = tmp_path / "own.csv"
    source.write_text("height,width\n1.0,2.0\n1.5,2.5\n3.0,0.5\n")
    data = read_dataset(source, k=2)
    assert data.names == ["height", "width"]
    write_dataset(data, tmp_path / "stored.csv", tmp_path / "stored.json")
    stored = read_dataset(tmp_path / "stored.csv", k=2)
    assert stored.names == ["height", "width"]
    assert Dataset(y=np.zeros((2, 3))).names == ["x1", "x2", "x3"]  # simulated data
    draws = Draws(mu=np.zeros((1, 5, 2, 2)), theta=np.full((1, 5, 2), 0.5))
    idata = to_inference_data(draws, attrs={}, names=stored.names)
    assert list(idata.posterior["dim"].values) == ["height", "width"]


def test_axis_labels_use_the_data_names():
    import matplotlib.pyplot as plt

    from gmmpipe.plots import name_axes

    fig, ax = plt.subplots()
    ax.set_xlabel("mu[1, x1]")
    ax.set_ylabel("x2")
    name_axes(fig, ["height", "width"])
    assert ax.get_xlabel() == "mu[1, height]" and ax.get_ylabel() == "width"
    plt.close(fig)


def test_loo_reads_the_fit_parameters(tmp_path):
    fake = write_fake_dataset(tmp_path / "d", k=2, n=50, methods={"nuts": "nuts"})
    import arviz as az

    params = flat_params(az.from_netcdf(fake["posteriors"]["nuts"]).posterior)
    assert params["mu"].shape == (400, 2, 2) and params["theta"].shape == (400, 2)


def test_a_files_id_column_is_carried_into_membership_csv(tmp_path):
    """`file.id_column`: the ids are read as text, are not a coordinate, survive the pipeline's
    data files, and name each row of membership.csv beside `point`."""
    from gmmpipe.data import load_dataset, read_dataset, write_dataset

    fake = write_fake_dataset(tmp_path / "d", k=2, n=60, methods={"nuts": "nuts"})
    frame = pd.read_csv(fake["data"]).drop(columns="z")
    frame.insert(1, "sample", [f"S{i:03d}" for i in range(len(frame))])
    own = tmp_path / "own.csv"
    frame.to_csv(own, index=False)
    data = read_dataset(own, k=2, id_column="sample")  # every other column is a coordinate
    assert data.names == ["x1", "x2"] and data.ids[0] == "S000"
    write_dataset(data, tmp_path / "data.csv", tmp_path / "data.json")
    assert load_dataset(tmp_path / "data.csv", tmp_path / "data.json").ids.tolist() == list(
        frame["sample"]
    )

    def membership_of(dataset, name):
        write_dataset(dataset, tmp_path / f"{name}.csv", tmp_path / f"{name}.json")
        membership.write_membership(
            data=tmp_path / f"{name}.csv",
            dataset_json=tmp_path / f"{name}.json",
            posterior=fake["posteriors"]["nuts"],
            table=tmp_path / f"{name}_membership.csv",
            summary=tmp_path / f"{name}_membership.json",
        )
        return pd.read_csv(tmp_path / f"{name}_membership.csv")

    table = membership_of(data, "data")
    assert list(table.columns[:5]) == ["point", "sample", "x1", "x2", "label"]
    assert table["sample"].tolist() == frame["sample"].tolist()
    with_z = replace(data, z=np.zeros(data.n, dtype=int))  # simulated data's z: after the x's
    columns = membership_of(with_z, "z").columns[:5]
    assert list(columns) == ["point", "sample", "x1", "x2", "z"]
