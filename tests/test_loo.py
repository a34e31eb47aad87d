"""PSIS-LOO of the marginal log-likelihood, its fallbacks, subsampling and the K suggestion
(no CmdStan: draws are synthetic; the CmdStan tests are in test_choose_k.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from gmmpipe import loo
from gmmpipe.loo import FitLoo

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

SETTINGS = {
    "max_draws": 2000,
    "subsample_above": 20000,
    "subsample_size": 2000,
    "max_refits": 10,
    "kfold": 5,
    "elpd_margin": 4.0,
    "seed": 1,
}


def _draws(rng, s, k, d, covariance):
    params = {
        "mu": rng.normal(size=(s, k, d)),
        "theta": rng.dirichlet(np.ones(k), size=s),
    }
    if covariance != "identity":
        params["sigma"] = np.exp(0.3 * rng.normal(size=(s, k, d)))
    if covariance == "full":
        a = rng.normal(size=(s, k, d, d))
        cov = a @ np.swapaxes(a, -1, -2) + np.eye(d)
        sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        params["Omega"] = cov / (sd[..., :, None] * sd[..., None, :])
    return params


@pytest.mark.parametrize("covariance", ["identity", "diagonal", "full"])
def test_log_joint_matches_scipy(covariance):
    rng = np.random.default_rng(0)
    params = _draws(rng, 3, 2, 3, covariance)
    y = rng.normal(size=(4, 3))
    got = loo.log_joint(y, params)
    for s in range(3):
        for k in range(2):
            sd = params.get("sigma", np.ones((3, 2, 3)))[s, k]
            omega = params.get("Omega", np.tile(np.eye(3), (3, 2, 1, 1)))[s, k]
            dist = multivariate_normal(params["mu"][s, k], omega * np.outer(sd, sd))
            expected = np.log(params["theta"][s, k]) + dist.logpdf(y)
            np.testing.assert_allclose(got[s, :, k], expected, rtol=1e-10)


def test_log_lik_is_label_invariant_and_chunked(monkeypatch):
    rng = np.random.default_rng(1)
    params = _draws(rng, 50, 3, 2, "diagonal")
    y = rng.normal(size=(97, 2))
    whole = loo.log_lik(y, params)
    perm = [2, 0, 1]
    permuted = {name: value[:, perm] for name, value in params.items()}
    monkeypatch.setattr(loo, "_CHUNK_ELEMENTS", 50 * 3 * 2 * 7)  # chunks of 7 points
    np.testing.assert_allclose(loo.log_lik(y, permuted), whole, rtol=1e-12)
    assert whole.shape == (50, 97)


def _posterior(rng, y, s=1000):
    """Approximate posterior draws of a 1-component identity model (mu ~ N(ybar, 1/N))."""
    n, d = y.shape
    return {
        "mu": y.mean(axis=0) + rng.standard_normal((s, 1, d)) / np.sqrt(n),
        "theta": np.ones((s, 1)),
    }


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_relative_efficiency_of_autocorrelated_chains(rho):
    """r_eff of four AR(1) chains is their ESS / S, (1 - rho) / (1 + rho); one chain gets 1."""
    rng = np.random.default_rng(int(10 * rho))
    chains, n = 4, 1000

    def ar1(size):
        x = np.empty((chains, n, *size))
        x[:, 0] = rng.standard_normal((chains, *size))
        for t in range(1, n):
            x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal((chains, *size))
        return x.reshape(chains * n, *size)

    params = {"mu": ar1((2, 2)), "theta": 0.5 + 0.01 * ar1((2,))}
    assert loo.relative_efficiency(params, chains) == pytest.approx((1 - rho) / (1 + rho), rel=0.1)
    assert loo.relative_efficiency(params, 1) == 1.0


def test_psis_loo_agrees_with_arviz():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(80, 2))
    params = _posterior(rng, y)
    result = loo.psis_loo(y, params, k=1)
    ll = loo.log_lik(y, params)
    idata = az.from_dict(posterior={"mu": params["mu"][None]}, log_likelihood={"y": ll[None]})
    reference = az.loo(idata, pointwise=True, reff=1.0)
    assert result.elpd == pytest.approx(reference["elpd_loo"], rel=1e-10)
    assert result.se == pytest.approx(reference["se"], rel=1e-10)
    assert result.p_loo == pytest.approx(reference["p_loo"], rel=1e-8)
    np.testing.assert_allclose(result.khat, reference["pareto_k"].values, rtol=1e-10)
    assert result.threshold == pytest.approx(min(1 - 1 / np.log10(1000), 0.7))
    assert result.estimate == "psis" and result.n_bad == 0


def test_difference_estimator_exact_with_every_point_and_unbiased():
    rng = np.random.default_rng(3)
    exact = rng.normal(-3, 1, size=1000)
    approx = exact + rng.normal(0, 0.1, size=1000)
    full = loo.srs_difference_estimate(approx, exact, np.arange(1000))
    assert full["elpd"] == pytest.approx(exact.sum())
    assert full["subsampling_se"] == 0
    assert full["se"] == pytest.approx(np.sqrt(1000 * exact.var()), rel=1e-6)
    estimates, ses = [], []
    for _ in range(400):
        idx = rng.choice(1000, 50, replace=False)
        est = loo.srs_difference_estimate(approx, exact[idx], idx)
        estimates.append(est["elpd"])
        ses.append(est["subsampling_se"])
    assert np.mean(estimates) == pytest.approx(exact.sum(), abs=3 * np.std(estimates) / 20)
    assert np.mean(ses) == pytest.approx(np.std(estimates), rel=0.15)


def test_subsampling_loo_is_close_to_full_loo():
    rng = np.random.default_rng(4)
    y = rng.normal(size=(3000, 2))
    params = _posterior(rng, y, s=500)
    full = loo.psis_loo(y, params, k=1)
    sub = loo.psis_loo(y, params, k=1, subsample=np.sort(rng.choice(3000, 300, replace=False)))
    assert sub.estimate == "subsampling" and len(sub.index) == 300
    assert abs(sub.elpd - full.elpd) < 3 * sub.subsampling_se + 0.5
    assert sub.se == pytest.approx(full.se, rel=0.1)


def _outlier_data(rng):
    y = rng.normal(size=(30, 2))
    y[:3] = [[15.0, 15.0], [-15.0, 15.0], [15.0, -15.0]]  # k-hat far above the threshold
    return y


def test_points_above_the_khat_threshold_are_refitted_exactly():
    rng = np.random.default_rng(5)
    y = _outlier_data(rng)
    params = _posterior(rng, y, s=1000)
    calls, refits = [], {}

    def refit(exclude):
        calls.append(exclude.tolist())
        keep = np.setdiff1d(np.arange(len(y)), exclude)
        refits[int(exclude[0])] = _posterior(np.random.default_rng(int(exclude[0])), y[keep])
        return refits[int(exclude[0])]

    results = loo.loo_over_k(y, {1: params}, settings=SETTINGS, refits={1: refit})
    r = results[1]
    assert r.n_bad >= 1 and r.estimate == "psis+refits"
    assert sorted(r.refitted) == sorted(c[0] for c in calls) and all(len(c) == 1 for c in calls)
    assert r.refitted == np.flatnonzero(r.khat > r.threshold).tolist()
    # a refitted point's elpd is log mean_s p(y_i | draws of the fit without y_i)
    for point in r.refitted:
        mu = refits[point]["mu"][:, 0]
        dens = [multivariate_normal(m, np.eye(2)).logpdf(y[point]) for m in mu]
        expected = np.log(np.mean(np.exp(np.array(dens) - max(dens)))) + max(dens)
        assert r.elpd_i[point] == pytest.approx(expected, rel=1e-10)
    assert r.elpd == pytest.approx(r.elpd_i.sum())


def test_too_many_bad_points_switch_every_k_to_kfold():
    rng = np.random.default_rng(6)
    y = _outlier_data(rng)
    fits = {1: _posterior(rng, y), 2: _posterior(rng, y)}
    held_out = {1: [], 2: []}

    draws = {1: [], 2: []}

    def make_refit(k):
        def refit(exclude):
            held_out[k].append(exclude)
            keep = np.setdiff1d(np.arange(len(y)), exclude)
            draws[k].append(_posterior(rng, y[keep]))
            return draws[k][-1]

        return refit

    settings = {**SETTINGS, "max_refits": 1}
    results = loo.loo_over_k(y, fits, settings=settings, refits={k: make_refit(k) for k in fits})
    for k in fits:
        assert results[k].estimate == "kfold-5"
        folds = np.concatenate(held_out[k])
        np.testing.assert_array_equal(np.sort(folds), np.arange(len(y)))  # a partition
        assert results[k].n_bad >= 1 and "k-hat" in results[k].notes[0]
    # the same folds for every K
    for a, b in zip(held_out[1], held_out[2], strict=True):
        np.testing.assert_array_equal(a, b)
    # each point scored by its own fold's refit: log mean_s N(y_i | mu_s, I)
    for fold, fit in zip(held_out[1], draws[1], strict=True):
        for point in fold:
            dens = multivariate_normal(np.zeros(2), np.eye(2)).logpdf(y[point] - fit["mu"][:, 0])
            expected = np.log(np.mean(np.exp(dens - dens.max()))) + dens.max()
            assert results[1].elpd_i[point] == pytest.approx(expected, rel=1e-10)
    assert results[1].elpd == pytest.approx(results[1].elpd_i.sum())


def test_without_refits_the_psis_estimate_is_flagged():
    rng = np.random.default_rng(5)
    y = _outlier_data(rng)
    r = loo.loo_over_k(y, {1: _posterior(rng, y)}, settings=SETTINGS)[1]
    assert r.estimate == "psis" and r.n_bad >= 1 and "unreliable" in r.notes[0]


def _fake(k, elpd_i):
    elpd_i = np.asarray(elpd_i, dtype=float)
    n = len(elpd_i)
    return FitLoo(
        k=k, estimate="psis", elpd=float(elpd_i.sum()), se=float(np.sqrt(n * elpd_i.var())),
        p_loo=float(k), n_draws=1000, threshold=0.7, index=np.arange(n), elpd_i=elpd_i,
        khat=np.full(n, 0.1), n_bad=0,
    )  # fmt: skip


def test_suggestion_is_the_smallest_k_close_to_the_best():
    rng = np.random.default_rng(7)
    base = rng.normal(-3, 0.5, size=500)
    results = {
        1: _fake(1, base - 0.2),  # 100 worse: out
        2: _fake(2, base + 0.002 * rng.standard_normal(500)),  # about 3 worse than K = 3
        3: _fake(3, base + 0.006),
        4: _fake(4, base + 0.005 + 0.001 * rng.standard_normal(500)),
    }
    table, evidence = loo.compare_k(results, n=500, margin=4.0)
    assert evidence["best_K"] == 3 and evidence["suggested_K"] == 2
    assert list(table.loc[table["suggested"], "K"]) == [2]
    assert table["weight"].sum() == pytest.approx(1.0)
    row = table.set_index("K").loc[1]
    assert row["elpd_diff"] == pytest.approx(103, rel=1e-6)
    # the same numbers as ArviZ's compare with stacking
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az_table = az.compare(
            {f"K={k}": loo._elpd_data(r) for k, r in results.items()}, method="stacking"
        )
    for k in results:
        assert table.set_index("K").loc[k, "weight"] == pytest.approx(
            az_table.loc[f"K={k}", "weight"]
        )
        assert table.set_index("K").loc[k, "diff_se"] == pytest.approx(
            az_table.loc[f"K={k}", "dse"], rel=1e-6
        )
    assert "suggest" in loo.suggestion_text(evidence, [1, 2, 3, 4]).lower()


def test_one_k_needs_no_comparison():
    table, evidence = loo.compare_k({2: _fake(2, np.full(10, -1.0))}, n=10)
    assert evidence["suggested_K"] == 2 and table["weight"].tolist() == [1.0]


def test_khat_threshold():
    assert loo.khat_threshold(4000) == 0.7
    assert loo.khat_threshold(100) == pytest.approx(0.5)


def test_chain_stacking_weights_the_chains_in_the_mode_that_predicts():
    """Two chains near the true mixture, two in a mode with the components merged: stacking
    puts its weight on the first two, and the stacked means are theirs."""
    rng = np.random.default_rng(4)
    mu_true = np.array([[-3.0, 0.0], [3.0, 0.0]])
    z = rng.integers(0, 2, 300)
    y = mu_true[z] + rng.normal(size=(300, 2))
    good = mu_true + 0.05 * rng.normal(size=(2, 200, 2, 2))
    merged = np.zeros((2, 200, 2, 2)) + 0.05 * rng.normal(size=(2, 200, 2, 2))
    params = {
        "mu": np.concatenate([good, merged]),
        "theta": np.full((4, 200, 2), 0.5),
    }
    out = loo.chain_stacking(y, params, max_points=100)
    assert out["points"] == 100 and len(out["weights"]) == 4
    assert sum(out["weights"][:2]) > 0.99, out["weights"]
    np.testing.assert_allclose(out["mu"], mu_true, atol=0.1)
    np.testing.assert_allclose(out["theta"], [0.5, 0.5])


def test_the_compare_step_marks_the_k_whose_fit_failed_its_gate(tmp_path):
    """loo.csv's gate column, suggestion.json's failed_K and its sentence name a K whose fit
    failed its diagnostics (run_compare without refits, on fits written as the workflow does)."""
    from fixtures.report.fake_fits import true_params, write_fake_dataset, write_fit

    from gmmpipe.compare import run_compare

    fake = write_fake_dataset(tmp_path / "data", k=2, n=150, methods={"nuts": "nuts"})
    posteriors = {2: fake["posteriors"]["nuts"]}
    posteriors[3] = write_fit(tmp_path / "K3", "nuts", *true_params(3, 2), passed=False)
    outputs = {n: tmp_path / f"out.{n}" for n in ("table", "khat", "suggestion", "html", "figure")}
    evidence = run_compare(
        data=fake["data"],
        dataset_json=fake["truth"],
        posteriors=posteriors,
        diagnostics={k: path.with_name("diagnostics.json") for k, path in posteriors.items()},
        settings=SETTINGS,
        outputs=outputs,
        dataset="d",
        method="nuts",
    )
    table = pd.read_csv(outputs["table"]).set_index("K")
    assert table["gate"].to_dict() == {2: "passed", 3: "FAILED: r_hat_max"}
    assert evidence["failed_K"] == [3]
    assert evidence["text"].endswith(
        "The nuts fit of K = 3 failed its diagnostics gate: its elpd may be wrong (see the "
        "gate column)."
    )
    assert "FAILED: r_hat_max" in outputs["html"].read_text()
    assert outputs["figure"].stat().st_size > 0
