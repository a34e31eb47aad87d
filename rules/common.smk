import re
from pathlib import Path

try:
    from gmmpipe.config import derived_seed, fits, load_schema, validate_config
    from gmmpipe.errors import ConfigError
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
except ConfigError as err:
    raise WorkflowError(str(err))
config.clear()
config.update(_completed)

DATASETS = sorted({d for d, _ in FITS})
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


def dataset_spec(wildcards):
    """The validated config entry of a dataset."""
    return config["datasets"][wildcards.dataset]


def method_spec(wildcards):
    """The validated config entry of the method of a fit rule."""
    return config["methods"][wildcards.method]


FIT_DIR = "results/fits/{dataset}/{method}"


def fit_outputs(**extra):
    """The files every fit writes, whatever its algorithm, plus `extra` ones."""
    names = ("posterior.nc", "summary.csv", "diagnostics.json", "fit.json", *extra.values())
    outputs = {Path(n).stem.replace(".", "_"): f"{FIT_DIR}/{n}" for n in names}
    outputs["cmdstan"] = directory(f"{FIT_DIR}/cmdstan")
    return outputs


def fit_threads(wildcards):
    """CPUs a fit uses: one per parallel chain times the threads per chain."""
    spec = config["methods"][wildcards.method]
    if spec["algorithm"] == "nuts":
        return min(spec["parallel_chains"], spec["chains"]) * spec["threads_per_chain"]
    return 1


def dataset_fits(wildcards):
    """Every fit of one dataset that the targets ask for."""
    return {
        method: f"results/fits/{wildcards.dataset}/{method}/posterior.nc"
        for d, method in FITS
        if d == wildcards.dataset
    }


def get_final_output():
    """Everything `rule all` builds."""
    return [f"results/fits/{d}/{m}/summary.csv" for d, m in FITS]


def fit_seed(wildcards):
    """The CmdStan seed of one fit, derived from the base seed and the fit's names."""
    return derived_seed(config["seed"], wildcards.dataset, wildcards.method)
