"""Bad configs fail before any job runs, with one message that names the key and the value."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from workflow_helpers import make_workflow, output, small_config, snakemake

from gmmpipe.config import check_unique_keys, fits, load_schema, validate_config
from gmmpipe.errors import ConfigError


def _base() -> dict[str, Any]:
    """A valid config: one simulated dataset, one file dataset, four methods."""
    config = small_config()
    config["datasets"]["own"] = {"file": {"path": "data/own.csv"}, "model": {"K": 2}}
    config["methods"].update(
        {
            "nuts": {"algorithm": "nuts", "chains": 2},
            "vi": {"algorithm": "advi"},
            "pf": {"algorithm": "pathfinder"},
        }
    )
    return config


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (list indices as numbers); the value ``...`` deletes the key."""
    *parents, last = key.split(".")
    node: Any = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _validate(config: dict[str, Any], base_dir: Path) -> None:
    fits(validate_config(config, base_dir=base_dir))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A working directory holding the file dataset's CSV."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "own.csv").write_text("x1,x2\n0,1\n1,0\n2,2\n")
    return tmp_path


def test_base_config_is_valid(data_dir: Path) -> None:
    completed = validate_config(_base(), base_dir=data_dir)
    assert len(fits(completed)) == 8
    assert completed["methods"]["nuts"]["iter_sampling"] == 1000  # defaults filled in


SIM = "datasets.tiny.simulate"
MIX = "datasets.tiny.model"
# (key to change, new value, text the message must contain: the key and the value)
BAD_CONFIGS = [
    ("seed", "abc", "'seed' = 'abc'"),
    ("seed", -1, "'seed' = -1"),
    ("seed", 2**40, f"'seed' = {2**40}"),
    (f"{SIM}.n", 0, f"'{SIM}.n' = 0"),
    (f"{SIM}.n", -5, f"'{SIM}.n' = -5"),
    (f"{SIM}.n", 10.5, f"'{SIM}.n' = 10.5"),
    (f"{SIM}.n", 100.0, f"'{SIM}.n' = 100.0"),
    (f"{SIM}.n", True, f"'{SIM}.n' = True"),
    (f"{SIM}.n", "100", f"'{SIM}.n' = '100'"),
    (f"{SIM}.n", 1, f"'{SIM}.n' = 1 is smaller than '{MIX}.K' = 2"),
    (f"{MIX}.K", 0, f"'{MIX}.K' = 0"),
    (f"{MIX}.K", 61, f"'{SIM}.n' = 60 is smaller than '{MIX}.K' = 61"),
    (f"{MIX}.mu_sd", 0, f"'{MIX}.mu_sd' = 0"),
    (f"{MIX}.mu_sd", -1.0, f"'{MIX}.mu_sd' = -1.0"),
    (f"{MIX}.mu_sd", float("inf"), f"'{MIX}.mu_sd' = inf: must be a finite number"),
    (f"{MIX}.alpha", 0.0, f"'{MIX}.alpha' = 0.0"),
    (f"{MIX}.alpha", float("nan"), f"'{MIX}.alpha' = nan: must be a finite number"),
    (f"{MIX}.K_max", 3, f"unknown key under '{MIX}'"),
    (f"{SIM}.weights", [0.3, 0.3], f"'{SIM}.weights' = [0.3, 0.3]: weights must sum to 1"),
    (f"{SIM}.weights", [1.5, -0.5], f"'{SIM}.weights.1' = -0.5"),
    (f"{SIM}.weights", [1.0], f"'{SIM}.means' has 2 components but '{SIM}.weights' has 1"),
    (f"{SIM}.means", [[0.0, 0.0], [1.0]], f"'{SIM}.means' = [[0.0, 0.0], [1.0]]"),
    (f"{SIM}.means", [[0.0, float("nan")], [1.0, 1.0]], f"'{SIM}.means.0.1' = nan"),
    (f"{SIM}.means", ..., f"'{SIM}' is missing a required key: 'means'"),
    (f"{SIM}.covariances", [[[1.0, 0.0], [0.0, 1.0]]], f"'{SIM}.covariances' has 1 matrices"),
    (
        f"{SIM}.covariances",
        [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0, 0.0]]],
        f"'{SIM}.covariances.1' has shape (1, 3), expected (2, 2)",
    ),
    (
        f"{SIM}.covariances",
        [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]],
        f"'{SIM}.covariances.1' = [[1.0, 2.0], [2.0, 1.0]] is not symmetric positive definite",
    ),
    (f"{SIM}.generator", "gauss", f"'{SIM}.generator' = 'gauss'"),
    (f"{SIM}.drawn_before", [100], f"unknown key under '{SIM}'"),
    ("datasets.tiny.file", {"path": "data/own.csv"}, "'datasets.tiny' must have exactly one"),
    ("datasets.tiny.simulate", ..., "'datasets.tiny' must have exactly one"),
    ("datasets.own.file.path", "", "'datasets.own.file.path' = ''"),
    ("datasets.own.file.path", "data/nope.csv", "'datasets.own.file.path' = 'data/nope.csv'"),
    ("datasets.own.file.path", "data", "'datasets.own.file.path' = 'data': not a regular"),
    (
        "datasets.own.file.path",
        "data/{own}.csv",
        "'datasets.own.file.path' = 'data/{own}.csv': braces are not allowed in data paths",
    ),
    ("datasets.own.file.columns", ["x1", "x1"], "'datasets.own.file.columns' = ['x1', 'x1']"),
    ("datasets.own.file.header", "no", "'datasets.own.file.header' = 'no'"),
    (
        "datasets.bad-name",
        {"file": {"path": "x"}},
        "'bad-name' under 'datasets' is not a valid name: use letters, digits and underscores",
    ),
    ("methods.nuts.algorithm", "hmc", "'methods.nuts.algorithm' = 'hmc'"),
    ("methods.nuts.chains", 0, "'methods.nuts.chains' = 0"),
    ("methods.nuts.chain", 4, "unknown key under 'methods.nuts'"),
    ("methods.nuts.iter_sampling", -10, "'methods.nuts.iter_sampling' = -10"),
    ("methods.nuts.adapt_delta", 1.0, "'methods.nuts.adapt_delta' = 1.0"),
    ("methods.nuts.metric", "unit_e", "'methods.nuts.metric' = 'unit_e'"),
    ("methods.nuts.variational", "meanfield", "unknown key under 'methods.nuts'"),
    ("methods.vi.variational", "fullrnk", "'methods.vi.variational' = 'fullrnk'"),
    ("methods.vi.eta", 0, "'methods.vi.eta' = 0"),
    ("methods.map.optimizer", "sgd", "'methods.map.optimizer' = 'sgd'"),
    ("methods.map.iter", 0, "'methods.map.iter' = 0"),
    ("methods.pf.num_paths", 0, "'methods.pf.num_paths' = 0"),
    ("methods.pf", "pathfinder", "'methods.pf' = 'pathfinder'"),
    ("methods", {}, "'methods' = {}"),
    ("methods", ..., "'<top level>' is missing a required key: 'methods'"),
    ("datasets", {}, "'datasets' = {}"),
    ("seeds", 1, "unknown key under '<top level>'"),
    ("targets.datasets", ["tiny", "huge"], "'targets.datasets' = ['huge']: not in 'datasets'"),
    ("targets.methods", ["nuts", "mcmc"], "'targets.methods' = ['mcmc']: not in 'methods'"),
    ("targets.methods", "nuts", "'targets.methods' = 'nuts'"),
    ("diagnostics.rhat_max", 1.0, "'diagnostics.rhat_max' = 1.0"),
    ("diagnostics.max_treedepth_frac", 2, "'diagnostics.max_treedepth_frac' = 2"),
    ("plots.dpi", 10, "'plots.dpi' = 10"),
    ("compile.stan_threads", "yes", "'compile.stan_threads' = 'yes'"),
    ("compile.cpp_flags", "-O3; rm -rf ~", "'compile.cpp_flags' = '-O3; rm -rf ~'"),
    ("compile.cpp_flags", "$(shell touch x)", "'compile.cpp_flags' = '$(shell touch x)'"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_CONFIGS, ids=lambda v: str(v)[:40])
def test_bad_config_names_key_and_value(data_dir: Path, key: str, value: Any, message: str) -> None:
    config = _base()
    _set(config, key, copy.deepcopy(value))
    with pytest.raises(ConfigError) as err:
        _validate(config, data_dir)
    text = str(err.value)
    assert message in text
    assert text.startswith("config: ")
    assert "\n" not in text, "one message, one line"


def test_there_are_at_least_15_bad_configs() -> None:
    assert len(BAD_CONFIGS) >= 15


def test_relative_data_path_is_resolved_against_base_dir(data_dir: Path, tmp_path: Path) -> None:
    config = _base()
    validate_config(config, base_dir=data_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ConfigError, match=f"resolved to {elsewhere / 'data' / 'own.csv'}"):
        validate_config(config, base_dir=elsewhere)
    config["datasets"]["own"]["file"]["path"] = str(data_dir / "data" / "own.csv")
    validate_config(config, base_dir=elsewhere)  # absolute paths need no base


def _walk(schema: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every object schema (with `properties`) in the config schema."""
    found = []
    if isinstance(schema, dict):
        if "properties" in schema:
            found.append((where, schema))
        for key, value in schema.items():
            if key != "if":  # conditions, not keys
                found.extend(_walk(value, f"{where}/{key}"))
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found.extend(_walk(value, f"{where}/{i}"))
    return found


def test_schema_describes_every_key_and_closes_every_object() -> None:
    schema = load_schema()
    for where, node in _walk(schema):
        for name, prop in node["properties"].items():
            assert "description" in prop, f"{where}/properties/{name} has no description"
            assert prop.keys() & {"type", "enum", "const", "$ref"} or "properties" in prop, (
                f"{where}/properties/{name} has no type"
            )
        # closed objects, or (the per-algorithm and per-generator switches) closed by their
        # `then` branches
        assert node.get("additionalProperties") is False or "allOf" in node, where


def test_seed_defaults_are_filled_in(data_dir: Path) -> None:
    config = _base()
    del config["seed"]
    assert validate_config(config, base_dir=data_dir)["seed"] == 20261125


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("methods.nuts.chains", 0, "'methods.nuts.chains' = 0"),
        (f"{SIM}.weights", [0.3, 0.3], f"'{SIM}.weights' = [0.3, 0.3]: weights must sum to 1"),
        ("targets.datasets", ["huge"], "'targets.datasets' = ['huge']: not in 'datasets'"),
        ("datasets.own.file.path", "data/nope.csv", "'datasets.own.file.path' = 'data/nope.csv'"),
    ],
    ids=["chains", "weights", "target", "missing-file"],
)
def test_workflow_stops_before_any_job(tmp_path: Path, key: str, value: Any, message: str) -> None:
    config = _base()
    _set(config, key, value)
    workdir = make_workflow(tmp_path / "wf", config)
    (workdir / "data").mkdir()
    (workdir / "data" / "own.csv").write_text("x1,x2\n0,1\n1,0\n2,2\n")
    result = snakemake(workdir, "--cores", "1")
    assert result.returncode != 0
    assert message in output(result)
    assert not (workdir / "results").exists()
    assert not (workdir / "logs").exists()


@pytest.mark.workflow
def test_a_key_given_twice_stops_the_workflow(tmp_path: Path) -> None:
    """A copied dataset block whose name was not changed: YAML would keep only the second."""
    workdir = make_workflow(tmp_path / "wf", _base())
    (workdir / "data").mkdir()
    (workdir / "data" / "own.csv").write_text("x1,x2\n0,1\n1,0\n2,2\n")
    mine = workdir / "mine.yaml"
    mine.write_text(
        "datasets:\n"
        "  own:\n    file: {path: data/own.csv}\n    model: {K: 2}\n"
        "  own:\n    file: {path: data/own.csv}\n    model: {K: 3}\n"
    )
    result = snakemake(workdir, "--cores", "1", "--configfile", "config/config.yaml", "mine.yaml")
    assert result.returncode != 0
    assert f"config file {mine}: line 5: key 'own' is given twice (first on line 2)" in output(
        result
    )
    assert not (workdir / "results").exists()
    check_unique_keys(workdir / "config" / "config.yaml")  # the base config has none


def _yaml_config(data_dir: Path, methods: str) -> dict[str, Any]:
    """The base config with its methods replaced by `methods`, as YAML text reads it."""
    config = _base()
    config["methods"] = yaml.safe_load(methods)
    return validate_config(config, base_dir=data_dir)


def test_exponent_numbers_that_yaml_reads_as_strings_are_numbers(data_dir: Path) -> None:
    methods = "vi: {algorithm: advi, tol_rel_obj: 1e-4, eta: 1E-1}\nn: {algorithm: nuts}\n"
    assert yaml.safe_load(methods)["vi"]["tol_rel_obj"] == "1e-4"  # YAML 1.1 indeed
    completed = _yaml_config(data_dir, methods)
    assert completed["methods"]["vi"]["tol_rel_obj"] == 1e-4
    assert completed["methods"]["vi"]["eta"] == 0.1
    config = _base()
    config["datasets"]["tiny"]["model"]["mu_sd"] = "2.5e+0"
    config["datasets"]["tiny"]["simulate"]["means"] = [["-2e0", "0"], ["2e0", 0.0]]
    with pytest.raises(ConfigError, match=r"'datasets.tiny.simulate.means.0.1' = '0'"):
        validate_config(config, base_dir=data_dir)  # only exponent notation is converted
    config["datasets"]["tiny"]["simulate"]["means"][0][1] = 0.0
    completed = validate_config(config, base_dir=data_dir)
    assert completed["datasets"]["tiny"]["model"]["mu_sd"] == 2.5
    assert completed["datasets"]["tiny"]["simulate"]["means"] == [[-2.0, 0.0], [2.0, 0.0]]


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ("vi: {algorithm: advi, tol_rel_obj: 1e999}", "'methods.vi.tol_rel_obj' = inf: must be"),
        ("vi: {algorithm: advi, tol_rel_obj: -1e-4}", "'methods.vi.tol_rel_obj' = -0.0001"),
        (
            "vi: {algorithm: advi, iter: 1e4}",
            "'methods.vi.iter' = '1e4': must be of type 'integer'; write whole numbers without "
            "an exponent (e.g. 10000, not 1e4)",
        ),
        ("vi: {algorithm: advi, variational: 1e4}", "'methods.vi.variational' = '1e4'"),
        (
            "vi:\n  algorithm: advi\n  iter: 1,000",
            "'methods.vi.iter' = '1,000': must be of type 'integer'; write numbers without "
            "thousands separators (e.g. 10000 or 10_000, not 10,000)",
        ),
        (
            "vi: {algoritm: advi, iter: 100}",
            "'methods.vi' is missing a required key: 'algorithm' is a required property "
            "('algoritm' is given: a typo?)",
        ),
        (  # YAML reads {iter: 1,000} as {iter: 1, 0: null}
            "vi: {algorithm: advi, iter: 1,000}",
            "unknown key under 'methods.vi': Additional properties are not allowed (0 was "
            "unexpected); a comma inside a number in {...} starts a new key: write 1000",
        ),
        (  # what `--config` gives for a nested number
            "vi: {algorithm: advi, iter: '100'}",
            "'methods.vi.iter' = '100': must be of type 'integer'; a number in quotes is text",
        ),
        (  # what `--config seed=1e4` gives
            "vi: {algorithm: advi, iter: 10000.0}",
            "'methods.vi.iter' = 10000.0: must be of type 'integer'; write whole numbers without "
            "an exponent or a decimal point",
        ),
    ],
)
def test_exponent_strings_elsewhere_still_fail_clearly(
    data_dir: Path, methods: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        _yaml_config(data_dir, methods)
    assert "\n" not in str(err.value)


def test_home_in_a_data_path_is_expanded(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(data_dir))
    config = _base()
    config["datasets"]["own"]["file"]["path"] = "~/data/own.csv"
    completed = validate_config(config, base_dir=tmp_path)
    assert completed["datasets"]["own"]["file"]["path"] == str(data_dir / "data" / "own.csv")
    assert config["datasets"]["own"]["file"]["path"] == "~/data/own.csv"  # input not changed
