"""Choosing K and membership through a real CmdStan: the Python log-likelihood equals the Stan
program's, the Laplace method, and K suggested by LOO on well-separated simulated data (small
N, few draws; the rate over many seeds is measured by benchmarks/choose_k.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from gmmpipe import compare, loo
from gmmpipe.cmdstan import load_model
from gmmpipe.data import simulate_mixture, simulate_seed_notebook, stan_data, write_dataset
from gmmpipe.fit import fit_dataset
from gmmpipe.layout import fit_paths
from gmmpipe.membership import write_membership

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

pytestmark = pytest.mark.cmdstan

THRESHOLDS = {
    "rhat_max": 1.05,
    "ess_bulk_min": 50,
    "ess_tail_min": 50,
    "max_divergences": 10,
    "max_treedepth_frac": 0.1,
    "ebfmi_min": 0.2,
    "khat_max": 0.7,
}
NUTS = {
    "algorithm": "nuts",
    "chains": 2,
    "parallel_chains": 2,
    "threads_per_chain": 1,
    "iter_warmup": 300,
    "iter_sampling": 300,
    "adapt_delta": 0.8,
    "max_treedepth": 10,
    "metric": "diag_e",
}
LAPLACE = {"algorithm": "laplace", "draws": 500, "optimizer": "lbfgs", "iter": 2000}
COMPARE = {
    "max_draws": 2000,
    "subsample_above": 20000,
    "subsample_size": 2000,
    "max_refits": 3,
    "kfold": 3,
    "elpd_margin": 4.0,
    "seed": 1,
}
SEPARATED = {"means": [[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]], "weights": [0.3, 0.3, 0.4]}


@pytest.mark.parametrize("covariance", ["identity", "diagonal", "full"])
def test_python_log_lik_equals_the_stan_program(tmp_path, gmm_exe, covariance):
    data = simulate_mixture(40, [[-1.0, 0.0], [1.5, 1.0]], [0.4, 0.6], seed=2)
    spec = {"K": 2, "mu_sd": 3.0, "alpha": 1.0, "covariance": covariance, "membership": True}
    fit = load_model(gmm_exe).sample(
        data=stan_data(data, spec), seed=3, chains=1, iter_warmup=100, iter_sampling=20,
        output_dir=tmp_path, sig_figs=15, show_progress=False,
    )  # fmt: skip
    params = {"mu": fit.stan_variable("mu"), "theta": fit.stan_variable("theta")}
    if covariance != "identity":
        params["sigma"] = fit.stan_variable("sigma")
    if covariance == "full":
        chol = fit.stan_variable("L_Omega")
        params["Omega"] = chol @ np.swapaxes(chol, -1, -2)
    np.testing.assert_allclose(loo.log_lik(data.y, params), fit.stan_variable("log_lik"), rtol=1e-8)
    from gmmpipe.membership import responsibilities

    r = responsibilities(data.y, {n: v[:1] for n, v in params.items()})
    np.testing.assert_allclose(r["mean"], fit.stan_variable("p_z")[0], atol=1e-8)


def test_laplace_method_fits_and_checks_khat(tmp_path, gmm_exe):
    data = simulate_seed_notebook(100)
    spec = {"model": {"K": 2, "mu_sd": 1.0, "alpha": 0.1}}
    outputs = fit_paths(tmp_path)
    info = fit_dataset(
        gmm_exe, data, dataset_spec=spec, method_spec=LAPLACE, seed=4,
        thresholds=THRESHOLDS, outputs=outputs,
    )  # fmt: skip
    assert info["algorithm"] == "laplace"
    idata = az.from_netcdf(outputs["posterior"])
    assert idata.posterior.sizes["draw"] == 500
    assert {"log_p", "log_q"} <= set(idata.sample_stats.data_vars)
    report = json.loads(outputs["diagnostics"].read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert np.isfinite(checks["pareto_khat"]["value"])  # besides the component checks
    mu = idata.posterior["mu"].mean(("chain", "draw")).values  # heavy component first
    np.testing.assert_allclose(mu, [[0.81, 0.99], [-0.79, -1.48]], atol=0.3)
    assert (outputs["cmdstan"] / "mode").is_dir()  # the mode's optimization kept apart


def _sweep(tmp_path, gmm_exe, data, model, ks, method=NUTS):
    """Fit every K, then compare (refits through CmdStan) and write memberships."""
    data_csv = tmp_path / "data.csv"
    write_dataset(data, data_csv, tmp_path / "truth.json")
    posteriors = {}
    for k in ks:
        outputs = fit_paths(tmp_path / f"K{k}")
        fit_dataset(
            gmm_exe, data, dataset_spec={"model": {**model, "K": k}}, method_spec=method,
            seed=10 + k, thresholds=THRESHOLDS, outputs=outputs,
        )  # fmt: skip
        posteriors[k] = outputs["posterior"]
    names = ("table", "khat", "suggestion", "html", "figure")
    outputs = {n: tmp_path / f"compare.{n}" for n in names}
    evidence = compare.run_compare(
        data=data_csv, dataset_json=tmp_path / "truth.json", posteriors=posteriors,
        diagnostics={k: p.with_name("diagnostics.json") for k, p in posteriors.items()},
        settings=COMPARE, outputs=outputs,
        dataset="test", method=method["algorithm"],
        refit_args={"exe_file": gmm_exe, "dataset_spec": {"model": model},
                    "method_spec": method, "seed": 5, "workdir": tmp_path / "refits"},
    )  # fmt: skip
    return evidence, pd.read_csv(outputs["table"]), data_csv, posteriors


def test_well_separated_three_components_suggest_k3_with_high_ari(tmp_path, gmm_exe):
    data = simulate_mixture(600, SEPARATED["means"], SEPARATED["weights"], seed=11)
    model = {"mu_sd": 5.0, "alpha": 1.0}
    evidence, table, data_csv, posteriors = _sweep(tmp_path, gmm_exe, data, model, [2, 3, 4])
    assert evidence["suggested_K"] == 3, table.to_string()
    assert table.set_index("K").loc[3, "gate"] == "passed"
    assert table.loc[table["K"] == 2, "elpd_diff"].item() > 50  # K = 2 is far worse
    assert table["weight"].sum() == pytest.approx(1.0)
    assert set(table["estimate"]) <= {"psis", "psis+refits", "kfold-3"}
    info = write_membership(
        data=data_csv, dataset_json=data_csv.with_name("truth.json"), posterior=posteriors[3],
        table=tmp_path / "m.csv",
        summary=tmp_path / "m.json",
    )  # fmt: skip
    assert info["ari"] >= 0.9


def test_seed_small_suggests_k2(tmp_path, gmm_exe):
    data = simulate_seed_notebook(100)
    evidence, table, _, _ = _sweep(tmp_path, gmm_exe, data, {"mu_sd": 1.0, "alpha": 0.1}, [1, 2, 3])
    assert evidence["suggested_K"] == 2, table.to_string()


def test_cmdstan_refit_leaves_the_points_out(tmp_path, gmm_exe):
    """The fallback's refit runs the compared method on the data without the given points."""
    data = simulate_mixture(40, [[0.0, 0.0]], [1.0], seed=5)
    data.y[0] = [30.0, 30.0]  # an outlier that moves the mean by 0.75 when it is in
    model = {"K": 1, "mu_sd": 50.0, "alpha": 1.0}
    start = {"mu": data.y.mean(axis=0)[None, None], "theta": np.ones((1, 1))}
    refit = compare.cmdstan_refit(
        gmm_exe, data, dataset_spec={"model": model}, method_spec=LAPLACE, seed=1,
        start=start, workdir=tmp_path,
    )  # fmt: skip
    draws = refit(np.array([0]))
    assert draws["mu"].shape == (500, 1, 2)
    np.testing.assert_allclose(draws["mu"].mean(axis=0)[0], data.y[1:].mean(axis=0), atol=0.1)
    folds = refit(np.arange(20))  # a K-fold fold: half of the points out
    np.testing.assert_allclose(folds["mu"].mean(axis=0)[0], data.y[20:].mean(axis=0), atol=0.15)
