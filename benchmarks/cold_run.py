"""Cold run of the default config on a fresh clone and a stock CmdStan (on demand).

    python benchmarks/cold_run.py [--cmdstan DIR] [--copy-cmdstan] [--cores all]
                                  [--out benchmarks/results]

Copies the repository's tracked files into a scratch directory (a fresh clone: no results/,
no .snakemake/), then runs, with ``SNAKEMAKE_OUTPUT_CACHE`` pointing at an empty scratch cache:

1. ``cold``: ``snakemake --cores all --cache`` of the default config (the compile is stored in
   the cache on the way);
2. ``cached``: ``results/`` deleted, the same command again: the executable comes from the
   between-workflow cache, nothing is compiled.

With ``--copy-cmdstan`` the CmdStan directory is first copied (``cp -a`` keeps the timestamps
make compares) and its ``main_threads.o`` and threaded precompiled header are deleted: the
state right after ``make build``, as ``install_cmdstan`` and conda-forge's cmdstan leave it.
The script checks that no object of CmdStan itself was rebuilt. Per-job wall times come from
Snakemake's log (1 s resolution); ``cpu_s`` is the CPU time of the whole run (all jobs,
compilers included), which depends much less than the wall times on what else runs on the
machine (load averages are recorded).
Writes <out>/cold_run.csv (one row per run) and <out>/cold_run_jobs.csv (one row per job,
with the CPU time of the jobs that have a ``benchmark:`` file).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from peers import ROOT, load_avg, to_markdown

FIT_RULES = ("optimize", "sample", "variational", "pathfinder")
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def fresh_clone(dest: Path) -> Path:
    """The repository's tracked files (as in the work tree) copied into `dest`."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def cmdstan_objects(path: Path) -> dict[str, float]:
    """Modification times of CmdStan's own objects and precompiled headers."""
    return {
        str(p.relative_to(path)): p.stat().st_mtime
        for pattern in ("*.o", "*.gch", "*.a", "*.so*")
        for p in path.rglob(pattern)
        if p.is_file()
    }


def job_times(log: Path) -> pd.DataFrame:
    """Rule, start and wall time of every job in a Snakemake log."""
    stamp, pending, started, rows = None, None, {}, []
    for line in log.read_text().splitlines():
        if match := _STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := _START.match(line):
            pending = match.group(1)
        elif (match := _JOBID.match(line)) and pending:
            started[match.group(1)] = (pending, stamp)
            pending = None
        elif match := _DONE.match(line):
            rule, start = started.pop(match.group(1), (match.group(2), stamp))
            rows.append({"rule": rule, "start": start, "wall_s": (stamp - start).total_seconds()})
    return pd.DataFrame(rows, columns=["rule", "start", "wall_s"])


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and their children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def benchmark_cpu(folder: Path) -> pd.DataFrame:
    """Wall and CPU seconds of every job with a ``benchmark:`` file (fits, figures, tables)."""
    rows = [
        {"job": str(path.relative_to(folder).with_suffix("")), "wall_s": row["s"],
         "cpu_s": row["cpu_time"]}
        for path in sorted(folder.rglob("*.tsv"))
        for _, row in pd.read_csv(path, sep="\t").iterrows()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["job", "wall_s", "cpu_s"])


def run(name: str, work: Path, env: dict[str, str], cores: str) -> tuple[dict[str, Any], Any]:
    """One ``snakemake --cache`` run in `work`; totals per kind of job, and the job table."""
    before = load_avg()
    cpu_before = _children_cpu()
    start = time.perf_counter()
    command = [sys.executable, "-m", "snakemake", "--cores", cores, "--cache"]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    cpu = _children_cpu() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"{name} run failed:\n{done.stderr[-4000:]}")
    log = max((work / ".snakemake" / "log").glob("*.snakemake.log"), key=os.path.getmtime)
    jobs = job_times(log).assign(run=name)
    job_cpu = benchmark_cpu(work / "results" / "benchmarks").assign(run=name)
    fits = jobs["rule"].isin(FIT_RULES)
    other = ~fits & ~jobs["rule"].isin(("compile", "all"))
    row = {
        "run": name,
        "total_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "compile_s": jobs.loc[jobs["rule"] == "compile", "wall_s"].sum(),
        "fit_jobs_s": jobs.loc[fits, "wall_s"].sum(),
        "non_fit_jobs_s": jobs.loc[other, "wall_s"].sum(),
        "figures_cpu_s": job_cpu.loc[job_cpu["job"].str.startswith("figures/"), "cpu_s"].sum(),
        "tables_cpu_s": job_cpu.loc[job_cpu["job"].str.startswith("tables/"), "cpu_s"].sum(),
        "jobs": int((jobs["rule"] != "all").sum()),
        "cores": cores,
        "load_before": before,
        "load_after": load_avg(),
    }
    return row, pd.concat([jobs, job_cpu])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cmdstan", type=Path, help="CmdStan directory (default: $CMDSTAN)")
    parser.add_argument(
        "--copy-cmdstan",
        action="store_true",
        help="run on a cp -a copy without main_threads.o (the state after `make build`)",
    )
    parser.add_argument("--cores", default="all")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    from gmmpipe.cmdstan import find_cmdstan

    cmdstan = (args.cmdstan or find_cmdstan()).resolve()
    with tempfile.TemporaryDirectory(prefix="cold-run-") as scratch:
        scratch_dir = Path(scratch)
        if args.copy_cmdstan:
            copy = scratch_dir / "cmdstan"
            subprocess.run(["cp", "-a", str(cmdstan), str(copy)], check=True)
            (copy / "src" / "cmdstan" / "main_threads.o").unlink(missing_ok=True)
            for header in (copy / "stan" / "src" / "stan" / "model").rglob("*threads*.gch"):
                header.unlink()  # a threaded build's precompiled header: not from make build
            cmdstan = copy
        objects = cmdstan_objects(cmdstan)
        work = fresh_clone(scratch_dir / "clone")
        (scratch_dir / "cache").mkdir()
        env = dict(
            os.environ,
            CMDSTAN=str(cmdstan),
            SNAKEMAKE_OUTPUT_CACHE=str(scratch_dir / "cache"),
            PYTHONPATH=str(work / "src"),
        )
        rows, jobs = [], []
        for name in ("cold", "cached"):
            if name == "cached":
                shutil.rmtree(work / "results")
            row, table = run(name, work, env, args.cores)
            after = cmdstan_objects(cmdstan)
            row["cmdstan_rebuilt"] = " ".join(
                sorted(p for p, t in after.items() if objects.get(p) != t)
            )
            row["cmdstan"] = str(args.cmdstan or cmdstan)
            rows.append(row)
            jobs.append(table)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = pd.DataFrame(rows)
    summary.to_csv(args.out / "cold_run.csv", index=False)
    pd.concat(jobs).to_csv(args.out / "cold_run_jobs.csv", index=False)
    per_rule = pd.concat(jobs).groupby(["run", "rule"])["wall_s"].agg(["count", "sum", "max"])
    print(to_markdown(pd.concat(jobs).dropna(subset=["job"])[["run", "job", "wall_s", "cpu_s"]]))
    print(to_markdown(summary.drop(columns=["cmdstan"])))
    print(to_markdown(per_rule.reset_index()))


if __name__ == "__main__":
    main()
