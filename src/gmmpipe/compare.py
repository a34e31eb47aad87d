"""The compare step of the workflow: LOO of one dataset's fits over K (:mod:`gmmpipe.loo`), with
CmdStan refits for the points PSIS cannot score, the table, the per-point k-hats, the suggested
K with its evidence, and the figure."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cmdstanpy import write_stan_json

from gmmpipe.arrays import flat_params
from gmmpipe.cmdstan import load_model
from gmmpipe.config import derived_seed, with_k
from gmmpipe.data import Dataset, load_dataset, stan_data
from gmmpipe.draws import read_draws
from gmmpipe.fit import run_cmdstan
from gmmpipe.inits import stan_inits
from gmmpipe.io import read_json, write_csv, write_json, write_text
from gmmpipe.loo import (
    Params,
    Refit,
    compare_k,
    khat_table,
    loo_over_k,
    suggestion_text,
)
from gmmpipe.plots import save_figure
from gmmpipe.priors import resolve_priors

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def cmdstan_refit(
    exe_file: str | Path,
    dataset: Dataset,
    *,
    dataset_spec: Mapping[str, Any],
    method_spec: Mapping[str, Any],
    seed: int,
    start: Params,
    workdir: str | Path,
) -> Refit:
    """A :data:`Refit` that reruns the compared method through CmdStan on the data without the
    given points, started at the full fit's posterior mean `start`."""
    model = load_model(exe_file)
    k, d = int(dataset_spec["model"]["K"]), dataset.d
    point = {name: value.mean(axis=0) for name, value in start.items()}
    inits = stan_inits(point, dataset_spec["model"], dataset.y)
    # the full fit's prior: the data-scale rule must not move with the left-out points
    priors = resolve_priors(dataset.y, dataset_spec["model"])
    counter = iter(range(1_000_000))

    def refit(exclude: np.ndarray) -> Params:
        keep = np.setdiff1d(np.arange(dataset.n), exclude)
        out = Path(workdir) / f"refit_{next(counter)}"
        out.mkdir(parents=True)
        data_file = out / "data.json"
        data_dict = stan_data(Dataset(y=dataset.y[keep]), dataset_spec["model"], priors)
        write_stan_json(str(data_file), data_dict)
        run_seed = derived_seed(seed, "refit", *(str(i) for i in exclude[:20]), str(len(exclude)))
        run_cmdstan(model, str(data_file), method_spec, run_seed, out, inits)
        draws = read_draws(sorted(out.glob("*.csv")), method_spec["algorithm"], k, d)
        return flat_params(draws.components())

    return refit


def plot_loo(table: pd.DataFrame, khat: pd.DataFrame, *, title: str = "") -> Any:
    """elpd ± 2 SE by K (the suggested K marked), stacking weights, and every point's k-hat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    ax = axes[0]
    ax.errorbar(
        table["K"],
        table["elpd"],
        yerr=2 * table["se"],
        fmt="o-",
        color="#0072B2",
        capsize=4,
        label="elpd ± 2 SE",
    )
    best = table.loc[table["elpd"].idxmax()]
    ax.errorbar(
        table["K"] + 0.08,
        best["elpd"] - table["elpd_diff"],
        yerr=2 * table["diff_se"],
        fmt="none",
        color="#D55E00",
        capsize=3,
        label="difference to best ± 2 SE",
    )
    chosen = table[table["suggested"]]
    ax.scatter(
        chosen["K"],
        chosen["elpd"],
        s=220,
        facecolors="none",
        edgecolors="black",
        linewidths=2,
        zorder=5,
        label="suggested K",
    )
    if "gate" in table:  # K whose fit failed its diagnostics gate
        failed = table[table["gate"] != "passed"]
        ax.scatter(
            failed["K"], failed["elpd"], marker="x", s=90, color="#D55E00", zorder=6,
            label="fit failed its diagnostics",
        )  # fmt: skip
    ax.set_xlabel("K (components)")
    ax.set_ylabel("elpd (PSIS-LOO)")
    ax.set_xticks(table["K"])
    ax.legend(fontsize=8)
    axes[1].bar(table["K"], table["weight"], color="#009E73")
    axes[1].set_xlabel("K (components)")
    axes[1].set_ylabel("stacking weight")
    axes[1].set_xticks(table["K"])
    axes[1].set_ylim(0, 1)
    ax = axes[2]
    rng = np.random.default_rng(0)
    finite = khat[np.isfinite(khat["khat"])]
    ax.scatter(
        finite["K"] + rng.uniform(-0.2, 0.2, len(finite)),
        finite["khat"],
        s=4,
        alpha=0.4,
        color="#56B4E9",
        linewidths=0,
    )
    for _, row in table.iterrows():
        ax.hlines(row["khat_threshold"], row["K"] - 0.3, row["K"] + 0.3, color="#D55E00")
    ax.set_xlabel("K (components)")
    ax.set_ylabel("Pareto k-hat per point")
    ax.set_xticks(table["K"])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_compare(
    *,
    data: str | Path,
    dataset_json: str | Path,
    posteriors: Mapping[int, str | Path],
    settings: Mapping[str, Any],
    outputs: Mapping[str, str | Path],
    diagnostics: Mapping[int, str | Path] | None = None,
    dataset: str = "",
    method: str = "",
    refit_args: Mapping[str, Any] | None = None,
    dpi: int = 120,
) -> dict[str, Any]:
    """The compare step: LOO of every K's fit, the table (CSV, HTML), per-point k-hat (CSV),
    the suggestion with its evidence (JSON) and the figure (PNG).

    `data` and `dataset_json` are the dataset's CSV and JSON as the workflow writes them;
    `diagnostics` (each K's diagnostics.json) marks the K whose fit failed its gate.
    `refit_args` (exe_file, dataset_spec, method_spec, seed, workdir) enables the refit and
    K-fold fallbacks through CmdStan; without it the PSIS estimates are flagged instead.
    """
    observed = load_dataset(data, dataset_json)
    fits, chains = {}, {}
    for k, path in sorted(posteriors.items()):
        idata = az.from_netcdf(path)
        fits[int(k)] = flat_params(idata.posterior)
        chains[int(k)] = int(idata.posterior.sizes["chain"])
    refits = None
    if refit_args is not None:
        args = dict(refit_args)
        workdir = Path(args.pop("workdir"))
        spec = args.pop("dataset_spec")
        refits = {
            k: cmdstan_refit(
                dataset=observed,
                dataset_spec=with_k(spec, k),
                start=fits[k],
                workdir=workdir / f"K{k}",
                **args,
            )
            for k in fits
        }
    results = loo_over_k(observed.y, fits, settings=settings, chains=chains, refits=refits)
    table, evidence = compare_k(results, n=observed.n, margin=settings["elpd_margin"])
    khat = khat_table(results)
    text = suggestion_text(evidence, sorted(fits))
    if diagnostics is not None:
        failed = {k: _failed_checks(path) for k, path in diagnostics.items()}
        table["gate"] = [
            f"FAILED: {', '.join(failed[k])}" if failed[k] else "passed" for k in table["K"]
        ]
        evidence["failed_K"] = sorted(k for k in failed if failed[k])
        if evidence["failed_K"]:
            text += (
                f" The {method} fit of K = {', '.join(map(str, evidence['failed_K']))} failed "
                "its diagnostics gate: its elpd may be wrong (see the gate column)."
            )
    evidence.update(dataset=dataset, method=method, text=text)
    write_csv(outputs["table"], table)
    write_csv(outputs["khat"], khat)
    write_text(outputs["html"], _html(table, evidence))
    write_json(outputs["suggestion"], evidence)
    fig = plot_loo(table, khat, title=f"{dataset} ({method}): {evidence['text'].split(':')[0]}")
    save_figure(fig, outputs["figure"], dpi=dpi)
    return evidence


def _failed_checks(path: str | Path) -> list[str]:
    """The names of the checks that a fit's diagnostics.json records as failed."""
    return [c["name"] for c in read_json(path)["checks"] if not c["passed"]]


def _html(table: pd.DataFrame, evidence: Mapping[str, Any]) -> str:
    shown = table.drop(columns=["n"]).round(
        {c: 2 for c in ("elpd", "se", "elpd_diff", "diff_se", "subsampling_se", "p_loo")}
        | {"weight": 3, "khat_max": 2, "khat_threshold": 2, "diff_subsampling_se": 2}
    )
    return (
        f"<html><body><h3>Choosing K for {evidence['dataset']} ({evidence['method']})</h3>"
        f"<p>{evidence['text']}</p>{shown.to_html(index=False)}</body></html>\n"
    )
