"""CmdStan NUTS against PyMC, nutpie and NumPyro on the same data, model and priors (on demand).

    python benchmarks/peers.py [--datasets seed_small seed_large n1e3 n1e4 n1e5]
                               [--frameworks cmdstan pymc nutpie numpyro] [--out benchmarks/results]

Model (all four): mu_k ~ N(0, mu_sd I), theta ~ Dirichlet(0.1), y_n ~ sum_k theta_k N(mu_k, I)
with the assignments marginalized by log-sum-exp; CmdStan runs the project's `stan/gmm.stan`,
the peers the textbook form (one N x K matrix product, then logsumexp). Every run is 4 chains x
1000 warmup + 1000 draws on 2 cores, each (framework, dataset) in its own process:

- CmdStan: one process, 4 chains on 2 threads (STAN_THREADS, ``parallel_chains=2``).
- PyMC: ``pm.sample(cores=2)`` (two worker processes).
- nutpie: the PyMC model compiled by nutpie (numba backend), ``cores=2``.
- NumPyro: ``chain_method="parallel"`` over 4 XLA host devices (set before JAX is imported).

Compile/JIT time is reported apart from sampling time: CmdStan's compile is a fresh build;
nutpie's is ``compile_pymc_model``; PyMC's and NumPyro's is the wall time of a first tiny run
(2 warmup + 2 draws), which fills PyMC's compile cache; NumPyro re-compiles on every run, so a
second tiny run's time is taken off its full run's wall and CPU time.

Under a shared machine's load, wall time depends on what else runs; the CPU time (user + system,
the sampling process and its children) of the sampling phase is reported too, and ESS per CPU
second is the load-robust comparison. Draws are relabelled with :mod:`gmmpipe.relabel` before
ESS and R-hat. Writes <out>/peers.csv,
<out>/peers.md and <out>/peers_scaling.png (results are appended to an existing peers.csv,
replacing rows of the same framework and dataset).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gmmpipe.data import SEED_MEANS, SEED_WEIGHTS, Dataset, simulate_mixture, simulate_seed_notebook
from gmmpipe.relabel import apply_permutations, relabel_permutations

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "benchmarks" / "results" / "build"
FRAMEWORKS = ("cmdstan", "pymc", "nutpie", "numpyro", "cmdstan_dense", "cmdstan_procs")
CHAINS, WARMUP, DRAWS, CORES = 4, 1000, 1000, 2
ALPHA = 0.1
logger = logging.getLogger("benchmarks.peers")


def dataset(name: str) -> tuple[Dataset, float]:
    """Data and prior scale `mu_sd` of a benchmark dataset (as in config/config.yaml).

    ``seed_small``/``seed_large`` are the notebook's datasets; ``n1e3`` .. ``n1e6`` are drawn
    from the seed's mixture with ``simulate_mixture(seed=1)``.
    """
    if name == "seed_small":
        return simulate_seed_notebook(100), 1.0
    if name == "seed_large":
        return simulate_seed_notebook(100_000, drawn_before=[100]), math.sqrt(10)
    if name.startswith("n1e"):
        n = 10 ** int(name[3:])
        return simulate_mixture(n, SEED_MEANS, SEED_WEIGHTS, seed=1), math.sqrt(10)
    raise ValueError(f"unknown dataset {name!r}")


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# --- one framework in its own process --------------------------------------------------------


def stan_executable() -> Path:
    """`stan/gmm.stan` compiled with STAN_THREADS, cached by the SHA-256 of the program, its
    C++ header and the CmdStan directory.

    A fresh build is timed once; its time is kept in a JSON file beside the executable.
    """
    from gmmpipe.cmdstan import compile_model, find_cmdstan, user_header

    stan = ROOT / "stan" / "gmm.stan"
    digest = hashlib.sha256(stan.read_bytes() + user_header(stan).read_bytes())
    digest.update(str(find_cmdstan().resolve()).encode())
    exe = BUILD / f"gmm-{digest.hexdigest()[:12]}"
    if not exe.exists() or not exe.with_suffix(".json").exists():
        start = time.perf_counter()
        compile_model(stan, exe, stan_threads=True)
        exe.with_suffix(".json").write_text(json.dumps({"compile_s": time.perf_counter() - start}))
    return exe


def run_cmdstan(
    y: np.ndarray, mu_sd: float, seed: int, metric: str = "diag_e", processes: bool = False
) -> dict[str, Any]:
    """The project's Stan program, 4 chains on 2 threads in one CmdStan process."""
    import cmdstanpy

    from gmmpipe.cmdstan import find_cmdstan
    from gmmpipe.data import stan_data

    cmdstanpy.set_cmdstan_path(str(find_cmdstan()))
    exe = stan_executable()
    compile_s = json.loads(exe.with_suffix(".json").read_text())["compile_s"]
    model = cmdstanpy.CmdStanModel(exe_file=str(exe))
    data = stan_data(Dataset(y=y), {"K": 2, "mu_sd": mu_sd, "alpha": ALPHA})
    with tempfile.TemporaryDirectory() as out:
        start, cpu = time.perf_counter(), cpu_seconds()
        fit = model.sample(
            data=data,
            chains=CHAINS,
            parallel_chains=CORES,
            iter_warmup=WARMUP,
            iter_sampling=DRAWS,
            seed=seed,
            metric=metric,
            force_one_process_per_chain=processes,
            output_dir=out,
            show_progress=False,
        )
        draws = fit.draws()  # (draw, chain, column); parsing the CSVs counts as run time
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    cols = {name: i for i, name in enumerate(fit.column_names)}
    k, d = 2, y.shape[1]
    mu = np.stack(
        [
            np.stack([draws[:, :, cols[f"mu[{i + 1},{j + 1}]"]] for j in range(d)], -1)
            for i in range(k)
        ],
        -2,
    )
    theta = np.stack([draws[:, :, cols[f"theta[{i + 1}]"]] for i in range(k)], -1)
    return {
        "compile_s": compile_s,
        "stan_program": exe.name,
        "wall_s": wall,
        "cpu_s": cpu,
        "mu": mu.swapaxes(0, 1),
        "theta": theta.swapaxes(0, 1),
        "lp": draws[:, :, cols["lp__"]].T,
        "steps": draws[:, :, cols["n_leapfrog__"]].T,
        "divergences": int(draws[:, :, cols["divergent__"]].sum()),
    }


def _pymc_model(y: np.ndarray, mu_sd: float) -> Any:
    """The mixture in PyMC: a matrix product and logsumexp in a Potential."""
    import pymc as pm
    import pytensor.tensor as pt

    k, d = 2, y.shape[1]
    half_sq = 0.5 * float((y**2).sum()) + 0.5 * y.size * math.log(2 * math.pi)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, mu_sd, shape=(k, d))
        theta = pm.Dirichlet("theta", a=np.full(k, ALPHA))
        eta = pt.log(theta) - 0.5 * (mu**2).sum(axis=1) + pt.dot(pt.as_tensor(y), mu.T)
        pm.Potential("loglik", pt.logsumexp(eta, axis=1).sum() - half_sq)
    return model


def _arviz_draws(idata: Any) -> dict[str, np.ndarray]:
    post = idata.posterior
    stats = idata.sample_stats
    return {
        "mu": post["mu"].to_numpy(),
        "theta": post["theta"].to_numpy(),
        "lp": stats["lp"].to_numpy() if "lp" in stats else None,
        "steps": stats["n_steps"].to_numpy() if "n_steps" in stats else None,
        "divergences": int(stats["diverging"].to_numpy().sum()),
    }


def run_pymc(y: np.ndarray, mu_sd: float, seed: int) -> dict[str, Any]:
    """PyMC's own NUTS, 2 worker processes; compile = a first tiny run (fills the cache)."""
    import pymc as pm

    model = _pymc_model(y, mu_sd)
    kwargs = {"chains": CHAINS, "cores": CORES, "progressbar": False}
    kwargs["compute_convergence_checks"] = False
    with model:
        start = time.perf_counter()
        pm.sample(draws=2, tune=2, random_seed=seed + 1, **kwargs)
        compile_s = time.perf_counter() - start
        start, cpu = time.perf_counter(), cpu_seconds()
        idata = pm.sample(draws=DRAWS, tune=WARMUP, random_seed=seed, **kwargs)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"compile_s": compile_s, "wall_s": wall, "cpu_s": cpu, **_arviz_draws(idata)}


def run_nutpie(y: np.ndarray, mu_sd: float, seed: int) -> dict[str, Any]:
    """nutpie on the PyMC model (numba backend by default, or ``NUTPIE_BACKEND=jax``)."""
    import nutpie

    backend = os.environ.get("NUTPIE_BACKEND", "numba")
    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(
        _pymc_model(y, mu_sd),
        backend=backend,
        **({"gradient_backend": "jax"} if backend == "jax" else {}),
    )
    compile_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), cpu_seconds()
    idata = nutpie.sample(
        compiled,
        chains=CHAINS,
        cores=CORES,
        tune=WARMUP,
        draws=DRAWS,
        seed=seed,
        progress_bar=False,
    )
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    out = _arviz_draws(idata)
    if out["lp"] is None and "logp" in idata.sample_stats:
        out["lp"] = idata.sample_stats["logp"].to_numpy()
    return {"compile_s": compile_s, "wall_s": wall, "cpu_s": cpu, **out}


def run_numpyro(y: np.ndarray, mu_sd: float, seed: int) -> dict[str, Any]:
    """NumPyro NUTS, 4 chains in parallel over 4 XLA host devices on the 2 cores."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax.scipy.special import logsumexp
    from numpyro.infer import MCMC, NUTS

    jax.config.update("jax_enable_x64", True)  # same precision as the others
    k, d = 2, y.shape[1]
    y_j = jnp.asarray(y)
    half_sq = 0.5 * float((y**2).sum()) + 0.5 * y.size * math.log(2 * math.pi)

    def model() -> None:
        mu = numpyro.sample("mu", dist.Normal(0.0, mu_sd).expand([k, d]).to_event(2))
        theta = numpyro.sample("theta", dist.Dirichlet(jnp.full(k, ALPHA)))
        eta = jnp.log(theta) - 0.5 * (mu**2).sum(axis=1) + y_j @ mu.T
        numpyro.factor("loglik", logsumexp(eta, axis=1).sum() - half_sq)

    def sample(warmup: int, draws: int, key: int) -> MCMC:
        mcmc = MCMC(
            NUTS(model),
            num_warmup=warmup,
            num_samples=draws,
            num_chains=CHAINS,
            chain_method="parallel",
            progress_bar=False,
        )
        fields = ("num_steps", "diverging", "potential_energy")
        mcmc.run(jax.random.PRNGKey(key), extra_fields=fields)
        jax.block_until_ready(mcmc.get_samples())
        return mcmc

    start = time.perf_counter()
    sample(2, 2, seed + 1)
    compile_s = time.perf_counter() - start
    # Each run re-traces and re-compiles (a new pmap); a second tiny run measures that cost,
    # which is then taken off the full run's wall and CPU time.
    start, cpu = time.perf_counter(), cpu_seconds()
    sample(2, 2, seed + 2)
    rejit, rejit_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    start, cpu = time.perf_counter(), cpu_seconds()
    mcmc = sample(WARMUP, DRAWS, seed)
    wall = time.perf_counter() - start - rejit
    cpu = cpu_seconds() - cpu - rejit_cpu
    samples = mcmc.get_samples(group_by_chain=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    return {
        "compile_s": compile_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "mu": np.asarray(samples["mu"]),
        "theta": np.asarray(samples["theta"]),
        "lp": -np.asarray(extra["potential_energy"]),
        "steps": np.asarray(extra["num_steps"]),
        "divergences": int(np.asarray(extra["diverging"]).sum()),
    }


RUNNERS: dict[str, Callable[[np.ndarray, float, int], dict[str, Any]]] = {
    "cmdstan": run_cmdstan,
    "pymc": run_pymc,
    "nutpie": run_nutpie,
    "numpyro": run_numpyro,
    # not a peer: the same Stan program with a dense mass matrix (a sampler setting)
    "cmdstan_dense": functools.partial(run_cmdstan, metric="dense_e"),
    # not a peer: one CmdStan process per chain (2 at a time) instead of 2 threads
    "cmdstan_procs": functools.partial(run_cmdstan, processes=True),
}


def run_one(framework: str, name: str, seed: int, out: Path) -> None:
    """Fit one dataset with one framework and save draws and timings to `out` (.npz)."""
    data, mu_sd = dataset(name)
    result = RUNNERS[framework](data.y, mu_sd, seed)
    arrays = {k: np.asarray(v) for k, v in result.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in result.items() if not isinstance(v, np.ndarray) and v is not None}
    np.savez(out, meta=json.dumps(scalars), **arrays)


# --- the parent process: runs, relabelling, tables, plots -------------------------------------


def load_avg() -> str:
    """The 1/5/15-minute load averages, as `uptime` prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(framework: str, name: str, seed: int) -> dict[str, Any]:
    """Run `framework` on `name` in a fresh process; relabel; ESS, R-hat and means."""
    import arviz as az

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "draws.npz"
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
        load_before = load_avg()
        cmd = [sys.executable, __file__, "--one", framework, name, str(seed), str(out)]
        subprocess.run(cmd, check=True, env=env)
        saved = np.load(out)
        meta = json.loads(str(saved["meta"]))
        mu, theta = saved["mu"], saved["theta"]
        lp = saved.get("lp")
        steps = saved.get("steps")
    chains, draws, k, d = mu.shape
    perms = relabel_permutations(
        mu.reshape(-1, k, d), theta.reshape(-1, k), None if lp is None else lp.reshape(-1)
    )
    mu = apply_permutations(mu.reshape(-1, k, d), perms).reshape(chains, draws, k, d)
    theta = apply_permutations(theta.reshape(-1, k), perms).reshape(chains, draws, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        posterior = az.convert_to_dataset({"mu": mu, "theta": theta})
        ess = az.ess(posterior, method="bulk")
        rhat = az.rhat(posterior)
    min_ess = float(min(ess[v].min() for v in ess.data_vars))
    row: dict[str, Any] = {
        "framework": framework,
        "dataset": name,
        "n": int(dataset(name)[0].n),
        "compile_s": meta["compile_s"],
        "wall_s": meta["wall_s"],
        "min_ess_bulk": min_ess,
        "ess_per_s": min_ess / meta["wall_s"],
        "cpu_s": meta["cpu_s"],
        "ess_per_cpu_s": min_ess / meta["cpu_s"],
        "max_rhat": float(max(rhat[v].max() for v in rhat.data_vars)),
        "steps_per_draw": float(steps.mean()) if steps is not None else float("nan"),
        "divergences": meta.get("divergences", 0),
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
        "stan_program": meta.get("stan_program", ""),
    }
    params = {f"mu[{i + 1},{j + 1}]": mu[:, :, i, j] for i in range(k) for j in range(d)}
    params |= {f"theta[{i + 1}]": theta[:, :, i] for i in range(k)}
    for key, value in params.items():
        row[f"mean {key}"] = float(value.mean())
        row[f"sd {key}"] = float(value.std())
    return row


def agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Add `max_dev_cmdstan_sd`: max |mean - CmdStan mean| / CmdStan sd over all parameters.

    The reference is the dataset's ``cmdstan`` run, else its first other CmdStan variant.
    """
    means = [c for c in table.columns if c.startswith("mean ")]
    table = table.copy()
    table["max_dev_cmdstan_sd"] = float("nan")
    for name, group in table.groupby("dataset"):
        ref = group[group["framework"].str.startswith("cmdstan")].sort_values("framework")
        if ref.empty:
            continue
        ref_row = ref.iloc[0]
        for idx in group.index:
            dev = [
                abs(table.at[idx, m] - ref_row[m]) / ref_row["sd " + m[5:]]
                for m in means
                if not math.isnan(ref_row[m])
            ]
            table.at[idx, "max_dev_cmdstan_sd"] = max(dev)
        logger.info("agreement on %s computed", name)
    return table


MD_COLUMNS = {
    "dataset": "dataset",
    "n": "N",
    "framework": "framework",
    "compile_s": "compile/JIT (s)",
    "wall_s": "sampling wall (s)",
    "min_ess_bulk": "min ESS bulk",
    "ess_per_s": "ESS/s",
    "cpu_s": "sampling CPU (s)",
    "ess_per_cpu_s": "ESS per CPU s",
    "max_rhat": "max R-hat",
    "steps_per_draw": "leapfrog/draw",
    "max_dev_cmdstan_sd": "max |mean - CmdStan| (CmdStan sd)",
    "load_avg_before": "load avg (1/5/15 min) before",
}


def markdown(table: pd.DataFrame) -> str:
    """The summary table in Markdown (one row per dataset x framework)."""
    return to_markdown(table[list(MD_COLUMNS)].rename(columns=MD_COLUMNS))


def to_markdown(view: pd.DataFrame) -> str:
    """A data frame as a Markdown table, floats to 3 significant digits."""
    lines = ["| " + " | ".join(view.columns) + " |", "|" + "---|" * len(view.columns)]
    for _, row in view.iterrows():
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_scaling(table: pd.DataFrame, path: Path) -> None:
    """ESS per wall and CPU second and wall time against N (log-log), one line per framework."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = table[table["dataset"].str.startswith("n1e")].sort_values("n")
    if sweep.empty:
        return
    columns = {
        "ess_per_s": "min bulk ESS per second (wall)",
        "ess_per_cpu_s": "min bulk ESS per CPU second",
        "wall_s": "sampling wall time (s)",
    }
    fig, axes = plt.subplots(1, len(columns), figsize=(14, 4))
    for framework, group in sweep.groupby("framework"):
        for ax, column in zip(axes, columns, strict=True):
            ax.plot(group["n"], group[column], "o-", label=framework)
    for ax, label in zip(axes, columns.values(), strict=True):
        ax.set(xscale="log", yscale="log", xlabel="N", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("4 chains x 1000+1000 NUTS on 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(table: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Merge with an existing peers.csv, then write peers.csv, peers.md and the plot."""
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "peers.csv"
    if csv.exists():
        old = pd.read_csv(csv, dtype={"load_avg_before": str, "load_avg_after": str})
        keep = ~old.set_index(["framework", "dataset"]).index.isin(
            table.set_index(["framework", "dataset"]).index
        )
        table = pd.concat([old[keep], table], ignore_index=True)
    table = agreement(table.drop(columns=["max_dev_cmdstan_sd"], errors="ignore"))
    table["rank"] = table["framework"].map({name: i for i, name in enumerate(FRAMEWORKS)})
    table = table.sort_values(["n", "dataset", "rank"]).drop(columns="rank")
    table.to_csv(csv, index=False)
    (out / "peers.md").write_text(markdown(table))
    plot_scaling(table, out / "peers_scaling.png")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["seed_small", "seed_large"])
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS[:4]), choices=FRAMEWORKS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--label",
        default="",
        help="suffix for the framework names in the results, e.g. 'native' for a run with "
        "CMDSTAN pointing at a CmdStan built with -march=native",
    )
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.one:
        framework, name, seed, out = args.one
        run_one(framework, name, int(seed), Path(out))
        return
    BUILD.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.datasets:
        for framework in args.frameworks:
            rows.append(measure(framework, name, args.seed))
            if args.label:
                rows[-1]["framework"] += f"+{args.label}"
            brief = {k: v for k, v in rows[-1].items() if not k.startswith(("mean", "sd"))}
            logger.info("%s", brief)
            write(pd.DataFrame(rows), args.out)  # keep what is done if a later run fails
    table = write(pd.DataFrame(rows), args.out)
    print(markdown(table))


if __name__ == "__main__":
    main()
