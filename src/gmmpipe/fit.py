"""Run one CmdStan fit (MAP, NUTS, ADVI, Pathfinder, Laplace); write the pipeline's outputs."""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gmmpipe import diagnostics as diag
from gmmpipe.data import Dataset, coordinate_names, stan_data
from gmmpipe.draws import SIG_FIGS, Draws, read_draws, relabel
from gmmpipe.errors import FitError
from gmmpipe.inits import jittered_inits, multistart, path_starts, record, stan_inits
from gmmpipe.io import atomic_path, storage_problem, write_csv, write_json
from gmmpipe.loo import chain_stacking
from gmmpipe.ppc import posterior_predictive
from gmmpipe.ppc import record as ppc_record
from gmmpipe.priors import describe, resolve_priors
from gmmpipe.relabel import STRATEGY
from gmmpipe.summarize import summarize_fit
from gmmpipe.vi import ELBO_COLUMNS, importance_resample, parse_elbo

logger = logging.getLogger(__name__)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def _cmdstan_settings(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The CmdStanModel method of a validated method config and its algorithm's arguments."""
    algorithm = spec["algorithm"]
    if algorithm == "optimize":
        return "optimize", {
            "algorithm": spec["optimizer"],
            "iter": spec["iter"],
            "jacobian": spec["jacobian"],
            "require_converged": False,
        }
    if algorithm == "nuts":
        keys = ("chains", "parallel_chains", "threads_per_chain", "iter_warmup", "iter_sampling")
        return "sample", {
            **{key: spec[key] for key in (*keys, "adapt_delta", "max_treedepth", "metric")},
            "show_progress": False,
        }
    if algorithm == "advi":
        keys = ("iter", "grad_samples", "elbo_samples", "eta", "adapt_iter", "tol_rel_obj")
        return "variational", {
            **{key: spec[key] for key in (*keys, "eval_elbo")},
            "algorithm": spec["variational"],
            "adapt_engaged": spec["eta"] is None,
            "draws": spec["output_samples"],
            "require_converged": False,
        }
    if algorithm == "laplace":
        return "laplace_sample", {"draws": spec["draws"], "jacobian": True}
    # every draw of the approximations, resampled by importance_resample after the k-hat
    return "pathfinder", {
        **{key: spec[key] for key in ("num_paths", "max_lbfgs_iters")},
        "psis_resample": False,
    }


def run_cmdstan(
    model: Any, data: str, spec: Mapping[str, Any], seed: int, out: Path, inits: Any
) -> Any:
    """Run one CmdStan method with its settings from `spec`, writing into `out`. `inits`: one
    point, or a list of one per chain or path."""
    if isinstance(inits, list) and len(inits) == 1:
        inits = inits[0]  # one run reads one init file, not cmdstanpy's per-run x_1.json, ...
    method, settings = _cmdstan_settings(spec)
    settings["sig_figs"] = SIG_FIGS
    if method == "laplace_sample":
        # the mode with the Jacobian adjustment (the Laplace approximation is a normal on the
        # unconstrained scale), searched from `inits`; its output stays apart from the draws
        mode = model.optimize(
            data=data,
            seed=seed,
            output_dir=out / "mode",
            inits=inits,
            algorithm=spec["optimizer"],
            iter=spec["iter"],
            jacobian=True,
            require_converged=False,
            sig_figs=SIG_FIGS,
        )
        return model.laplace_sample(data=data, mode=mode, seed=seed, output_dir=out, **settings)
    try:
        return getattr(model, method)(data=data, seed=seed, output_dir=out, inits=inits, **settings)
    except ValueError as err:
        # cmdstanpy 1.3 cannot parse an ADVI CSV without the eta-adaptation block (a fixed
        # eta); CmdStan itself finished, and the pipeline reads the CSV on its own.
        fixed_eta = method == "variational" and not settings["adapt_engaged"]
        if fixed_eta and "parsing Stan csv" in str(err) and any(out.glob("*.csv")):
            return None
        if not any(out.glob("*.csv")):  # refused before CmdStan ran: a bad argument
            raise argument_error(spec, err) from None
        raise


#: cmdstanpy's names of arguments whose config key is another (`argument_error`).
_ARGUMENT_KEYS = {"adapt_engaged": "eta"}


def argument_error(spec: Mapping[str, Any], err: ValueError) -> FitError:
    """A cmdstanpy argument error as a :class:`FitError` naming the method's config keys."""
    text = str(err)
    names = {**{key: key for key in spec if key != "algorithm"}, **_ARGUMENT_KEYS}
    keys = sorted(
        {
            key
            for word, key in names.items()
            if key in spec and re.search(rf"\b{re.escape(word)}\b", text)
        }
    )
    named = ", ".join(f"{key} = {spec[key]!r}" for key in keys) or "see its settings"
    return FitError(
        f"{spec['algorithm']}: cmdstanpy refused the method's arguments ({named}): {text}"
    )


def with_threads(
    model_spec: Mapping[str, Any], method_spec: Mapping[str, Any], n: int
) -> Mapping[str, Any]:
    """Turn on `reduce_sum` (grain size N / (4 threads)) when a method asks for several threads
    per chain and the dataset's model sets no grain size of its own."""
    threads = int(method_spec.get("threads_per_chain", 1))
    if threads > 1 and not model_spec.get("grainsize"):
        return {**model_spec, "grainsize": max(1, n // (4 * threads))}
    return model_spec


def to_inference_data(
    draws: Draws, *, attrs: Mapping[str, Any], names: list[str] | None = None
) -> az.InferenceData:
    """An InferenceData with named dims: mu (component, dim), theta (component), and when
    fitted sigma (component, dim) and Omega (component, dim, dim2); `dim` is named by the
    data's coordinate `names` (default x1..xD)."""
    k, d = draws.mu.shape[-2:]
    names = list(names) if names is not None else coordinate_names(d)
    coords = {"component": np.arange(1, k + 1), "dim": names}
    if draws.omega is not None:
        coords["dim2"] = names
    dims = {
        "mu": ["component", "dim"],
        "theta": ["component"],
        "sigma": ["component", "dim"],
        "Omega": ["component", "dim", "dim2"],
    }
    posterior = draws.components()
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=draws.stats or None,
        coords=coords,
        dims={name: dims[name] for name in posterior},
    )
    idata.posterior.attrs.update({str(key): _attr(value) for key, value in attrs.items()})
    return idata


def _attr(value: Any) -> Any:
    """netCDF attributes must be numbers or strings."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, float, str, np.number)):
        return value
    return str(value)


def fit_dataset(
    exe_file: str | Path,
    dataset: Dataset,
    *,
    dataset_spec: Mapping[str, Any],
    method_spec: Mapping[str, Any],
    seed: int,
    thresholds: Mapping[str, Any],
    outputs: Mapping[str, str | Path],
    inits: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit `dataset` with one method and write all of the fit's outputs.

    `outputs` maps ``posterior``, ``summary``, ``diagnostics``, ``fit``, ``cmdstan`` (a
    directory for CmdStan's CSVs and console output) and, for ADVI, ``elbo`` to paths.
    Nothing is written unless CmdStan ran; with ``strict`` a failed diagnostics gate raises
    :class:`FitError` and writes nothing either. `inits` (e.g. from :func:`inits_from`) sets
    the initial values; None leaves CmdStan's random inits.
    """
    from cmdstanpy import write_stan_json

    from gmmpipe.cmdstan import cmdstan_versions, load_model

    algorithm = method_spec["algorithm"]
    model_spec = with_threads(dataset_spec["model"], method_spec, dataset.n)
    k, d = int(model_spec["K"]), dataset.d
    priors = resolve_priors(dataset.y, model_spec, names=dataset.names)
    model = load_model(exe_file)
    cmdstan_dir = Path(outputs["cmdstan"])
    with atomic_path(cmdstan_dir) as scratch:
        scratch.mkdir()
        data_file = scratch / "data.json"  # not cmdstanpy's /tmp, which a kill -9 leaves
        write_stan_json(str(data_file), stan_data(dataset, model_spec, priors))
        start = time.perf_counter()
        try:
            starts, inits = chain_starts(
                model, data_file, dataset, model_spec, method_spec, seed, inits, scratch / "starts"
            )
            run_cmdstan(model, str(data_file), method_spec, seed, scratch, inits)
        except FitError:
            raise
        except RuntimeError as err:
            cause = storage_problem(cmdstan_dir.parent)  # CmdStan says only "Error during sampling"
            if cause:
                raise FitError(f"CmdStan {algorithm} failed: {cause}") from None
            raise FitError(f"CmdStan {algorithm} failed: {err}") from err
        wall_time = time.perf_counter() - start
        data_file.unlink()  # everything else is read back from the files CmdStan wrote
        console = "\n".join(f.read_text() for f in sorted(scratch.glob("*stdout.txt")))
        draws = read_draws(sorted(scratch.glob("*.csv")), algorithm, k, d)
        draws, report, checked = _checked(draws, dataset.y, console, thresholds, method_spec, seed)
        for f in scratch.iterdir():  # keep the CSVs' names stable across reruns
            f.rename(scratch / stable_name(f.name))
    info = {
        "algorithm": algorithm,
        "settings": dict(method_spec),
        "seed": seed,
        "wall_time_s": wall_time,
        "labelling": STRATEGY if k > 1 else "single component",
        "relabelled_draws": draws.extra.get("relabelled_draws", 0),
        "n": dataset.n,
        "d": d,
        "k": k,
        "cmdstan": cmdstan_versions(),
        "priors": priors,
        "prior_formulas": describe(priors, model_spec.get("covariance", "identity")),
        **({"starts": starts} if starts else {}),
        **({"ppc": ppc_record(checked, coordinate_names(d))} if checked else {}),
        **({"variational_mean": draws.extra["mean"]} if "mean" in draws.extra else {}),
    }
    _write_outputs(outputs, draws, info, report, console, dataset.names)
    if not report["passed"]:
        logger.warning("%s diagnostics failed: %s", algorithm, "; ".join(report["failures"]))
    return info


def _checked(
    draws: Draws,
    y: np.ndarray,
    console: str,
    thresholds: Mapping[str, Any],
    method_spec: Mapping[str, Any],
    seed: int,
) -> tuple[Draws, dict[str, Any], dict[str, Any] | None]:
    """A fit's draws in one labelling (Pathfinder's importance-resampled first), its diagnostics
    report (chains in different modes stacked) and, for NUTS, its posterior predictive check.

    Raises FitError for a ``strict`` method whose gate failed."""
    algorithm = method_spec["algorithm"]
    if algorithm == "pathfinder":
        draws = importance_resample(draws, method_spec["draws"], np.random.default_rng([seed, 19]))
    draws = relabel(draws)
    checked = (
        posterior_predictive(y, draws.components(), seed=seed) if algorithm == "nuts" else None
    )
    report = diag.check(algorithm, draws, console, thresholds, method_spec, y=y, ppc=checked)
    _stack_chains(report, y, draws, seed)
    if method_spec.get("strict") and not report["passed"]:
        raise FitError(f"{algorithm} diagnostics failed: {'; '.join(report['failures'])}")
    return draws, report, checked


def _write_outputs(
    outputs: Mapping[str, str | Path],
    draws: Draws,
    info: Mapping[str, Any],
    report: Mapping[str, Any],
    console: str,
    names: list[str] | None,
) -> None:
    """posterior.nc, summary.csv, elbo.csv (when asked for), diagnostics.json and fit.json."""
    algorithm = info["algorithm"]
    idata = to_inference_data(
        draws, attrs={key: info[key] for key in ("algorithm", "seed", "labelling")}, names=names
    )
    with atomic_path(outputs["posterior"]) as tmp:
        idata.to_netcdf(tmp)
    write_csv(outputs["summary"], summarize_fit(idata, algorithm), index=True)
    if "elbo" in outputs:
        elbo = parse_elbo(console) if algorithm == "advi" else pd.DataFrame(columns=ELBO_COLUMNS)
        write_csv(outputs["elbo"], elbo)
    write_json(outputs["diagnostics"], report)
    write_json(outputs["fit"], info)


def _stack_chains(report: dict[str, Any], y: np.ndarray, draws: Draws, seed: int) -> None:
    """When the chains sit in different modes, add their stacking weights and the stacked means
    (:func:`gmmpipe.loo.chain_stacking`) to `report`, beside the plain result, and name the
    weights in the ``chain_modes`` check's detail. No chain is dropped."""
    check = next((c for c in report["checks"] if c["name"] == "chain_modes"), None)
    if check is None or check["passed"]:
        return
    stacking = chain_stacking(y, draws.components(), seed=seed)
    report["chain_stacking"] = stacking
    weights = " / ".join(f"{w:.2f}" for w in stacking["weights"])
    check["detail"] += f"; stacking weights of the chains {weights}"


def chain_starts(
    model: Any,
    data_file: Path,
    dataset: Dataset,
    model_spec: Mapping[str, Any],
    method_spec: Mapping[str, Any],
    seed: int,
    point: Mapping[str, Any] | None,
    out: Path,
) -> tuple[dict[str, Any] | None, Any]:
    """The starts record for fit.json and CmdStan's inits: from `point` (an earlier fit) when
    given, else for optimize and NUTS from the multi-start optimizer (:mod:`gmmpipe.inits`,
    its runs under `out`), for Pathfinder CmdStan's random inits with sigma on the data's scale
    (:func:`gmmpipe.inits.path_starts`), else CmdStan's random inits (``starts: 0``, or
    ``starts: random`` for Pathfinder)."""
    if point is not None:
        return None, stan_inits(point, model_spec, dataset.y)
    if method_spec["algorithm"] == "pathfinder":
        if method_spec["starts"] == "random":
            return None, None
        return path_starts(dataset.y, model_spec, int(method_spec["num_paths"]), seed)
    n_starts = int(method_spec.get("starts", 0))
    if method_spec["algorithm"] not in ("optimize", "nuts") or n_starts == 0:
        return None, None
    optima = multistart(
        model,
        data_file,
        dataset.y,
        model_spec,
        n_starts=n_starts,
        seed=seed,
        out=out,
        iter=int(method_spec.get("iter", 2000)),  # optimize's; NUTS has none
    )
    starts = record(optima, n_starts)
    if not optima:
        logger.warning("every start failed to optimize: CmdStan's random inits instead")
        return starts, None
    best = optima[0]["point"]
    if method_spec["algorithm"] == "optimize":
        chain_points = [best]
    else:
        rng = np.random.default_rng([seed, 18])
        chain_points = jittered_inits(best, dataset.n, int(method_spec["chains"]), rng)
    starts["chain_inits"] = [
        {name: np.asarray(v).tolist() for name, v in p.items()} for p in chain_points
    ]
    return starts, [stan_inits(p, model_spec, dataset.y) for p in chain_points]


def stable_name(name: str) -> str:
    """Drop cmdstanpy's timestamp from a file name: gmm-20240101120000_1.csv -> gmm_1.csv."""
    return re.sub(r"-\d{14}", "", name)
