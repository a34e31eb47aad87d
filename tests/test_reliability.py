"""Reliability promises, each tested: kill -9 then rerun equals an uninterrupted run, reruns do
only what changed, same config and seed give identical draws, CmdStan failures are errors or
recorded diagnostics, never corrupt outputs, and no config value reaches a shell."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import xarray as xr
import yaml
from workflow_helpers import (
    ROOT,
    compiled_model,
    make_workflow,
    output,
    scheduled_outputs,
    scheduled_rules,
    small_config,
    snakemake,
    snakemake_command,
    stray_temporaries,
)

from gmmpipe.config import derived_seed
from gmmpipe.layout import fit_dir as workflow_fit_dir

FIT_FILES = ("posterior.nc", "summary.csv", "diagnostics.json", "fit.json")


def _config() -> dict[str, Any]:
    """Two datasets, MAP on both, NUTS on `mid` (long enough to be interrupted)."""
    config = small_config(seed=5)
    config["datasets"]["mid"] = {
        "simulate": {
            "generator": "mixture",
            "n": 8000,
            "means": [[-1.0, 0.0], [1.0, 0.5]],
            "weights": [0.4, 0.6],
            "seed": 2,
        },
        "model": {"K": 2},
    }
    config["methods"]["nuts"] = {
        "algorithm": "nuts",
        "chains": 2,
        "parallel_chains": 2,
        "iter_warmup": 300,
        # CmdStan writes draws in buffered blocks, so the 50 rows the kill waits for appear at
        # about a fortieth of the sampling: 2000 leave it a second or two to run (at 300 a fast
        # machine finished between the check and the kill)
        "iter_sampling": 2000,
    }
    return config


FITS = [("tiny", "map"), ("mid", "map"), ("mid", "nuts")]


def fit_path(dataset: str, method: str) -> str:
    """The folder of a K = 2 fit (every dataset here has K = 2)."""
    return workflow_fit_dir(dataset, 2, method)


TARGETS = [f"{fit_path(d, m)}/summary.csv" for d, m in FITS]


@pytest.fixture(scope="module")
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled Stan program, built once and cached across sessions."""
    return compiled_model(request.config.cache, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def reference(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of every target fit."""
    workdir = make_workflow(tmp_path_factory.mktemp("reference"), _config(), model_dir)
    result = snakemake(workdir, *TARGETS)
    assert result.returncode == 0, output(result)
    return workdir


def _scratch_csv_rows(fit_dir: Path) -> int:
    """Draw rows CmdStan has written so far into the fit's scratch directory."""
    rows = 0
    for csv in fit_dir.glob(".cmdstan.*.tmp/*.csv"):
        with csv.open() as fh:
            rows += sum(1 for line in fh if line[:1] not in ("#", "l", ""))
    return rows


def _nuts_job_processes(snakemake_pid: int) -> list[psutil.Process]:
    """The processes of the running NUTS job: the fit script and CmdStan under it."""
    job = []
    for child in psutil.Process(snakemake_pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "results/model/gmm" in cmdline or ("fit.py" in cmdline and ".snakemake" in cmdline):
            job.append(child)
    return job


def _kill_during_nuts(workdir: Path, *, everything: bool) -> dict[str, Any]:
    """Start the run and, while NUTS samples `mid`, SIGKILL either the NUTS job (its script
    and CmdStan) or every process of the run, Snakemake included."""
    fit_dir = workdir / fit_path("mid", "nuts")
    log = workdir / f"killed_{'all' if everything else 'job'}.out"
    with log.open("w") as out:
        proc = subprocess.Popen(
            snakemake_command(*TARGETS),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        while _scratch_csv_rows(fit_dir) < 50:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "NUTS never started"
            time.sleep(0.2)
        scratch = sorted(p.name for p in fit_dir.glob(".cmdstan.*.tmp/*"))
        if everything:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            job = _nuts_job_processes(proc.pid)
            assert len(job) >= 2, [p.cmdline() for p in job]
            for process in job:
                process.kill()
        returncode = proc.wait(timeout=240)
    for _ in range(50):  # every process of the run is gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("processes of the killed run survived")
    return {
        "scratch": scratch,
        "returncode": returncode,
        "log": log.read_text(),
        "after_kill": sorted(p.name for p in fit_dir.iterdir()),
        "temporaries": [p.name for p in stray_temporaries(workdir / "results")],
    }


@pytest.fixture(scope="module")
def interrupted(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """kill -9 the NUTS job, rerun; kill -9 all of Snakemake during NUTS, fake outputs that
    look finished, unlock, rerun."""
    workdir = make_workflow(tmp_path_factory.mktemp("interrupted"), _config(), model_dir)
    fit_dir = workdir / fit_path("mid", "nuts")
    state: dict[str, Any] = {"workdir": workdir}
    state["job"] = _kill_during_nuts(workdir, everything=False)
    state["job_rerun"] = snakemake(workdir, *TARGETS)
    for name in FIT_FILES:  # start over for the second interruption
        (fit_dir / name).unlink()
    state["all"] = _kill_during_nuts(workdir, everything=True)
    # As if the killed job had got as far as writing every output: still not finished.
    for name in FIT_FILES:
        (fit_dir / name).write_text("half-written")
    (fit_dir / "cmdstan").mkdir(exist_ok=True)
    state["locked"] = snakemake(workdir, *TARGETS)
    state["unlock"] = snakemake(workdir, "--unlock")
    state["dry_run"] = snakemake(workdir, "-n", *TARGETS)
    state["rerun"] = snakemake(workdir, *TARGETS)
    return state


@pytest.mark.cmdstan
@pytest.mark.workflow
def test_killed_nuts_job_fails_cleanly_and_rerun_completes(
    reference: Path, interrupted: dict[str, Any]
) -> None:
    killed = interrupted["job"]
    assert "data.json" in killed["scratch"]  # CmdStan's input and output: scratch only
    assert any(name.endswith(".csv") for name in killed["scratch"])
    assert killed["returncode"] != 0
    assert "Error in rule sample" in killed["log"]
    assert not set(FIT_FILES) & set(killed["after_kill"]), "a failed job leaves no outputs"
    # SIGKILL cannot be caught: the scratch directory stays until the next attempt removes it
    assert [t.startswith(".cmdstan.") for t in killed["temporaries"]] == [True]
    rerun = interrupted["job_rerun"]
    assert rerun.returncode == 0, output(rerun)
    assert scheduled_outputs(rerun) >= {f"{fit_path('mid', 'nuts')}/posterior.nc"}


@pytest.mark.cmdstan
@pytest.mark.workflow
def test_killed_snakemake_leaves_no_finished_looking_output(interrupted: dict[str, Any]) -> None:
    killed = interrupted["all"]
    assert killed["returncode"] == -signal.SIGKILL
    assert not set(FIT_FILES) & set(killed["after_kill"]), killed["after_kill"]
    assert killed["temporaries"], "the killed NUTS job left its scratch directory"
    # Snakemake's lock outlives a kill -9 of Snakemake itself: `snakemake --unlock` once.
    assert "--unlock" in output(interrupted["locked"])
    assert interrupted["unlock"].returncode == 0
    dry_run = interrupted["dry_run"]
    assert f"{fit_path('mid', 'nuts')}/posterior.nc" in scheduled_outputs(dry_run), output(dry_run)
    assert re.search(r"incomplete|Forced execution", output(dry_run)), output(dry_run)
    assert interrupted["rerun"].returncode == 0, output(interrupted["rerun"])


@pytest.mark.cmdstan
@pytest.mark.workflow
def test_rerun_after_kill_equals_uninterrupted_run(
    reference: Path, interrupted: dict[str, Any]
) -> None:
    assert interrupted["rerun"].returncode == 0, output(interrupted["rerun"])
    _assert_same_results(reference, interrupted["workdir"])
    assert stray_temporaries(interrupted["workdir"] / "results") == []


def _draw_rows(csv: Path) -> list[str]:
    """The draws of a CmdStan CSV without its comments (which hold paths and timings)."""
    return [line for line in csv.read_text().splitlines() if not line.startswith("#")]


def _netcdf_groups(path: Path) -> set[str]:
    """The groups of an InferenceData netCDF file (fails on a file that does not open)."""
    import arviz as az

    return set(az.from_netcdf(path).groups())


def _assert_same_results(a: Path, b: Path) -> None:
    """Identical draws, tables and diagnostics in two workflow directories."""
    for dataset, method in FITS:
        fa, fb = (w / fit_path(dataset, method) for w in (a, b))
        groups = [_netcdf_groups(f / "posterior.nc") for f in (fa, fb)]
        assert groups[0] == groups[1], (dataset, method, groups)
        for group in {"posterior", "sample_stats"} & groups[0]:
            da, db = (xr.open_dataset(f / "posterior.nc", group=group) for f in (fa, fb))
            with da, db:
                xr.testing.assert_equal(da, db)  # values and coords, not creation times
        for name in ("summary.csv", "diagnostics.json"):
            assert (fa / name).read_bytes() == (fb / name).read_bytes(), (dataset, method, name)
        info_a, info_b = (json.loads((f / "fit.json").read_text()) for f in (fa, fb))
        for info in (info_a, info_b):
            info.pop("wall_time_s")
        assert info_a == info_b
        csvs = sorted(p.name for p in (fa / "cmdstan").glob("*.csv"))
        assert csvs == sorted(p.name for p in (fb / "cmdstan").glob("*.csv"))
        assert csvs, f"no CmdStan CSV in {fa / 'cmdstan'}"
        for name in csvs:
            assert _draw_rows(fa / "cmdstan" / name) == _draw_rows(fb / "cmdstan" / name)


@pytest.mark.cmdstan
@pytest.mark.workflow
def test_chains_get_distinct_seeds_derived_from_the_fit_seed(reference: Path) -> None:
    fit_dir = reference / fit_path("mid", "nuts")
    seed = json.loads((fit_dir / "fit.json").read_text())["seed"]
    assert seed == derived_seed(5, "mid", "nuts")
    draws = {}
    # One CmdStan process runs both chains from the fit's seed; chain c uses the RNG stream
    # of chain id c (CmdStan advances the stream by the chain id), so chains differ.
    for chain, csv in enumerate(sorted((fit_dir / "cmdstan").glob("*.csv")), start=1):
        header = csv.read_text()
        assert re.search(rf"^#\s+seed = {seed}$", header, re.MULTILINE), csv
        draws[chain] = pd.read_csv(csv, comment="#")["mu.1.1"].to_numpy()
    assert sorted(draws) == [1, 2]
    assert not np.array_equal(draws[1], draws[2])


def test_fit_seeds_are_stable_and_distinct() -> None:
    names = [(d, m) for d in ("a", "b", "seed_small") for m in ("nuts", "map", "advi")]
    seeds = [derived_seed(20261125, d, m) for d, m in names]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [derived_seed(20261125, d, m) for d, m in names]
    assert all(0 <= s < 2**31 for s in seeds)
    assert derived_seed(1, "a", "b") != derived_seed(2, "a", "b")
    assert derived_seed(1, "ab", "c") != derived_seed(1, "a", "bc")


@contextlib.contextmanager
def _edited_config(workdir: Path, key: str, value: Any) -> Iterator[None]:
    """Temporarily set a dotted key of the workflow's config."""
    path = workdir / "config" / "config.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


@pytest.mark.cmdstan
@pytest.mark.workflow
def test_rerun_does_nothing_then_only_what_changed(reference: Path) -> None:
    nothing = snakemake(reference, "-n", *TARGETS)
    assert nothing.returncode == 0
    assert "Nothing to be done" in output(nothing), output(nothing)
    assert scheduled_rules(nothing) == {}

    with _edited_config(reference, "methods.map.iter", 1500):
        result = snakemake(reference, "-n", *TARGETS)
    assert scheduled_rules(result) == {"optimize": 2}, output(result)
    assert {p.split("/")[4] for p in scheduled_outputs(result)} == {"map"}  # .../K2/map/...

    with _edited_config(reference, "datasets.tiny.simulate.seed", 99):
        result = snakemake(reference, "-n", *TARGETS)
    assert scheduled_rules(result) == {"simulate": 1, "optimize": 1}, output(result)
    changed = scheduled_outputs(result)
    assert all("/tiny" in p for p in changed), changed

    with _edited_config(reference, "datasets.mid.model.mu_sd", 2.0):
        result = snakemake(reference, "-n", *TARGETS)
    changed = scheduled_outputs(result)
    assert {
        f"{fit_path('mid', 'map')}/posterior.nc",
        f"{fit_path('mid', 'nuts')}/posterior.nc",
    } <= changed
    assert not any("/tiny" in p for p in changed), changed

    again = snakemake(reference, "-n", *TARGETS)  # the restored config is up to date again
    assert scheduled_rules(again) == {}, output(again)


FAILING_METHODS: dict[str, dict[str, Any]] = {
    "advi_short": {"algorithm": "advi", "iter": 3, "eval_elbo": 1},
    "advi_strict": {"algorithm": "advi", "iter": 3, "eval_elbo": 1, "strict": True},
    "map_short": {"algorithm": "optimize", "iter": 1},
    "map_strict": {"algorithm": "optimize", "iter": 1, "strict": True},
}


@pytest.fixture(scope="module")
def failures(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Fits that do not converge, recorded (default) or failing the rule (strict)."""
    config = small_config(methods=FAILING_METHODS)
    workdir = make_workflow(tmp_path_factory.mktemp("failures"), config, model_dir)
    targets = [f"{fit_path('tiny', m)}/summary.csv" for m in FAILING_METHODS]
    result = snakemake(workdir, "--keep-going", *targets)
    assert result.returncode != 0, output(result)
    return workdir, output(result)


@pytest.mark.cmdstan
@pytest.mark.workflow
@pytest.mark.parametrize("method", ["advi_short", "map_short"])
def test_non_convergence_is_recorded(failures: tuple[Path, str], method: str) -> None:
    workdir, _ = failures
    fit_dir = workdir / fit_path("tiny", method)
    report = json.loads((fit_dir / "diagnostics.json").read_text())
    assert report["passed"] is False
    assert any(f.startswith("converged = 0") for f in report["failures"]), report
    log = (workdir / "logs" / "fits" / "tiny" / "K2" / f"{method}.log").read_text()
    assert "diagnostics failed: converged = 0" in log
    assert all((fit_dir / name).is_file() for name in FIT_FILES)


@pytest.mark.cmdstan
@pytest.mark.workflow
@pytest.mark.parametrize(
    ("method", "algorithm"), [("advi_strict", "advi"), ("map_strict", "optimize")]
)
def test_strict_non_convergence_fails_the_rule(
    failures: tuple[Path, str], method: str, algorithm: str
) -> None:
    workdir, text = failures
    message = f"FitError: {algorithm} diagnostics failed: converged = 0"
    assert message in (workdir / "logs" / "fits" / "tiny" / "K2" / f"{method}.log").read_text()
    assert message in text  # shown by snakemake itself
    fit_dir = workdir / fit_path("tiny", method)
    assert not fit_dir.exists() or not any(fit_dir.iterdir()), list(fit_dir.iterdir())
    assert stray_temporaries(workdir / "results") == []


@pytest.mark.cmdstan
def test_cmdstan_error_raises_and_writes_nothing(model_dir: Path, tmp_path: Path) -> None:
    from gmmpipe.data import simulate_mixture
    from gmmpipe.errors import FitError
    from gmmpipe.fit import fit_dataset

    exe = tmp_path / "gmm"
    shutil.copy2(model_dir / "gmm", exe)
    out = tmp_path / "fit"
    outputs = {name.split(".")[0]: out / name for name in FIT_FILES}
    outputs["cmdstan"] = out / "cmdstan"
    spec = {"model": {"K": 2, "mu_sd": -1.0, "alpha": 0.1}}  # bypasses config validation
    method = {"algorithm": "nuts", "chains": 1, "parallel_chains": 1, "threads_per_chain": 1}
    method |= {"iter_warmup": 10, "iter_sampling": 10, "adapt_delta": 0.8, "max_treedepth": 5}
    method |= {"metric": "diag_e"}
    with pytest.raises(FitError, match=r"(?s)CmdStan nuts failed: .*mu_sd(\[1\])? is -1"):
        fit_dataset(
            exe,
            simulate_mixture(20, [[0.0], [1.0]], [0.5, 0.5]),
            dataset_spec=spec,
            method_spec=method,
            seed=1,
            thresholds={},
            outputs=outputs,
        )
    assert not out.exists() or list(out.iterdir()) == []


def test_no_rule_or_library_code_uses_a_shell() -> None:
    rule_files = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
    for path in rule_files:
        text = path.read_text()
        assert not re.search(r"^\s*(shell|run)\s*:", text, re.MULTILINE), path
    python_files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))
    for path in python_files:
        text = path.read_text()
        for pattern in (r"shell\s*=\s*True", r"os\.system\(", r"os\.popen\(", r"\bshell\("):
            assert not re.search(pattern, text), f"{path}: {pattern}"


@pytest.mark.workflow
def test_config_values_never_reach_a_shell(tmp_path: Path) -> None:
    workdir = tmp_path / "wf"
    (workdir / "data").mkdir(parents=True)
    name = "x; touch PWNED_1 $(touch PWNED_2) `touch PWNED_3`.csv"
    (workdir / "data" / name).write_text("x1,x2\n1,2\n3,4\n")
    config = small_config()
    config["datasets"] = {"own": {"file": {"path": f"data/{name}"}, "model": {"K": 2}}}
    make_workflow(workdir, config)
    result = snakemake(workdir, "--cores", "1", "results/data/own.csv")
    assert result.returncode == 0, output(result)
    assert not list(workdir.rglob("PWNED*"))
    assert json.loads((workdir / "results" / "data" / "own.json").read_text())["path"] == (
        f"data/{name}"
    )
