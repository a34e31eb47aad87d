"""Simulation-based calibration: the pure functions (no CmdStan), on exact posteriors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gmmpipe.arrays import covariances
from gmmpipe.errors import ConfigError
from gmmpipe.sbc import (
    LOG_LIK,
    canonical_order,
    draw_prior,
    flatten,
    lkj_corr_cholesky,
    log_likelihood,
    method_verdicts,
    ranked_quantities,
    ranks,
    replication,
    replication_seed,
    run_sbc,
    simulate_data,
    summarize,
    uniformity_test,
)
from gmmpipe.sbc_plan import batch_count, batch_replications, check_sbc_config
from gmmpipe.summarize import to_markdown


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


@pytest.mark.parametrize("covariance", ["identity", "diagonal", "full", "tied"])
def test_prior_draw_and_simulation_shapes(covariance):
    rng = np.random.default_rng(1)
    model = {"K": 3, "mu_sd": 2.0, "alpha": 1.0, "covariance": covariance}
    params = draw_prior(rng, model, 2)
    assert params["mu"].shape == (3, 2)
    assert params["theta"].sum() == pytest.approx(1)
    assert ("sigma" in params) == (covariance != "identity")
    assert ("Omega" in params) == (covariance in ("full", "tied"))
    if covariance == "tied":  # one covariance, repeated for every component
        assert params["sigma"].shape == (3, 2) and params["Omega"].shape == (3, 2, 2)
        assert np.all(params["sigma"] == params["sigma"][0])
        assert np.all(params["Omega"] == params["Omega"][0])
    elif covariance != "identity":
        assert len(np.unique(params["sigma"][:, 0])) == 3
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


def _conjugate_sbc(
    n_rep: int, kept: int, sd_factor: float, *, with_y: bool = False
) -> pd.DataFrame:
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
        for name, rank in ranks(truth, post, kept, y if with_y else None).items():
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
    assert "| method |" in to_markdown(verdicts, index=False)


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


# --- log p(y | parameters), the label-invariant test quantity ---------------------------------


@pytest.mark.parametrize("covariance", ["identity", "diagonal", "full", "tied"])
@pytest.mark.parametrize("k,d", [(1, 1), (2, 2), (3, 3)])
def test_log_likelihood_equals_scipy(covariance, k, d):
    rng = np.random.default_rng(k * 10 + d)
    model = {"K": k, "mu_sd": 2.0, "alpha": 1.0, "covariance": covariance}
    draws = [draw_prior(rng, model, d) for _ in range(4)]
    y = simulate_data(rng, draws[0], 30).y
    stacked = {name: np.stack([p[name] for p in draws]) for name in draws[0]}
    expected = [
        np.log(
            sum(
                p["theta"][j] * stats.multivariate_normal(p["mu"][j], cov).pdf(y)
                for j, cov in enumerate(covariances(p))
            )
        ).sum()
        for p in draws
    ]
    np.testing.assert_allclose(log_likelihood(y, stacked), expected, rtol=1e-10)


def test_log_likelihood_is_label_invariant_and_ranked():
    rng = np.random.default_rng(5)
    model = {"K": 3, "mu_sd": 2.0, "alpha": 1.0, "covariance": "full"}
    params = draw_prior(rng, model, 2)
    y = simulate_data(rng, params, 40).y
    one = {n: v[None] for n, v in params.items()}
    permuted = {n: v[:, [2, 0, 1]] for n, v in one.items()}
    np.testing.assert_allclose(log_likelihood(y, one), log_likelihood(y, permuted))
    # A zero weight drops its component instead of producing NaN.
    zero = {**one, "theta": np.array([[0.0, 0.5, 0.5]])}
    assert np.isfinite(log_likelihood(y, zero)).all()
    quantities = ranked_quantities(one, y)
    assert list(quantities)[-1] == LOG_LIK and LOG_LIK not in ranked_quantities(one)
    # Ranked like the parameters: the prior draw's value among the posterior draws'.
    posterior = {n: np.repeat(v, 9, axis=0) for n, v in one.items()}
    posterior["mu"] = posterior["mu"] + np.linspace(-1, 1, 9)[:, None, None]
    post_ll = log_likelihood(y, posterior)
    got = ranks(params, posterior, 9, y)
    assert got[LOG_LIK] == int((post_ll < log_likelihood(y, one)[0]).sum()) == 8


def test_log_likelihood_rank_is_uniform_for_an_exact_posterior():
    """The conjugate normal model's exact posterior gives uniform log-likelihood ranks."""
    table = _conjugate_sbc(300, 99, 1.0, with_y=True)
    summary = summarize(table, 99, 10).set_index("parameter")
    assert summary.loc[LOG_LIK, "replications"] == 300
    assert summary.loc[LOG_LIK, "p_value"] > 0.001


# --- Replications, seeds and batches ------------------------------------------------------


SBC = {"replications": 23, "batch_size": 5, "n": 30, "d": 2, "draws": 19, "bins": 5, "seed": 7}
SBC["model"] = {"K": 2, "mu_sd": 2.0, "alpha": 2.0, "covariance": "diagonal"}


@pytest.mark.parametrize("batch_size", [1, 4, 5, 23, 100])
def test_batches_cover_every_replication_once(batch_size):
    sbc = {**SBC, "batch_size": batch_size}
    covered = [r for b in range(batch_count(sbc)) for r in batch_replications(sbc, b)]
    assert covered == list(range(23))
    with pytest.raises(ValueError, match="out of range"):
        batch_replications(sbc, batch_count(sbc))


def test_a_replication_depends_on_the_seed_and_its_index_only():
    """The prior draw, the data and the CmdStan seeds of replication r are the same whatever
    the batch size, the number of replications or the other methods."""
    truth, data = replication(SBC, 17)
    for other in ({**SBC, "batch_size": 1}, {**SBC, "replications": 1000, "bins": 4}):
        again, data_again = replication(other, 17)
        for name in truth:
            np.testing.assert_array_equal(truth[name], again[name])
        np.testing.assert_array_equal(data.y, data_again.y)
        assert replication_seed(other, "nuts", 17) == replication_seed(SBC, "nuts", 17)
    assert not np.array_equal(replication(SBC, 16)[1].y, data.y)
    assert not np.array_equal(replication({**SBC, "seed": 8}, 17)[1].y, data.y)
    seeds = {replication_seed(SBC, m, r) for m in ("nuts", "advi") for r in range(100)}
    assert len(seeds) == 200


@pytest.mark.cmdstan
def test_two_batchings_give_identical_ranks(gmm_exe):
    """Replications run as one batch or as two give the same ranks (CmdStan seeds included)."""
    sbc = {**SBC, "n": 20, "d": 1, "draws": 9, "bins": 5}
    nuts = {
        "algorithm": "nuts",
        "chains": 1,
        "parallel_chains": 1,
        "threads_per_chain": 1,
        "iter_warmup": 100,
        "iter_sampling": 50,
        "adapt_delta": 0.8,
        "max_treedepth": 10,
        "metric": "diag_e",
        "starts": 2,
    }
    whole = run_sbc(gmm_exe, sbc, {"nuts": nuts}, range(4))
    parts = pd.concat(
        [run_sbc(gmm_exe, sbc, {"nuts": nuts}, reps) for reps in (range(3, 4), range(3))]
    )
    columns = ["method", "replication", "parameter", "rank"]
    expected = whole[columns].sort_values(columns[:3], ignore_index=True)
    got = parts[columns].sort_values(columns[:3], ignore_index=True)
    pd.testing.assert_frame_equal(got, expected)
    assert whole["rank"].notna().all() and set(whole["replication"]) == set(range(4))
    assert LOG_LIK in set(whole["parameter"])


def test_method_settings_replace_the_methods_own_for_sbc_only():
    config = _config(method_settings={"nuts": {"iter_warmup": 300, "chains": 2}})
    config["methods"]["nuts"].update(iter_warmup=1000, chains=4, iter_sampling=1000)
    nuts = check_sbc_config(config)["nuts"]
    assert (nuts["iter_warmup"], nuts["chains"], nuts["iter_sampling"]) == (300, 2, 1000)
    assert config["methods"]["nuts"]["iter_warmup"] == 1000  # the analysis's own is kept
    with pytest.raises(ConfigError, match=r"'sbc\.method_settings' names 'advi'"):
        check_sbc_config(_config(method_settings={"advi": {"iter": 10}}))
    with pytest.raises(ConfigError, match=r"'sbc\.method_settings\.nuts\.iter_warmup'"):
        check_sbc_config(_config(method_settings={"nuts": {"iter_warmup": -1}}))
    with pytest.raises(ConfigError, match="Additional properties"):
        check_sbc_config(_config(method_settings={"nuts": {"tol_rel_obj": 0.1}}))
    with pytest.raises(ConfigError, match="may not change"):
        check_sbc_config(_config(method_settings={"nuts": {"algorithm": "advi"}}))


def test_log_likelihood_of_an_overflowed_draw_is_minus_infinity():
    """A stuck chain's draw with infinite scales ranks lowest instead of failing the fit."""
    rng = np.random.default_rng(8)
    model = {"K": 2, "mu_sd": 2.0, "alpha": 1.0, "covariance": "full"}
    params = {n: v[None] for n, v in draw_prior(rng, model, 2).items()}
    y = simulate_data(rng, {n: v[0] for n, v in params.items()}, 10).y
    params["sigma"] = np.array([[[np.inf, 1.0], [1.0, 1.0]]])
    params["theta"] = np.array([[1.0, 0.0]])
    assert log_likelihood(y, params)[0] == -np.inf


def test_prior_draws_include_the_psi_factor():
    """psi > 0 multiplies the scales' prior by exp(-psi / (2 sigma^2)) (D = 1): the draws'
    mean of sigma is the integral's, and a psi the prior cannot reach is an error."""
    from scipy import integrate

    model = {"K": 1, "covariance": "diagonal", "sigma_location": 0.0, "sigma_scale": 0.5}
    rng = np.random.default_rng(3)
    draws = np.array(
        [draw_prior(rng, {**model, "psi": 0.5}, 1)["sigma"][0, 0] for _ in range(20000)]
    )

    def density(s):
        return stats.lognorm.pdf(s, 0.5) * np.exp(-0.5 / (2 * s**2))

    norm = integrate.quad(density, 0, np.inf)[0]
    mean = integrate.quad(lambda s: s * density(s), 0, np.inf)[0] / norm
    assert draws.mean() == pytest.approx(mean, abs=4 * draws.std() / np.sqrt(len(draws)))
    assert abs(mean - np.exp(0.125)) > 0.05  # the factor matters: lognormal(0, 0.5)'s mean
    with pytest.raises(ValueError, match=r"sbc.model.psi = 1000.0: no covariance accepted"):
        draw_prior(rng, {**model, "psi": 1000.0}, 1)


@pytest.mark.cmdstan
def test_sbc_fits_start_as_the_pipeline_does(gmm_exe, tmp_path):
    """NUTS from the multi-start optimizer (``starts``); ADVI from its init method's fit, which
    itself runs from the multi-start optimizer, as in gmmpipe.fit.fit_dataset."""
    from cmdstanpy import write_stan_json

    from gmmpipe import sbc as sbc_module
    from gmmpipe.cmdstan import load_model
    from gmmpipe.config import validate_config
    from gmmpipe.data import stan_data

    _, data = replication(SBC, 0)
    data_file = tmp_path / "data.json"
    write_stan_json(str(data_file), stan_data(data, SBC["model"]))
    model = load_model(gmm_exe)
    dataset = {"simulate": {"generator": "seed_notebook", "n": 9}, "model": {"K": 2}}
    methods = validate_config(
        {
            "datasets": {"d": dataset},
            "methods": {
                "nuts": {"algorithm": "nuts", "chains": 2, "iter_warmup": 100,
                         "iter_sampling": 50, "starts": 3},
                "map": {"algorithm": "optimize", "starts": 2},
                "advi": {"algorithm": "advi", "init": "map"},
            },
        }
    )["methods"]  # fmt: skip
    nuts, advi = methods["nuts"], {**methods["advi"], "init_method": methods["map"]}
    for name, spec in (("nuts", nuts), ("advi", advi)):
        out = tmp_path / name
        out.mkdir()
        post = sbc_module._fit(model, spec, data_file, 5, out, SBC["model"], data.y)
        assert post["mu"].shape[1:] == (2, 2) and np.isfinite(post["mu"]).all()
    assert len(list((tmp_path / "nuts" / "starts").iterdir())) == 3
    assert len(list((tmp_path / "advi" / "init" / "starts").iterdir())) == 2
    assert not (tmp_path / "advi" / "starts").exists()  # ADVI starts at the MAP's point
