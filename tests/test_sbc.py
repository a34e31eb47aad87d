"""Simulation-based calibration: the pure functions (no CmdStan), on exact posteriors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gmmpipe.errors import ConfigError
from gmmpipe.sbc import (
    canonical_order,
    check_sbc_config,
    draw_prior,
    flatten,
    lkj_corr_cholesky,
    markdown_table,
    method_verdicts,
    ranks,
    simulate_data,
    summarize,
    uniformity_test,
)


@pytest.mark.parametrize("d,eta", [(2, 1.0), (3, 2.0), (4, 0.7)])
def test_lkj_marginal_correlations_are_beta(d, eta):
    """Under LKJ(eta) in dimension d, (r_ij + 1) / 2 ~ Beta(eta - 1 + d/2, eta - 1 + d/2)."""
    rng = np.random.default_rng(3)
    chol = np.array([lkj_corr_cholesky(rng, d, eta) for _ in range(4000)])
    omega = chol @ np.swapaxes(chol, 1, 2)
    np.testing.assert_allclose(np.diagonal(omega, axis1=1, axis2=2), 1, atol=1e-12)
    b = eta - 1 + d / 2
    for i, j in [(1, 0), (d - 1, 0), (d - 1, d - 2)]:
        p = stats.kstest((omega[:, i, j] + 1) / 2, stats.beta(b, b).cdf).pvalue
        assert p > 1e-3, (i, j, p)


@pytest.mark.parametrize("covariance", ["identity", "diagonal", "full"])
def test_prior_draw_and_simulation_shapes(covariance):
    rng = np.random.default_rng(1)
    model = {"K": 3, "mu_sd": 2.0, "alpha": 1.0, "covariance": covariance}
    params = draw_prior(rng, model, 2)
    assert params["mu"].shape == (3, 2)
    assert params["theta"].sum() == pytest.approx(1)
    assert ("sigma" in params) == (covariance != "identity")
    assert ("Omega" in params) == (covariance == "full")
    data = simulate_data(rng, params, 50)
    assert data.y.shape == (50, 2)


def test_half_normal_scale_prior_is_positive():
    rng = np.random.default_rng(2)
    model = {"K": 2, "mu_sd": 1.0, "alpha": 1.0, "covariance": "diagonal"}
    sigma = draw_prior(rng, {**model, "sigma_prior": "half_normal", "sigma_scale": 1.0}, 3)
    assert (sigma["sigma"] > 0).all()


def test_canonical_order_permutes_all_parameters_alike():
    mu = np.array([[[2.0, 0.0], [-1.0, 5.0]]])
    params = {"mu": mu, "theta": np.array([[0.3, 0.7]]), "sigma": np.array([[[1.0, 2], [3, 4]]])}
    out = canonical_order(params)
    np.testing.assert_array_equal(out["mu"][0], [[-1.0, 5.0], [2.0, 0.0]])
    np.testing.assert_array_equal(out["theta"][0], [0.7, 0.3])
    np.testing.assert_array_equal(out["sigma"][0], [[3, 4], [1, 2]])


def test_flatten_keeps_lower_triangle_of_omega():
    omega = np.tile(np.eye(3), (1, 2, 1, 1))
    names = list(flatten({"Omega": omega, "theta": np.ones((1, 2))}))
    assert names == [
        "Omega[1,2,1]",
        "Omega[1,3,1]",
        "Omega[1,3,2]",
        "Omega[2,2,1]",
        "Omega[2,3,1]",
        "Omega[2,3,2]",
        "theta[1]",
        "theta[2]",
    ]


def _conjugate_sbc(n_rep: int, kept: int, sd_factor: float) -> pd.DataFrame:
    """SBC of a one-component model whose posterior is known exactly (normal-normal).

    `sd_factor` != 1 scales the posterior sd, mimicking a miscalibrated approximation.
    """
    rng = np.random.default_rng(11)
    model = {"K": 1, "mu_sd": 2.0, "alpha": 1.0}
    rows = []
    for rep in range(n_rep):
        truth = draw_prior(rng, model, 2)
        y = simulate_data(rng, truth, 20).y
        precision = 1 / model["mu_sd"] ** 2 + len(y)
        mean, sd = y.sum(axis=0) / precision, sd_factor / np.sqrt(precision)
        post = {
            "mu": mean + sd * rng.standard_normal((kept, 1, 2)),
            "theta": np.ones((kept, 1)),
        }
        for name, rank in ranks(truth, post, kept).items():
            rows.append({"method": "exact", "replication": rep, "parameter": name, "rank": rank})
    return pd.DataFrame(rows)


def test_exact_posterior_passes_and_too_narrow_one_fails():
    kept, bins = 99, 10
    exact = summarize(_conjugate_sbc(300, kept, 1.0), kept, bins)
    mu = exact[exact["parameter"].str.startswith("mu")]
    assert (mu["p_adjusted"] > 0.01).all(), mu
    narrow = summarize(_conjugate_sbc(300, kept, 0.5), kept, bins)
    assert (narrow.loc[narrow["parameter"].str.startswith("mu"), "p_adjusted"] < 1e-6).all()
    assert mu["central_coverage"].between(0.72, 0.88).all()  # 80% intervals, 300 replications
    verdicts = method_verdicts(narrow[narrow["parameter"] != "theta[1]"])
    assert verdicts.loc[0, "uniformity_rejected"] == "YES"
    assert verdicts.loc[0, "central_coverage"] < 0.6
    assert verdicts.loc[0, "failed"] == 0
    assert "| method |" in markdown_table(verdicts)


def test_uniformity_test_needs_equal_bins():
    with pytest.raises(ValueError, match="equal bins"):
        uniformity_test([0, 1, 2], kept=99, bins=7)
    chi2, p = uniformity_test(list(range(100)), kept=99, bins=10)
    assert chi2 == 0 and p == pytest.approx(1)


def _config(**sbc):
    methods = {
        "nuts": {"algorithm": "nuts"},
        "map": {"algorithm": "optimize"},
        "advi": {"algorithm": "advi", "init": "map"},
    }
    return {"methods": methods, "sbc": {"draws": 99, "bins": 10, "methods": ["nuts"], **sbc}}


def test_check_sbc_config():
    assert list(check_sbc_config(_config())) == ["nuts"]
    advi = check_sbc_config(_config(methods=["advi"]))["advi"]
    assert advi["init_method"] == {"algorithm": "optimize"}
    with pytest.raises(ConfigError, match="not in 'methods'"):
        check_sbc_config(_config(methods=["nope"]))
    with pytest.raises(ConfigError, match="SBC needs posterior draws"):
        check_sbc_config(_config(methods=["map"]))
    with pytest.raises(ConfigError, match="must divide"):
        check_sbc_config(_config(bins=7))
