"""Variational fits: CmdStan ADVI (meanfield, fullrank) and Pathfinder vs PyMC ADVI (on demand).

    python benchmarks/vi.py [--datasets seed_large] [--iterations 10000]
                            [--out benchmarks/results]

CmdStan methods run as the workflow runs them (`config/config.yaml`: ADVI from the MAP,
Pathfinder from random inits with its sds on the data's scale, through
:func:`gmmpipe.fit.fit_dataset`, whose wall time excludes the MAP). PyMC ADVI runs `pm.fit` on
the same model, full batch and with a minibatch of 200 points (the seed notebook's setting; the
likelihood scaled by N / 200), `--iterations` steps, then 1000 draws from the approximation.
Means are compared with CmdStan NUTS's posterior (from <out>/peers.csv, run `peers.py` first)
in NUTS posterior sd units. Writes <out>/vi.csv and <out>/vi.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from peers import ALPHA, ROOT, dataset, load_avg, stan_executable, to_markdown

from gmmpipe.config import derived_seed, validate_config
from gmmpipe.fit import fit_dataset
from gmmpipe.inits import inits_from
from gmmpipe.layout import fit_paths
from gmmpipe.relabel import apply_permutations, relabel_permutations

logger = logging.getLogger("benchmarks.vi")
CMDSTAN_METHODS = ("advi_meanfield", "advi_fullrank", "pathfinder")


def _means(mu: np.ndarray, theta: np.ndarray) -> dict[str, float]:
    """Posterior means of relabelled draws mu (S, K, D), theta (S, K); components by weight."""
    perms = relabel_permutations(mu, theta)
    mu, theta = apply_permutations(mu, perms), apply_permutations(theta, perms)
    k, d = mu.shape[1:]
    out = {
        f"mean mu[{i + 1},{j + 1}]": float(mu[:, i, j].mean()) for i in range(k) for j in range(d)
    }
    return out | {f"mean theta[{i + 1}]": float(theta[:, i].mean()) for i in range(k)}


def cmdstan_vi(name: str) -> list[dict[str, Any]]:
    """The workflow's ADVI and Pathfinder fits of dataset `name`, timed."""
    import xarray as xr

    config = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    spec = config["datasets"][name]
    data, _ = dataset(name)
    exe = stan_executable()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        fitted: dict[str, Path] = {}
        for method in ("optimize", *CMDSTAN_METHODS):
            method_spec = config["methods"][method]
            folder = Path(scratch) / method
            outputs = fit_paths(folder)
            before = load_avg()
            info = fit_dataset(
                exe,
                data,
                dataset_spec=spec,
                method_spec=method_spec,
                seed=derived_seed(config["seed"], name, method),
                thresholds=config["diagnostics"],
                outputs=outputs,
                inits=inits_from(fitted.get(method_spec.get("init") or "")),
            )
            fitted[method] = outputs["posterior"]
            post = xr.open_dataset(outputs["posterior"], group="posterior")
            mu = post["mu"].to_numpy().reshape(-1, *post["mu"].shape[2:])
            theta = post["theta"].to_numpy().reshape(-1, post["theta"].shape[-1])
            rows.append(
                {
                    "dataset": name,
                    "method": f"cmdstan {method}",
                    "wall_s": info["wall_time_s"],
                    "load_avg_before": before,
                    **_means(mu, theta),
                }
            )
            logger.info("%s", rows[-1])
    return rows


def pymc_vi(name: str, iterations: int, batch: int | None) -> dict[str, Any]:
    """PyMC meanfield ADVI, full batch (`batch` None) or minibatch."""
    import pymc as pm
    import pytensor.tensor as pt

    data, mu_sd = dataset(name)
    y = data.y
    k, d = 2, y.shape[1]
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, mu_sd, shape=(k, d))
        theta = pm.Dirichlet("theta", a=np.full(k, ALPHA))
        obs = pm.Minibatch(y, batch_size=batch) if batch else pt.as_tensor(y)
        scale = y.shape[0] / batch if batch else 1.0
        eta = pt.log(theta) - 0.5 * (mu**2).sum(axis=1) + pt.dot(obs, mu.T)
        half_sq = 0.5 * (obs**2).sum() + 0.5 * math.log(2 * math.pi) * (batch or y.shape[0]) * d
        pm.Potential("loglik", scale * (pt.logsumexp(eta, axis=1).sum() - half_sq))
    before = load_avg()
    with model:
        start = time.perf_counter()
        approx = pm.fit(n=iterations, method="advi", random_seed=1, progressbar=False)
        wall = time.perf_counter() - start
        idata = approx.sample(1000, random_seed=1)
    post = idata.posterior
    return {
        "dataset": name,
        "method": f"pymc advi {'minibatch ' + str(batch) if batch else 'full batch'}",
        "wall_s": wall,
        "iterations": iterations,
        "load_avg_before": before,
        **_means(post["mu"].to_numpy()[0], post["theta"].to_numpy()[0]),
    }


def compare(table: pd.DataFrame, peers_csv: Path) -> pd.DataFrame:
    """Add `max_dev_nuts_sd`: max |mean - CmdStan NUTS mean| in NUTS sd units."""
    if not peers_csv.exists():
        return table
    peers = pd.read_csv(peers_csv)
    table = table.copy()
    table["max_dev_nuts_sd"] = np.nan
    for idx, row in table.iterrows():
        ref = peers[(peers["framework"] == "cmdstan") & (peers["dataset"] == row["dataset"])]
        if ref.empty:
            continue
        means = [c for c in table.columns if c.startswith("mean ")]
        table.at[idx, "max_dev_nuts_sd"] = max(
            abs(row[m] - ref.iloc[0][m]) / ref.iloc[0]["sd " + m[5:]] for m in means
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["seed_large"])
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows: list[dict[str, Any]] = []
    for name in args.datasets:
        rows += cmdstan_vi(name)
        for batch in (None, 200):
            rows.append(pymc_vi(name, args.iterations, batch))
            logger.info("%s", rows[-1])
    table = compare(pd.DataFrame(rows), args.out / "peers.csv")
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "vi.csv", index=False)
    columns = ["dataset", "method", "wall_s", "max_dev_nuts_sd", "load_avg_before"]
    (args.out / "vi.md").write_text(to_markdown(table[[c for c in columns if c in table]]))
    print(to_markdown(table[[c for c in columns if c in table]]))


if __name__ == "__main__":
    main()
