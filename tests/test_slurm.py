"""Cluster execution: the workflow through `profiles/slurm` on a real one-node SLURM cluster.

The cluster (tests/slurm_cluster.py) runs on this host only while this module's tests run. A
small configuration goes through the SLURM executor plugin and must give exactly the results of
a local run; so must a small SBC, whose batches go out packed into fewer SLURM jobs (job
groups); a job that fails once is resubmitted per the profile's `retries`. The profile checks
at the top need neither SLURM nor CmdStan.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import slurm_cluster
import xarray as xr
import yaml
from slurm_cluster import Cluster, one_node
from workflow_helpers import ROOT, make_workflow, output, scheduled_rules

from gmmpipe.layout import fit_dir

SLURM_PROFILE = ROOT / "profiles" / "slurm"
CONFIG: dict[str, Any] = {
    "seed": 20261125,
    "datasets": {
        "seed_small": {"simulate": {"generator": "seed_notebook", "n": 100}, "model": {"K": 2}}
    },
    "methods": {
        "optimize": {"algorithm": "optimize"},
        "nuts": {
            "algorithm": "nuts",
            "chains": 2,
            "parallel_chains": 2,
            "iter_warmup": 200,
            "iter_sampling": 200,
        },
    },
    "sbc": {"methods": ["nuts"]},  # SBC's default methods must exist even when SBC is not built
}
# A small SBC: 20 replications in 4 batches of 5, NUTS with 2 chains (2 CPUs per batch).
SBC = {
    "methods": ["nuts"],
    "replications": 20,
    "batch_size": 5,
    "n": 20,
    "d": 1,
    "draws": 19,
    "bins": 5,
    "seed": 3,
    "method_settings": {"nuts": {"iter_warmup": 150, "iter_sampling": 100}},
}
SBC_BATCHES = 4
FIT_FILES = ("posterior.nc", "summary.csv", "diagnostics.json", "fit.json")
TARGETS = [f"{fit_dir('seed_small', 2, m)}/{name}" for m in CONFIG["methods"] for name in FIT_FILES]
RULE_JOBS = {"simulate", "compile", "optimize", "sample"}
# Settings for a cluster without accounting (see tests/slurm_cluster.py): job states from
# squeue, an early first status check, no account guessing, SLURM logs kept for the checks.
TEST_CLUSTER_SETTINGS = (
    "--slurm-status-command=squeue",
    "--slurm-init-seconds-before-status-checks=2",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
)
# Snakemake's job id: a number, or a UUID for a group job.
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


def _profile(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


# --- The profiles (no cluster needed) ---------------------------------------------------------


def test_slurm_profile_uses_the_executor_plugin_with_retries_and_defaults():
    profile = _profile("slurm")
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1
    assert profile["jobs"] >= 1
    assert profile["latency-wait"] >= 30
    assert {"runtime", "mem_mb", "cpus_per_task"} <= set(profile["default-resources"])
    assert profile["default-resources"]["cpus_per_task"] == "threads"


def test_slurm_profile_groups_sbc_batches(tmp_path):
    """The SBC's batches form job group `sbc`; the profile packs them two to a SLURM job, and
    `--cores` (one node's) stacks those that do not fit side by side. Dry run, no cluster."""
    assert _profile("slurm")["group-components"] == ["sbc=2"]
    workdir = make_workflow(tmp_path, {**CONFIG, "sbc": SBC})
    result = _snakemake(
        workdir, "-n", "sbc", "--profile", str(SLURM_PROFILE), "--slurm-no-account", timeout=120
    )
    text = output(result)
    assert result.returncode == 0, text
    # The model is compiled once, by one job that every batch depends on.
    assert scheduled_rules(result) == {
        "compile": 1,
        "sbc_batch": SBC_BATCHES,
        "sbc_method": 1,
        "sbc": 1,
    }
    assert text.count("Group job sbc") == SBC_BATCHES // 2


def test_workflow_profile_does_not_override_the_cluster_profile():
    """profiles/default is loaded for `--profile profiles/slurm` runs too and wins per key."""
    overriding = {"cores", "jobs", "executor", "retries", "default-resources", "latency-wait"}
    assert not overriding & set(_profile("default"))


# --- A real cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    slurm_cluster.ensure_installed()
    with one_node() as started:
        yield started


def _snakemake(workdir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``snakemake *args`` in `workdir` exactly as given (no implicit --cores)."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _slurm_run(workdir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`snakemake --profile profiles/slurm` plus the test cluster's settings."""
    return _snakemake(
        workdir, "--profile", str(SLURM_PROFILE), *TEST_CLUSTER_SETTINGS, *args, timeout=timeout
    )


def _submissions(text: str) -> list[tuple[str, int, str]]:
    """(Snakemake job id, SLURM job id, SLURM log) of every submission, in order."""
    return [(j, int(s), log) for j, s, log in SUBMITTED.findall(text)]


@pytest.fixture(scope="module")
def slurm_run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = make_workflow(tmp_path_factory.mktemp("slurm-run"), CONFIG)
    start = time.monotonic()
    # Generous: the compile alone takes 1-3 minutes, more when the host is busy.
    result = _slurm_run(workdir, *TARGETS, timeout=900)
    seconds = time.monotonic() - start
    text = output(result)
    assert result.returncode == 0, f"SLURM run failed:\n{text}\n{cluster}"
    return {"workdir": workdir, "text": text, "jobs": cluster.jobs(), "seconds": seconds}


@pytest.mark.slurm
@pytest.mark.cmdstan
@pytest.mark.workflow
def test_every_job_ran_as_a_slurm_job(slurm_run):
    text, jobs = slurm_run["text"], {job.id: job for job in slurm_run["jobs"]}
    submissions = _submissions(text)
    assert submissions, f"no SLURM submissions in the output:\n{text}"
    rules = {}
    for _, slurm_id, log in submissions:
        assert slurm_id in jobs, f"SLURM does not know job {slurm_id}: {list(jobs.values())}"
        job = jobs[slurm_id]
        assert job.state == "COMPLETED", job
        rule = re.match(r"rule_([a-z_]+?)(?:_wildcards_|$)", job.comment).group(1)
        rules.setdefault(rule, []).append(job)
        log_text = Path(log).read_text()  # the job step's own Snakemake, run by SLURM
        assert f"--allowed-rules {rule} " in log_text and "1 of 1 steps (100%) done" in log_text
    # Each rule's job went through SLURM exactly once: the model is compiled once.
    assert {rule: len(js) for rule, js in rules.items()} == dict.fromkeys(RULE_JOBS, 1)
    # Resources from the rules and the profile reached sbatch: NUTS gets one CPU per parallel
    # chain; the compile job and the fits ask for their own memory.
    assert rules["sample"][0].cpus == 2
    assert rules["optimize"][0].cpus == 1
    assert rules["compile"][0].memory == "4000M"
    assert rules["optimize"][0].memory == "2000M"
    # The model was compiled (once) before any fit was submitted.
    order = [jobs[s].comment.split("_wildcards_")[0] for _, s, _ in submissions]
    assert order.index("rule_compile") < min(
        order.index("rule_optimize"), order.index("rule_sample")
    )
    print(f"SLURM run: {len(submissions)} jobs in {slurm_run['seconds']:.0f} s")


@pytest.mark.slurm
@pytest.mark.cmdstan
@pytest.mark.workflow
def test_slurm_results_equal_a_local_run(slurm_run, tmp_path):
    """The same config run locally (reusing the cluster-compiled model) gives the same fits."""
    slurm_dir = slurm_run["workdir"]
    local_dir = make_workflow(tmp_path / "local", CONFIG)
    model = local_dir / "results" / "model"
    model.mkdir(parents=True)
    for name in ("gmm", "cmdstan.json"):
        shutil.copy2(slurm_dir / "results" / "model" / name, model / name)
    # mtime only: the copied model has no Snakemake metadata in the new directory.
    result = _snakemake(
        local_dir, *TARGETS, "--cores", "2", "--rerun-triggers", "mtime", timeout=600
    )
    assert result.returncode == 0, output(result)
    assert "rule compile:" not in output(result)
    for method in CONFIG["methods"]:
        slurm_fit = slurm_dir / fit_dir("seed_small", 2, method)
        local_fit = local_dir / fit_dir("seed_small", 2, method)
        # Every group's values and coordinates (attributes hold creation times).
        with (
            xr.open_datatree(slurm_fit / "posterior.nc") as got,
            xr.open_datatree(local_fit / "posterior.nc") as expected,
        ):
            xr.testing.assert_equal(got, expected)
        pd.testing.assert_frame_equal(
            pd.read_csv(slurm_fit / "summary.csv"), pd.read_csv(local_fit / "summary.csv")
        )
        for name in ("diagnostics.json", "fit.json"):
            got, expected = (json.loads((d / name).read_text()) for d in (slurm_fit, local_fit))
            for record in (got, expected):
                record.pop("wall_time_s", None)  # timings differ between runs
            assert got == expected, name


@pytest.fixture(scope="module")
def slurm_sbc(gmm_exe: Path, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The small SBC through the SLURM profile, with the tests' compiled model."""
    workdir = make_workflow(
        tmp_path_factory.mktemp("slurm-sbc"), {**CONFIG, "sbc": SBC}, model_dir=gmm_exe.parent
    )
    before = {job.id for job in cluster.jobs()}
    start = time.monotonic()
    # --cores 2: one node's cores; a group's two 2-CPU batches then run one after the other.
    result = _slurm_run(workdir, "sbc", "--cores", "2", "--rerun-triggers", "mtime", timeout=900)
    seconds = time.monotonic() - start
    text = output(result)
    assert result.returncode == 0, f"SLURM SBC run failed:\n{text}\n{cluster}"
    jobs = [job for job in cluster.jobs() if job.id not in before]
    return {"workdir": workdir, "text": text, "jobs": jobs, "seconds": seconds}


@pytest.mark.slurm
@pytest.mark.cmdstan
@pytest.mark.workflow
def test_sbc_batches_go_out_grouped_and_rank_as_a_local_run(slurm_sbc, tmp_path):
    """20 replications in 4 batches leave as 2 SLURM jobs; the ranks equal those of a local
    run that does all 20 replications in one batch."""
    text, jobs = slurm_sbc["text"], slurm_sbc["jobs"]
    assert "rule compile:" not in text  # the compiled model is reused
    submissions = _submissions(text)
    # (submissions are reported as they return, not necessarily in SLURM's order)
    assert sorted(s for _, s, _ in submissions) == [job.id for job in jobs]
    # Every submission is a group job of two batches; gather and summary run locally.
    assert len(jobs) == SBC_BATCHES // 2 < SBC_BATCHES
    for job in jobs:
        assert job.state == "COMPLETED", job
        assert "sbc_batch" in job.comment and job.cpus == 2, job
    # Each SLURM job's Snakemake ran the group's two batches.
    for _, _, log in submissions:
        log_text = Path(log).read_text()
        assert "2 of 2 steps (100%) done" in log_text and "sbc_batch" in log_text, log_text
    slurm_ranks = pd.read_csv(slurm_sbc["workdir"] / "results" / "sbc" / "nuts" / "ranks.csv")
    # mu[1,1], mu[2,1], theta[1], theta[2], sigma[1,1], sigma[2,1] and log_lik per replication
    assert len(slurm_ranks) == SBC["replications"] * 7
    assert slurm_ranks["rank"].notna().all()

    local_dir = make_workflow(
        tmp_path / "local",
        {**CONFIG, "sbc": {**SBC, "batch_size": SBC["replications"]}},
        model_dir=slurm_sbc["workdir"] / "results" / "model",
    )
    result = _snakemake(local_dir, "sbc", "--cores", "2", "--rerun-triggers", "mtime", timeout=600)
    assert result.returncode == 0, output(result)
    local_ranks = pd.read_csv(local_dir / "results" / "sbc" / "nuts" / "ranks.csv")
    columns = ["method", "replication", "parameter", "rank"]
    pd.testing.assert_frame_equal(slurm_ranks[columns], local_ranks[columns])
    print(f"SLURM SBC: {len(jobs)} jobs for {SBC_BATCHES} batches in {slurm_sbc['seconds']:.0f} s")


FLAKY_SNAKEFILE = """\
rule all:
    input:
        "done.txt",


rule flaky:
    output:
        "done.txt",
    log:
        "flaky.log",
    resources:
        mem_mb=lambda wildcards, attempt: 100 * attempt,
    shell:
        "if [ {resources.mem_mb} -lt 200 ]; then "
        "echo 'simulated failure of the first attempt' >&2; exit 3; fi; "
        "echo $SLURM_JOB_ID > {output}"
"""


@pytest.mark.slurm
@pytest.mark.workflow
def test_a_failed_cluster_job_is_reported_and_retried(cluster, tmp_path):
    """A job that fails on its first attempt is reported with its SLURM id and log, then
    resubmitted with the resources of attempt 2 and succeeds."""
    (tmp_path / "Snakefile").write_text(FLAKY_SNAKEFILE)
    before = {job.id for job in cluster.jobs()}
    result = _slurm_run(tmp_path, timeout=300)
    text = output(result)
    assert result.returncode == 0, f"{text}\n{cluster}"
    jobs = [job for job in cluster.jobs() if job.id not in before]
    assert [(job.state, job.memory) for job in jobs] == [("FAILED", "100M"), ("COMPLETED", "200M")]
    failed, retried = jobs
    submissions = _submissions(text)
    assert [s for _, s, _ in submissions] == [failed.id, retried.id]
    # Reported: the rule, the SLURM job id and state, and where to look.
    assert "Error in rule flaky:" in text
    assert f"SLURM-job '{failed.id}' failed, SLURM status is: 'FAILED'" in text
    failed_log = submissions[0][2]
    assert failed_log in text and "simulated failure" in Path(failed_log).read_text()
    assert "Trying to restart job" in text
    assert (tmp_path / "done.txt").read_text().strip() == str(retried.id)
