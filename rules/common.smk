import os
import re
import sys
from pathlib import Path

# The package ships with the workflow in src/, first on the controller's sys.path and on the
# PYTHONPATH that every script job inherits (Snakemake also hands its sys.path to script jobs,
# but after their own site-packages, where an installed gmmpipe of another checkout would
# win). So a per-rule conda env (envs/) needs only the package's dependencies, and jobs run
# the code of this checkout.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.getenv("PYTHONPATH")]))
)

try:
    from gmmpipe.config import (
        check_unique_keys,
        compare_method,
        derived_seed,
        fits,
        load_schema,
        model_ks,
        validate_config,
        with_k,
    )
    from gmmpipe.errors import ConfigError
    from gmmpipe.layout import FIT_DIR, FIT_FILES, fit_dir
except ImportError as err:
    raise WorkflowError(
        "The gmmpipe package is not importable; install it with `pip install -e .` "
        f"from the repository root ({err})."
    )


# Validate on load (JSON Schema draft 2020-12 plus cross-key checks) and fill in defaults,
# so that every job sees the same completed config and bad input fails before any job runs.
try:
    for _path in workflow.configfiles:
        check_unique_keys(_path)
    _completed = validate_config(
        config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml")
    )
    FITS = fits(_completed)
    COMPARE_METHOD = compare_method(
        _completed, list(dict.fromkeys(f.method for f in FITS))
    )
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


def data_file(wildcards):
    """The user's data file of a dataset (validated: it exists, `~` expanded)."""
    return config["datasets"][wildcards.dataset]["file"]["path"]


def data_checksum(wildcards):
    """The data file's SHA-256: a changed file is ingested again even if its mtime is old."""
    from gmmpipe.io import file_checksum

    return file_checksum(data_file(wildcards))


def method_spec(wildcards):
    """The validated config entry of the method of a fit rule."""
    return config["methods"][wildcards.method]


def fit_outputs(*extra):
    """The files every fit writes (named as in gmmpipe.layout.FIT_FILES), plus `extra` ones."""
    outputs = {
        name: f"{FIT_DIR}/{FIT_FILES[name]}"
        for name in ("posterior", "summary", "diagnostics", "fit", *extra)
    }
    outputs["cmdstan"] = directory(f"{FIT_DIR}/{FIT_FILES['cmdstan']}")
    return outputs


def fit_inputs(wildcards):
    """The executable, the data (CSV and JSON) and, for a method with `init`, the fit it
    starts from."""
    inputs = {
        "exe": "results/model/gmm",
        "data": f"results/data/{wildcards.dataset}.csv",
        "dataset": f"results/data/{wildcards.dataset}.json",  # names the data's columns
    }
    init = config["methods"][wildcards.method].get("init")
    if init:
        inputs["init"] = f"{fit_dir(wildcards.dataset, wildcards.K, init)}/posterior.nc"
    return inputs


def method_threads(spec):
    """CPUs a fit of method `spec` uses: one per parallel chain times the threads per chain."""
    if spec["algorithm"] == "nuts":
        return min(spec["parallel_chains"], spec["chains"]) * spec["threads_per_chain"]
    return 1


def fit_threads(wildcards):
    """CPUs a fit job uses (see :func:`method_threads`)."""
    return method_threads(config["methods"][wildcards.method])


def get_final_output():
    """Everything `rule all` builds (fits, each dataset's tables and figures, provenance)."""
    outputs = [f"{fit_dir(*fit)}/summary.csv" for fit in FITS]
    for dataset, k in dataset_ks():
        outputs += table_targets(dataset, k) + figure_targets(dataset, k)
    for dataset in DATASETS:
        outputs += [DATA_FIGURE.format(dataset=dataset), *compare_targets(dataset)]
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
    "nuts_mu": [("nuts",)],
    "weights": [ALGORITHMS],
    "elbo": [("advi",)],
    "vi_contours": [VI],
    "posterior_means": [ALGORITHMS],
    "marginals": [("nuts",), VI],
    "density": [("nuts",)],
    "ppc": [("nuts",)],
}
TABLES = "results/tables/{dataset}/K{K}"
# One folder of figures per dataset and K: <name>.png for every name of figure_names(dataset).
FIGURES = "results/figures/{dataset}/K{K}"
# The data figure, the same for every K of a dataset.
DATA_FIGURE = "results/figures/{dataset}/data.png"
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


def figure_names(dataset):
    """The figures of one dataset that its methods allow, plus trace/rank plots per NUTS fit."""
    names = [
        name
        for name, needs in FIGURE_NEEDS.items()
        if all(dataset_methods(dataset, *group) for group in needs)
    ]
    for method in dataset_methods(dataset, "nuts"):
        names += [f"trace_{method}", f"rank_{method}"]
    return names


def figure_targets(dataset, k):
    """The figures folder of one dataset's K (one job draws every figure of figure_names)."""
    return [FIGURES.format(dataset=dataset, K=k)]


# The report's category and label of each kind of figure (trace and rank: one per NUTS fit).
FIGURE_REPORT = {
    "nuts_mu": ("NUTS", "NUTS draws of the means"),
    "density": ("NUTS", "fitted mixture density"),
    "weights": ("comparison", "mixture weights"),
    "posterior_means": ("comparison", "posterior means over the data"),
    "marginals": ("comparison", "NUTS vs VI marginals"),
    "vi_contours": ("ADVI", "VI posterior contours of the means"),
    "elbo": ("ADVI", "ELBO traces"),
    "ppc": ("NUTS", "posterior predictive check"),
    "trace": ("diagnostics", "NUTS trace ({method})"),
    "rank": ("diagnostics", "NUTS rank plots ({method})"),
}
# The algorithms whose fits a figure shows (not listed: every fit of the dataset).
FIGURE_METHODS = {
    "nuts_mu": ("nuts",),
    "density": ("nuts",),
    "elbo": ("advi",),
    "ppc": ("nuts",),
}


def figure_kind(name):
    """(kind, method) of a figure name: ("trace", "nuts") for trace_nuts, ("ppc", "") for ppc."""
    if name.startswith(("trace_", "rank_")):
        kind, _, method = name.partition("_")
        return kind, method
    return name, ""


def figure_category(wildcards):
    """Report category of the figure file `wildcards.name`."""
    return FIGURE_REPORT[figure_kind(wildcards.name)[0]][0]


def figure_labels(wildcards):
    """Report labels of the figure file `wildcards.name`."""
    kind, method = figure_kind(wildcards.name)
    label = FIGURE_REPORT[kind][1].format(method=method)
    return {"dataset": wildcards.dataset, "K": wildcards.K, "figure": label}


def figure_methods(wildcards):
    """Params function: each figure of the dataset -> (its kind, the methods it shows)."""
    figures = {}
    for name in figure_names(wildcards.dataset):
        kind, method = figure_kind(name)
        algorithms = FIGURE_METHODS.get(kind, ())
        shown = [method] if method else dataset_methods(wildcards.dataset, *algorithms)
        figures[name] = (kind, shown)
    return figures


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


def all_fit_files(name):
    """File `name` of every target fit (for provenance)."""
    return [f"{fit_dir(*fit)}/{name}" for fit in FITS]


def check_results_writable():
    """Before any job: stop in one line when results/ is read-only, not writable or full
    (Snakemake would fail on removing or creating outputs with a traceback)."""
    from gmmpipe.io import storage_problem

    results = Path("results").absolute()
    while not results.exists():
        results = results.parent
    problem = storage_problem(results)
    if problem:
        raise WorkflowError(f"cannot write the results: {problem}")


def report_diagnostics():
    """End of a run: a few lines naming the target fits whose diagnostics failed."""
    from snakemake.logging import logger

    from gmmpipe.workflow import failed_diagnostics

    lines = failed_diagnostics(
        all_fit_files(FIT_FILES["diagnostics"]), details=PROVENANCE["diagnostics"]
    )
    if lines:
        logger.warning("\n".join(lines))


def plot_benchmarks():
    """Benchmark files of every figure and table rule (for provenance)."""
    paths = [f"results/benchmarks/figures/{dataset}/data.tsv" for dataset in DATASETS]
    for dataset, k in dataset_ks():
        paths.append(f"results/benchmarks/tables/{dataset}/K{k}.tsv")
        paths.append(f"results/benchmarks/figures/{dataset}/K{k}.tsv")
    return paths


def git_state(wildcards):
    """The workflow's git commit and state, recorded in the provenance."""
    from gmmpipe.workflow import git_state as state

    return state(workflow.basedir)


# --- Choosing K and membership (rules/compare.smk) --------------------------------------------

COMPARE = "results/compare/{dataset}"


def compare_targets(dataset):
    """The dataset's K comparison (only with more than one K: a single K has nothing to rank)
    and the membership files of every K, for the compared method (none when no target method
    has posterior draws)."""
    if COMPARE_METHOD is None:
        return []
    stem = COMPARE.format(dataset=dataset)
    outputs = []
    if len(dataset_ks(dataset)) > 1:
        outputs += [f"{stem}/loo.csv", f"{stem}/loo.html", f"{stem}/loo.png"]
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
