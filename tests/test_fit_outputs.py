"""Reading CmdStan output recorded from real runs of stan/gmm.stan (tests/fixtures/cmdstan)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from gmmpipe.diagnostics import check, mode_check
from gmmpipe.draws import Draws, read_draws, relabel
from gmmpipe.fit import _stack_chains, stable_name, to_inference_data
from gmmpipe.summarize import SUMMARY_COLUMNS, summarize_fit
from gmmpipe.vi import advi_converged, importance_resample, pareto_khat, parse_elbo

THRESHOLDS = {
    "rhat_max": 1.01,
    "ess_bulk_min": 100,
    "ess_tail_min": 100,
    "max_divergences": 0,
    "max_treedepth_frac": 0.0,
    "ebfmi_min": 0.2,
    "khat_max": 0.7,
}
SPEC = {"max_treedepth": 10}


def _case(fixtures, name):
    folder = fixtures / "cmdstan" / name
    csvs = sorted(folder.glob("*.csv"))
    console = "\n".join(f.read_text() for f in sorted(folder.glob("*stdout.txt")))
    return csvs, console


def test_parse_elbo_converged(fixtures):
    _, console = _case(fixtures, "advi_meanfield")
    elbo = parse_elbo(console)
    assert list(elbo.columns) == ["iteration", "elbo", "delta_elbo_mean", "delta_elbo_med", "notes"]
    assert len(elbo) >= 2
    assert elbo["iteration"].is_monotonic_increasing
    assert elbo["iteration"].iloc[0] == 100
    assert np.isfinite(elbo["elbo"]).all()
    assert elbo["notes"].iloc[-1].endswith("CONVERGED")
    assert advi_converged(console)


def test_parse_elbo_max_iterations(fixtures):
    _, console = _case(fixtures, "advi_maxiter")
    elbo = parse_elbo(console)
    assert elbo["iteration"].tolist() == [100, 200, 300]
    assert elbo["elbo"].tolist() == [55.042, 54.863, 55.054]
    assert elbo["delta_elbo_mean"].tolist() == [1.0, 0.502, 0.003]
    assert not advi_converged(console)


def test_parse_elbo_without_table():
    assert parse_elbo("no ADVI here\n").empty
    assert not advi_converged("")


@pytest.mark.parametrize(
    "name,chains,draws",
    [("nuts", 4, 100), ("advi_meanfield", 1, 200), ("pathfinder", 1, 200), ("optimize", 1, 1)],
)
def test_read_draws_shapes(fixtures, name, chains, draws):
    algorithm = {"advi_meanfield": "advi"}.get(name, name)
    csvs, _ = _case(fixtures, name)
    out = read_draws(csvs, algorithm, k=2, d=2)
    assert out.mu.shape == (chains, draws, 2, 2)
    assert out.theta.shape == (chains, draws, 2)
    np.testing.assert_allclose(out.theta.sum(axis=-1), 1.0, atol=1e-5)


def test_advi_mean_row_is_kept_apart(fixtures):
    csvs, _ = _case(fixtures, "advi_meanfield")
    out = read_draws(csvs, "advi", k=2, d=2)
    frame = pd.read_csv(csvs[0], comment="#")
    mean_row = frame.iloc[0]
    assert out.extra["mean"]["theta"] == [mean_row["theta.1"], mean_row["theta.2"]]
    assert out.extra["mean"]["mu"] == [
        [mean_row["mu.1.1"], mean_row["mu.1.2"]],
        [mean_row["mu.2.1"], mean_row["mu.2.2"]],
    ]
    assert out.mu.shape[1] == len(frame) - 1
    np.testing.assert_array_equal(out.theta[0, 0], frame[["theta.1", "theta.2"]].iloc[1])
    assert {"log_p", "log_g"} <= set(out.stats)


def test_nuts_fixture_relabelled_and_gated(fixtures):
    csvs, console = _case(fixtures, "nuts")
    raw = read_draws(csvs, "nuts", k=2, d=2)
    # the recorded chains disagree on the labelling before relabelling
    chain_means = raw.theta.mean(axis=1)[:, 0]
    assert chain_means.min() < 0.5 < chain_means.max()
    draws = relabel(raw)
    assert draws.extra["relabelled_draws"] > 0
    assert (draws.theta.mean(axis=1)[:, 0] > 0.5).all()
    report = check("nuts", draws, console, THRESHOLDS, SPEC)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["r_hat_max"]["value"] < 1.05
    assert by_name["divergences"]["value"] == 0
    idata = to_inference_data(draws, attrs={"algorithm": "nuts"})
    table = summarize_fit(idata, "nuts")
    assert list(table.columns) == SUMMARY_COLUMNS
    assert table.loc["theta[1]", "mean"] > 0.8
    assert table.loc["mu[1, x1]", "mean"] == pytest.approx(0.81, abs=0.06)


def test_summary_keeps_the_digits_of_small_scales(fixtures):
    """Data in units where the means are about 1e-4: the summary is not rounded to 0."""
    draws = relabel(read_draws(_case(fixtures, "nuts")[0], "nuts", k=2, d=2))
    plain = summarize_fit(to_inference_data(draws, attrs={}), "nuts")
    small = summarize_fit(to_inference_data(replace(draws, mu=draws.mu * 1e-4), attrs={}), "nuts")
    mu = [p for p in plain.index if p.startswith("mu[")]
    for column in ("mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean"):
        np.testing.assert_allclose(small.loc[mu, column], plain.loc[mu, column] * 1e-4, rtol=1e-9)


def test_summary_of_a_single_chain_has_the_gates_r_hat(fixtures):
    """``chains: 1``: summary.csv's R-hat is that of the chain's halves, as in the gate."""
    draws = relabel(read_draws(_case(fixtures, "nuts")[0], "nuts", k=2, d=2))
    one = replace(
        draws,
        mu=draws.mu[:1],
        theta=draws.theta[:1],
        stats={name: value[:1] for name, value in draws.stats.items()},
    )
    table = summarize_fit(to_inference_data(one, attrs={}), "nuts")
    (gate,) = [
        c for c in check("nuts", one, "", THRESHOLDS, SPEC)["checks"] if c["name"] == "r_hat_max"
    ]
    rhat = table.filter(regex=r"^(mu|theta)\[", axis=0)["r_hat"]
    assert rhat.notna().all() and rhat.min() > 0.99
    assert rhat.max() == pytest.approx(gate["value"], rel=1e-12)


def test_unrelabelled_chains_fail_the_gate(fixtures):
    csvs, console = _case(fixtures, "nuts")
    report = check("nuts", read_draws(csvs, "nuts", k=2, d=2), console, THRESHOLDS, SPEC)
    assert not report["passed"]
    assert any(f.startswith("r_hat_max") for f in report["failures"])


def test_advi_and_pathfinder_gates(fixtures):
    csvs, console = _case(fixtures, "advi_maxiter")
    report = check("advi", read_draws(csvs, "advi", k=2, d=2), console, THRESHOLDS, {})
    assert not report["passed"]
    assert any(f.startswith("converged") for f in report["failures"])
    csvs, console = _case(fixtures, "pathfinder")
    report = check("pathfinder", read_draws(csvs, "pathfinder", k=2, d=2), console, THRESHOLDS, {})
    assert [c["name"] for c in report["checks"]] == ["pareto_khat"]
    assert np.isfinite(report["checks"][0]["value"])


def test_pathfinder_draws_are_importance_resampled(fixtures):
    """The gate's k-hat is that of all the approximations' draws (4 paths x 50 here); the
    posterior is `n` of them, drawn with their statistics."""
    csvs, console = _case(fixtures, "pathfinder")
    raw = read_draws(csvs, "pathfinder", k=2, d=2)
    draws = importance_resample(raw, 300, np.random.default_rng(1))
    assert draws.mu.shape == (1, 300, 2, 2) and draws.stats["lp"].shape == (1, 300)
    ratios = (raw.stats["lp"] - raw.stats["lp_approx"]).ravel()
    np.testing.assert_array_equal(draws.extra["log_ratios"], ratios)
    rows = {tuple(row) for row in np.column_stack([raw.mu.reshape(200, -1), ratios])}
    resampled = np.column_stack(
        [draws.mu.reshape(300, -1), (draws.stats["lp"] - draws.stats["lp_approx"]).ravel()]
    )
    assert all(tuple(row) in rows for row in resampled)
    (khat,) = check("pathfinder", draws, console, THRESHOLDS, {})["checks"]
    assert khat["value"] == pareto_khat(ratios)


def test_importance_resampling_weights_by_the_ratios():
    """Draws x ~ N(0, 0.5^2) with log ratio x: the resampled mean is the weighted mean (0.25
    in expectation), not the plain one (0)."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.5, size=4000)
    mu = np.broadcast_to(x[None, :, None, None], (1, 4000, 1, 1))
    raw = Draws(mu=mu, theta=np.ones((1, 4000, 1)), stats={"lp": x[None], "lp_approx": 0 * x[None]})
    resampled = importance_resample(raw, 20000, rng).mu.ravel()
    weighted = np.sum(x * np.exp(x)) / np.sum(np.exp(x))
    assert resampled.mean() == pytest.approx(weighted, abs=0.02)
    assert weighted == pytest.approx(0.25, abs=0.03)


def test_optimize_gate_and_point_summary(fixtures):
    csvs, console = _case(fixtures, "optimize")
    draws = read_draws(csvs, "optimize", k=2, d=2)
    assert check("optimize", draws, console, THRESHOLDS, {})["passed"]
    table = summarize_fit(to_inference_data(relabel(draws), attrs={}), "optimize")
    assert table["sd"].isna().all()
    # the mode on the weights' log-odds scale (the softmax Jacobian is part of the model)
    assert table.loc["theta[1]", "mean"] == pytest.approx(0.8598, abs=1e-3)


def test_stable_name():
    assert stable_name("gmm-20261125235734_1.csv") == "gmm_1.csv"
    assert stable_name("gmm-20261125235734_0-stdout.txt") == "gmm_0-stdout.txt"


def test_threads_turn_on_reduce_sum():
    from gmmpipe.fit import with_threads

    model = {"K": 2, "grainsize": 0}
    assert with_threads(model, {"threads_per_chain": 1}, 1000)["grainsize"] == 0
    assert with_threads(model, {"threads_per_chain": 2}, 1000)["grainsize"] == 125
    assert with_threads({"K": 2, "grainsize": 7}, {"threads_per_chain": 2}, 1000)["grainsize"] == 7
    assert with_threads(model, {"algorithm": "advi"}, 1000)["grainsize"] == 0


def test_chains_in_different_modes_are_stacked_beside_the_plain_result():
    """The chain_modes check fails for two chains in a merged mode; the report gains the chains'
    stacking weights (diagnostics.json) and the check's detail names them."""
    rng = np.random.default_rng(5)
    mu_true = np.array([[-3.0, 0.0], [3.0, 0.0]])
    y = mu_true[rng.integers(0, 2, 200)] + rng.normal(size=(200, 2))
    good = mu_true + 0.05 * rng.normal(size=(2, 100, 2, 2))
    merged = 0.05 * rng.normal(size=(2, 100, 2, 2))
    draws = Draws(mu=np.concatenate([good, merged]), theta=np.full((4, 100, 2), 0.5))
    report = {"checks": [mode_check(draws, threshold=1.0)]}
    assert not report["checks"][0]["passed"]
    _stack_chains(report, y, draws, seed=1)
    weights = report["chain_stacking"]["weights"]
    assert sum(weights[:2]) > 0.99
    assert "stacking weights of the chains" in report["checks"][0]["detail"]
    report = {
        "checks": [mode_check(Draws(mu=np.concatenate([good, good]), theta=draws.theta), 1.0)]
    }
    _stack_chains(report, y, draws, seed=1)
    assert "chain_stacking" not in report  # chains that agree are left alone
