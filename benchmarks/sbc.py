"""Cost of simulation-based calibration: `snakemake sbc` timed, per replication (on demand).

    python benchmarks/sbc.py --replications 1000 [--batch-size 10] [--cores all]
                             [--model results/model] [--workdir benchmarks/results/sbc_run]
                             [--slurm [--group-components 2]] [--summarize-only]

Runs the workflow's `sbc` target with config/config.yaml and `sbc.replications` (and
`sbc.batch_size`) replaced, in `--workdir` (the repository's `stan/` linked in; a compiled
`--model` directory is installed so the compile is not timed), locally with `--cores` or, with
`--slurm`, through profiles/slurm on a throw-away one-node SLURM cluster on this host (root,
Debian; tests/slurm_cluster.py). The load average is sampled every 10 s during the run. Writes
<out>/sbc.csv (<out>/sbc_slurm.csv with --slurm; one row per method: replications done, failed
fits, batches, the run's wall time, the summed batch wall and CPU times (Snakemake benchmark
files: sampled, so short CmdStan runs are partly missed), wall and CPU seconds per replication,
the fits' wall and CPU seconds per replication from the ranks (CmdStan included), the whole
run's CPU seconds (every process, all methods), the uniformity verdict of the replications
done, the load averages) and the same as Markdown. `--summarize-only` summarizes a run
directory as it is, finished or not.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gmmpipe.sbc import method_verdicts, summarize
from gmmpipe.summarize import to_markdown

ROOT = Path(__file__).resolve().parents[1]
# Settings of the throw-away test cluster (no accounting; see tests/test_slurm.py).
TEST_CLUSTER_SETTINGS = (
    "--slurm-status-command=squeue",
    "--slurm-init-seconds-before-status-checks=2",
    "--slurm-no-account",
)


class LoadSampler:
    """Sample the 1-minute load average every `every` seconds in a background thread."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def prepare(workdir: Path, replications: int, batch_size: int, model: Path | None) -> Path:
    """A run directory with the repository's stan/ and config, the SBC size, and the model."""
    workdir.mkdir(parents=True, exist_ok=True)
    stan = workdir / "stan"
    if not stan.exists():
        stan.symlink_to(ROOT / "stan")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    sbc = config.setdefault("sbc", {})
    sbc.update(replications=replications, batch_size=batch_size)
    path = workdir / "sbc_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    if model is not None:
        target = workdir / "results" / "model"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("gmm", "cmdstan.json"):
            shutil.copy2(model / name, target / name)
            os.utime(target / name)  # newer than stan/, so Snakemake keeps it
    return path


def run(workdir: Path, config: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run `snakemake sbc` in `workdir`; its wall time and load averages."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
    command += ["--directory", str(workdir), "--configfile", str(config)]
    # Run from the repository, so that its workflow profile (profiles/default) applies.
    command += ["--rerun-triggers", "mtime"]
    if args.slurm:
        command += ["--profile", str(ROOT / "profiles" / "slurm"), *TEST_CLUSTER_SETTINGS]
        command += ["--group-components", f"sbc={args.group_components}"]
    command += ["--cores", args.cores, "sbc"]
    log = workdir / "snakemake.log"
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    start, cpu_start = time.monotonic(), _children_cpu()
    with LoadSampler() as load, log.open("w") as out:
        result = subprocess.run(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    wall, cpu = time.monotonic() - start, _children_cpu() - cpu_start
    if result.returncode != 0:
        raise SystemExit(f"snakemake failed (exit {result.returncode}); see {log}")
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "load_start": load_start,
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "load_mean": sum(load.samples) / len(load.samples),
        "slurm_jobs": log.read_text().count("has been submitted with SLURM jobid"),
    }


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (Snakemake, its jobs, CmdStan)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarize_run(workdir: Path, cores: str, timing: dict[str, Any]) -> pd.DataFrame:
    """One row per method of a run, finished or not (from the batches done): counts, times,
    per-replication costs and the uniformity verdict of the replications done."""
    config = yaml.safe_load((workdir / "sbc_config.yaml").read_text())
    draws = config.get("sbc", {}).get("draws", 99)
    bins = config.get("sbc", {}).get("bins", 10)
    rows = []
    for method_dir in sorted((workdir / "results" / "sbc").glob("*/batches")):
        method = method_dir.parent.name
        ranks = pd.concat([pd.read_csv(path) for path in method_dir.glob("*.csv")])
        if "cpu_s" not in ranks:  # ranks written before fits recorded their CPU time
            ranks["cpu_s"] = float("nan")
        per_rep = ranks.groupby("replication").agg(
            wall_s=("wall_s", "first"), cpu_s=("cpu_s", "first")
        )
        failed = ranks.groupby("replication")["rank"].apply(lambda r: r.isna().all()).sum()
        bench_dir = workdir / "results" / "benchmarks" / "sbc" / method
        bench = pd.concat([pd.read_csv(path, sep="\t") for path in bench_dir.glob("batch_*.tsv")])
        verdict = method_verdicts(summarize(ranks, draws, bins)).iloc[0]
        n = len(per_rep)
        rows.append(
            {
                "method": method,
                "replications": n,
                "failed": int(failed),
                "batches": len(bench),
                "cores": cores,
                "run_wall_s": timing.get("wall_s", float("nan")),
                "run_cpu_s": timing.get("cpu_s", float("nan")),
                "batch_wall_s": float(bench["s"].sum()),
                "batch_cpu_s": float(bench["cpu_time"].sum()),
                "wall_s_per_replication": float(bench["s"].sum()) / n,
                "cpu_s_per_replication": float(bench["cpu_time"].sum()) / n,
                "fit_s_per_replication": float(per_rep["wall_s"].mean()),
                "fit_cpu_s_per_replication": float(per_rep["cpu_s"].mean()),
                "min_p_adjusted": float(verdict["min_p_adjusted"]),
                "central_coverage": float(verdict["central_coverage"]),
                "uniformity_rejected": verdict["uniformity_rejected"],
                "slurm_jobs": timing.get("slurm_jobs", 0),
                "load_start": timing.get("load_start", ""),
                "load_mean": timing.get("load_mean", float("nan")),
                "load_end": timing.get("load_end", ""),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replications", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--cores", default="all")
    parser.add_argument("--model", type=Path, help="a compiled results/model directory")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks/results/sbc_run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--slurm", action="store_true", help="through profiles/slurm")
    parser.add_argument("--group-components", type=int, default=2)
    parser.add_argument(
        "--summarize-only", action="store_true", help="summarize a finished --workdir"
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    timing: dict[str, Any] = {}
    if not args.summarize_only:
        config = prepare(workdir, args.replications, args.batch_size, args.model)
        if args.slurm:
            sys.path.insert(0, str(ROOT / "tests"))
            from slurm_cluster import ensure_installed, one_node

            ensure_installed()
            with one_node():
                timing = run(workdir, config, args)
        else:
            timing = run(workdir, config, args)
    table = summarize_run(workdir, args.cores, timing)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "sbc_slurm" if args.slurm else "sbc"
    table.to_csv(args.out / f"{name}.csv", index=False)
    (args.out / f"{name}.md").write_text(to_markdown(table, index=False))
    print(to_markdown(table, index=False))


if __name__ == "__main__":
    main()
