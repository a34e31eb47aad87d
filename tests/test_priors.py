"""Priors on the data's scale (gmmpipe.priors) and the seed's datasets' unchanged priors."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from gmmpipe.config import validate_config
from gmmpipe.data import Dataset, simulate, stan_data
from gmmpipe.errors import ConfigError, DataError
from gmmpipe.priors import complete_model, describe, resolve_priors

# stan_data of the seed's datasets before the per-coordinate priors (commit a306570)
SEED_PRIORS = {"mu_sd": {"seed_small": 1.0, "seed_large": 3.1622776601683795}}


def _config(root):
    return validate_config(yaml.safe_load((root / "config" / "config.yaml").read_text()))


def test_seed_datasets_keep_the_notebooks_priors(root):
    """config.yaml's seed datasets give the same Stan data as before, the scalars now vectors."""
    config = _config(root)
    for name in ("seed_small", "seed_large"):
        spec = config["datasets"][name]
        assert spec["model"]["priors"] == "fixed" and spec["model"]["covariance"] == "identity"
        data = stan_data(simulate({**spec["simulate"], "n": 50}), spec["model"])
        assert data["alpha"] == 0.1 and data["covariance"] == 0 and data["lkj_eta"] == 2.0
        np.testing.assert_array_equal(data["mu_location"], [0.0, 0.0])
        np.testing.assert_array_equal(data["mu_sd"], [SEED_PRIORS["mu_sd"][name]] * 2)
        np.testing.assert_array_equal(data["sigma_location"], [0.0, 0.0])
        np.testing.assert_array_equal(data["sigma_scale"], [0.5, 0.5])
        np.testing.assert_array_equal(data["psi"], [0.0, 0.0])  # no such term before


def test_data_rule_is_on_the_data_scale():
    rng = np.random.default_rng(1)
    y = np.column_stack([rng.normal(500, 100, 400), rng.normal(0.1, 0.01, 400)])
    priors = resolve_priors(y, {"K": 3, "priors": "data"})
    mean, sd = y.mean(axis=0), y.std(axis=0, ddof=1)
    np.testing.assert_allclose(priors["mu_location"], mean)
    np.testing.assert_allclose(priors["mu_sd"], sd)
    np.testing.assert_allclose(priors["sigma_location"], np.log(sd / 2))
    assert priors["sigma_scale"] == [1.0, 1.0] and priors["alpha"] == 2.0
    half = resolve_priors(y, {"K": 3, "priors": "data", "sigma_prior": "half_normal"})
    np.testing.assert_allclose(half["sigma_scale"], sd)
    assert half["sigma_location"] == [0.0, 0.0]
    np.testing.assert_allclose(priors["psi"], 0.2 * sd**2 / 3)  # 0.2 s_j^2 / K^(2 / D)
    y3 = np.random.default_rng(4).normal(size=(50, 3)) * [1, 10, 100]
    sd3 = y3.std(axis=0, ddof=1)
    psi3 = resolve_priors(y3, {"K": 2, "priors": "data"})["psi"]
    np.testing.assert_allclose(psi3, 0.2 * sd3**2 / 2 ** (2 / 3))  # D = 3: K^(2/3)
    full = describe(priors, "full")
    assert "normal(" in full[0] and "Omega_k ~ lkj_corr(2)" in full and len(full) == 5
    tied = describe(priors, "tied")
    assert tied[2].startswith("sigma[j] ~ lognormal(") and "Omega ~ lkj_corr(2)" in tied
    assert tied[-1] == "Sigma_k = Sigma = diag(sigma) Omega diag(sigma) for every k"
    assert len(describe(priors, "identity")) == 2


def test_explicit_keys_win_over_the_rule():
    y = np.random.default_rng(2).normal(100, 10, size=(50, 2))
    priors = resolve_priors(y, {"K": 2, "priors": "data", "mu_location": [1, 2], "alpha": 0.5})
    assert priors["mu_location"] == [1.0, 2.0] and priors["alpha"] == 0.5
    assert priors["given"] == ["mu_location", "alpha"]
    np.testing.assert_allclose(priors["mu_sd"], y.std(axis=0, ddof=1))
    fixed = resolve_priors(y, {"K": 2})  # raw specs (tests, benchmarks): the fixed rule
    assert fixed["mu_sd"] == [1.0, 1.0] and fixed["alpha"] == 0.1


def test_bad_prior_values_are_named():
    y = np.ones((10, 2))
    with pytest.raises(DataError, match="coordinate 1 of the data has no spread"):
        resolve_priors(y, {"K": 2, "priors": "data"})
    with pytest.raises(DataError, match="the data-scale priors of psi need it"):
        resolve_priors(y, {"K": 2, "priors": "data", "mu_sd": 1, "sigma_location": 0})
    given = {"K": 2, "priors": "data", "mu_sd": 1, "sigma_location": 0, "psi": 0.1}
    assert resolve_priors(y, given)["mu_sd"] == [1.0, 1.0]  # as the message says: they do
    with pytest.raises(DataError, match=r"model.mu_sd = \[1, 2, 3\]: needs one number or D = 2"):
        resolve_priors(y, {"K": 2, "mu_sd": [1, 2, 3]})


def test_defaults_by_kind_of_dataset():
    file = {"file": {"path": "x.csv"}, "model": {"K": 3}}
    assert complete_model(file) == {"K": 3, "priors": "data", "covariance": "full"}
    mixture = {"simulate": {"generator": "mixture"}, "model": {"K": 2}}
    assert complete_model(mixture)["covariance"] == "identity"
    assert complete_model(mixture)["priors"] == "data"
    cov = {"simulate": {"generator": "mixture", "covariances": [[[1.0]]]}, "model": {"K": 1}}
    assert complete_model(cov)["covariance"] == "full"


def test_calibration_needs_fixed_priors(root):
    """Refused where the SBC is planned: the default target does not need the section."""
    from gmmpipe.sbc_plan import check_sbc_config

    raw = yaml.safe_load((root / "config" / "config.yaml").read_text())
    raw["sbc"] = {"model": {"K": 2, "priors": "data"}}
    config = validate_config(raw)
    with pytest.raises(ConfigError, match=r"'sbc\.model\.priors' = 'data'"):
        check_sbc_config(config)


def test_a_partial_calibration_model_keeps_the_default_keys(root):
    raw = yaml.safe_load((root / "config" / "config.yaml").read_text())
    raw["sbc"] = {"model": {"K": 3}}
    model = validate_config(raw)["sbc"]["model"]
    assert model["K"] == 3 and model["covariance"] == "diagonal"
    assert model["mu_sd"] == 2.0 and model["alpha"] == 2.0 and model["priors"] == "fixed"


def test_stan_data_carries_the_resolved_vectors():
    y = np.random.default_rng(3).normal(size=(20, 3)) * [1, 10, 100]
    model = {"K": 2, "priors": "data", "covariance": "diagonal"}
    data = stan_data(Dataset(y=y), model)
    assert data["mu_sd"].shape == (3,) and data["sigma_location"].shape == (3,)
    np.testing.assert_allclose(data["mu_sd"] / data["mu_sd"][0], [1, 10, 100], rtol=0.5)
