"""`reduce_sum` speed-up of `stan/gmm.stan`: 1 vs 2 threads per chain (on demand).

    python benchmarks/threads.py [--datasets seed_large] [--grainsizes 0 12500]
                                 [--threads 1 2] [--out benchmarks/results]

One chain of 1000 warmup + 1000 draws per setting, same seed. ``grainsize 0`` is the plain
likelihood (no ``reduce_sum``); otherwise ``reduce_sum`` with that grainsize and
``threads_per_chain`` threads. Reports wall time, leapfrog steps (warmup included), wall time per
gradient, CmdStan's own one-gradient timing, min bulk ESS and ESS/s, with the load average.
Writes <out>/threads.csv and <out>/threads.md.
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from peers import ROOT, dataset, load_avg, stan_executable, to_markdown

from gmmpipe.data import stan_data

logger = logging.getLogger("benchmarks.threads")
GRADIENT = re.compile(r"Gradient evaluation took ([0-9.eE+-]+) seconds")


def _model() -> Any:
    import cmdstanpy

    from gmmpipe.cmdstan import find_cmdstan

    cmdstanpy.set_cmdstan_path(str(find_cmdstan()))
    return cmdstanpy.CmdStanModel(exe_file=str(stan_executable()))  # STAN_THREADS on


def measure(name: str, grainsize: int, threads: int, seed: int) -> dict[str, Any]:
    """One chain of `name` with the given grainsize and threads per chain."""
    import arviz as az

    data, mu_sd = dataset(name)
    model = _model()
    inputs = stan_data(data, {"K": 2, "mu_sd": mu_sd, "alpha": 0.1, "grainsize": grainsize})
    before = load_avg()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        fit = model.sample(
            data=inputs,
            chains=1,
            threads_per_chain=threads,
            iter_warmup=1000,
            iter_sampling=1000,
            save_warmup=True,
            seed=seed,
            output_dir=out,
            show_progress=False,
        )
        wall = time.perf_counter() - start
        console = "".join(Path(f).read_text() for f in fit.runset.stdout_files)
        draws = fit.draws(inc_warmup=True)  # (warmup + draws, 1, columns)
    cols = {c: i for i, c in enumerate(fit.column_names)}
    steps = float(draws[:, 0, cols["n_leapfrog__"]].sum())
    kept = draws[1000:, :, :].swapaxes(0, 1)  # (chain, draw, column)
    names = [c for c in fit.column_names if c.startswith(("mu[", "theta["))]
    ess = az.ess(az.convert_to_dataset({c: kept[:, :, cols[c]] for c in names}), method="bulk")
    min_ess = float(min(float(ess[c]) for c in names))
    grad = GRADIENT.search(console)
    return {
        "dataset": name,
        "n": data.n,
        "grainsize": grainsize,
        "threads_per_chain": threads,
        "wall_s": wall,
        "leapfrog_steps": steps,
        "ms_per_gradient": 1000 * wall / steps,
        "cmdstan_gradient_ms": 1000 * float(grad.group(1)) if grad else np.nan,
        "min_ess_bulk": min_ess,
        "ess_per_s": min_ess / wall,
        "load_avg_before": before,
        "load_avg_after": load_avg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["seed_large"])
    parser.add_argument("--grainsizes", nargs="+", type=int, default=[0, 12_500])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = []
    for name in args.datasets:
        for grainsize in args.grainsizes:
            for threads in args.threads if grainsize else [1]:
                rows.append(measure(name, grainsize, threads, args.seed))
                logger.info("%s", rows[-1])
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "threads.csv", index=False)
    (args.out / "threads.md").write_text(to_markdown(table) + "\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
