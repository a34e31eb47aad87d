import re
from pathlib import Path

try:
    from gmmpipe.config import (
        compare_method,
        derived_seed,
        fits,
        load_schema,
        model_ks,
        validate_config,
        with_k,
    )
    from gmmpipe.errors import ConfigError
    from gmmpipe.fit import FIT_DIR, FIT_FILES, fit_dir
except ImportError as err:
    raise WorkflowError(
        "The gmmpipe package is not importable; install it with `pip install -e .` "
        f"from the repository root ({err})."
    )


# Validate on load (JSON Schema draft 2020-12 plus cross-key checks) and fill in defaults,
# so that every job sees the same completed config and bad input fails before any job runs.
try:
    _completed = validate_config(
        config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml")
    )
    FITS = fits(_completed)
    COMPARE_METHOD = compare_method(_completed, sorted({f.method for f in FITS}))
except ConfigError as err:
    raise WorkflowError(str(err))
config.clear()
config.update(_completed)

DATASETS = sorted({f.dataset for f in FITS})
SIMULATED = [d for d in config["datasets"] if "simulate" in config["datasets"][d]]
USER_FILES = [d for d in config["datasets"] if "file" in config["datasets"][d]]


def _alternation(names):
    """A wildcard regex matching exactly `names` (one that matches nothing if empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def methods_of(algorithm):
    """A wildcard regex matching the config's methods that use `algorithm`."""
    return _alternation(
        m for m, spec in config["methods"].items() if spec["algorithm"] == algorithm
    )


wildcard_constraints:
    dataset=_alternation(config["datasets"]),
    method=_alternation(config["methods"]),
    K=r"[1-9][0-9]*",


def dataset_spec(wildcards):
    """The validated config entry of a dataset, with `model.K` the fit's K."""
    return with_k(config["datasets"][wildcards.dataset], wildcards.K)


def method_spec(wildcards):
    """The validated config entry of the method of a fit rule."""
    return config["methods"][wildcards.method]


def fit_outputs(*extra):
    """The files every fit writes (named as in gmmpipe.fit.FIT_FILES), plus `extra` ones."""
    outputs = {
        name: f"{FIT_DIR}/{FIT_FILES[name]}"
        for name in ("posterior", "summary", "diagnostics", "fit", *extra)
    }
    outputs["cmdstan"] = directory(f"{FIT_DIR}/{FIT_FILES['cmdstan']}")
    return outputs


def fit_inputs(wildcards):
    """The executable, the data and, for a method with `init`, the fit it starts from."""
    inputs = {
        "exe": "results/model/gmm",
        "data": f"results/data/{wildcards.dataset}.csv",
    }
    init = config["methods"][wildcards.method].get("init")
    if init:
        inputs["init"] = f"{fit_dir(wildcards.dataset, wildcards.K, init)}/posterior.nc"
    return inputs


def fit_threads(wildcards):
    """CPUs a fit uses: one per parallel chain times the threads per chain."""
    return method_threads(wildcards.method)


def method_threads(method):
    """CPUs a fit with `method` uses (also the compare step's refits)."""
    spec = config["methods"][method]
    if spec["algorithm"] == "nuts":
        return min(spec["parallel_chains"], spec["chains"]) * spec["threads_per_chain"]
    return 1


def get_final_output():
    """Everything `rule all` builds (fits, each dataset's tables and figures, provenance)."""
    outputs = [f"{fit_dir(*fit)}/summary.csv" for fit in FITS]
    for dataset, k in dataset_ks():
        outputs += table_targets(dataset, k) + figure_targets(dataset, k)
    for dataset in DATASETS:
        outputs += compare_targets(dataset)
    return outputs + list(PROVENANCE.values())


def dataset_ks(dataset=None):
    """The (dataset, K) pairs of the target fits, in config order."""
    pairs = [(f.dataset, f.k) for f in FITS]
    return [p for p in dict.fromkeys(pairs) if dataset is None or p[0] == dataset]


def fit_seed(wildcards):
    """The CmdStan seed of one fit, derived from the base seed and the fit's names."""
    return derived_seed(config["seed"], wildcards.dataset, wildcards.method)


# --- Tables, figures, provenance (rules/summarize.smk, plot.smk, report.smk) ---------------

ALGORITHMS = ("optimize", "nuts", "advi", "pathfinder", "laplace")
VI = ("advi", "pathfinder", "laplace")
# The figures of a dataset and what they need: one method from each listed group of algorithms.
FIGURE_NEEDS = {
    "data": [],
    "nuts_mu": [("nuts",)],
    "weights": [ALGORITHMS],
    "elbo": [("advi",)],
    "vi_contours": [VI],
    "posterior_means": [ALGORITHMS],
    "marginals": [("nuts",), VI],
    "density": [("nuts",)],
}
TABLES = "results/tables/{dataset}/K{K}"
FIGURE = "results/figures/{dataset}/K{K}/{name}.png"
PROVENANCE = {
    "json": "results/provenance/provenance.json",
    "html": "results/provenance/provenance.html",
    "diagnostics": "results/tables/diagnostics.html",
}


def dataset_methods(dataset, *algorithms):
    """The dataset's target methods in config order, only those of `algorithms` if given."""
    methods = dict.fromkeys(f.method for f in FITS if f.dataset == dataset)
    return [
        m
        for m in methods
        if not algorithms or config["methods"][m]["algorithm"] in algorithms
    ]


def figure_targets(dataset, k):
    """The figures of one dataset's K that its methods allow, plus trace/rank plots per NUTS
    fit."""
    names = [
        name
        for name, needs in FIGURE_NEEDS.items()
        if all(dataset_methods(dataset, *group) for group in needs)
    ]
    for method in dataset_methods(dataset, "nuts"):
        names += [f"trace_{method}", f"rank_{method}"]
    return [FIGURE.format(dataset=dataset, K=k, name=name) for name in names]


def table_targets(dataset, k):
    """The comparison and diagnostics tables of one dataset's K."""
    stem = TABLES.format(dataset=dataset, K=k)
    return [
        f"{stem}_comparison.csv",
        f"{stem}_comparison.html",
        f"{stem}_diagnostics.html",
    ]


def fit_files(name, *algorithms):
    """Input function: file `name` of every fit of the dataset (of `algorithms`, if given)."""
    return lambda wildcards: [
        f"{fit_dir(wildcards.dataset, wildcards.K, m)}/{name}"
        for m in dataset_methods(wildcards.dataset, *algorithms)
    ]


def fit_methods(*algorithms):
    """Params function: the dataset's methods, in the order of :func:`fit_files`."""
    return lambda wildcards: dataset_methods(wildcards.dataset, *algorithms)


def figure(name, category, label, caption=None):
    """A figure of the report, captioned by report/figures/<caption or name>.rst."""
    return report(
        FIGURE.replace("{name}", name),
        caption=f"../report/figures/{caption or name}.rst",
        category=category,
        subcategory="{dataset}",
        labels={"dataset": "{dataset}", "K": "{K}", "figure": label},
    )


def all_fit_files(name):
    """File `name` of every target fit (for provenance)."""
    return [f"{fit_dir(*fit)}/{name}" for fit in FITS]


def plot_benchmarks():
    """Benchmark files of every figure and table rule (for provenance)."""
    paths = []
    for dataset, k in dataset_ks():
        paths.append(f"results/benchmarks/tables/{dataset}/K{k}.tsv")
        paths += [
            f.replace("results/figures/", "results/benchmarks/figures/").replace(
                ".png", ".tsv"
            )
            for f in figure_targets(dataset, k)
        ]
    return paths


def git_state(wildcards):
    """The workflow's git commit and state, recorded in the provenance."""
    from gmmpipe.provenance import git_state as state

    return state(workflow.basedir)


# --- Choosing K and membership (rules/compare.smk) --------------------------------------------

COMPARE = "results/compare/{dataset}"


def compare_targets(dataset):
    """The dataset's K comparison and the membership files of every K, for the compared
    method (none when no target method has posterior draws)."""
    if COMPARE_METHOD is None:
        return []
    stem = COMPARE.format(dataset=dataset)
    outputs = [f"{stem}/loo.csv", f"{stem}/loo.html", f"{stem}/loo.png"]
    for _, k in dataset_ks(dataset):
        folder = fit_dir(dataset, k, COMPARE_METHOD)
        outputs += [f"{folder}/membership.csv", f"{folder}/membership.json"]
    return outputs


def compared_fits(name):
    """Input function: file `name` of the compared method's fit of every K of the dataset."""
    return lambda wildcards: [
        f"{fit_dir(wildcards.dataset, k, COMPARE_METHOD)}/{name}"
        for _, k in dataset_ks(wildcards.dataset)
    ]


def compare_params(wildcards):
    """The compare step's settings, the Ks in input order, and what its refits need."""
    spec = config["methods"][COMPARE_METHOD]
    return {
        "ks": [k for _, k in dataset_ks(wildcards.dataset)],
        "method": COMPARE_METHOD,
        "settings": config["compare"],
        "dataset_spec": config["datasets"][wildcards.dataset],
        "method_spec": spec,
        "seed": derived_seed(config["seed"], wildcards.dataset, COMPARE_METHOD, "loo"),
    }
