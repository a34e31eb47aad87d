"""Load and validate the workflow configuration (JSON Schema plus checks a schema cannot express)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from gmmpipe.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def _with_defaults(validator_class: type) -> type:
    """Extend a jsonschema validator so that validation fills in every `default`."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key(path: Iterator[Any] | Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _schema_error_message(error: jsonschema.ValidationError) -> str:
    """Turn the most specific schema error into one line naming the key and the value."""
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        return f"config: unknown key under '{where}': {error.message}"
    if error.validator == "required":
        return f"config: '{where}' is missing a required key: {error.message}"
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        return f"config: '{where}' must have exactly one of 'simulate' or 'file'"
    return f"config: '{where}' = {error.instance!r}: {error.message}"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the JSON schema (YAML syntax) of the configuration."""
    with Path(path).open() as fh:
        return yaml.safe_load(fh)


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict:
    """Validate `config`, fill in defaults and return the completed copy.

    Raises
    ------
    ConfigError
        With one message that names the offending key and value.
    """
    schema = dict(schema) if schema is not None else load_schema()
    completed = copy.deepcopy(dict(config))
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = list(validator.iter_errors(completed))
    if errors:
        raise ConfigError(_schema_error_message(jsonschema.exceptions.best_match(errors)))
    _check_semantics(completed)
    return completed


def _check_semantics(config: Mapping[str, Any]) -> None:
    """Checks across keys that JSON Schema cannot express."""
    for name, dataset in config["datasets"].items():
        k = dataset["model"]["K"]
        sim = dataset.get("simulate")
        if sim is None:
            continue
        where = f"datasets.{name}"
        if sim["n"] < k:
            raise ConfigError(
                f"config: '{where}.simulate.n' = {sim['n']} is smaller than "
                f"'{where}.model.K' = {k}; a mixture needs at least K points"
            )
        if sim["generator"] == "mixture":
            _check_mixture(where + ".simulate", sim)


def _check_mixture(where: str, sim: Mapping[str, Any]) -> None:
    means, weights = sim["means"], sim["weights"]
    if len(means) != len(weights):
        raise ConfigError(
            f"config: '{where}.means' has {len(means)} components but "
            f"'{where}.weights' has {len(weights)}"
        )
    dims = {len(m) for m in means}
    if len(dims) != 1:
        raise ConfigError(f"config: '{where}.means' = {means!r}: all means need the same length D")
    if not np.isclose(sum(weights), 1.0, rtol=0, atol=1e-8):
        raise ConfigError(f"config: '{where}.weights' = {weights!r}: weights must sum to 1")
    covs = sim.get("covariances")
    if covs is None:
        return
    (d,) = dims
    if len(covs) != len(means):
        raise ConfigError(
            f"config: '{where}.covariances' has {len(covs)} matrices for {len(means)} components"
        )
    for i, cov in enumerate(covs):
        arr = np.asarray(cov, dtype=float)
        if arr.shape != (d, d):
            raise ConfigError(
                f"config: '{where}.covariances.{i}' has shape {arr.shape}, expected ({d}, {d})"
            )
        if not np.allclose(arr, arr.T) or np.any(np.linalg.eigvalsh(arr) <= 0):
            raise ConfigError(
                f"config: '{where}.covariances.{i}' = {cov!r} is not symmetric positive definite"
            )


def fits(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (dataset, method) pairs the default target builds, checking the names in `targets`."""
    targets = config.get("targets", {})
    chosen = {}
    for axis in ("datasets", "methods"):
        names = list(targets.get(axis) or config[axis])
        unknown = [n for n in names if n not in config[axis]]
        if unknown:
            raise ConfigError(
                f"config: 'targets.{axis}' = {unknown!r}: not in '{axis}' "
                f"(known: {sorted(config[axis])})"
            )
        chosen[axis] = names
    return [(d, m) for d in chosen["datasets"] for m in chosen["methods"]]


def derived_seed(base: int, *names: str) -> int:
    """A seed for one job, derived deterministically from the base seed and names.

    Uses numpy's SeedSequence with the names' bytes as extra entropy, so the same
    (base, names) always gives the same seed and different names give independent seeds.
    """
    words = [int.from_bytes(n.encode(), "little") for n in names]
    seq = np.random.SeedSequence([base, *words])
    return int(seq.generate_state(1, dtype=np.uint32)[0] >> 1)
