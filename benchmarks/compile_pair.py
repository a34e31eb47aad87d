"""Compile time of two versions of the Stan program, side by side (on demand).

    python benchmarks/compile_pair.py [REV_A] [REV_B] [--repeats 2] [--out benchmarks/results]

Takes ``stan/gmm.stan`` and ``stan/user_header.hpp`` at two git revisions (default: ``HEAD~1``
and ``HEAD``; ``WORKTREE`` means the files as they are) and builds both at the same time, one
make process each, with the workflow's compile options (CmdStan's precompiled header, no
``STAN_THREADS``), against ``$CMDSTAN``. This machine's cores change speed by about 20% from one
minute to the next, so only compiles run side by side compare. Wall and CPU (user + sys) seconds
per build go to <out>/compile_pair.csv.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
from peers import ROOT, load_avg, to_markdown

from gmmpipe.cmdstan import find_cmdstan, precompiled_header_options

FILES = ("stan/gmm.stan", "stan/user_header.hpp")


def checkout(rev: str, dest: Path) -> Path:
    """The program and its header at `rev` (or as in the work tree) copied into `dest`."""
    dest.mkdir(parents=True)
    for name in FILES:
        if rev == "WORKTREE":
            text = (ROOT / name).read_text()
        else:
            text = subprocess.run(
                ["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True, text=True,
                check=True,
            ).stdout  # fmt: skip
        (dest / Path(name).name).write_text(text)
    return dest / "gmm"


def build_together(exes: list[Path], cmdstan: Path) -> list[dict[str, float]]:
    """Build every executable at once; wall and CPU seconds of each make (g++ included)."""
    options = {"STANCFLAGS": "--allow-undefined", **precompiled_header_options(cmdstan)}
    procs = []
    for exe in exes:
        exe.unlink(missing_ok=True)
        command = ["make", str(exe), f"USER_HEADER={exe.parent / 'user_header.hpp'}"]
        command += [f"{key}={value}" for key, value in options.items()]
        with (exe.parent / "make.log").open("w") as log:  # a file: a full pipe would block make
            procs.append((time.perf_counter(), subprocess.Popen(
                command, cwd=cmdstan, stdout=log, stderr=subprocess.STDOUT,
            )))  # fmt: skip
    pending = {proc.pid: (index, start, proc) for index, (start, proc) in enumerate(procs)}
    rows: list[dict[str, float]] = [{} for _ in procs]
    while pending:
        pid, status, usage = os.wait4(-1, 0)  # whichever make ends first
        index, start, proc = pending.pop(pid)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log = Path(proc.args[1]).parent / "make.log"
            raise RuntimeError(f"make {proc.args[1]} failed:\n{log.read_text()[-3000:]}")
        rows[index] = {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revs", nargs="*", default=["HEAD~1", "HEAD"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    cmdstan = find_cmdstan()
    rows = []
    with tempfile.TemporaryDirectory(prefix="compile-pair-") as scratch:
        exes = [checkout(rev, Path(scratch) / str(i)) for i, rev in enumerate(args.revs)]
        for repeat in range(args.repeats):
            load = load_avg()
            for rev, row in zip(args.revs, build_together(exes, cmdstan), strict=True):
                rows.append({"repeat": repeat, "rev": rev, **row, "load_before": load})
    args.out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "compile_pair.csv", index=False)
    print(to_markdown(table))


if __name__ == "__main__":
    main()
