"""Mode, degenerate-component and posterior predictive checks, and the starts' helpers, on
synthetic draws (no CmdStan)."""

from __future__ import annotations

import numpy as np

from gmmpipe.diagnostics import (
    THRESHOLDS,
    check,
    component_checks,
    mode_check,
    nuts_checks,
    ppc_check,
)
from gmmpipe.draws import Draws
from gmmpipe.inits import (
    PATH_STRATEGY,
    distinct_optima,
    jittered_inits,
    kmeanspp_point,
    path_starts,
    stan_inits,
)
from gmmpipe.ppc import posterior_predictive

THRESHOLDS_NUTS = {"rhat_max": 1.01, "ess_bulk_min": 400, "ess_tail_min": 400,
                   "max_divergences": 0, "max_treedepth_frac": 0.0, "ebfmi_min": 0.2}  # fmt: skip


def _draws(rng, chains=4, n=300, mu=((0.0, 0.0), (5.0, 5.0)), sd=0.05, theta=(0.5, 0.5)):
    mu = np.asarray(mu, dtype=float)
    k, d = mu.shape
    draws = mu + sd * rng.normal(size=(chains, n, k, d))
    weights = np.tile(np.asarray(theta, dtype=float), (chains, n, 1))
    lp = -10 + rng.normal(size=(chains, n))
    return Draws(mu=draws, theta=weights, stats={"lp": lp})


def test_mode_check_names_the_chain_in_another_mode():
    rng = np.random.default_rng(1)
    same = _draws(rng)
    assert mode_check(same, 1.0)["passed"]
    other = _draws(rng)
    other.mu[2] += 0.5  # chain 3 sits 10 posterior sd away
    other.stats["lp"][2] -= 4.0
    result = mode_check(other, 1.0)
    assert not result["passed"] and result["value"] > 5
    assert result["detail"].startswith("chain 3: ") and "chain 1" not in result["detail"]
    assert mode_check(_draws(rng, chains=1), 1.0) is None


def test_degenerate_components_are_flagged():
    rng = np.random.default_rng(2)
    y = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(5, 1, (200, 2))])
    good = component_checks(_draws(rng), y, THRESHOLDS)
    assert all(c["passed"] for c in good)
    empty = _draws(rng, mu=((0, 0), (5, 5), (40, -30)), theta=(0.5, 0.499, 0.001))
    light, far = component_checks(empty, y, THRESHOLDS)
    assert not light["passed"] and "component 3: weight 0.001" in light["detail"]
    assert not far["passed"] and far["detail"].startswith("component 3: mean")


def test_non_finite_draws_fail_the_mode_component_and_predictive_checks():
    """NaN compares false with every threshold: each check fails on it, as R-hat's does."""
    rng = np.random.default_rng(7)
    y = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(5, 1, (200, 2))])
    draws = _draws(rng)
    draws.mu[1, 5, 0, 0] = np.nan
    result = mode_check(draws, 1.0)
    assert not result["passed"] and "chain 2: mu[1, 1] mean nan" in result["detail"]
    light, far = component_checks(draws, y, THRESHOLDS)
    assert light["passed"] and not far["passed"]
    assert far["detail"].startswith("component 1: mean [") and "is nan data sd" in far["detail"]
    draws.theta[0, 0] = np.nan
    assert not component_checks(draws, y, THRESHOLDS)[0]["passed"]
    draws.stats.update(_sampler_stats(rng, 4, 300))
    rhat = nuts_checks(draws, THRESHOLDS_NUTS, max_treedepth=10)[0]
    assert not rhat["passed"] and rhat["detail"] == "at mu[1, 1]"  # R-hat undefined there
    failed = ppc_check({"ks_z": [0.5, np.nan], "ks_p": [0.4, np.nan], "draws": 100}, THRESHOLDS)
    assert not failed["passed"] and failed["detail"].startswith("coordinate 2:")


def _posterior(mu, sigma, theta, draws=100):
    rng = np.random.default_rng(3)
    mu = np.asarray(mu, dtype=float)
    return {
        "mu": mu + 0.01 * rng.normal(size=(2, draws, *mu.shape)),
        "theta": np.tile(np.asarray(theta, dtype=float), (2, draws, 1)),
        "sigma": np.tile(np.asarray(sigma, dtype=float), (2, draws, 1, 1)),
    }


def test_posterior_predictive_check_passes_a_right_model_and_fails_wrong_ones():
    rng = np.random.default_rng(4)
    z = rng.random(600) < 0.3
    y = np.where(z[:, None], [1.0, 300.0], [4.0, 600.0]) + rng.normal(size=(600, 2)) * [0.5, 40]
    right = posterior_predictive(
        y, _posterior([[1, 300], [4, 600]], [[0.5, 40]] * 2, [0.3, 0.7]), seed=1
    )
    assert ppc_check(right, THRESHOLDS)["passed"], right["ks_z"]
    assert {r["statistic"] for r in right["summaries"]} == {"mean", "sd", "q05", "q50", "q95"}
    assert right["pit"].shape == (600, 2) and 0.4 < right["pit"].mean() < 0.6
    # means pinned near 0 on the column in the hundreds ("converged but wrong")
    pinned = _posterior([[1, 0.5], [4, 0.6]], [[0.5, 40]] * 2, [0.3, 0.7])
    failed = ppc_check(posterior_predictive(y, pinned, seed=1), THRESHOLDS)
    assert not failed["passed"] and "coordinate 2" in failed["detail"]
    # one component for two clusters
    single = _posterior([[3.1, 510], [3.1, 510]], [[1.5, 140]] * 2, [0.999, 0.001])
    assert not ppc_check(posterior_predictive(y, single, seed=1), THRESHOLDS)["passed"]


def test_gate_reports_details_in_failures():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(100, 2))
    draws = _draws(rng, mu=((0, 0), (40, 40)), theta=(0.999, 0.001))
    report = check("optimize", draws, "", {}, {}, y=y)
    assert any(
        f.startswith("mean_distance_max = ") and ": component 2" in f for f in report["failures"]
    )


def _sampler_stats(rng, chains, n):
    """NUTS sampler statistics of a healthy run: no divergence, depth 1, normal energy."""
    return {
        "diverging": np.zeros((chains, n)),
        "tree_depth": np.ones((chains, n)),
        "energy": rng.normal(size=(chains, n)),
    }


def test_a_single_chain_is_judged_by_its_halves():
    """One chain (``chains: 1``): R-hat of its halves, finite, and the gate can pass or fail."""
    rng = np.random.default_rng(6)
    n = 1000
    stats = _sampler_stats(rng, 1, n)
    good = Draws(mu=rng.normal(size=(1, n, 1, 1)), theta=np.ones((1, n, 1)), stats=stats)
    (rhat, *_) = nuts_checks(good, THRESHOLDS_NUTS, max_treedepth=10)
    assert rhat["name"] == "r_hat_max" and rhat["passed"] and np.isfinite(rhat["value"])
    drift = np.linspace(0, 3, n)[None, :, None, None]  # the chain moves by 3 posterior sd
    drifting = Draws(mu=good.mu + drift, theta=good.theta, stats=stats)
    (rhat, *_) = nuts_checks(drifting, THRESHOLDS_NUTS, max_treedepth=10)
    assert not rhat["passed"] and rhat["value"] > 1.1


def test_failed_r_hat_and_ess_name_the_parameter_element():
    """The gate's detail says where R-hat or ESS fails (components and coordinates from 1;
    Omega by component, row and column)."""
    rng = np.random.default_rng(8)
    n = 500
    stats = _sampler_stats(rng, 4, n)
    noise = 0.1 * np.tril(rng.normal(size=(4, n, 2, 3, 3)), k=-1)
    omega = np.eye(3) + noise + np.swapaxes(noise, -1, -2)
    omega[1, :, 1, 2, 0] += 0.2  # chain 2's Omega[2, 3, 1] elsewhere
    omega[1, :, 1, 0, 2] += 0.2
    draws = Draws(
        mu=rng.normal(size=(4, n, 2, 3)),
        theta=rng.dirichlet([5, 5], size=(4, n)),
        sigma=np.exp(0.1 * rng.normal(size=(4, n, 2, 3))),
        omega=omega,
        stats=stats,
    )
    rhat, bulk, _ = nuts_checks(draws, THRESHOLDS_NUTS, max_treedepth=10)[:3]
    assert not rhat["passed"] and rhat["detail"] == "at Omega[2, 3, 1]"
    assert not bulk["passed"] and bulk["detail"] == "at Omega[2, 3, 1]"
    draws.mu[2, :, 1, 2] += 3  # chain 3's mu[2, 3]: further off
    rhat = nuts_checks(draws, THRESHOLDS_NUTS, max_treedepth=10)[0]
    assert rhat["detail"] == "at mu[2, 3]"
    good = Draws(mu=rng.normal(size=(4, n, 1, 3)), theta=np.ones((4, n, 1)), stats=stats)
    assert "detail" not in nuts_checks(good, THRESHOLDS_NUTS, max_treedepth=10)[0]


def test_starts_helpers_are_deterministic_and_distinct():
    rng = np.random.default_rng(6)
    y = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (100, 2))]) * [1, 100]
    a = kmeanspp_point(y, 2, np.random.default_rng(1))
    b = kmeanspp_point(y, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(a["mu"], b["mu"])
    assert sorted(np.round(a["theta"], 2)) == [0.25, 0.75]
    assert {n for n in stan_inits(a, {"covariance": "full"}, y)} == {
        "phi",
        "mu_free",
        "sigma",
        "L_Omega",
    }
    point = {"mu": np.array([[0.0, 0.0], [8.0, 800.0]]), "theta": np.array([0.75, 0.25])}
    mirrored = {"mu": point["mu"][::-1], "theta": point["theta"][::-1]}
    worse = {"mu": np.array([[4.0, 400.0], [50.0, 900.0]]), "theta": np.array([0.9, 0.1])}
    sd = y.std(axis=0)
    optima = distinct_optima(
        [{"lp": -5.0, "point": worse}, {"lp": 1.0, "point": point}, {"lp": 1.0, "point": mirrored}],
        sd,
    )
    assert [o["starts"] for o in optima] == [2, 1] and optima[0]["lp"] == 1.0
    starts = jittered_inits({**point, "sigma": np.ones((2, 2))}, 400, 4, np.random.default_rng(2))
    assert len(starts) == 4 and not np.allclose(starts[0]["mu"], starts[1]["mu"])
    assert all(np.isclose(s["theta"].sum(), 1) for s in starts)
    assert max(np.abs(s["mu"] - point["mu"]).max() for s in starts) < 1.0


def test_pathfinder_paths_start_with_sds_on_the_data_scale():
    """sigma drawn per path as s_j exp(uniform(-2, 2)) (a column of sd 100 gets sds near 100,
    not near 1), the rest left to CmdStan; recorded for fit.json; the same seed gives the same;
    nothing for the identity covariance, which has no sigma."""
    rng = np.random.default_rng(6)
    y = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (100, 2))]) * [1, 100]
    record, inits = path_starts(y, {"K": 2, "covariance": "full"}, 4, seed=3)
    again, _ = path_starts(y, {"K": 2, "covariance": "full"}, 4, seed=3)
    assert record == again and record["strategy"] == PATH_STRATEGY
    assert len(inits) == len(record["chain_inits"]) == 4 and set(inits[0]) == {"sigma"}
    sigma = np.array([i["sigma"] for i in inits])  # (path, K, D)
    assert sigma.shape == (4, 2, 2) and len(np.unique(sigma[:, 0, 0])) == 4
    ratio = sigma / y.std(axis=0, ddof=1)
    assert np.all((ratio > np.exp(-2)) & (ratio < np.exp(2)))
    _, tied = path_starts(y, {"K": 2, "covariance": "tied"}, 4, seed=3)
    assert np.array(tied[0]["sigma"]).shape == (1, 2)
    assert path_starts(y, {"K": 2, "covariance": "identity"}, 4, seed=3) == (None, None)
