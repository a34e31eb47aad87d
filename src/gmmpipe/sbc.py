"""Simulation-based calibration (SBC; Talts et al. 2018, arXiv:1804.06788) of stan/gmm.stan.

Each replication draws parameters from the prior, simulates a dataset from them, fits it, and
records for every parameter the rank of the prior draw among L (thinned) posterior draws. If
the sampler is calibrated, every rank is uniform on 0..L; a chi-square test per parameter
checks this, and rank histograms show how it fails (U shape: too narrow, hump: too wide,
slope: biased).

Labelling. The prior is exchangeable across components, so "component 1" of a prior draw
and of a posterior draw need not be the same component. SBC's guarantee holds for any
function f(parameters) applied identically to the prior draw and to every posterior draw,
so every draw -- prior and posterior alike, each on its own -- is put in canonical order:
components sorted by the first coordinate of their mean. This is a fixed, label-invariant
function (unlike relabelling towards the prior draw, which would treat the prior draw
specially and break the exchangeability the ranks rely on), and it equals fitting with the
`ordered` constraint on mu[, 1] (the sorted version of a symmetric posterior is the ordered
model's posterior). The Stan program itself is fitted without the constraint, as the
pipeline fits it. Besides the parameters, the log-likelihood of the simulated data at each draw,
log p(y | parameters), is ranked: it does not depend on the labels at all, and it tests the
posterior's joint shape, not only its margins (Modrak et al. 2023, arXiv:2211.02383).

Replications are independent: replication r's prior draw and data come from a generator seeded
with (seed, r) and its CmdStan seeds from (seed, method, r), so any subset of replications (one
batch of a cluster run) gives exactly the ranks it gives within the whole run.
"""

from __future__ import annotations

import logging
import resource
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from gmmpipe.arrays import covariances, even_index, flat_params
from gmmpipe.config import derived_seed
from gmmpipe.data import Dataset, stan_data
from gmmpipe.loo import log_lik
from gmmpipe.priors import fixed_values

logger = logging.getLogger(__name__)

LOG_LIK = "log_lik"  # the test quantity log p(y | parameters)
RANK_COLUMNS = ["method", "replication", "parameter", "rank", "wall_s", "cpu_s"]
SUMMARY_COLUMNS = [
    "method",
    "parameter",
    "replications",
    "failed",
    "chi2",
    "p_value",
    "p_adjusted",
    "central_coverage",
]


def lkj_corr_cholesky(rng: np.random.Generator, d: int, eta: float) -> np.ndarray:
    """A Cholesky factor of a correlation matrix drawn from LKJ(eta).

    The same onion/vine construction as Stan's ``lkj_corr_cholesky_rng``: canonical partial
    correlations 2 Beta(b, b) - 1, with b = eta + (d - 2 - i) / 2 at level i.
    """
    chol = np.zeros((d, d))
    chol[0, 0] = 1.0
    if d == 1:
        return chol
    remaining = np.ones(d)  # 1 - squared norm of each row so far
    b = eta + 0.5 * (d - 1)
    for i in range(d - 1):
        b -= 0.5
        z = 2.0 * rng.beta(b, b, size=d - 1 - i) - 1.0
        rows = np.arange(i + 1, d)
        chol[rows, i] = z * np.sqrt(remaining[rows])
        remaining[rows] -= chol[rows, i] ** 2
        chol[i + 1, i + 1] = np.sqrt(remaining[i + 1])
    return chol


#: Proposals per covariance before :func:`draw_prior` gives up on a psi factor.
MAX_PSI_PROPOSALS = 100_000


def draw_prior(rng: np.random.Generator, model: Mapping[str, Any], d: int) -> dict[str, np.ndarray]:
    """One draw of the parameters from the prior of stan/gmm.stan (model config as in a dataset).

    With a psi factor exp(-tr(diag(psi) Sigma_k^-1) / 2) (at most 1), each covariance is drawn
    by rejection: proposed from the scales' and LKJ priors and accepted with that probability.
    """
    k = int(model["K"])
    prior = fixed_values(model)
    params = {
        "mu": rng.normal(prior["mu_location"], prior["mu_sd"], size=(k, d)),
        "theta": rng.dirichlet(np.full(k, float(prior["alpha"]))),
    }
    covariance = model.get("covariance", "identity")
    if covariance == "identity":
        return params
    k_sigma = 1 if covariance == "tied" else k  # tied: one covariance for every component
    psi = np.broadcast_to(np.asarray(prior["psi"], dtype=float), (d,))
    if not psi.any():
        sigma, chol = _draw_scales(rng, model, prior, k_sigma, d)
    else:
        sigma, chol = np.empty((k_sigma, d)), np.empty((k_sigma, d, d))
        for c in range(k_sigma):
            for _ in range(MAX_PSI_PROPOSALS):
                (s,), (l_omega,) = _draw_scales(rng, model, prior, 1, d)
                inverse = np.linalg.inv(l_omega * s[:, None])  # L_Sigma^-1
                if np.log(rng.random()) < -0.5 * psi @ np.square(inverse).sum(axis=0):
                    sigma[c], chol[c] = s, l_omega
                    break
            else:
                raise ValueError(
                    f"sbc.model.psi = {prior['psi']!r}: no covariance accepted in "
                    f"{MAX_PSI_PROPOSALS} draws from the scales' prior; psi is too large for it"
                )
    params["sigma"] = np.repeat(sigma, k // k_sigma, axis=0)
    if covariance in ("full", "tied"):
        params["Omega"] = np.repeat(chol @ np.swapaxes(chol, 1, 2), k // k_sigma, axis=0)
    return params


def _draw_scales(
    rng: np.random.Generator, model: Mapping[str, Any], prior: Mapping[str, Any], n: int, d: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n` draws of the scales (n, D) and of the Cholesky factors of the correlations (n, D, D;
    the identity for a diagonal covariance) from their priors."""
    loc, scale = prior["sigma_location"], prior["sigma_scale"]
    if model.get("sigma_prior", "lognormal") == "lognormal":
        sigma = rng.lognormal(loc, scale, size=(n, d))
    else:  # normal(loc, scale) truncated at 0
        lower = (0.0 - loc) / scale
        sigma = stats.truncnorm.rvs(
            lower, np.inf, loc=loc, scale=scale, size=(n, d), random_state=rng
        )
    if model.get("covariance") not in ("full", "tied"):
        return sigma, np.broadcast_to(np.eye(d), (n, d, d))
    eta = float(model.get("lkj_eta", 2.0))
    return sigma, np.array([lkj_corr_cholesky(rng, d, eta) for _ in range(n)])


def log_likelihood(y: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """log p(y | draw) = sum_n log sum_k theta_k N(y_n | mu_k, Sigma_k) of each of S draws
    (draw axis first), (S,); -inf for a draw whose scales overflowed (a stuck chain)."""
    return log_lik(np.asarray(y, dtype=float), params).sum(axis=1)


def simulate_data(rng: np.random.Generator, params: Mapping[str, np.ndarray], n: int) -> Dataset:
    """N observations from the mixture with parameters `params`."""
    mu = params["mu"]
    z = rng.choice(len(params["theta"]), size=n, p=params["theta"] / params["theta"].sum())
    chol = np.linalg.cholesky(covariances(params))
    y = mu[z] + np.einsum("nij,nj->ni", chol[z], rng.standard_normal(mu[z].shape))
    return Dataset(y=y, z=z)


def canonical_order(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sort the components of every draw (leading axis S) by the first coordinate of the mean."""
    order = np.argsort(params["mu"][:, :, 0], axis=1, kind="stable")
    out = {}
    for name, value in params.items():
        index = order.reshape(order.shape + (1,) * (value.ndim - 2))
        out[name] = np.take_along_axis(value, index, axis=1)
    return out


def flatten(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scalar parameters ``mu[1,1]``, ``theta[1]``, ``sigma[1,1]``, ``Omega[1,2,1]`` -> (S,) values.

    Only Omega's strictly lower triangle is kept (its diagonal is 1, it is symmetric).
    """
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        for index in np.ndindex(*value.shape[1:]):
            if name == "Omega" and index[1] <= index[2]:
                continue
            label = ",".join(str(i + 1) for i in index)
            out[f"{name}[{label}]"] = value[(slice(None), *index)]
    return out


def ranked_quantities(
    params: Mapping[str, np.ndarray], y: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The label-invariant quantities SBC ranks, each (S,), of S draws (draw axis first):
    every scalar parameter after :func:`canonical_order`, and, given data `y`,
    ``log_lik`` = log p(y | draw) (see :func:`log_likelihood`)."""
    out = flatten(canonical_order(params))
    if y is not None:
        out[LOG_LIK] = log_likelihood(y, params)
    return out


def ranks(
    prior: Mapping[str, np.ndarray],
    posterior: Mapping[str, np.ndarray],
    kept: int,
    y: np.ndarray | None = None,
) -> dict[str, int]:
    """Rank of each test quantity of the prior draw among `kept` thinned posterior draws
    (0..kept); see :func:`ranked_quantities` (``log_lik`` only when the data `y` are given).

    `prior` holds one draw (arrays without the draw axis), `posterior` S draws (draw axis
    first).
    """
    prior_q = ranked_quantities({n: v[None] for n, v in prior.items()}, y)
    some = next(iter(posterior.values()))
    post_q = ranked_quantities({n: v[even_index(len(some), kept)] for n, v in posterior.items()}, y)
    out = {}
    for name, value in prior_q.items():
        draws = post_q[name]
        if len(draws) != kept:
            raise ValueError(f"{name}: {len(draws)} posterior draws, fewer than the {kept} kept")
        out[name] = int((draws < value[0]).sum())
    return out


def replication(sbc: Mapping[str, Any], rep: int) -> tuple[dict[str, np.ndarray], Dataset]:
    """The prior draw and simulated dataset of replication `rep` (0-based).

    They depend on the base seed and `rep` only, never on which other replications run.
    """
    rng = np.random.default_rng([int(sbc["seed"]), rep])
    truth = draw_prior(rng, sbc["model"], int(sbc["d"]))
    return truth, simulate_data(rng, truth, int(sbc["n"]))


def replication_seed(sbc: Mapping[str, Any], method: str, rep: int) -> int:
    """The CmdStan seed of `method`'s fit of replication `rep` (base seed, method, `rep`)."""
    return derived_seed(int(sbc["seed"]), "sbc", method, str(rep))


def uniformity_test(rank_values: Sequence[int], kept: int, bins: int) -> tuple[float, float]:
    """Chi-square test that ranks (0..kept) are uniform, on `bins` equal bins of ranks.

    Returns the statistic and its p-value (chi-square with bins - 1 degrees of freedom).
    """
    if (kept + 1) % bins:
        raise ValueError(f"{kept + 1} possible ranks do not split into {bins} equal bins")
    counts = np.bincount(np.asarray(rank_values) * bins // (kept + 1), minlength=bins)
    result = stats.chisquare(counts)
    return float(result.statistic), float(result.pvalue)


def central_coverage(rank_values: Sequence[int], kept: int, bins: int) -> float:
    """Share of ranks outside the lowest and highest of `bins` bins: how often the central
    1 - 2 / bins posterior interval covered the prior draw (expected 1 - 2 / bins)."""
    binned = np.asarray(rank_values) * bins // (kept + 1)
    return float(((binned > 0) & (binned < bins - 1)).mean())


def summarize(table: pd.DataFrame, kept: int, bins: int) -> pd.DataFrame:
    """Per method and parameter: the chi-square test, its Bonferroni-adjusted p-value and
    the coverage of the central 1 - 2 / bins interval (see :func:`central_coverage`).

    `table` has columns method, replication, parameter, rank (NaN rank: a failed fit, counted
    in ``failed`` and left out of the test -- a selection SBC cannot correct, so report it).
    """
    rows = []
    for (method, parameter), group in table.groupby(["method", "parameter"], sort=False):
        ok = group["rank"].dropna()
        ranks_ok = ok.astype(int)
        chi2, p = uniformity_test(ranks_ok, kept, bins) if len(ok) else (np.nan, np.nan)
        coverage = central_coverage(ranks_ok, kept, bins) if len(ok) else np.nan
        rows.append([method, parameter, len(ok), len(group) - len(ok), chi2, p, np.nan, coverage])
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    n_tests = out.groupby("method")["parameter"].transform("size")
    out["p_adjusted"] = np.minimum(1.0, out["p_value"] * n_tests)
    return out


def method_verdicts(summary: pd.DataFrame, level: float = 0.01) -> pd.DataFrame:
    """One row per method: replications (and failed fits), how many parameters fail the
    uniformity test at `level` on their own and after Bonferroni, and the mean coverage of the
    central intervals (see :func:`summarize`)."""
    grouped = summary.groupby("method", sort=False)
    out = pd.DataFrame(
        {
            "replications": grouped["replications"].min(),
            "failed": grouped["failed"].max(),
            "parameters": grouped.size(),
            f"p<{level}": grouped["p_value"].apply(lambda p: int((p < level).sum())),
            "min_p_value": grouped["p_value"].min(),
            "min_p_adjusted": grouped["p_adjusted"].min(),
            "central_coverage": grouped["central_coverage"].mean(),
        }
    )
    out["uniformity_rejected"] = np.where(out["min_p_adjusted"] < level, "YES", "no")
    return out.reset_index()


def _fit(
    model: Any,
    spec: Mapping[str, Any],
    data_file: Path,
    seed: int,
    out: Path,
    model_spec: Mapping[str, Any],
    y: np.ndarray,
) -> dict[str, np.ndarray]:
    """Fit one simulated dataset `y` (written to `data_file`) as the pipeline fits it; the draws
    (draw axis first) of mu, theta, sigma, Omega.

    Chains start as in :func:`gmmpipe.fit.fit_dataset`: a method with an ``init_method`` (see
    :func:`gmmpipe.sbc_plan.check_sbc_config`) at that fit's (relabelled) posterior mean, else
    optimize and NUTS from the multi-start optimizer (``starts``), else CmdStan's random inits.
    """
    from gmmpipe.draws import read_draws, relabel
    from gmmpipe.fit import chain_starts, run_cmdstan

    k, d = int(model_spec["K"]), y.shape[1]

    def run(method: Mapping[str, Any], folder: Path, point: Any) -> Any:
        folder.mkdir(exist_ok=True)
        _, inits = chain_starts(
            model, data_file, Dataset(y=y), model_spec, method, seed, point, folder / "starts"
        )
        run_cmdstan(model, str(data_file), method, seed, folder, inits)
        return read_draws(sorted(folder.glob("*.csv")), method["algorithm"], k, d)

    point = None
    if spec.get("init_method"):
        start = relabel(run(spec["init_method"], out / "init", None))
        point = {n: v.mean(axis=(0, 1)) for n, v in start.components().items()}
    return flat_params(run(spec, out, point).components())


def run_sbc(
    exe_file: str | Path,
    sbc: Mapping[str, Any],
    methods: Mapping[str, Mapping[str, Any]],
    replications: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Run SBC: for each replication, one prior draw, one dataset, one fit per method.

    Parameters
    ----------
    exe_file : the compiled stan/gmm.stan.
    sbc : the validated ``sbc`` config (at least `gmmpipe.sbc_plan.REPLICATION_KEYS`).
    methods : method specs by name (as in the config's ``methods``), NUTS or ADVI.
    replications : which replications to run (0-based); all ``sbc["replications"]`` if None.
        Each one's result is the same whichever others run with it (see :func:`replication`).

    Returns
    -------
    One row per method, replication and test quantity: the rank (NaN when the fit failed),
    with the fit's wall time and CPU time (this process and CmdStan's).
    """
    from cmdstanpy import write_stan_json

    from gmmpipe.cmdstan import load_model

    model_spec, kept = sbc["model"], int(sbc["draws"])
    reps = list(range(int(sbc["replications"])) if replications is None else replications)
    model = load_model(exe_file)
    rows: list[dict[str, Any]] = []
    for done, rep in enumerate(reps, start=1):
        truth, data = replication(sbc, rep)
        with tempfile.TemporaryDirectory(prefix="gmm-sbc-") as scratch:
            data_file = Path(scratch) / "data.json"
            write_stan_json(str(data_file), stan_data(data, model_spec))
            for name, spec in methods.items():
                out = Path(scratch) / name
                out.mkdir()
                start, cpu_start = time.perf_counter(), _cpu_seconds()
                try:
                    post = _fit(
                        model,
                        spec,
                        data_file,
                        replication_seed(sbc, name, rep),
                        out,
                        model_spec,
                        data.y,
                    )
                    result: Mapping[str, float] = ranks(truth, post, kept, data.y)
                except (RuntimeError, ValueError) as err:
                    logger.warning("replication %d, %s failed: %s", rep, name, err)
                    names = ranked_quantities({n: v[None] for n, v in truth.items()}, data.y)
                    result = dict.fromkeys(names, np.nan)
                wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
                rows += [
                    dict(zip(RANK_COLUMNS, (name, rep, p, r, wall, cpu), strict=True))
                    for p, r in result.items()
                ]
        logger.info("SBC replication %d done (%d of %d)", rep, done, len(reps))
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (CmdStan)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def plot_rank_histograms(table: pd.DataFrame, method: str, kept: int, bins: int) -> Any:
    """Rank histograms of one method, one panel per parameter, with the 99% band of a
    uniform histogram (binomial counts per bin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[(table["method"] == method)].dropna(subset=["rank"])
    parameters = list(dict.fromkeys(rows["parameter"]))
    n_cols = min(4, max(1, len(parameters)))
    n_rows = -(-len(parameters) // n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.8 * n_cols, 2.2 * n_rows), squeeze=False, sharex=True
    )
    for ax in axes.ravel()[len(parameters) :]:
        ax.set_visible(False)
    edges = np.arange(bins + 1) * (kept + 1) / bins - 0.5
    for ax, parameter in zip(axes.ravel(), parameters, strict=False):
        values = rows.loc[rows["parameter"] == parameter, "rank"].to_numpy()
        n = len(values)
        low, high = stats.binom.ppf([0.005, 0.995], n, 1 / bins)
        ax.axhspan(low, high, color="0.85", zorder=0)
        ax.axhline(n / bins, color="0.5", lw=0.8)
        ax.hist(values, bins=edges, color="C0", edgecolor="white")
        ax.set_title(parameter, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"SBC rank histograms: {method} ({len(set(rows['replication']))} replications)")
    fig.supxlabel(f"rank of the prior draw among {kept} posterior draws")
    fig.tight_layout()
    return fig
