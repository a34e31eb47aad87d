"""Time the compile step and every configured method on the configured datasets (on demand).

    python benchmarks/fits.py [--datasets seed_small seed_large] [--methods nuts advi_meanfield]
                              [--repeats 1] [--out benchmarks/results]

Writes <out>/fits.csv (one row per dataset x method x repeat: wall time, minimum bulk ESS and
ESS per second for NUTS, diagnostics verdict) and <out>/fits.png. Compile time is measured
separately (a fresh build in a scratch directory) and written as its own row.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import matplotlib
import pandas as pd
import yaml

from gmmpipe.cmdstan import compile_model
from gmmpipe.config import derived_seed, validate_config
from gmmpipe.data import simulate
from gmmpipe.fit import fit_dataset
from gmmpipe.inits import inits_from
from gmmpipe.io import atomic_path, read_json
from gmmpipe.layout import fit_paths

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.fits")


def run(datasets: list[str], methods: list[str], repeats: int, out: Path) -> pd.DataFrame:
    """Compile once (timed), then fit every dataset x method `repeats` times."""
    config = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        exe = Path(scratch) / "gmm"
        start = time.perf_counter()
        compile_model(ROOT / "stan" / "gmm.stan", exe)
        rows.append(
            {
                "dataset": "-",
                "method": "compile",
                "repeat": 0,
                "wall_time_s": time.perf_counter() - start,
            }
        )
        for dataset in datasets:
            spec = config["datasets"][dataset]
            data = simulate(spec["simulate"])
            for repeat in range(repeats):
                fitted: dict[str, Path] = {}
                for method in _with_inits(methods, config["methods"]):
                    method_spec = config["methods"][method]
                    outputs = fit_paths(Path(scratch) / dataset / method / str(repeat))
                    info = fit_dataset(
                        exe,
                        data,
                        dataset_spec=spec,
                        method_spec=method_spec,
                        seed=derived_seed(config["seed"], dataset, method) + repeat,
                        thresholds=config["diagnostics"],
                        outputs=outputs,
                        inits=inits_from(fitted.get(method_spec.get("init") or "")),
                    )
                    fitted[method] = outputs["posterior"]
                    if method not in methods:
                        continue
                    summary = pd.read_csv(outputs["summary"], index_col=0)
                    ess = float(summary["ess_bulk"].min())
                    rows.append(
                        {
                            "dataset": dataset,
                            "method": method,
                            "repeat": repeat,
                            "algorithm": method_spec["algorithm"],
                            "n": data.n,
                            "wall_time_s": info["wall_time_s"],
                            "min_ess_bulk": ess,
                            "ess_per_s": ess / info["wall_time_s"],
                            "passed": read_json(outputs["diagnostics"])["passed"],
                        }
                    )
                    logger.info("%s", rows[-1])
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "fits.csv") as tmp:
        table.to_csv(tmp, index=False)
    _plot(table, out / "fits.png")
    return table


def _with_inits(methods: list[str], specs: dict) -> list[str]:
    """`methods` preceded by the methods they are initialized from."""
    ordered: list[str] = []
    for method in methods:
        chain = [method]
        while specs[chain[-1]].get("init"):
            chain.append(specs[chain[-1]]["init"])
        ordered += [m for m in reversed(chain) if m not in ordered]
    return ordered


def _plot(table: pd.DataFrame, path: Path) -> None:
    fits = table[table["method"] != "compile"]
    means = fits.groupby(["dataset", "method"])["wall_time_s"].mean().unstack("dataset")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    means.plot.barh(ax=ax, logx=True)
    ax.set_xlabel("wall time per fit (s, log scale)")
    compile_s = table.loc[table["method"] == "compile", "wall_time_s"].iloc[0]
    ax.set_title(f"CmdStan fits (compile: {compile_s:.0f} s)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["seed_small", "seed_large"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["optimize", "nuts", "advi_meanfield", "advi_fullrank", "pathfinder"],
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(run(args.datasets, args.methods, args.repeats, args.out).to_string(index=False))


if __name__ == "__main__":
    main()
