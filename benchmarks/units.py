"""One dataset in several units: time and verdict of the default NUTS fit (on demand).

    python benchmarks/units.py [--exe PATH] [--out benchmarks/results]

Simulates 300 points of a 2-D two-component mixture with full covariances and writes them in
units y' = a + b y per column (the b and a of ``UNITS``), then fits each with the defaults of a
user file (K = 2, full covariance, data-scale priors, config/config.yaml's ``nuts``), as
tests/test_real_data.py does. Writes <out>/units.csv: wall time, the gate's verdict and failing
checks, the fraction of transitions at the maximum tree depth, and the largest difference of a
posterior mean of mu from the ``plain`` fit's, in its posterior sds after undoing the units.
``--exe`` runs another build of stan/gmm.stan (e.g. an older commit's) on the same data.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from gmmpipe.cmdstan import compile_model
from gmmpipe.config import derived_seed, validate_config
from gmmpipe.data import read_dataset, simulate_mixture
from gmmpipe.fit import fit_dataset
from gmmpipe.io import read_json
from gmmpipe.layout import fit_paths

ROOT = Path(__file__).resolve().parents[1]
UNITS = {  # name: (scale b, offset a) per column
    "plain": ([1.0, 1.0], [0.0, 0.0]),
    "sd 1e-4": ([1e-4, 1e-4], [0.0, 0.0]),
    "sd 1e-3 and 1e3": ([1e-3, 1e3], [0.0, 0.0]),
    "around 1e9": ([1.0, 1.0], [1e9, 1e9]),
    "sd 1e-4 around 1e4, sd 1e5 around -1e9": ([1e-4, 1e5], [1e4, -1e9]),
}


def fit_units(exe: Path, y: np.ndarray, folder: Path) -> tuple[dict, pd.DataFrame, dict]:
    """The default NUTS fit of `y` as a user file: its gate's checks, its summary and fit.json."""
    path = folder / "data.csv"
    pd.DataFrame(y, columns=["a", "b"]).to_csv(path, index=False, float_format="%.17g")
    nuts = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["methods"]["nuts"]
    spec = {"file": {"path": str(path)}, "model": {"K": 2, "covariance": "full"}}
    config = validate_config({"datasets": {"units": spec}, "methods": {"nuts": nuts}})
    outputs = fit_paths(folder / "nuts")
    fit_dataset(
        exe,
        read_dataset(path, k=2),
        dataset_spec=config["datasets"]["units"],
        method_spec=config["methods"]["nuts"],
        seed=derived_seed(config["seed"], "units", "nuts"),
        thresholds=config["diagnostics"],
        outputs=outputs,
    )
    checks = {c["name"]: c for c in read_json(outputs["diagnostics"])["checks"]}
    return checks, pd.read_csv(outputs["summary"], index_col=0), read_json(outputs["fit"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe", type=Path, help="a compiled stan/gmm.stan (default: compile)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    cov = [[[1.0, 0.5], [0.5, 1.0]], [[1.0, -0.3], [-0.3, 1.0]]]
    y = simulate_mixture(300, [[0, 0], [3, 2]], [0.6, 0.4], covariances=cov, seed=2).y
    rows, plain = [], None
    with tempfile.TemporaryDirectory() as tmp:
        exe = args.exe or compile_model(ROOT / "stan" / "gmm.stan", Path(tmp) / "gmm")
        for name, (scale, offset) in UNITS.items():
            folder = Path(tempfile.mkdtemp(dir=tmp))
            checks, summary, info = fit_units(exe, np.add(offset, np.multiply(scale, y)), folder)
            mu = summary.filter(like="mu[", axis=0)
            z = (mu["mean"].to_numpy().reshape(2, 2) - offset) / scale
            plain = (z, mu["sd"].to_numpy().reshape(2, 2) / scale) if plain is None else plain
            rows.append(
                {
                    "units": name,
                    "wall_time_s": info["wall_time_s"],
                    "passed": all(c["passed"] for c in checks.values()),
                    "failed": " ".join(n for n, c in checks.items() if not c["passed"]),
                    "max_treedepth_frac": checks["max_treedepth_frac"]["value"],
                    "mu_vs_plain_sd": float(np.max(np.abs(z - plain[0]) / plain[1])),
                }
            )
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "units.csv", index=False)


if __name__ == "__main__":
    main()
