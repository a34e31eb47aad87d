"""Summaries: one table per fit (ArviZ), and per-dataset comparisons across methods."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gmmpipe.draws import chains_or_halves
from gmmpipe.io import read_json, write_csv, write_text
from gmmpipe.relabel import component_features, match_to_reference

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

HDI_PROB = 0.94
SUMMARY_COLUMNS = [
    "mean",
    "sd",
    "hdi_3%",
    "hdi_97%",
    "mcse_mean",
    "mcse_sd",
    "ess_bulk",
    "ess_tail",
    "r_hat",
]


def summarize_fit(idata: az.InferenceData, algorithm: str) -> pd.DataFrame:
    """One row per parameter: mean, sd, HDI, MCSE, ESS bulk/tail and R-hat (NaN where undefined;
    a single chain's is that of its two halves, as in the gate), unrounded: ArviZ's default
    rounding to decimals shows 0 for data on the scale of 1e-4."""
    n_draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    if n_draws > 1:
        kind = "all" if algorithm == "nuts" else "stats"
        table = az.summary(idata, kind=kind, hdi_prob=HDI_PROB, round_to="none")
        if algorithm == "nuts" and idata.posterior.sizes["chain"] == 1:
            table["r_hat"] = _halves_rhat(idata.posterior)
    else:
        flat = {name: np.ravel(var.values) for name, var in idata.posterior.data_vars.items()}
        index = [
            n for name, var in idata.posterior.data_vars.items() for n in _flat_names(name, var)
        ]
        table = pd.DataFrame({"mean": np.concatenate(list(flat.values()))}, index=index)
    table.index.name = "parameter"
    return table.reindex(columns=SUMMARY_COLUMNS)


def _halves_rhat(posterior: xr.Dataset) -> pd.Series:
    """R-hat of every parameter of a single chain, from its two halves."""
    halves = xr.Dataset(
        {name: (var.dims, chains_or_halves(var.values)) for name, var in posterior.items()},
        coords={d: posterior.coords[d] for d in posterior.coords if d not in ("chain", "draw")},
    )
    return az.summary(halves, kind="diagnostics", round_to="none")["r_hat"]


def _flat_names(name: str, var) -> list[str]:  # type: ignore[no-untyped-def]
    """ArviZ-style names ``mu[1, x1]`` of a variable's elements."""
    dims = [d for d in var.dims if d not in ("chain", "draw")]
    if not dims:
        return [name]
    grids = np.meshgrid(*[var.coords[d].values for d in dims], indexing="ij")
    return [
        f"{name}[{', '.join(str(g) for g in idx)}]"
        for idx in zip(*(g.ravel() for g in grids), strict=False)
    ]


# --- Per-dataset comparison across methods -------------------------------------------------

#: |mean error| (in NUTS posterior sd) and |sd error| (relative to the NUTS sd) flagged in tables.
MEAN_ERROR_FLAG = 1.0
SD_ERROR_FLAG = 0.5
_LOW, _HIGH = SUMMARY_COLUMNS[2], SUMMARY_COLUMNS[3]
COMPARISON_COLUMNS = [
    "parameter",
    "variable",
    "component",
    "dim",
    "method",
    "algorithm",
    "mean",
    "sd",
    _LOW,
    _HIGH,
    "ess_bulk",
    "ess_tail",
    "r_hat",
    "khat",
    "wall_time_s",
    "diagnostics_passed",
    "mean_error_nuts_sd",
    "sd_error_nuts_sd",
]


@dataclass
class MethodFit:
    """Everything one fit wrote: posterior draws, fit record, diagnostics and ELBO trace."""

    method: str
    algorithm: str
    posterior: xr.Dataset
    info: dict[str, Any]
    diagnostics: dict[str, Any]
    elbo: pd.DataFrame | None = None
    permutation: list[int] | None = None  # applied to align components with the reference

    @property
    def n_draws(self) -> int:
        return int(self.posterior.sizes["chain"] * self.posterior.sizes["draw"])

    @property
    def passed(self) -> bool:
        return bool(self.diagnostics.get("passed", False))

    def mean_mu(self) -> np.ndarray:
        """Posterior mean of the component means, (K, D)."""
        return self.posterior["mu"].mean(("chain", "draw")).values

    def features(self) -> np.ndarray:
        """Every draw's component parameters on unbounded scales, (S, K, F)
        (:func:`gmmpipe.relabel.component_features`)."""
        post = self.posterior.stack(sample=("chain", "draw")).transpose("sample", "component", ...)
        optional = {name: post[name].values for name in ("sigma", "Omega") if name in post}
        return component_features(
            post["mu"].values, post["theta"].values, optional.get("sigma"), optional.get("Omega")
        )

    def check(self, name: str) -> float:
        """The value of one diagnostics check (NaN when the fit has no such check)."""
        for item in self.diagnostics.get("checks", []):
            if item["name"] == name:
                return float(item["value"])
        return float("nan")


def load_fits(posteriors: Mapping[str, str | Path]) -> dict[str, MethodFit]:
    """Read the fits of one dataset, given each method's ``posterior.nc``.

    The fit's ``fit.json``, ``diagnostics.json`` and (ADVI) ``elbo.csv`` are read from the same
    directory. Methods keep the order of `posteriors`.
    """
    fits = {}
    for method, path in posteriors.items():
        folder = Path(path).parent
        info = read_json(folder / "fit.json")
        elbo_path = folder / "elbo.csv"
        fits[method] = MethodFit(
            method=method,
            algorithm=info["algorithm"],
            posterior=az.from_netcdf(path).posterior.load(),
            info=info,
            diagnostics=read_json(folder / "diagnostics.json"),
            elbo=pd.read_csv(elbo_path) if elbo_path.is_file() else None,
        )
    return fits


def reference_method(fits: Mapping[str, MethodFit]) -> str | None:
    """The method the others are compared with: the first NUTS fit, else the one with most draws."""
    if not fits:
        return None
    nuts = [m for m, f in fits.items() if f.algorithm == "nuts"]
    return nuts[0] if nuts else max(fits, key=lambda m: fits[m].n_draws)


def align_components(fits: Mapping[str, MethodFit]) -> dict[str, MethodFit]:
    """Renumber each fit's components to match the reference fit's.

    Every fit is already relabelled and ordered by weight on its own; two methods can still
    disagree on the order when weights are close, so tables and figures compare component k
    of every method with component k of the reference. Components are matched on all their
    parameters (means, weights and, where the model has them, scales and correlations), each
    in the reference's posterior sds, so that two components at one place that differ in
    spread are told apart.
    """
    ref = reference_method(fits)
    if ref is None:
        return {}
    draws = fits[ref].features()
    target = draws.mean(axis=0)
    overall = np.maximum(draws.reshape(-1, draws.shape[-1]).std(axis=0), 1e-12)
    spread = np.maximum(draws.std(axis=0), 1e-3 * overall) if len(draws) > 1 else overall
    aligned = {}
    for method, fit in fits.items():
        (perm,) = match_to_reference(fit.features().mean(axis=0)[None], target, spread)
        posterior = fit.posterior.isel(component=perm).assign_coords(
            component=fit.posterior["component"].values
        )
        aligned[method] = replace(fit, posterior=posterior, permutation=[int(p) for p in perm])
    return aligned


def aligned_truth(truth: Mapping[str, Any], reference: np.ndarray | None) -> dict[str, Any]:
    """The true ``mu`` (K, D) and ``theta`` (K) in the fits' component order, or ``{}``.

    Empty when the data carry no truth or its K/D differ from the model's.
    """
    if "mu" not in truth or "theta" not in truth:
        return {}
    mu, theta = np.asarray(truth["mu"], dtype=float), np.asarray(truth["theta"], dtype=float)
    if reference is not None:
        if mu.shape != reference.shape:
            return {}
        (perm,) = match_to_reference(mu[None], reference)
        mu, theta = mu[perm], theta[perm]
    return {"mu": mu, "theta": theta}


def comparison_table(
    fits: Mapping[str, MethodFit], truth: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """One row per parameter element and method (plus a ``truth`` row when known).

    Columns are :data:`COMPARISON_COLUMNS`: mean, sd and 94% HDI of every method; ESS and
    R-hat for NUTS; Pareto k-hat for ADVI, Pathfinder and Laplace; the method's wall time and
    whether its diagnostics passed; and each method's error relative to the reference (NUTS)
    fit, in NUTS posterior-sd units: ``(mean - mean_NUTS) / sd_NUTS`` and
    ``(sd - sd_NUTS) / sd_NUTS``.
    """
    fits = align_components(fits)
    ref = reference_method(fits)
    rows = []
    for method, fit in fits.items():
        table = summarize_fit(az.InferenceData(posterior=fit.posterior), fit.algorithm)
        for parameter, stats in table.iterrows():
            rows.append(
                {
                    **_parse_parameter(str(parameter)),
                    "method": method,
                    "algorithm": fit.algorithm,
                    **stats.to_dict(),
                    "khat": fit.check("pareto_khat"),
                    "wall_time_s": float(fit.info.get("wall_time_s", np.nan)),
                    "diagnostics_passed": fit.passed,
                }
            )
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if ref is not None:
        base = frame[frame["method"] == ref].set_index("parameter")
        mean_ref = frame["parameter"].map(base["mean"])
        sd_ref = frame["parameter"].map(base["sd"])
        frame["mean_error_nuts_sd"] = (frame["mean"] - mean_ref) / sd_ref
        frame["sd_error_nuts_sd"] = (frame["sd"] - sd_ref) / sd_ref
        if fits[ref].algorithm != "nuts":
            frame[["mean_error_nuts_sd", "sd_error_nuts_sd"]] = np.nan
        frame.loc[frame["method"] == ref, ["mean_error_nuts_sd", "sd_error_nuts_sd"]] = np.nan
    true = aligned_truth(truth or {}, fits[ref].mean_mu() if ref else None)
    if true:
        truth_rows = pd.DataFrame(
            [
                {**_parse_parameter(p), "method": "truth", "algorithm": "truth", "mean": v}
                for p, v in _flat_truth(true, frame)
            ],
            columns=COMPARISON_COLUMNS,
        )
        frame = pd.concat([truth_rows, frame], ignore_index=True)
    return frame.astype({"diagnostics_passed": "object"})


def _flat_truth(true: Mapping[str, np.ndarray], frame: pd.DataFrame) -> list[tuple[str, float]]:
    """(parameter name, true value) pairs named like the fits' parameters."""
    dims = list(dict.fromkeys(frame.loc[frame["variable"] == "mu", "dim"]))
    k, d = true["mu"].shape
    names = dims if len(dims) == d else [f"x{j + 1}" for j in range(d)]
    pairs = [
        (f"mu[{i + 1}, {names[j]}]", float(true["mu"][i, j])) for i in range(k) for j in range(d)
    ]
    return pairs + [(f"theta[{i + 1}]", float(true["theta"][i])) for i in range(k)]


def _parse_parameter(name: str) -> dict[str, Any]:
    """Split ``mu[1, x2]`` into variable, component and dim."""
    variable, _, rest = name.partition("[")
    parts = [p.strip() for p in rest.rstrip("]").split(",")] if rest else []
    return {
        "parameter": name,
        "variable": variable,
        "component": int(parts[0]) if parts else pd.NA,
        "dim": parts[1] if len(parts) > 1 else "",
    }


def method_overview(fits: Mapping[str, MethodFit]) -> pd.DataFrame:
    """One row per method: algorithm, draws, wall time, key diagnostics and failures."""
    rows = []
    for method, fit in fits.items():
        rows.append(
            {
                "method": method,
                "algorithm": fit.algorithm,
                "draws": fit.n_draws,
                "wall_time_s": float(fit.info.get("wall_time_s", np.nan)),
                "r_hat_max": _fixed(fit.check("r_hat_max"), 3),
                "ess_bulk_min": fit.check("ess_bulk_min"),
                "divergences": fit.check("divergences"),
                "khat": _fixed(fit.check("pareto_khat"), 2),
                "diagnostics": "passed" if fit.passed else "FAILED",
                "failures": "; ".join(fit.diagnostics.get("failures", [])),
            }
        )
    return pd.DataFrame(rows)


def _fixed(value: float, decimals: int) -> str:
    """A number with fixed decimals, ``—`` when missing."""
    return f"{value:.{decimals}f}" if np.isfinite(value) else "—"


def diagnostics_table(fits: Mapping[str, MethodFit], dataset: str = "") -> pd.DataFrame:
    """Every diagnostics check of every fit: dataset, method, algorithm, check, value, threshold,
    passed, and what failed (the chains or components named by the check)."""
    rows = [
        {
            "dataset": dataset,
            "method": method,
            "algorithm": fit.algorithm,
            "check": item["name"],
            "value": item["value"],
            "threshold": item["threshold"],
            "passed": bool(item["passed"]),
            "detail": item.get("detail", ""),
        }
        for method, fit in fits.items()
        for item in fit.diagnostics.get("checks", [])
    ]
    columns = ["dataset", "method", "algorithm", "check", "value", "threshold", "passed"]
    return pd.DataFrame(rows, columns=[*columns, "detail"])


# --- Renderings -----------------------------------------------------------------------------


#: Significant digits of a point estimate (MAP, the truth) in the tables: without a posterior
#: sd to round to, 3 digits would show a MAP of 185.57 as 186, off by 1.5 sd on 300 points.
POINT_DIGITS = 6


def _fmt(value: Any, digits: int = 3) -> str:
    """A number in a table cell: ``—`` for missing values."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "NO"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _fmt_to(value: float, sd: float) -> str:
    """`value` to the resolution of a posterior sd (two significant digits of `sd`), so that a
    mean of 2019.53 ± 0.08 does not read 2020; a point estimate (no sd: MAP) to
    :data:`POINT_DIGITS` significant digits."""
    if not (np.isfinite(value) and np.isfinite(sd) and sd > 0):
        return _point(value)
    return f"{value:.{max(0, 1 - int(np.floor(np.log10(sd))))}f}"


def _point(value: float) -> str:
    """A point estimate to :data:`POINT_DIGITS` significant digits, ``—`` when missing."""
    return f"{value:.{POINT_DIGITS}g}" if np.isfinite(value) else "—"


def estimates_wide(table: pd.DataFrame, *, html: bool = False) -> pd.DataFrame:
    """The comparison table with one row per parameter and one cell per method.

    A cell reads ``mean ± sd [HDI]``; NUTS cells add ESS and R-hat, the other methods' cells
    their mean and sd error in NUTS sd units (``Δmean``, ``Δsd``). With `html`, discrepancies
    beyond :data:`MEAN_ERROR_FLAG` / :data:`SD_ERROR_FLAG` are wrapped in ``<b class=flag>``.
    """
    sep = "<br>" if html else "; "
    methods = list(dict.fromkeys(table["method"]))
    wide = pd.DataFrame(index=pd.Index(list(dict.fromkeys(table["parameter"])), name="parameter"))
    for method in methods:
        rows = table[table["method"] == method].set_index("parameter")
        wide[method] = [
            _cell(rows.loc[p], sep=sep, html=html) if p in rows.index else "—" for p in wide.index
        ]
    return wide


def _cell(row: pd.Series, *, sep: str, html: bool) -> str:
    """One method's estimate of one parameter, as text."""
    if row["algorithm"] == "truth":
        return _point(row["mean"])
    sd = row["sd"]
    parts = [_fmt_to(row["mean"], sd)]
    if np.isfinite(sd):
        parts[0] += f" ± {_fmt(sd, 2)}"
        parts.append(f"[{_fmt_to(row[_LOW], sd)}, {_fmt_to(row[_HIGH], sd)}]")
    if row["algorithm"] == "nuts":
        parts.append(f"ESS {_fmt(row['ess_bulk'], 4)}, R̂ {row['r_hat']:.3f}")
    errors = []
    for column, label, limit in (
        ("mean_error_nuts_sd", "Δmean", MEAN_ERROR_FLAG),
        ("sd_error_nuts_sd", "Δsd", SD_ERROR_FLAG),
    ):
        value = row[column]
        if np.isfinite(value):
            text = f"{label} {value:+.2f}"
            if abs(value) > limit:
                text = f'<b class="flag">{text}</b>' if html else text + "!"
            errors.append(text)
    if errors:
        parts.append(" ".join(errors))
    return sep.join(parts)


def to_markdown(frame: pd.DataFrame, *, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    frame = frame.reset_index() if index else frame
    header = [str(c) for c in frame.columns]
    body = [[_fmt(v) if not isinstance(v, str) else v for v in row] for row in frame.to_numpy()]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.flag, .failed { color: #b00020; font-weight: bold; }
tr.failed td { background: #fde7ea; }
.note { color: #555; max-width: 60em; }
"""


def html_page(title: str, sections: list[tuple[str, str]], note: str = "") -> str:
    """A small self-contained HTML page: a title, a note and (heading, HTML) sections."""
    body = "".join(f"<h2>{escape(h)}</h2>\n{content}\n" for h, content in sections)
    note_html = f'<p class="note">{note}</p>' if note else ""
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{HTML_STYLE}</style></head>\n<body><h1>{escape(title)}</h1>{note_html}\n"
        f"{body}</body></html>\n"
    )


def frame_to_html(
    frame: pd.DataFrame,
    *,
    index: bool = False,
    failed: pd.Series | None = None,
    markup: bool = False,
) -> str:
    """An HTML table of already formatted cells; rows where `failed` is true are highlighted.

    Text is escaped (names come from users' column headers), except the cells of a `markup`
    frame, built as HTML (:func:`estimates_wide`); its index is escaped all the same."""
    labels = frame.index.nlevels if index else 0
    frame = frame.reset_index() if index else frame
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for i, row in enumerate(frame.to_numpy()):
        cls = ' class="failed"' if failed is not None and bool(failed.iloc[i]) else ""
        cells = "".join(
            f"<td>{_html_cell(v, trusted=markup and j >= labels)}</td>" for j, v in enumerate(row)
        )
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_cell(value: Any, *, trusted: bool) -> str:
    """A cell's HTML: text escaped unless `trusted`, numbers through :func:`_fmt`."""
    if isinstance(value, str):
        return value if trusted else escape(value)
    return _fmt(value)


def write_comparison(
    fits: Mapping[str, MethodFit],
    truth: Mapping[str, Any],
    *,
    dataset: str,
    csv: str | Path,
    markdown: str | Path,
    html: str | Path,
    diagnostics_csv: str | Path,
    diagnostics_html: str | Path,
) -> pd.DataFrame:
    """Write a dataset's comparison table (CSV, Markdown, HTML) and its diagnostics table."""
    table = comparison_table(fits, truth)
    overview = method_overview(fits)
    checks = diagnostics_table(fits, dataset)
    ref = reference_method(fits)
    write_csv(csv, table)
    failed = overview["diagnostics"] == "FAILED"
    note = (
        f"Dataset <b>{escape(dataset)}</b>. Cells: mean ± sd, 94% HDI; NUTS adds bulk ESS and "
        f"R̂; the other methods add their error relative to <b>{escape(str(ref))}</b> in its "
        f"posterior sd: Δmean = (mean - mean_NUTS)/sd_NUTS, Δsd = (sd - sd_NUTS)/sd_NUTS; "
        f"|Δmean| > {MEAN_ERROR_FLAG:g} or |Δsd| > {SD_ERROR_FLAG:g} in red. Components are "
        "relabelled, ordered by weight and aligned across methods."
    )
    write_text(
        html,
        html_page(
            f"{dataset}: methods compared",
            [
                ("Methods", frame_to_html(overview, failed=failed)),
                (
                    "Estimates",
                    frame_to_html(estimates_wide(table, html=True), index=True, markup=True),
                ),
                ("Priors", frame_to_html(priors_table(fits))),
            ],
            note,
        ),
    )
    md_note = note.replace("<b>", "**").replace("</b>", "**")
    write_text(
        markdown,
        f"# {dataset}: methods compared\n\n{md_note}\n\n"
        f"## Methods\n\n{to_markdown(overview, index=False)}\n"
        f"## Estimates\n\n{to_markdown(estimates_wide(table))}\n"
        f"## Priors\n\n{to_markdown(priors_table(fits), index=False)}",
    )
    write_csv(diagnostics_csv, checks)
    write_text(diagnostics_html, diagnostics_page(checks, f"{dataset}: diagnostics"))
    return table


def priors_table(fits: Mapping[str, MethodFit]) -> pd.DataFrame:
    """The priors each fit used (fit.json ``prior_formulas``): rule, keys given, formulas."""
    rows = [
        {
            "method": method,
            "rule": fit.info["priors"]["rule"],
            "given in config": ", ".join(fit.info["priors"]["given"]) or "—",
            "prior": line,
        }
        for method, fit in fits.items()
        if "priors" in fit.info
        for line in fit.info["prior_formulas"]
    ]
    return pd.DataFrame(rows, columns=["method", "rule", "given in config", "prior"])


def diagnostics_page(checks: pd.DataFrame, title: str) -> str:
    """An HTML page listing every check, failed ones first and in red."""
    checks = checks.sort_values("passed", kind="stable")
    n_failed = int((~checks["passed"].astype(bool)).sum())
    fits = checks.groupby(["dataset", "method"], sort=False)["passed"].all()
    failed_fits = [f"{d}/{m}" for (d, m), ok in fits.items() if not ok]
    summary = (
        f'<p class="failed">{n_failed} check(s) FAILED, in: {escape(", ".join(failed_fits))}</p>'
        if n_failed
        else f"<p>All {len(checks)} checks passed.</p>"
    )
    shown = checks.assign(passed=checks["passed"].map({True: "passed", False: "FAILED"}))
    return html_page(
        title,
        [("Checks", summary + frame_to_html(shown, failed=~checks["passed"].astype(bool)))],
        "Thresholds come from the config's <code>diagnostics</code> section; a failed check "
        "means the method's numbers in the tables and figures should not be trusted.",
    )
