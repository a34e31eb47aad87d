"""Load and validate the workflow configuration: JSON Schema plus checks it cannot express."""

from __future__ import annotations

import copy
import csv
import difflib
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

from gmmpipe.errors import ConfigError, DataError
from gmmpipe.layout import MEMBERSHIP_NAMES, PARQUET_SUFFIXES, is_number
from gmmpipe.priors import complete_config, resolve_priors

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


# Compiler flags reach `make`, which expands them in shell recipes: allow flags only.
_CPP_FLAGS = re.compile(r"^\s*(-[A-Za-z0-9_=.,+:/-]+\s*)*$")


def _is_integer(checker: Any, instance: Any) -> bool:
    """Strict JSON Schema integers: 100.0 and True are not integers here."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _with_defaults(validator_class: type) -> type:
    """Extend a jsonschema validator so that validation fills in every `default`.

    Integers are strict, so a float such as ``100.0`` never reaches code that needs an int.
    """
    validate_properties = validator_class.VALIDATORS["properties"]
    type_checker = validator_class.TYPE_CHECKER.redefine("integer", _is_integer)

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(
        validator_class, {"properties": set_defaults}, type_checker=type_checker
    )


#: The schema's pattern of dataset and method names.
NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_]*$"


def _key(path: Iterator[Any] | Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _schema_error_message(error: jsonschema.ValidationError) -> str:
    """Turn the most specific schema error into one line naming the key and the value."""
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        message = f"config: unknown key under '{where}': {error.message}"
        if any(isinstance(k, int) and v is None for k, v in error.instance.items()):
            # YAML reads {iter: 1,000} as {iter: 1, 0: null}
            message += "; a comma inside a number in {...} starts a new key: write 1000"
        return message
    if error.validator == "required":
        message = f"config: '{where}' is missing a required key: {error.message}"
        given = [k for k in error.instance if isinstance(k, str)]
        for missing in (r for r in error.validator_value if r not in error.instance):
            for typo in difflib.get_close_matches(missing, given, n=1, cutoff=0.7):
                message += f" ({typo!r} is given: a typo?)"
        return message
    if error.validator == "pattern" and error.validator_value == NAME_PATTERN:
        return (
            f"config: {error.instance!r} under '{where}' is not a valid name: use letters, "
            "digits and underscores, starting with a letter (it names folders and Snakemake "
            "wildcards)"
        )
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        return f"config: '{where}' must have exactly one of 'simulate' or 'file'"
    if error.validator == "type":
        hint = _type_hint(error.instance, set(_types(error.validator_value)))
        if hint:
            return (
                f"config: '{where}' = {error.instance!r}: must be of type "
                f"{error.validator_value!r}; {hint}"
            )
    return f"config: '{where}' = {error.instance!r}: {error.message}"


def _type_hint(value: Any, expected: set[str]) -> str:
    """How to write a number that the schema refused for its type (`expected`), or ''."""
    if not expected & {"integer", "number"}:
        return ""
    exponent = "write whole numbers without an exponent (e.g. 10000, not 1e4)"
    if isinstance(value, float) and value.is_integer():  # 1e4 from --config, or 100.0
        return exponent.replace("an exponent", "an exponent or a decimal point")
    if not isinstance(value, str):
        return ""
    if _EXPONENT_NUMBER.match(value.strip()):
        return exponent
    try:
        float(value)
    except ValueError:
        if _SEPARATED_NUMBER.match(value.strip()):
            return "write numbers without thousands separators (e.g. 10000 or 10_000, not 10,000)"
        return ""
    return (
        "a number in quotes is text: write it without quotes (`--config` passes the values "
        "inside {...} as text: set such keys in a --configfile)"
    )


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the JSON schema (YAML syntax) of the configuration."""
    with Path(path).open() as fh:
        return yaml.safe_load(fh)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML, hence
    Snakemake, keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in first:
                raise ConfigError(
                    f"line {line}: key {key!r} is given twice (first on line {first[key]}), "
                    "and YAML would keep only the last"
                )
            first.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def check_unique_keys(path: str | os.PathLike[str]) -> None:
    """Refuse a config file in which one mapping gives a key twice (e.g. a copied dataset).

    Raises
    ------
    ConfigError
        Naming the file, the line and the key.
    """
    try:
        yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None


def validate_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> dict:
    """Validate `config`, fill in defaults and return the completed copy.

    Besides the schema this checks what a schema cannot: finite numbers, sizes that must
    agree across keys, compiler flags, and that every user data file exists (relative
    paths are resolved against `base_dir`, by default the working directory, which is
    where Snakemake runs its jobs).

    Raises
    ------
    ConfigError
        With one message that names the offending key and value.
    """
    schema = dict(schema) if schema is not None else load_schema()
    completed = copy.deepcopy(dict(config))
    _merge_sbc_model(completed, schema)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    _coerce_numbers(completed, validator)
    _check_finite(completed, ())
    errors = list(validator.iter_errors(completed))
    if errors:
        raise ConfigError(_schema_error_message(jsonschema.exceptions.best_match(errors)))
    _check_semantics(completed)
    complete_config(completed)
    _check_inits(completed["methods"])
    _check_files(completed, Path.cwd() if base_dir is None else Path(base_dir))
    return completed


def _merge_sbc_model(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """A partial ``sbc.model`` replaces the default model's keys one by one, not the whole model
    (``sbc: {model: {K: 3}}`` keeps the default's covariance and priors)."""
    sbc = config.get("sbc")
    default = schema["properties"].get("sbc", {}).get("properties", {}).get("model", {})
    if isinstance(sbc, dict) and isinstance(sbc.get("model"), dict) and "default" in default:
        sbc["model"] = {**default["default"], **sbc["model"]}


# A number in exponent notation: YAML 1.1 (PyYAML, hence Snakemake) reads 1e-4 or 1.0e5 as a
# string, since its floats need a dot and a signed exponent.
_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_SEPARATED_NUMBER = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d*)?$")


def _coerce_numbers(config: dict[str, Any], validator: Any) -> None:
    """Turn strings such as ``"1e-4"`` into floats wherever the schema expects a number.

    Only where the schema (after its ``$ref``, ``if``/``then`` branches) reports a string
    that is not of a ``number`` type; integer keys stay strict.
    """
    for _ in range(1000):  # each pass fixes at least one value; a bound against surprises
        found = [
            err
            for err in _all_errors(validator.iter_errors(config))
            if err.validator == "type"
            and "number" in _types(err.validator_value)
            and isinstance(err.instance, str)
            and _EXPONENT_NUMBER.match(err.instance.strip())
        ]
        if not found:
            return
        for err in found:
            *parents, last = err.absolute_path
            node: Any = config
            for part in parents:
                node = node[part]
            node[last] = float(err.instance)


def _all_errors(errors: Iterator[jsonschema.ValidationError]) -> Iterator[Any]:
    """Schema errors and, recursively, those in the branches of oneOf/anyOf."""
    for err in errors:
        yield err
        yield from _all_errors(iter(err.context or ()))


def _types(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _check_finite(value: Any, path: tuple[Any, ...]) -> None:
    """Reject NaN and infinities anywhere in the config (YAML's .nan, .inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config: '{_key(path)}' = {value!r}: must be a finite number")
    if isinstance(value, Mapping):
        for name, item in value.items():
            _check_finite(item, (*path, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, (*path, i))


def resolve_data_path(path: str | os.PathLike[str], base_dir: str | os.PathLike[str]) -> Path:
    """The absolute, symlink-free path of a user data file given relative to `base_dir`."""
    return (Path(base_dir) / Path(path).expanduser()).resolve()


def _check_files(config: dict[str, Any], base_dir: Path) -> None:
    """Every `datasets.<name>.file.path` must be an existing, readable regular file.

    A leading ``~`` is expanded in the completed config (Snakemake would look for a directory
    named ``~``); braces are refused, since Snakemake reads ``{...}`` as a wildcard.
    """
    for name, dataset in config["datasets"].items():
        if "file" not in dataset:
            continue
        given = dataset["file"]["path"]
        where = f"config: 'datasets.{name}.file.path' = {given!r}"
        if "{" in given or "}" in given:
            raise ConfigError(
                f"{where}: braces are not allowed in data paths (Snakemake reads {{...}} as a "
                "wildcard); rename the file, or link it (ln -s) under a name without braces"
            )
        dataset["file"]["path"] = os.path.expanduser(given)
        resolved = resolve_data_path(given, base_dir)
        if not resolved.exists():
            raise ConfigError(f"{where}: data file not found (resolved to {resolved})")
        if not resolved.is_file():
            raise ConfigError(f"{where}: not a regular file (resolved to {resolved})")
        if not os.access(resolved, os.R_OK):
            raise ConfigError(f"{where}: file is not readable (resolved to {resolved})")
        _check_file_columns(name, dataset["file"], resolved)


def _check_file_columns(name: str, file_spec: Mapping[str, Any], path: Path) -> None:
    """`file.columns` and `file.id_column` before any job runs: the id is not a coordinate,
    neither takes a name of membership.csv's own columns, and both are in a CSV file's header
    row (a typo would otherwise fail the ingest job beside the compile). Only a plainly
    comma-separated UTF-8 header is read here; every other case is the ingest job's."""
    given = {"columns": list(file_spec.get("columns") or [])}
    if file_spec.get("id_column") in given["columns"]:
        raise ConfigError(
            f"config: 'datasets.{name}.file.id_column' = {file_spec['id_column']!r} is also in "
            "'file.columns': an id names a row, it is not a coordinate"
        )
    if file_spec.get("id_column"):
        given["id_column"] = [file_spec["id_column"]]
    for key, wanted in given.items():
        taken = [c for c in wanted if MEMBERSHIP_NAMES.match(c)]
        if taken:
            raise ConfigError(
                f"config: 'datasets.{name}.file.{key}' names {taken[0]!r}, a name membership.csv "
                "gives its own columns (point, label, entropy, p1, p1_q05, ...): rename the "
                "file's column"
            )
    if not any(given.values()) or not file_spec.get("header", True):
        return
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            first = next((row for row in csv.reader(fh) if any(c.strip() for c in row)), [])
    except (UnicodeDecodeError, csv.Error, OSError):
        return
    names = [c.strip() for c in first]
    if all(is_number(n) for n in names):  # no header row: the ingest job says so
        return
    for key, wanted in given.items():
        missing = [c for c in wanted if c not in names]
        if len(names) > 1 and missing:
            value = wanted if key == "columns" else wanted[0]
            raise ConfigError(
                f"config: 'datasets.{name}.file.{key}' = {value!r}: {missing} not in the header "
                f"of {path} (has {names})"
            )


def _check_semantics(config: Mapping[str, Any]) -> None:
    """Checks across keys that JSON Schema cannot express."""
    flags = config.get("compile", {}).get("cpp_flags", "")
    if not _CPP_FLAGS.match(flags):
        raise ConfigError(
            f"config: 'compile.cpp_flags' = {flags!r}: only compiler flags such as "
            "'-O3 -march=native' are allowed (each starts with '-' and uses letters, digits "
            "and _=.,+:/-), because make passes them to a shell"
        )
    for name, dataset in config["datasets"].items():
        k = max(model_ks(dataset["model"]))
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
    if not math.isclose(sum(weights), 1.0, rel_tol=0, abs_tol=1e-8):
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
        rows = [len(row) for row in cov]
        if len(cov) != d or any(r != d for r in rows):
            shape = (len(cov), rows[0]) if len(set(rows)) == 1 else (len(cov), rows)
            raise ConfigError(
                f"config: '{where}.covariances.{i}' has shape {shape}, expected ({d}, {d})"
            )
        if not _is_spd(cov):
            raise ConfigError(
                f"config: '{where}.covariances.{i}' = {cov!r} is not symmetric positive definite"
            )


def _is_spd(matrix: list[list[float]]) -> bool:
    """Whether a small square matrix is symmetric (to numpy.allclose's tolerance) and positive
    definite (its Cholesky factorization has positive pivots); pure Python, so that the
    Snakemake controller needs no numpy."""
    n = len(matrix)
    a = [[float(v) for v in row] for row in matrix]
    for i in range(n):
        for j in range(i):
            if abs(a[i][j] - a[j][i]) > 1e-8 + 1e-5 * abs(a[j][i]):
                return False
    lower = [[0.0] * n for _ in range(n)]
    for j in range(n):
        pivot = a[j][j] - sum(lower[j][k] ** 2 for k in range(j))
        if not pivot > 0:
            return False
        lower[j][j] = math.sqrt(pivot)
        for i in range(j + 1, n):
            lower[i][j] = (a[i][j] - sum(lower[i][k] * lower[j][k] for k in range(j))) / lower[j][j]
    return True


def model_ks(model: Mapping[str, Any]) -> list[int]:
    """The component counts of a dataset's `model.K` (one number or a list), ascending."""
    k = model["K"]
    return sorted({int(v) for v in k}) if isinstance(k, list) else [int(k)]


def with_k(dataset_spec: Mapping[str, Any], k: int) -> dict[str, Any]:
    """A dataset's config entry for one fit: `model.K` set to the single count `k`."""
    return {**dataset_spec, "model": {**dataset_spec["model"], "K": int(k)}}


def check_priors(name: str, dataset_spec: Mapping[str, Any], y: Any, columns: Any = None) -> None:
    """Resolve the priors of every K of dataset `name` for its data `y` (N x D; `columns` their
    names), when the data are read or simulated: a prior the data cannot set (a column without
    spread, a value per coordinate for the wrong D) then fails before any fit, naming the dataset.

    Raises
    ------
    DataError
        :func:`gmmpipe.priors.resolve_priors`' message, prefixed by ``datasets.<name>``.
    """
    for k in model_ks(dataset_spec["model"]):
        try:
            resolve_priors(y, with_k(dataset_spec, k)["model"], names=columns)
        except DataError as err:
            raise DataError(f"datasets.{name}: {err}") from None


class Fit(NamedTuple):
    """One fit of the default target: a dataset, its component count K and a method."""

    dataset: str
    k: int
    method: str


def fits(config: Mapping[str, Any]) -> list[Fit]:
    """The fits the default target builds (every K of every target dataset, times the target
    methods), checking the names in `targets`."""
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
    return [
        Fit(d, k, m)
        for d in chosen["datasets"]
        for k in model_ks(config["datasets"][d]["model"])
        for m in chosen["methods"]
    ]


#: Algorithms whose fits have posterior draws (LOO and membership need draws, not one point).
DRAW_ALGORITHMS = ("nuts", "laplace", "advi", "pathfinder")


def compare_method(config: Mapping[str, Any], methods: list[str]) -> str | None:
    """The method whose fits the compare step ranks across K: `compare.method`, else the first
    of the target `methods` by DRAW_ALGORITHMS' order; None when no target method has draws.

    Raises ConfigError when a target dataset has several K and that method has fewer than
    :data:`MIN_LOO_DRAWS` draws."""
    name = config.get("compare", {}).get("method")
    if name is not None:
        spec = config["methods"].get(name)
        if spec is None or spec["algorithm"] not in DRAW_ALGORITHMS:
            why = "not in 'methods'" if spec is None else f"its algorithm is {spec['algorithm']}"
            raise ConfigError(
                f"config: 'compare.method' = {name!r}: {why}; LOO needs posterior draws "
                f"(a method with algorithm {' / '.join(DRAW_ALGORITHMS)})"
            )
    else:
        by_order = [
            m for a in DRAW_ALGORITHMS for m in methods if config["methods"][m]["algorithm"] == a
        ]
        name = by_order[0] if by_order else None
    targets = config.get("targets", {}).get("datasets") or list(config["datasets"])
    compared = any(len(model_ks(config["datasets"][ds]["model"])) > 1 for ds in targets)
    draws = _draw_count(config["methods"][name]) if name is not None else MIN_LOO_DRAWS
    if compared and draws < MIN_LOO_DRAWS:
        raise ConfigError(
            f"config: the compare step's method {name!r} gives {draws} draws; PSIS-LOO "
            f"needs at least {MIN_LOO_DRAWS} (its k-hat threshold min(1 - "
            "1/log10 S, 0.7) is 0 at S = 10): give it more draws, or name another method in "
            "'compare.method'"
        )
    return name


#: The fewest posterior draws the compare step's PSIS-LOO accepts.
MIN_LOO_DRAWS = 100


def _draw_count(spec: Mapping[str, Any]) -> int:
    """The posterior draws a method with draws gives (after importance resampling)."""
    if spec["algorithm"] == "nuts":
        return int(spec["chains"]) * int(spec["iter_sampling"])
    return int(spec["output_samples"] if spec["algorithm"] == "advi" else spec["draws"])


def derived_seed(base: int, *names: str) -> int:
    """A seed for one job, derived deterministically from the base seed and names.

    numpy's ``SeedSequence([base, *names as little-endian ints]).generate_state(1)[0] >> 1``,
    computed in pure Python (:func:`_seed_sequence_word`) so that the Snakemake controller,
    which computes the seeds of the fit jobs, needs no numpy. The same (base, names) always
    gives the same seed and different names give independent seeds.
    """
    words = [int.from_bytes(n.encode(), "little") for n in names]
    return _seed_sequence_word([base, *words]) >> 1


# numpy.random.SeedSequence's constants (numpy/random/bit_generator.pyx, after M. E. O'Neill's
# seed_seq_fe): a pool of four 32-bit words, mixed by multiply-xorshift hashes.
_MASK32 = 0xFFFFFFFF
_POOL_SIZE = 4
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = 16


def _uint32_words(entropy: list[int]) -> list[int]:
    """Each non-negative int as its 32-bit words, least significant first (0 is one word)."""
    words = []
    for n in entropy:
        if n < 0:
            raise ValueError(f"seed entropy must be non-negative, got {n}")
        words.append(n & _MASK32)
        n >>= 32
        while n:
            words.append(n & _MASK32)
            n >>= 32
    return words


def _seed_sequence_word(entropy: list[int]) -> int:
    """The first uint32 word of ``numpy.random.SeedSequence(entropy).generate_state(1)``."""
    hash_const = _INIT_A

    def hashmix(value: int) -> int:
        nonlocal hash_const
        value ^= hash_const
        hash_const = (hash_const * _MULT_A) & _MASK32
        value = (value * hash_const) & _MASK32
        return value ^ (value >> _XSHIFT)

    def mix(x: int, y: int) -> int:
        result = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _MASK32
        return result ^ (result >> _XSHIFT)

    words = _uint32_words(entropy)
    pool = [hashmix(words[i] if i < len(words) else 0) for i in range(_POOL_SIZE)]
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for word in words[_POOL_SIZE:]:
        for dst in range(_POOL_SIZE):
            pool[dst] = mix(pool[dst], hashmix(word))
    value = (pool[0] ^ _INIT_B) * ((_INIT_B * _MULT_B) & _MASK32) & _MASK32
    return value ^ (value >> _XSHIFT)


def _check_inits(methods: Mapping[str, Any]) -> None:
    """Every `init` names another method, and following inits never loops."""
    for name, spec in methods.items():
        seen = [name]
        current = spec.get("init")
        while current is not None:
            if current not in methods:
                raise ConfigError(
                    f"config: 'methods.{name}.init' = {current!r}: not a method "
                    f"(known: {sorted(methods)})"
                )
            if current in seen:
                raise ConfigError(
                    f"config: 'methods.{name}.init' = {spec['init']!r}: initialization loops "
                    f"({' -> '.join([*seen, current])})"
                )
            seen.append(current)
            current = methods[current].get("init")
