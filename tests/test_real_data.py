"""Real public data at default settings (full covariance): Old Faithful (2-D, K = 2 and 3), three
species at K = 3 (iris, 4-D; Palmer penguins, 2-D and 4-D), and a table whose columns differ by a
factor of 1 000 in scale.

The data ship in tests/data/ (see its README for sources). The methods are config/config.yaml's
``optimize`` and ``nuts`` (4 chains x 1000 + 1000, dense metric), 2-15 s per NUTS fit here, and
its ``pathfinder`` for the data-scale starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import multivariate_normal

from gmmpipe.config import derived_seed, validate_config
from gmmpipe.data import read_dataset, simulate_mixture
from gmmpipe.fit import fit_dataset
from gmmpipe.io import read_json
from gmmpipe.layout import fit_paths

pytestmark = pytest.mark.cmdstan
DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[1]
METHODS = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["methods"]


def _fit(exe, path, columns, method, tmp_path, k=3, covariance="full", **settings):
    """Fit a user file with the config's defaults (only K and the covariance given, and the
    method's `settings` in place of the config's)."""
    config = validate_config(
        {
            "datasets": {
                "real": {
                    "file": {"path": str(path), "columns": columns},
                    "model": {"K": k, "covariance": covariance},
                }
            },
            "methods": {
                "map": METHODS["optimize"],
                "nuts": METHODS["nuts"],
                "pathfinder": METHODS["pathfinder"],
                method: {**METHODS.get(method, METHODS["optimize"]), **settings},
            },
        }
    )
    spec = config["datasets"]["real"]
    dataset = read_dataset(path, k=k, columns=columns)
    folder = tmp_path / method
    folder.mkdir()
    outputs = fit_paths(folder)
    fit_dataset(
        exe,
        dataset,
        dataset_spec=spec,
        method_spec=config["methods"][method],
        seed=derived_seed(config["seed"], path.stem, method),
        thresholds=config["diagnostics"],
        outputs=outputs,
    )
    report = read_json(outputs["diagnostics"])
    checks = {c["name"]: c for c in report["checks"]}
    return dataset, checks, read_json(outputs["fit"]), outputs


def _assert_converged(checks):
    names = ("r_hat_max", "divergences", "chain_modes", "component_points_min", "mean_distance_max")
    for name in names:
        assert checks[name]["passed"], checks[name]
    assert checks["r_hat_max"]["value"] <= 1.01
    assert checks["ppc_z_max"]["passed"], checks["ppc_z_max"]


def _map_labels(y, outputs):
    """Each point's most probable component at the MAP."""
    import arviz as az

    post = az.from_netcdf(outputs["posterior"]).posterior.isel(chain=0, draw=0)
    mu, theta = post["mu"].values, post["theta"].values
    sigma, omega = post["sigma"].values, post["Omega"].values
    logp = np.column_stack(
        [
            np.log(theta[k])
            + multivariate_normal.logpdf(y, mu[k], sigma[k][:, None] * omega[k] * sigma[k])
            for k in range(len(theta))
        ]
    )
    return logp.argmax(axis=1)


@pytest.mark.xfail(
    raises=AssertionError,  # the gate's verdict; an error in the fit itself still fails
    strict=False,  # chaotic in the seed: 0 to 80 divergences across seeds and priors
    reason="issue 17: Old Faithful has two clusters, so K = 3 overfits; with full covariance the "
    "third component moves between bridging them and splitting the long-eruption cluster, NUTS "
    "mixes slowly between the two (divergences, R-hat above 1.01), and the gate says so. No "
    "default prior fixed it without breaking iris (docs/model.md, Old Faithful with K = 3); a "
    "tied covariance identifies the third component (the next test), and three real groups in "
    "2-D (penguins) converge",
)
def test_old_faithful_k3_converges_without_degenerate_components(gmm_exe, tmp_path):
    _, checks, _, _ = _fit(gmm_exe, DATA / "faithful.csv", [], "nuts", tmp_path)
    _assert_converged(checks)


def test_old_faithful_k2_converges(gmm_exe, tmp_path):
    """Two clusters, K = 2 (the K that the compare step suggests from K = 2 and 3)."""
    _, checks, info, _ = _fit(gmm_exe, DATA / "faithful.csv", [], "nuts", tmp_path, k=2)
    _assert_converged(checks)
    assert len(info["starts"]["chain_inits"]) == 4 and info["priors"]["rule"] == "data"


def test_old_faithful_k3_with_a_tied_covariance_converges_to_the_mle(gmm_exe, tmp_path):
    """One covariance shared by the three components (mclust's EEE, the model BIC picks for
    these data): the third component is identified, NUTS converges, and the weights are those
    of scikit-learn's maximum-likelihood GaussianMixture(3, 'tied') (0.169 / 0.356 / 0.475)."""
    pytest.importorskip("sklearn")
    from sklearn.mixture import GaussianMixture

    dataset, checks, info, outputs = _fit(
        gmm_exe, DATA / "faithful.csv", [], "nuts", tmp_path, covariance="tied"
    )
    _assert_converged(checks)
    theta = pd.read_csv(outputs["summary"], index_col=0).filter(like="theta[", axis=0)["mean"]
    mle = GaussianMixture(3, covariance_type="tied", tol=1e-8, n_init=5, random_state=0)
    np.testing.assert_allclose(np.sort(theta), np.sort(mle.fit(dataset.y).weights_), atol=0.02)
    assert "Sigma_k = Sigma = diag(sigma) Omega diag(sigma) for every k" in info["prior_formulas"]


IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BILLS = ["bill_length_mm", "bill_depth_mm"]
# Data with three known classes (column `species`): file and coordinates.
CLASSES = {
    "iris": ("iris.csv", IRIS),
    "penguin bills": ("penguins.csv", BILLS),  # 2-D
    "penguins": ("penguins.csv", [*BILLS, "flipper_length_mm", "body_mass_g"]),  # sds 2 to 800
}


@pytest.mark.parametrize("name", list(CLASSES))
def test_three_classes_converge(gmm_exe, tmp_path, name):
    """Three species, K = 3: the gate passes, no component empties, and the weights are the
    species' shares (iris 1/3 each; penguins 0.44 / 0.36 / 0.20)."""
    file, columns = CLASSES[name]
    _, checks, info, outputs = _fit(gmm_exe, DATA / file, columns, "nuts", tmp_path)
    _assert_converged(checks)
    theta = pd.read_csv(outputs["summary"], index_col=0).filter(like="theta[", axis=0)["mean"]
    shares = pd.read_csv(DATA / file)["species"].value_counts(normalize=True)
    np.testing.assert_allclose(np.sort(theta), np.sort(shares), atol=0.05)
    assert info["priors"]["alpha"] == 2.0


@pytest.mark.parametrize("name", list(CLASSES))
def test_map_matches_the_species_like_sklearn(gmm_exe, tmp_path, name):
    """Adjusted Rand index of the MAP's clusters within 0.05 of scikit-learn's GaussianMixture
    or above it (measured, ours and theirs: iris 0.9039 and 0.9039, penguin bills 0.9045 and
    0.8314, penguins 0.9526 and 0.9600)."""
    sklearn = pytest.importorskip("sklearn")
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    file, columns = CLASSES[name]
    dataset, checks, info, outputs = _fit(gmm_exe, DATA / file, columns, "map", tmp_path)
    assert checks["converged"]["passed"] and info["starts"]["n_starts"] == 8
    species = pd.read_csv(DATA / file)["species"].to_numpy()
    ours = adjusted_rand_score(species, _map_labels(dataset.y, outputs))
    theirs = adjusted_rand_score(
        species, GaussianMixture(3, covariance_type="full", random_state=0).fit_predict(dataset.y)
    )
    assert ours >= theirs - 0.05, (ours, theirs, sklearn.__version__)


@pytest.mark.parametrize("num_paths", [4, 1])
def test_pathfinder_runs_on_columns_of_any_scale(gmm_exe, tmp_path, num_paths):
    """The penguins' four columns (body mass of sd 800): from CmdStan's random inits every
    L-BFGS path failed its first step in 6 of 8 seeds ("Line search failed", then the whole fit
    failed); with the sds drawn on the data's scale every path runs (each of its 1000 draws is
    in CmdStan's CSV). Its approximation is judged by the gate as any other (k-hat about 1
    here: flagged). One path reads its init from one file, not cmdstanpy's per-path files."""
    from gmmpipe.inits import PATH_STRATEGY

    file, columns = CLASSES["penguins"]
    _, checks, info, outputs = _fit(
        gmm_exe, DATA / file, columns, "pathfinder", tmp_path, num_paths=num_paths
    )
    assert info["starts"]["strategy"] == PATH_STRATEGY
    assert len(info["starts"]["chain_inits"]) == num_paths
    (csv,) = Path(outputs["cmdstan"]).glob("*.csv")
    rows = [line for line in csv.read_text().splitlines() if line and not line.startswith("#")]
    assert len(rows) == 1 + 1000 * num_paths  # the header and every path's draws
    assert np.isfinite(checks["pareto_khat"]["value"])
    mu = pd.read_csv(outputs["summary"], index_col=0).filter(like="mu[", axis=0)["mean"]
    assert mu.filter(like="body_mass_g").between(2700, 6300).all(), mu


def test_columns_a_thousand_times_apart_are_fitted(gmm_exe, tmp_path):
    """One column in the hundreds, one of order 1: the PPC passes and every mean lies inside
    the data's range (the old fixed priors pinned the large column's means near 0)."""
    cov = [[[1.0, 0.3], [0.3, 1.0]]] * 3
    sim = simulate_mixture(300, [[0, 0], [4, 3], [-3, 4]], [0.4, 0.35, 0.25], covariances=cov)
    y = sim.y * [1.0, 100.0] + [0.0, 500.0]  # sds about 2.5 and 250
    path = tmp_path / "scales.csv"
    pd.DataFrame(y, columns=["small", "large"]).to_csv(path, index=False)
    _, checks, info, outputs = _fit(gmm_exe, path, [], "nuts", tmp_path)
    _assert_converged(checks)
    mu = np.asarray(pd.read_csv(outputs["summary"], index_col=0).filter(like="mu[", axis=0)["mean"])
    mu = mu.reshape(3, 2)
    assert np.all((mu >= y.min(axis=0)) & (mu <= y.max(axis=0))), mu
    assert info["priors"]["mu_location"][1] == pytest.approx(y[:, 1].mean())


def test_the_data_units_do_not_change_the_answer(gmm_exe, tmp_path):
    """The same data in other units, y' = a + b y per column (a column of sd 1e-4 around 10 000,
    one of sd 1e5): the data-scale priors make the posterior equivariant, and the program
    samples on the data's working scale, so the fit passes the gate with the same posterior in
    standardized units (before, a column of sd 1e-4 made NUTS hit its maximum tree depth, and a
    column near 1e9 broke the likelihood)."""
    cov = [[[1.0, 0.5], [0.5, 1.0]], [[1.0, -0.3], [-0.3, 1.0]]]
    sim = simulate_mixture(300, [[0, 0], [3, 2]], [0.6, 0.4], covariances=cov, seed=2)
    offset, scale = np.array([1e4, -1e9]), np.array([1e-4, 1e5])
    fits = {}
    for name, y in (("plain", sim.y), ("units", offset + scale * sim.y)):
        path = tmp_path / f"{name}.csv"
        pd.DataFrame(y, columns=["a", "b"]).to_csv(path, index=False, float_format="%.17g")
        folder = tmp_path / name
        folder.mkdir()
        _, checks, _, outputs = _fit(gmm_exe, path, [], "nuts", folder, k=2)
        _assert_converged(checks)
        assert checks["max_treedepth_frac"]["passed"]
        fits[name] = pd.read_csv(outputs["summary"], index_col=0)
    plain, units = fits["plain"], fits["units"]
    for j, column in enumerate(["a", "b"]):
        for k in (1, 2):
            row = f"mu[{k}, {column}]"
            z = (units.loc[row, "mean"] - offset[j]) / scale[j]
            assert z == pytest.approx(plain.loc[row, "mean"], abs=0.2 * plain.loc[row, "sd"])
            sd = units.loc[row, "sd"] / scale[j]
            assert sd == pytest.approx(plain.loc[row, "sd"], rel=0.1)
            sigma = units.loc[f"sigma[{k}, {column}]", "mean"] / scale[j]
            assert sigma == pytest.approx(plain.loc[f"sigma[{k}, {column}]", "mean"], rel=0.02)
    theta = [f"theta[{k}]" for k in (1, 2)]
    np.testing.assert_allclose(units.loc[theta, "mean"], plain.loc[theta, "mean"], atol=0.01)


@pytest.mark.parametrize(
    "name,failing",
    [("iris", {"ppc_z_max", "component_points_min"}), ("scales", {"ppc_z_max"})],
)
def test_the_old_defaults_converged_but_wrong_answers_are_flagged(gmm_exe, tmp_path, name, failing):
    """The seed's priors and identity covariance (mu ~ N(0, 1), alpha 0.1) on unstandardized
    data gave confident wrong answers; the gate now fails them by name."""
    if name == "iris":
        path, columns = DATA / "iris.csv", IRIS
    else:
        rng = np.random.default_rng(3)
        y = np.column_stack([rng.normal(0, 1, 300), rng.normal(500, 100, 300)])
        path, columns = tmp_path / "scales.csv", []
        pd.DataFrame(y, columns=["small", "large"]).to_csv(path, index=False)
    config = validate_config(
        {
            "datasets": {
                "old": {
                    "file": {"path": str(path), "columns": columns},
                    "model": {"K": 3, "priors": "fixed", "covariance": "identity"},
                }
            },
            "methods": {"nuts": METHODS["nuts"]},
        }
    )
    spec = config["datasets"]["old"]
    outputs = fit_paths(tmp_path)
    fit_dataset(
        gmm_exe,
        read_dataset(path, k=3, columns=columns),
        dataset_spec=spec,
        method_spec=config["methods"]["nuts"],
        seed=1,
        thresholds=config["diagnostics"],
        outputs=outputs,
    )
    report = read_json(outputs["diagnostics"])
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert failing <= failed, report["failures"]
