"""Where Pathfinder's paths start: CmdStan's random inits vs the same with the component sds on
the data's scale (on demand; not part of the test run).

    python benchmarks/pathfinder_starts.py [--seeds 8] [--exe PATH] [--out benchmarks/results]

Fits `config/config.yaml`'s ``pathfinder`` with ``starts: random`` and ``starts: scaled`` to
the seed datasets (K = 2, the config's model) and to the real data of tests/data/ (K = 3, full
covariance, the data-scale priors), seeds 1000, 1001, ... Records whether the fit ran (CmdStan
fails the whole fit when no path runs), its Pareto k-hat and, for the seed datasets, the largest
|posterior mean - NUTS's| of mu and theta in NUTS posterior sds (one NUTS fit per dataset, the
config's settings). Writes <out>/pathfinder_starts.csv and prints a summary.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from prior_sweep import CASES, DATA

from gmmpipe.cmdstan import compile_model
from gmmpipe.config import validate_config
from gmmpipe.data import Dataset, read_dataset, simulate
from gmmpipe.errors import FitError
from gmmpipe.fit import fit_dataset
from gmmpipe.io import read_json
from gmmpipe.layout import fit_paths

ROOT = Path(__file__).resolve().parents[1]
REAL = ("penguins 4-D K=3", "penguins 2-D K=3", "iris K=3", "faithful K=3")


def cases(config: dict[str, Any]) -> dict[str, tuple[Dataset, dict[str, Any]]]:
    """Each case's data and validated dataset spec: the seed datasets, then the real data."""
    out = {name: (simulate(spec["simulate"]), spec) for name, spec in config["datasets"].items()}
    for case in REAL:
        file, columns, k = CASES[case]
        spec = {"file": {"path": str(DATA / file), "columns": columns}, "model": {"K": k}}
        checked = validate_config({"datasets": {"real": spec}, "methods": config["methods"]})
        out[case] = (read_dataset(DATA / file, k=k, columns=columns), checked["datasets"]["real"])
    return out


def fit(exe: Path, data: Dataset, spec: dict, method: dict, seed: int, config: dict) -> dict:
    """One fit in a scratch folder: its gate's checks and summary, or the error that ended it."""
    with tempfile.TemporaryDirectory() as scratch:
        outputs = fit_paths(Path(scratch))
        try:
            fit_dataset(
                exe,
                data,
                dataset_spec=spec,
                method_spec=method,
                seed=seed,
                thresholds=config["diagnostics"],
                outputs=outputs,
            )
        except FitError as err:
            return {"error": str(err).splitlines()[0][:120]}
        checks = {c["name"]: c for c in read_json(outputs["diagnostics"])["checks"]}
        return {"checks": checks, "summary": pd.read_csv(outputs["summary"], index_col=0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--exe", type=Path, help="a compiled stan/gmm.stan (default: compile)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    config = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    with tempfile.TemporaryDirectory() as build:
        exe = args.exe or compile_model(ROOT / "stan" / "gmm.stan", Path(build) / "gmm")
        rows = []
        for case, (data, spec) in cases(config).items():
            reference = None
            if case in config["datasets"]:
                reference = fit(exe, data, spec, config["methods"]["nuts"], 1000, config)["summary"]
            for starts in ("random", "scaled"):
                method = {**config["methods"]["pathfinder"], "starts": starts}
                for seed in range(1000, 1000 + args.seeds):
                    result = fit(exe, data, spec, method, seed, config)
                    row = {"case": case, "starts": starts, "seed": seed}
                    row["ran"] = "error" not in result
                    row["error"] = result.get("error", "")
                    if row["ran"]:
                        row["khat"] = result["checks"]["pareto_khat"]["value"]
                    if row["ran"] and reference is not None:
                        names = reference.index[reference.index.str.match(r"(mu|theta)\[")]
                        got = result["summary"].loc[names]
                        gap = (got["mean"] - reference.loc[names, "mean"]).abs()
                        row["dmean_max"] = float((gap / reference.loc[names, "sd"]).max())
                    rows.append(row)
                    print(row, flush=True)
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "pathfinder_starts.csv", index=False)
    summary = frame.groupby(["case", "starts"], sort=False).agg(
        ran=("ran", "sum"),
        fits=("ran", "size"),
        khat_min=("khat", "min"),
        khat_max=("khat", "max"),
        dmean_max=("dmean_max", "max"),
    )
    print(summary.round(2).to_string())


if __name__ == "__main__":
    main()
