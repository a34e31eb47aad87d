"""Priors of stan/gmm.stan: the seed notebook's fixed values, or set from the data's scale.

Every prior key of a dataset's ``model`` that the config gives is used as given (a number, or
for ``mu_location`` and ``mu_sd`` one number per coordinate). The keys it leaves out are filled
by the dataset's rule, ``model.priors``:

``fixed``
    The seed notebook's values: mu_kj ~ normal(0, 1), theta ~ dirichlet(0.1), and for
    diagonal, full and tied covariance sigma_kj ~ lognormal(0, 0.5) (or normal(0, 0.5)
    truncated at 0). No psi term. The default for ``generator: seed_notebook``, whose data are
    standardized by construction.
``data``
    Weakly informative on the data's scale, from the per-column mean m_j and sd s_j:
    mu_kj ~ normal(m_j, s_j); sigma_kj ~ lognormal(log(s_j / 2), 1) (or normal(0, s_j)
    truncated at 0); theta ~ dirichlet(2), which keeps every component in use unless the data
    say otherwise; and for diagonal, full and tied covariance a factor
    exp(-tr(Psi Sigma_k^-1) / 2) with Psi = 0.2 diag(s_j^2) / K^(2 / D): the exp term of Fraley
    and Raftery's (2007) inverse-Wishart prior at a fifth of their scale. It keeps a component
    from collapsing onto a few (e.g. rounded, repeated or collinear) points, where the
    likelihood is unbounded; at their full scale it also keeps clusters much narrower than the
    column (iris's setosa) from being fitted, and two species merge (docs/model.md, "The psi
    trade-off"). The default for user files and simulated mixtures.

The likelihood is unchanged, so every result stays on the data's scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gmmpipe.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np

RULES = ("fixed", "data")
#: The values of the ``fixed`` rule (the seed notebook's priors and the old schema defaults).
FIXED = {
    "mu_location": 0.0,
    "mu_sd": 1.0,
    "alpha": 0.1,
    "sigma_location": 0.0,
    "sigma_scale": 0.5,
    "psi": 0.0,
}
PRIOR_KEYS = tuple(FIXED)
#: Constants of the ``data`` rule (see the module docstring and docs/model.md, "Priors").
MU_SD_PER_SD = 1.0  # prior sd of a component mean, in data sds
SIGMA_MEDIAN_PER_SD = 0.5  # prior median of a component scale, in data sds (lognormal)
SIGMA_LOG_SD = 1.0  # prior sd of log sigma (lognormal)
DATA_ALPHA = 2.0  # a pull away from empty components (1 is flat, below 1 empties them)
PSI_FACTOR = 0.2  # psi in units of Fraley and Raftery's s_j^2 / K^(2 / D)
_VECTOR_KEYS = ("mu_location", "mu_sd", "sigma_location", "sigma_scale", "psi")


def is_seed_notebook(dataset_spec: Mapping[str, Any]) -> bool:
    """Whether a dataset is the seed notebook's simulation."""
    return dataset_spec.get("simulate", {}).get("generator") == "seed_notebook"


def default_rule(dataset_spec: Mapping[str, Any]) -> str:
    """``fixed`` for the seed notebook's datasets, ``data`` for everything else."""
    return "fixed" if is_seed_notebook(dataset_spec) else "data"


def default_covariance(dataset_spec: Mapping[str, Any]) -> str:
    """The covariance model a dataset gets when its config names none: ``identity`` where the
    data are simulated with identity covariances (the seed notebook, a mixture without
    ``covariances``), ``full`` otherwise (user files, mixtures with covariances)."""
    sim = dataset_spec.get("simulate")
    if sim is not None and (
        sim.get("generator") == "seed_notebook" or sim.get("covariances") is None
    ):
        return "identity"
    return "full"


def complete_model(dataset_spec: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset's ``model`` with ``priors`` and ``covariance`` filled in by their defaults."""
    model = dict(dataset_spec["model"])
    model.setdefault("priors", default_rule(dataset_spec))
    model.setdefault("covariance", default_covariance(dataset_spec))
    return model


def complete_config(config: dict[str, Any]) -> None:
    """Fill every dataset's ``priors`` and ``covariance`` in a validated config (in place).

    Simulation-based calibration draws from the prior, so its model takes the ``fixed`` rule
    (:func:`check_sbc_model` refuses another, for the runs that ask for the SBC).
    """
    for dataset in config["datasets"].values():
        dataset["model"] = complete_model(dataset)
    sbc = config.get("sbc", {}).get("model")
    if sbc is not None:
        sbc.setdefault("priors", "fixed")
        sbc.setdefault("covariance", "identity")


def check_sbc_model(model: Mapping[str, Any]) -> None:
    """Refuse an SBC model whose prior depends on the data.

    Raises
    ------
    ConfigError
        When ``sbc.model.priors`` is not ``fixed``.
    """
    if model.get("priors", "fixed") != "fixed":
        raise ConfigError(
            f"config: 'sbc.model.priors' = {model['priors']!r}: calibration draws parameters "
            "from the prior, which must not depend on the data; use 'fixed'"
        )


def fixed_values(model: Mapping[str, Any]) -> dict[str, Any]:
    """The ``fixed`` rule's prior values with the keys `model` gives (for drawing from it)."""
    return {key: model[key] if model.get(key) is not None else FIXED[key] for key in PRIOR_KEYS}


def resolve_priors(
    y: np.ndarray, model: Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The prior values of `model` for data `y` (N x D), per coordinate where they can differ
    (`names`: the columns' names, for messages).

    A raw model mapping without ``priors`` (e.g. in tests and benchmarks) takes the ``fixed``
    rule. Returns the rule, which keys were given, the values, and the data's per-column mean
    and sd that the ``data`` rule used.

    Raises
    ------
    DataError
        When the ``data`` rule meets a column without spread, or a per-coordinate value has the
        wrong length.
    """
    import numpy as np  # here, not at the top: the Snakemake controller runs complete_config

    y = np.asarray(y, dtype=float)
    d = y.shape[1]
    rule = model.get("priors", "fixed")
    if rule not in RULES:
        raise DataError(f"model.priors = {rule!r}: must be one of {list(RULES)}")
    sigma_prior = model.get("sigma_prior", "lognormal")
    given = [key for key in PRIOR_KEYS if model.get(key) is not None]
    values: dict[str, Any] = dict(FIXED)
    out: dict[str, Any] = {"rule": rule, "given": given}
    if rule == "data":
        mean, sd = y.mean(axis=0), y.std(axis=0, ddof=1) if len(y) > 1 else np.zeros(d)
        spread = np.isfinite(sd) & (sd > 0)
        flat = np.flatnonzero(~spread)
        scaled = ("mu_sd", "psi", "sigma_location" if sigma_prior == "lognormal" else "sigma_scale")
        missing = [key for key in scaled if key not in given]
        if flat.size and missing:
            column = int(flat[0])
            named = f"column {names[column]!r}" if names is not None else f"coordinate {column + 1}"
            raise DataError(
                f"{named} of the data has no spread (sd {sd[column]:.3g}): "
                f"the data-scale priors of {', '.join(missing)} need it; give them in the "
                "dataset's model or set 'priors: fixed'"
            )
        k = int(model["K"])
        unit = np.where(spread, sd, 1.0)  # a flat column's priors are all given (checked above)
        values.update(
            mu_location=mean,
            mu_sd=MU_SD_PER_SD * unit,
            alpha=DATA_ALPHA,
            psi=PSI_FACTOR * unit**2 / k ** (2 / d),
        )
        if sigma_prior == "lognormal":
            values.update(
                sigma_location=np.log(SIGMA_MEDIAN_PER_SD * unit), sigma_scale=SIGMA_LOG_SD
            )
        else:
            values.update(sigma_location=0.0, sigma_scale=unit)
        out.update(data_mean=mean.tolist(), data_sd=sd.tolist())
    values.update({key: model[key] for key in given})
    for key in _VECTOR_KEYS:
        value = np.asarray(values[key], dtype=float)
        if value.ndim > 1 or value.size not in (1, d):
            raise DataError(f"model.{key} = {values[key]!r}: needs one number or D = {d} numbers")
        values[key] = np.broadcast_to(value.reshape(-1), (d,)).tolist()
    values["alpha"] = float(values["alpha"])
    lkj_eta = float(model.get("lkj_eta", 2.0))
    return {**out, "sigma_prior": sigma_prior, **values, "lkj_eta": lkj_eta}


def describe(priors: Mapping[str, Any], covariance: str) -> list[str]:
    """The priors as lines of formulas on the data's scale (for fit.json and the report)."""
    fmt = _numbers
    lines = [
        f"mu[k, j] ~ normal({fmt(priors['mu_location'])}, {fmt(priors['mu_sd'])})",
        f"theta ~ dirichlet({priors['alpha']:.4g})",
    ]
    if covariance != "identity":
        dist = "lognormal" if priors["sigma_prior"] == "lognormal" else "normal+"  # truncated
        index, sub = ("j", "") if covariance == "tied" else ("k, j", "_k")  # tied: one Sigma
        lines.append(
            f"sigma[{index}] ~ {dist}({fmt(priors['sigma_location'])}, "
            f"{fmt(priors['sigma_scale'])})"
        )
        if covariance in ("full", "tied"):
            lines.append(f"Omega{sub} ~ lkj_corr({priors['lkj_eta']:.4g})")
        if any(priors["psi"]):
            lines.append(f"p(Sigma{sub}) * exp(-tr(diag({fmt(priors['psi'])}) Sigma{sub}^-1) / 2)")
        if covariance == "tied":
            lines.append("Sigma_k = Sigma = diag(sigma) Omega diag(sigma) for every k")
    return lines


def _numbers(values: Any) -> str:
    """One number, or a bracketed list when the coordinates differ."""
    import numpy as np

    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if np.all(arr == arr[0]):
        return f"{arr[0]:.4g}"
    return "[" + ", ".join(f"{v:.4g}" for v in arr) + "]"
