"""General mixtures through a real CmdStan: recovery of known truths with diagonal and full
covariances in 1, 2 and 3 dimensions, membership output, and a small SBC of NUTS and ADVI."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logsumexp

from gmmpipe.arrays import covariances
from gmmpipe.cmdstan import load_model
from gmmpipe.data import simulate_mixture, stan_data
from gmmpipe.fit import fit_dataset
from gmmpipe.layout import fit_paths
from gmmpipe.relabel import match_to_reference
from gmmpipe.sbc import method_verdicts, run_sbc, summarize

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

pytestmark = pytest.mark.cmdstan

NUTS = {
    "algorithm": "nuts",
    "chains": 2,
    "parallel_chains": 2,
    "threads_per_chain": 1,
    "iter_warmup": 500,
    "iter_sampling": 500,
    "adapt_delta": 0.9,
    "max_treedepth": 10,
    "metric": "diag_e",
}
THRESHOLDS = {
    "rhat_max": 1.05,
    "ess_bulk_min": 100,
    "ess_tail_min": 100,
    "max_divergences": 0,
    "max_treedepth_frac": 0.0,
    "ebfmi_min": 0.2,
    "khat_max": 0.7,
}
INTERVAL = 0.9

# Well-separated truths; scales and correlations differ between components.
CASES = {
    "1d_diagonal": dict(
        means=[[-2.0], [2.5]],
        weights=[0.4, 0.6],
        covariances=[[[0.5**2]], [[1.2**2]]],
        covariance="diagonal",
    ),
    "2d_diagonal": dict(
        means=[[-2.0, 1.0], [2.0, -1.0], [0.0, 3.5]],
        weights=[0.3, 0.4, 0.3],
        covariances=[np.diag([0.6, 1.0]) ** 2, np.diag([1.0, 0.5]) ** 2, np.diag([0.7, 0.7]) ** 2],
        covariance="diagonal",
    ),
    "2d_full": dict(
        means=[[-2.0, 0.0], [2.0, 1.0]],
        weights=[0.5, 0.5],
        covariances=[[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.2], [-0.2, 0.8]]],
        covariance="full",
    ),
    "2d_tied": dict(
        means=[[-2.5, 0.0], [2.0, 1.0], [0.0, -3.0]],
        weights=[0.3, 0.4, 0.3],
        covariances=[[[1.0, 0.5], [0.5, 0.8]]] * 3,
        covariance="tied",
    ),
    "3d_diagonal": dict(
        means=[[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]],
        weights=[0.35, 0.65],
        covariances=[np.diag([0.5, 1.0, 0.8]) ** 2, np.diag([1.0, 0.6, 1.3]) ** 2],
        covariance="diagonal",
    ),
    "3d_full": dict(
        means=[[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]],
        weights=[0.45, 0.55],
        covariances=[
            [[1.0, 0.5, 0.2], [0.5, 1.0, -0.3], [0.2, -0.3, 1.0]],
            [[0.6, -0.2, 0.0], [-0.2, 0.9, 0.3], [0.0, 0.3, 1.2]],
        ],
        covariance="full",
    ),
}


def _truth(case: dict) -> dict[str, np.ndarray]:
    sigma_mat = np.asarray(case["covariances"], dtype=float)
    sd = np.sqrt(np.diagonal(sigma_mat, axis1=1, axis2=2))
    truth = {"mu": np.asarray(case["means"]), "theta": np.asarray(case["weights"]), "sigma": sd}
    if case["covariance"] in ("full", "tied"):
        truth["Omega"] = sigma_mat / (sd[:, :, None] * sd[:, None, :])
    return truth


def _fit_case(tmp_path, gmm_exe, name: str, n: int = 400) -> tuple[dict, az.InferenceData, dict]:
    case = CASES[name]
    data = simulate_mixture(
        n, case["means"], case["weights"], covariances=case["covariances"], seed=7
    )
    k = len(case["weights"])
    spec = {
        "model": {
            "K": k,
            "mu_sd": 5.0,
            "alpha": 2.0,
            "covariance": case["covariance"],
            "sigma_prior": "lognormal",
            "sigma_location": 0.0,
            "sigma_scale": 1.0,
            "lkj_eta": 2.0,
        }
    }
    outputs = fit_paths(tmp_path)
    info = fit_dataset(
        gmm_exe,
        data,
        dataset_spec=spec,
        method_spec=NUTS,
        seed=11,
        thresholds=THRESHOLDS,
        outputs=outputs,
    )
    diagnostics = json.loads(outputs["diagnostics"].read_text())
    return info, az.from_netcdf(outputs["posterior"]), diagnostics


def _coverage(
    idata: az.InferenceData, truth: dict[str, np.ndarray], tied: bool = False
) -> list[tuple[str, bool]]:
    """(parameter, central interval covers the truth) for every free parameter (a tied
    covariance's once, not once per component)."""
    post = idata.posterior
    mean_mu = post["mu"].mean(("chain", "draw")).values
    (perm,) = match_to_reference(truth["mu"][None], mean_mu)
    lo, hi = (1 - INTERVAL) / 2, (1 + INTERVAL) / 2
    out = []
    for name, value in truth.items():
        value = value[perm]
        draws = post[name].values.reshape(-1, *value.shape)
        low, high = np.quantile(draws, [lo, hi], axis=0)
        for index in np.ndindex(*value.shape):
            if name == "Omega" and index[1] <= index[2]:
                continue
            if tied and name in ("sigma", "Omega") and index[0] > 0:
                continue
            out.append((f"{name}{list(index)}", bool(low[index] <= value[index] <= high[index])))
    return out


@pytest.fixture(scope="module")
def recovery(tmp_path_factory, gmm_exe):
    """Fit every case once; coverage per parameter and the diagnostics of every fit."""
    results = {}
    for name in CASES:
        info, idata, diagnostics = _fit_case(tmp_path_factory.mktemp(name), gmm_exe, name)
        tied = CASES[name]["covariance"] == "tied"
        results[name] = (info, idata, diagnostics, _coverage(idata, _truth(CASES[name]), tied))
    return results


def test_recovery_fits_converge_and_have_all_parameters(recovery):
    for name, (info, idata, diagnostics, _) in recovery.items():
        case = CASES[name]
        assert diagnostics["passed"], (name, diagnostics["failures"])
        assert info["labelling"].startswith("per-draw") and info["d"] == len(case["means"][0])
        assert idata.posterior["sigma"].dims == ("chain", "draw", "component", "dim")
        if case["covariance"] in ("full", "tied"):
            assert idata.posterior["Omega"].dims[-3:] == ("component", "dim", "dim2")
            np.testing.assert_allclose(
                np.diagonal(idata.posterior["Omega"].values, axis1=-2, axis2=-1), 1, atol=1e-6
            )
        else:
            assert "Omega" not in idata.posterior


def test_posterior_intervals_cover_the_truth(recovery):
    """Coverage over all parameters of all cases, against a binomial bound.

    If the intervals are calibrated, the number covering the truth is about
    Binomial(n, 0.9) (the parameters are not independent, so this is a guide, not exact);
    fail only below its 0.1% quantile.
    """
    covered = [c for *_, coverage in recovery.values() for c in coverage]
    n, hits = len(covered), sum(ok for _, ok in covered)
    bound = stats.binom.ppf(0.001, n, INTERVAL)
    missed = [name for name, ok in covered if not ok]
    logging.getLogger(__name__).info("coverage %d of %d; missed %s", hits, n, missed)
    assert n >= 60
    assert hits >= bound, f"{hits} of {n} intervals cover the truth (bound {bound}): {missed}"


@pytest.mark.parametrize("covariance,d", [("diagonal", 2), ("full", 3), ("full", 1), ("tied", 2)])
def test_membership_log_lik_matches_reference(tmp_path, gmm_exe, covariance, d):
    """log_lik and p_z from generated quantities equal a plain scipy computation."""
    rng = np.random.default_rng(d)
    data = simulate_mixture(30, rng.normal(size=(2, d)).tolist(), [0.5, 0.5], seed=3)
    spec = {"K": 2, "mu_sd": 2.0, "alpha": 2.0, "covariance": covariance, "membership": True}
    model = load_model(gmm_exe)
    fit = model.optimize(data=stan_data(data, spec), seed=1, output_dir=tmp_path)
    params = {"mu": fit.stan_variable("mu"), "theta": fit.stan_variable("theta")}
    params["sigma"] = fit.stan_variable("sigma")
    if covariance in ("full", "tied"):
        chol = fit.stan_variable("L_Omega")
        params["Omega"] = chol @ np.swapaxes(chol, 1, 2)
    cov = covariances(params)  # tied: one
    comp = np.stack(
        [
            np.log(params["theta"][j])
            + stats.multivariate_normal.logpdf(data.y, params["mu"][j], cov[j % len(cov)]).ravel()
            for j in range(2)
        ],
        axis=1,
    )
    np.testing.assert_allclose(fit.stan_variable("log_lik"), logsumexp(comp, axis=1), rtol=1e-5)
    np.testing.assert_allclose(
        fit.stan_variable("p_z"), np.exp(comp - logsumexp(comp, axis=1, keepdims=True)), atol=1e-5
    )


def test_ordered_means_option(tmp_path, gmm_exe):
    data = simulate_mixture(200, [[1.5, 0.0], [-1.5, 1.0]], [0.5, 0.5], seed=2)
    spec = {"K": 2, "mu_sd": 3.0, "alpha": 2.0, "covariance": "diagonal", "ordered": True}
    model = load_model(gmm_exe)
    fit = model.sample(
        data=stan_data(data, spec),
        seed=3,
        chains=2,
        iter_warmup=300,
        iter_sampling=300,
        output_dir=tmp_path,
        show_progress=False,
    )
    mu = fit.stan_variable("mu")
    assert (np.diff(mu[:, :, 0], axis=1) > 0).all()
    np.testing.assert_allclose(mu.mean(axis=0), [[-1.5, 1.0], [1.5, 0.0]], atol=0.35)


SBC_SMALL = {
    "replications": 30,
    "n": 40,
    "d": 1,
    "model": {"K": 2, "mu_sd": 2.0, "alpha": 2.0, "covariance": "diagonal"},
    "draws": 49,
    "bins": 5,
    "seed": 3,
}


@pytest.fixture(scope="module")
def sbc_small(gmm_exe):
    methods = {
        "nuts": {**NUTS, "iter_warmup": 300, "iter_sampling": 200},
        "advi_meanfield": {
            "algorithm": "advi",
            "variational": "meanfield",
            "iter": 10000,
            "grad_samples": 1,
            "elbo_samples": 100,
            "eta": None,
            "adapt_iter": 50,
            "tol_rel_obj": 0.01,
            "eval_elbo": 100,
            "output_samples": 1000,
        },
    }
    table = run_sbc(gmm_exe, SBC_SMALL, methods)
    return table, summarize(table, SBC_SMALL["draws"], SBC_SMALL["bins"])


def test_sbc_nuts_ranks_are_uniform(sbc_small):
    """Bonferroni over the parameters: NUTS must pass at family-wise level 0.01."""
    _, summary = sbc_small
    nuts = summary[summary["method"] == "nuts"]
    # mu[1,1], mu[2,1], theta[1], theta[2], sigma[1,1], sigma[2,1] and log_lik
    assert len(nuts) == 7
    assert (nuts["replications"] == SBC_SMALL["replications"]).all()
    assert nuts["p_adjusted"].min() >= 0.01, nuts


def test_sbc_advi_is_reported(sbc_small):
    """ADVI's calibration is reported (its miscalibration is shown, not asserted)."""
    table, summary = sbc_small
    verdicts = method_verdicts(summary).set_index("method")
    assert set(verdicts.index) == {"nuts", "advi_meanfield"}
    advi = summary[summary["method"] == "advi_meanfield"]
    assert len(advi) == 7 and advi["p_value"].notna().all()
    logging.getLogger(__name__).info("SBC verdicts\n%s", verdicts.to_string())
    assert isinstance(table, pd.DataFrame) and table["wall_s"].gt(0).all()
