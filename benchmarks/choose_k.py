"""How often LOO suggests the true K (on demand; not part of the test run).

    python benchmarks/choose_k.py [--seeds 10] [--n 1000] [--ks 1 2 3 4] [--method nuts]
                                  [--exe PATH] [--out benchmarks/results]

For each seed: a well-separated 2-D mixture with K = 3 (means (-4, 0), (4, 0), (0, 6), unit
covariances, weights 0.3/0.3/0.4, N points), fitted with every K in `--ks` as the workflow
fits it (gmmpipe.fit.fit_dataset; NUTS 4 chains x 500 + 500, or Laplace), compared by the
workflow's compare step (gmmpipe.compare.run_compare, with CmdStan refits / K-fold as fallbacks)
and the K = 3 fit's membership scored by the adjusted Rand index against the true components.
Writes <out>/choose_k.csv (one row per seed) and prints the rate at which K = 3 is suggested.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from gmmpipe.compare import run_compare
from gmmpipe.data import simulate_mixture, write_dataset
from gmmpipe.fit import fit_dataset
from gmmpipe.layout import fit_paths
from gmmpipe.membership import write_membership

ROOT = Path(__file__).resolve().parents[1]
MEANS = [[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]]
WEIGHTS = [0.3, 0.3, 0.4]
MODEL = {"mu_sd": 5.0, "alpha": 1.0}
METHODS = {
    "nuts": {
        "algorithm": "nuts", "chains": 4, "parallel_chains": 2, "threads_per_chain": 1,
        "iter_warmup": 500, "iter_sampling": 500, "adapt_delta": 0.8, "max_treedepth": 10,
        "metric": "diag_e",
    },
    "laplace": {"algorithm": "laplace", "draws": 1000, "optimizer": "lbfgs", "iter": 2000},
}  # fmt: skip
THRESHOLDS = {
    "rhat_max": 1.01, "ess_bulk_min": 400, "ess_tail_min": 400, "max_divergences": 0,
    "max_treedepth_frac": 0.0, "ebfmi_min": 0.2, "khat_max": 0.7,
}  # fmt: skip
COMPARE = {
    "max_draws": 2000, "subsample_above": 20000, "subsample_size": 2000, "max_refits": 10,
    "kfold": 10, "elpd_margin": 4.0, "seed": 1,
}  # fmt: skip


def one_seed(seed: int, n: int, ks: list[int], method: str, exe: Path, scratch: Path) -> dict:
    """Fit every K to one simulated dataset, compare, and score the K = 3 membership."""
    data = simulate_mixture(n, MEANS, WEIGHTS, seed=seed)
    data_csv = scratch / "data.csv"
    write_dataset(data, data_csv, scratch / "truth.json")
    spec = METHODS[method]
    posteriors = {}
    start = time.perf_counter()
    for k in ks:
        outputs = fit_paths(scratch / f"K{k}")
        fit_dataset(
            exe, data, dataset_spec={"model": {**MODEL, "K": k}}, method_spec=spec,
            seed=1000 * seed + k, thresholds=THRESHOLDS, outputs=outputs,
        )  # fmt: skip
        posteriors[k] = outputs["posterior"]
    fit_s = time.perf_counter() - start
    outputs = {name: scratch / f"compare.{name}" for name in ("table", "khat", "suggestion")}
    outputs |= {"html": scratch / "compare.html", "figure": scratch / "compare.png"}
    start = time.perf_counter()
    evidence = run_compare(
        data=data_csv, posteriors=posteriors, settings=COMPARE, outputs=outputs,
        dataset=f"seed {seed}", method=method,
        refit_args={"exe_file": exe, "dataset_spec": {"model": MODEL}, "method_spec": spec,
                    "seed": seed, "workdir": scratch / "refits"},
    )  # fmt: skip
    compare_s = time.perf_counter() - start
    table = pd.read_csv(outputs["table"]).set_index("K")
    ari = None
    if 3 in posteriors:
        membership = write_membership(
            data=data_csv, posterior=posteriors[3], table=scratch / "membership.csv",
            summary=scratch / "membership.json",
        )  # fmt: skip
        ari = membership["ari"]
    row = {
        "seed": seed, "n": n, "method": method, "suggested_K": evidence["suggested_K"],
        "best_K": evidence["best_K"], "ari_K3": ari, "fit_s": fit_s, "compare_s": compare_s,
    }  # fmt: skip
    for k in ks:
        row[f"elpd_diff_K{k}"] = table.loc[k, "elpd_diff"]
        row[f"diff_se_K{k}"] = table.loc[k, "diff_se"]
        row[f"weight_K{k}"] = table.loc[k, "weight"]
        row[f"estimate_K{k}"] = table.loc[k, "estimate"]
        row[f"khat_bad_K{k}"] = table.loc[k, "khat_bad"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--method", choices=sorted(METHODS), default="nuts")
    parser.add_argument("--exe", type=Path, default=None, help="compiled stan/gmm.stan")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.exe is None:
        from peers import stan_executable

        args.exe = stan_executable()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as scratch:
            rows.append(one_seed(seed, args.n, args.ks, args.method, args.exe, Path(scratch)))
        print(rows[-1], flush=True)
        pd.DataFrame(rows).to_csv(args.out / f"choose_k_{args.method}.csv", index=False)
    frame = pd.DataFrame(rows)
    rate = (frame["suggested_K"] == 3).mean()
    print(
        f"K = 3 suggested for {(frame['suggested_K'] == 3).sum()} of {len(frame)} seeds "
        f"({rate:.0%}); ARI(K = 3) min {frame['ari_K3'].min():.3f}, "
        f"median {frame['ari_K3'].median():.3f}"
    )


if __name__ == "__main__":
    main()
