"""What the Snakemake controller needs of the SBC (rules/sbc.smk): the check of the ``sbc``
config and its batches of replications. Stdlib and jsonschema only, so that the controller
runs with nothing but Snakemake installed; the SBC itself is :mod:`gmmpipe.sbc`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from gmmpipe.config import load_schema
from gmmpipe.errors import ConfigError
from gmmpipe.priors import check_sbc_model

# Keys of the `sbc` config that decide a replication's result (a batch's job parameters);
# `replications`, `batch_size`, `methods` and `bins` only decide which replications run and
# how they are summarized.
REPLICATION_KEYS = ("seed", "n", "d", "model", "draws")


def batch_count(sbc: Mapping[str, Any]) -> int:
    """Number of batches (jobs) of ``batch_size`` replications each, the last one shorter."""
    return -(-int(sbc["replications"]) // int(sbc["batch_size"]))


def batch_replications(sbc: Mapping[str, Any], batch: int) -> range:
    """The replications of batch `batch` (0-based)."""
    size, total = int(sbc["batch_size"]), int(sbc["replications"])
    if not 0 <= batch < batch_count(sbc):
        raise ValueError(f"batch {batch} out of range: {batch_count(sbc)} batches")
    return range(batch * size, min((batch + 1) * size, total))


def check_sbc_config(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check the validated ``sbc`` config; return the specs of the methods it names, with
    their ``sbc.method_settings`` applied.

    Raises
    ------
    ConfigError
        When a method is unknown or neither NUTS nor ADVI, `bins` does not divide
        `draws` + 1, the model has several K or data-scale priors, or `method_settings`
        names a method not calibrated or a setting its algorithm does not have (or a bad
        value for it).
    """
    sbc = config["sbc"]
    if (sbc["draws"] + 1) % sbc["bins"]:
        raise ConfigError(
            f"config: 'sbc.bins' = {sbc['bins']} must divide 'sbc.draws' + 1 = {sbc['draws'] + 1}"
            " (the number of possible ranks)"
        )
    if isinstance(sbc.get("model", {}).get("K"), list):
        raise ConfigError(f"config: 'sbc.model.K' = {sbc['model']['K']!r}: SBC needs one K")
    check_sbc_model(sbc.get("model", {}))
    out = {}
    for name in sbc["methods"]:
        spec = config["methods"].get(name)
        if spec is None:
            raise ConfigError(
                f"config: 'sbc.methods' names {name!r}, which is not in 'methods' "
                f"(known: {sorted(config['methods'])})"
            )
        if spec["algorithm"] not in ("nuts", "advi"):
            raise ConfigError(
                f"config: 'sbc.methods' names {name!r}, a {spec['algorithm']} method; "
                "SBC needs posterior draws (nuts or advi)"
            )
        out[name] = dict(spec)
        if spec.get("init"):
            out[name]["init_method"] = dict(config["methods"][spec["init"]])
    for name, settings in sbc.get("method_settings", {}).items():
        if name not in out:
            raise ConfigError(
                f"config: 'sbc.method_settings' names {name!r}, which is not in 'sbc.methods' "
                f"({list(sbc['methods'])})"
            )
        out[name].update(_checked_settings(name, out[name]["algorithm"], settings))
    return out


def _checked_settings(name: str, algorithm: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` of method `name`, checked against its algorithm's schema."""
    if "algorithm" in settings or "init" in settings:
        raise ConfigError(
            f"config: 'sbc.method_settings.{name}' may not change 'algorithm' or 'init'"
        )
    definitions = load_schema()["$defs"]
    validator = jsonschema.Draft202012Validator(
        {"$defs": definitions, "$ref": f"#/$defs/{algorithm}"}
    )
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(settings)))
    if error is not None:
        where = ".".join(["sbc", "method_settings", name, *map(str, error.absolute_path)])
        raise ConfigError(f"config: '{where}' ({algorithm}): {error.message}")
    return dict(settings)
