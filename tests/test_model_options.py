"""Model options (covariance, priors, ordering), user data from Parquet, and the handling of
the extra covariance parameters in draws, relabelling and InferenceData (no CmdStan)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from gmmpipe.config import validate_config
from gmmpipe.data import Dataset, read_dataset, stan_data
from gmmpipe.draws import Draws, read_draws, relabel
from gmmpipe.errors import ConfigError, DataError
from gmmpipe.fit import to_inference_data
from gmmpipe.inits import stan_inits


@pytest.fixture
def config(root):
    return yaml.safe_load((root / "config" / "config.yaml").read_text())


def test_model_defaults_and_new_keys(config):
    completed = validate_config(config)
    model = completed["datasets"]["seed_small"]["model"]
    assert model["covariance"] == "identity" and model["ordered"] is False
    data = stan_data(Dataset(y=np.zeros((5, 2))), model)
    assert data["covariance"] == 0 and data["order_means"] == 0 and data["sigma_prior"] == 0
    config["datasets"]["seed_small"]["model"].update(
        covariance="full", sigma_prior="half_normal", lkj_eta=3.0, ordered=True
    )
    model = validate_config(config)["datasets"]["seed_small"]["model"]
    data = stan_data(Dataset(y=np.zeros((5, 2))), model)
    assert (data["covariance"], data["sigma_prior"], data["lkj_eta"], data["order_means"]) == (
        2,
        1,
        3.0,
        1,
    )


@pytest.mark.parametrize(
    "key,value", [("covariance", "spherical"), ("lkj_eta", 0), ("sigma_scale", -1.0)]
)
def test_bad_model_options_are_rejected(config, key, value):
    config["datasets"]["seed_small"]["model"][key] = value
    with pytest.raises(ConfigError, match=key):
        validate_config(config)


def test_sbc_section_defaults(config):
    sbc = validate_config(config)["sbc"]
    assert sbc["replications"] >= 100
    assert sbc["model"]["covariance"] == "diagonal" and sbc["model"]["sigma_prior"] == "lognormal"
    assert (sbc["draws"] + 1) % sbc["bins"] == 0


def test_parquet_dataset(tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"a": [0.1, 1 / 3, -2.5], "b": [1, 2, 3], "label": ["x", "y", "z"]})
    frame.to_parquet(tmp_path / "obs.parquet")
    data = read_dataset(tmp_path / "obs.parquet", k=2, columns=["a", "b"])
    np.testing.assert_array_equal(data.y, frame[["a", "b"]].to_numpy(dtype=float))
    with pytest.raises(DataError, match=r"row 2, column 'label'"):
        read_dataset(tmp_path / "obs.parquet", k=2)
    frame.loc[2, "a"] = np.nan
    frame.to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(DataError, match=r"row 4, column 'a'"):
        read_dataset(tmp_path / "nan.parquet", k=2, columns=["a"])
    (tmp_path / "bad.pq").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_dataset(tmp_path / "bad.pq", k=1)


def _draws(k=2, d=2, chains=2, n=5):
    rng = np.random.default_rng(0)
    mu = np.zeros((chains, n, k, d))
    mu[..., 0, :] = 2.0
    mu[1, :, :, :] = mu[1, :, ::-1, :]  # chain 2 in the other labelling
    theta = np.broadcast_to([0.7, 0.3], (chains, n, k)).copy()
    theta[1] = theta[1, :, ::-1]
    sigma = np.broadcast_to([[1.0, 1.5], [0.5, 0.6]], (chains, n, k, d)).copy()
    sigma[1] = sigma[1, :, ::-1]
    omega = np.tile(np.eye(d), (chains, n, k, 1, 1))
    omega[..., 0, 0, 1] = omega[..., 0, 1, 0] = 0.4
    omega[1] = omega[1, :, ::-1]
    mu += rng.normal(scale=0.01, size=mu.shape)
    return Draws(mu=mu, theta=theta, sigma=sigma, omega=omega)


def test_relabel_permutes_sigma_and_omega_with_mu():
    draws = relabel(_draws())
    np.testing.assert_allclose(draws.theta[..., 0], 0.7)
    np.testing.assert_allclose(draws.sigma[..., 0, :], np.broadcast_to([1.0, 1.5], (2, 5, 2)))
    np.testing.assert_allclose(draws.omega[..., 0, 0, 1], 0.4)
    np.testing.assert_allclose(draws.omega[..., 1, 0, 1], 0.0)
    idata = to_inference_data(draws, attrs={})
    assert idata.posterior["sigma"].dims == ("chain", "draw", "component", "dim")
    assert idata.posterior["Omega"].dims == ("chain", "draw", "component", "dim", "dim2")


@pytest.mark.parametrize("k_sigma", [2, 1])
def test_read_draws_turns_l_omega_into_omega(tmp_path, k_sigma):
    """Per-component sigma and L_Omega, or a tied covariance's one (k_sigma = 1), repeated."""
    k, d = 2, 2
    chol = np.array([[1.0, 0.0], [0.6, 0.8]])
    row = {"lp__": -1.0}
    for i in range(k):
        row[f"theta.{i + 1}"] = 0.5
        for j in range(d):
            row[f"mu.{i + 1}.{j + 1}"] = float(i + j)
    for i in range(k_sigma):
        for j in range(d):
            row[f"sigma.{i + 1}.{j + 1}"] = 1.0 + i
            for m in range(d):
                row[f"L_Omega.{i + 1}.{j + 1}.{m + 1}"] = chol[j, m] * (1 - i)
    path = tmp_path / "out.csv"
    pd.DataFrame([row, row]).to_csv(path, index=False)
    draws = read_draws([path], "nuts", k, d)
    assert draws.sigma.shape == (1, 2, k, d) and draws.omega.shape == (1, 2, k, d, d)
    np.testing.assert_allclose(draws.omega[0, 0, 0], [[1.0, 0.6], [0.6, 1.0]])
    np.testing.assert_allclose(draws.sigma[0, 0, :, 0], [1.0, 2.0][:k_sigma] * (k // k_sigma))


def test_stan_inits_use_stan_parameter_names():
    point = {
        "mu": [[1.0, 2.0], [-1.0, 0.0]],
        "theta": [0.4, 0.6],
        "sigma": [[1.0, 2.0], [3.0, 4.0]],
        "Omega": [np.eye(2), [[1.0, 0.5], [0.5, 1.0]]],
    }
    y = np.array([[-1.0, 0.0], [3.0, 1.0], [1.0, 5.0]])  # column 1: mean 1, sd 2
    plain = stan_inits(point, {"covariance": "identity"}, y)
    assert set(plain) == {"mu_free", "phi"}
    np.testing.assert_allclose(plain["phi"], [np.log(0.6 / 0.4)])
    ordered = stan_inits(point, {"covariance": "full", "ordered": True}, y)
    assert ordered["mu_first_z"] == [-1.0, 0.0]  # (mu[, 1] - 1) / 2, sorted
    assert ordered["mu_free"] == [[0.0], [2.0]]
    np.testing.assert_allclose(ordered["phi"], [np.log(0.4 / 0.6)])
    assert ordered["sigma"][0] == [3.0, 4.0]
    np.testing.assert_allclose(np.asarray(ordered["L_Omega"][0])[1], [0.5, np.sqrt(0.75)])
    # tied: one sigma and L_Omega, the weighted means of the variances and correlation matrices
    tied = stan_inits(point, {"covariance": "tied"}, y)
    np.testing.assert_allclose(tied["sigma"], [[np.sqrt(0.4 + 0.6 * 9), np.sqrt(1.6 + 0.6 * 16)]])
    (chol,) = np.asarray(tied["L_Omega"])
    np.testing.assert_allclose(chol @ chol.T, [[1.0, 0.3], [0.3, 1.0]])


@pytest.mark.parametrize("d,with_omega", [(1, False), (2, True), (3, False)])
def test_fitted_density_figure(tmp_path, d, with_omega):
    from gmmpipe.data import simulate_mixture
    from gmmpipe.mixture_plots import marginal_densities, plot_fitted_density, posterior_arrays

    data = simulate_mixture(300, [[-2.0] * d, [2.0] * d], [0.4, 0.6], seed=1)
    rng = np.random.default_rng(1)
    posterior = {
        "mu": np.array([[-2.0] * d, [2.0] * d]) + 0.05 * rng.normal(size=(2, 50, 2, d)),
        "theta": np.broadcast_to([0.4, 0.6], (2, 50, 2)),
        "sigma": np.ones((2, 50, 2, d)),
    }
    if with_omega:
        posterior["Omega"] = np.broadcast_to(np.eye(d), (2, 50, 2, d, d))
    arrays = posterior_arrays(posterior)
    grid = np.linspace(-10, 10, 2001)
    mass = marginal_densities(grid, arrays, 0).sum(axis=1) * (grid[1] - grid[0])
    np.testing.assert_allclose(mass, 1, atol=1e-3)
    fig = plot_fitted_density(data.y, posterior)
    fig.savefig(tmp_path / "density.png")
    assert (tmp_path / "density.png").stat().st_size > 10_000


@pytest.mark.workflow
def test_bad_sbc_section_fails_only_the_sbc_target(tmp_path, root):
    """A config without the SBC's methods still builds its default target; `sbc` says why not."""
    import subprocess
    import sys

    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["methods"] = {"map": {"algorithm": "optimize"}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "stan").symlink_to(root / "stan")
    base = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "-n"]
    base += ["--directory", str(tmp_path), "--profile", str(root / "profiles" / "default")]
    default = subprocess.run(base, capture_output=True, text=True)
    assert default.returncode == 0, default.stderr
    sbc = subprocess.run([*base, "sbc"], capture_output=True, text=True)
    assert sbc.returncode != 0
    assert "'sbc.methods' names 'nuts'" in sbc.stdout + sbc.stderr
