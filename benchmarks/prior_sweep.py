"""Real data under alternative data-scale priors (on demand; not part of the test run).

    python benchmarks/prior_sweep.py [--seeds 3] [--psi-factors 0.2 1] [--alphas 1 2]
                                     [--covariance full] [--cases NAME ...]
                                     [--nuts KEY=VALUE ...] [--exe PATH]
                                     [--out benchmarks/results]

Fits Old Faithful (K = 2 and 3), iris and the Palmer penguins (2-D: bill length and depth;
4-D: with flipper length and body mass; K = 3), shipped in tests/data/ (``--cases``, e.g.
``"faithful K=3"``: some of them), with full covariance (or ``--covariance``), the ``data``
prior rule and config/config.yaml's ``nuts`` (``--nuts``: settings that replace its own, e.g.
``adapt_delta=0.99 iter_sampling=3000``), as tests/test_real_data.py does, for
every psi factor f (psi_j = f s_j^2 / K^(2/D); the default is gmmpipe.priors.PSI_FACTOR) and
Dirichlet concentration alpha. Seed offset 0 is the tests' seed. Writes <out>/prior_sweep.csv
(one row per fit: passed or the failing checks, R-hat, divergences, the weights) and prints it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from gmmpipe.cmdstan import compile_model
from gmmpipe.config import derived_seed, validate_config
from gmmpipe.data import read_dataset
from gmmpipe.errors import ConfigError
from gmmpipe.fit import fit_dataset
from gmmpipe.io import read_json
from gmmpipe.layout import fit_paths

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BILLS = ["bill_length_mm", "bill_depth_mm"]
PENGUINS = [*BILLS, "flipper_length_mm", "body_mass_g"]
CASES = {"faithful K=2": ("faithful.csv", [], 2), "faithful K=3": ("faithful.csv", [], 3),
         "iris K=3": ("iris.csv", IRIS, 3), "penguins 2-D K=3": ("penguins.csv", BILLS, 3),
         "penguins 4-D K=3": ("penguins.csv", PENGUINS, 3)}  # fmt: skip


def fit_case(
    exe: Path,
    case: str,
    f: float,
    alpha: float,
    offset: int,
    folder: Path,
    covariance: str = "full",
    nuts_settings: Mapping[str, Any] | None = None,
) -> dict:
    """One NUTS fit of a case with psi factor `f` and concentration `alpha` (and NUTS settings
    that replace the config's); its gate's verdict."""
    name, columns, k = CASES[case]
    path = DATA / name
    dataset = read_dataset(path, k=k, columns=columns)
    psi = f * dataset.y.var(axis=0, ddof=1) / k ** (2 / dataset.d)
    nuts = nuts_spec(nuts_settings or {})
    model = {"K": k, "covariance": covariance, "psi": psi.tolist(), "alpha": alpha}
    config = validate_config(
        {
            "datasets": {"real": {"file": {"path": str(path), "columns": columns}, "model": model}},
            "methods": {"nuts": nuts},
        }
    )
    outputs = fit_paths(folder)
    fit_dataset(
        exe,
        dataset,
        dataset_spec=config["datasets"]["real"],
        method_spec=config["methods"]["nuts"],
        seed=derived_seed(config["seed"], path.stem, "nuts") + offset,
        thresholds=config["diagnostics"],
        outputs=outputs,
    )
    checks = {c["name"]: c for c in read_json(outputs["diagnostics"])["checks"]}
    theta = pd.read_csv(outputs["summary"], index_col=0).filter(like="theta[", axis=0)
    return {
        "case": case,
        "covariance": covariance,
        "psi_factor": f,
        "alpha": alpha,
        "seed_offset": offset,
        "nuts": " ".join(f"{key}={value}" for key, value in (nuts_settings or {}).items()),
        "passed": all(c["passed"] for c in checks.values()),
        "failed": " ".join(n for n, c in checks.items() if not c["passed"]),
        "r_hat_max": checks["r_hat_max"]["value"],
        "divergences": checks["divergences"]["value"],
        "weights": " / ".join(f"{m:.3f}" for m in np.sort(theta["mean"].to_numpy())[::-1]),
    }


def nuts_spec(settings: Mapping[str, Any]) -> dict[str, Any]:
    """config/config.yaml's ``nuts`` with `settings` in place of its own.

    Raises
    ------
    ConfigError
        When a setting is not one of the schema's NUTS settings or has a bad value.
    """
    nuts = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["methods"]["nuts"]
    nuts = {**nuts, **settings}
    dataset = {"file": {"path": str(DATA / "faithful.csv")}, "model": {"K": 2}}
    validate_config({"datasets": {"real": dataset}, "methods": {"nuts": nuts}})
    return nuts


def _setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--nuts``, the value parsed as YAML (``adapt_delta=0.99``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--nuts {text!r}: expected KEY=VALUE, e.g. adapt_delta=0.99")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--psi-factors", type=float, nargs="+", default=[0.2, 1.0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--covariance", choices=["full", "tied"], default="full")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument(
        "--nuts",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="NUTS settings that replace config/config.yaml's (values parsed as YAML)",
    )
    parser.add_argument("--exe", type=Path, help="a compiled stan/gmm.stan (default: compile)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    nuts_settings = dict(_setting(text) for text in args.nuts)
    try:
        nuts_spec(nuts_settings)  # before the compile: a bad setting fails at once
    except ConfigError as err:
        raise SystemExit(f"--nuts: {err}") from None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = args.exe or compile_model(ROOT / "stan" / "gmm.stan", Path(tmp) / "gmm")
        for case in args.cases:
            for f in args.psi_factors:
                for alpha in args.alphas:
                    for offset in range(args.seeds):
                        folder = Path(tempfile.mkdtemp(dir=tmp))
                        fit = fit_case(
                            exe, case, f, alpha, offset, folder, args.covariance, nuts_settings
                        )
                        rows.append(fit)
                        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "prior_sweep.csv", index=False)
    by = ["case", "covariance", "nuts", "psi_factor", "alpha"]
    print(table.groupby(by)["passed"].agg(["sum", "count"]))


if __name__ == "__main__":
    main()
