"""Set-up files: environment.yml and pyproject.toml declare the same packages, every rule names
a per-rule conda env (envs/) that covers what its script imports, and the pip lock file pins
every package pyproject.toml asks for. No conda channel is reachable here: these tests check the
files' structure; whether the environments solve is checked where conda runs (docs)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
# The pip path's lock files (uv pip compile, Python 3.11 on Linux): the user's, and CI's with
# the `test` extra added under the same pins.
LOCK = ROOT / "requirements" / "py311-linux.txt"
TEST_LOCK = ROOT / "requirements" / "py311-linux-test.txt"

# Conda packages without a pip counterpart: the interpreter, pip itself, and CmdStan (the C++
# toolchain-built binary; on the pip path `python -m cmdstanpy.install_cmdstan` installs it).
CONDA_ONLY = {"python", "pip", "cmdstan"}
# Conda names that differ from the pip (PyPI) name of the same package.
CONDA_TO_PIP = {"matplotlib-base": "matplotlib"}
# Import names that differ from their package's name, and packages needed without an import:
# ingest reads Parquet files through pandas (pyarrow); xarray and ArviZ read and write netCDF
# files (netCDF4).
IMPORT_TO_PACKAGE = {"yaml": "pyyaml", "netCDF4": "netcdf4"}
IMPLIED = {"ingest.py": {"pyarrow"}, "xarray": {"netcdf4"}}


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads(PYPROJECT.read_text())


def _conda_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def conda_requirements(path: Path) -> dict[str, SpecifierSet]:
    """Pip name -> version specifiers of a conda env file's packages (CONDA_ONLY left out)."""
    specs = {}
    for dep in _conda_env(path)["dependencies"]:
        if not isinstance(dep, str):
            continue  # the pip section
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
        if name in CONDA_ONLY:
            continue
        specs[canonicalize_name(CONDA_TO_PIP.get(name, name))] = SpecifierSet(spec)
    return specs


def pip_requirements(requirements: list[str]) -> dict[str, SpecifierSet]:
    """Pip name -> version specifiers of PEP 508 requirement strings."""
    return {canonicalize_name(req.name): req.specifier for req in map(Requirement, requirements)}


def test_environment_yml_and_pyproject_declare_the_same_runtime_packages():
    assert conda_requirements(ROOT / "environment.yml") == pip_requirements(
        _pyproject()["project"]["dependencies"]
    )


def test_development_tools_are_kept_out_of_the_users_environment():
    dev = conda_requirements(ROOT / "environment-dev.yml")
    assert dev == pip_requirements(_pyproject()["project"]["optional-dependencies"]["test"])
    assert not set(dev) & set(conda_requirements(ROOT / "environment.yml"))


@pytest.mark.parametrize("name", ["environment.yml", "environment-dev.yml"])
def test_channels_are_conda_forge_then_bioconda_with_strict_priority(name):
    assert _conda_env(ROOT / name)["channels"] == ["conda-forge", "bioconda", "nodefaults"]
    # strict priority is a conda setting, not a key of the file: the set-up command sets it
    assert "CONDA_CHANNEL_PRIORITY=strict conda env" in (ROOT / name).read_text()


def test_environment_installs_this_checkout_from_its_own_folder():
    """conda env create runs the pip section in the env file's folder: `-e .` is this repo."""
    (pip,) = [d["pip"] for d in _conda_env(ROOT / "environment.yml")["dependencies"] if
              isinstance(d, dict)]  # fmt: skip
    assert pip == ["-e ."]


# --- Per-rule environments ---------------------------------------------------------------------


def rule_blocks() -> Iterator[tuple[str, str, str]]:
    """(file, rule name, body) of every `rule` and `use rule` in rules/*.smk and the Snakefile."""
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        text = path.read_text()
        heads = list(re.finditer(r"^(?:rule (\w+)|use rule \w+ as (\w+) with):\n", text, re.M))
        for head, after in zip(heads, [*heads[1:], None][: len(heads)], strict=True):
            body = text[head.end() : after.start() if after else len(text)]
            body = re.split(r"^\S", body, maxsplit=1, flags=re.M)[0]  # up to the next top level
            yield path.name, head.group(1) or head.group(2), body


def _directive(body: str, name: str) -> str | None:
    match = re.search(rf"^    {name}:\n\s+\"([^\"]+)\"", body, re.M)
    return match.group(1) if match else None


def rule_envs() -> dict[str, tuple[Path, Path]]:
    """Rule name -> (conda env file, script) of every rule that runs a script."""
    rules = {}
    for _, name, body in rule_blocks():
        conda, script = _directive(body, "conda"), _directive(body, "script")
        if script:
            rules[name] = ((ROOT / "rules" / conda) if conda else None, ROOT / "rules" / script)
    return rules


def test_every_rule_names_an_existing_per_rule_env():
    rules = rule_envs()
    assert {"compile", "simulate", "optimize", "figures", "summarize", "provenance"} <= set(rules)
    for name, (env, script) in rules.items():
        assert env is not None, f"rule {name} has no conda: directive"
        env = env.resolve()
        assert env.parent == ROOT / "envs" and env.is_file(), f"rule {name}: {env}"
        assert script.resolve().is_file(), f"rule {name}: {script}"
    for file, name, body in rule_blocks():  # `use rule` inherits the env and the script
        if "conda:" in body:
            assert _directive(body, "conda").startswith("../envs/"), (file, name)
    assert "environment.yml" not in "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_per_rule_envs_are_self_contained(env):
    """Valid YAML, conda-forge only, the workflow's Python, and only runtime packages."""
    spec = _conda_env(env)
    assert spec["channels"] == ["conda-forge", "nodefaults"]
    assert "python=3.11" in spec["dependencies"]
    assert all(isinstance(d, str) for d in spec["dependencies"]), "no pip section"
    runtime = pip_requirements(_pyproject()["project"]["dependencies"])
    assert set(conda_requirements(env)) <= set(runtime)


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def needed_packages(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Third-party packages `path` needs: its imports, followed through gmmpipe's modules
    (function-level imports included), plus the packages they imply (IMPLIED)."""
    seen = set() if seen is None else seen
    needed: set[str] = set(IMPLIED.get(path.name, set()))
    for module in _imports(path):
        top = module.split(".")[0]
        needed |= IMPLIED.get(top, set())
        if top == "gmmpipe":
            source = ROOT / "src" / (module.replace(".", "/") + ".py")
            if source.is_file() and source not in seen:
                seen.add(source)
                needed |= needed_packages(source, seen)
        elif top not in sys.stdlib_module_names and top != "__future__":
            needed.add(canonicalize_name(IMPORT_TO_PACKAGE.get(top, top)))
    return needed


def test_needed_packages_follow_the_package():
    assert needed_packages(ROOT / "scripts" / "compile.py") == {"cmdstanpy"}
    assert {"pyarrow", "numpy", "pandas"} <= needed_packages(ROOT / "scripts" / "ingest.py")
    assert {"matplotlib", "arviz", "netcdf4"} <= needed_packages(ROOT / "scripts" / "plot.py")


@pytest.mark.parametrize("rule", sorted(rule_envs()))
def test_rule_env_covers_what_its_script_imports(rule):
    env, script = rule_envs()[rule]
    missing = needed_packages(script) - set(conda_requirements(env))
    assert not missing, f"{env.name} lacks {sorted(missing)} for {script.name}"


def test_one_cmdstan_env_builds_and_runs_the_executable():
    """The rules that build or run results/model/gmm (compile, the fits through `fit_inputs`,
    compare's refits, SBC's batches) share envs/cmdstan.yaml, so the executable runs against
    the CmdStan (and TBB library) that built it; no other env has CmdStan."""
    runs_exe = {
        name
        for _, name, body in rule_blocks()
        if "results/model/gmm" in body or "fit_inputs" in body
    }
    assert {"compile", "optimize", "compare", "sbc_batch"} <= runs_exe
    rules = {name: e.name for name, (e, _) in rule_envs().items()}
    assert {rules[name] for name in runs_exe} == {"cmdstan.yaml"}
    with_cmdstan = {
        env.name
        for env in (ROOT / "envs").glob("*.yaml")
        if any(d.startswith("cmdstan=") for d in _conda_env(env)["dependencies"])
    }
    assert with_cmdstan == {"cmdstan.yaml"}
    assert "cmdstan=2.35" in _conda_env(ROOT / "envs" / "cmdstan.yaml")["dependencies"]


@pytest.mark.workflow
def test_script_jobs_import_the_checkouts_package_before_an_installed_one(tmp_path):
    """How a per-rule env gets gmmpipe: common.smk puts the workflow's src/ first on sys.path
    and on PYTHONPATH, which every script job inherits. Checked with a package that is also
    installed (in the user site-packages, which a job's own sys.path lists before the
    Snakefile's entries): the job imports the checkout's copy."""
    common = (ROOT / "rules" / "common.smk").read_text()
    lines = [
        'SRC = str(Path(workflow.basedir) / "src")',
        "sys.path.insert(0, SRC)",
        "os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, "
        '[SRC, os.getenv("PYTHONPATH")])))',
    ]
    flat = "".join(common.split())  # snakefmt may wrap a line
    assert all("".join(line.split()) in flat for line in lines)
    for where in ("src", "user"):
        user_site = tmp_path / "user" / "lib" / "python{}.{}".format(*sys.version_info[:2])
        package = (tmp_path / "src" if where == "src" else user_site / "site-packages") / "pkg"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"WHERE = {where!r}\n")
    (tmp_path / "job.py").write_text(
        "import pkg\nopen(snakemake.output[0], 'w').write(pkg.WHERE)\n"
    )
    (tmp_path / "Snakefile").write_text(
        "import os\nimport sys\nfrom pathlib import Path\n"
        + "\n".join(lines)
        + '\nrule job:\n    output: "out.txt"\n    script: "job.py"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONUSERBASE"] = str(tmp_path / "user")
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "-d", str(tmp_path / "run"),
         "-s", str(tmp_path / "Snakefile")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "out.txt").read_text() == "src"


# --- The pip path's lock files -----------------------------------------------------------------


def _locked(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


@pytest.mark.parametrize("lock,extras", [(LOCK, []), (TEST_LOCK, ["test"])], ids=["user", "ci"])
def test_lock_pins_every_requirement_within_its_bounds(lock, extras):
    project = _pyproject()["project"]
    wanted = project["dependencies"] + [
        req for extra in extras for req in project["optional-dependencies"][extra]
    ]
    pins = _locked(lock)
    for name, spec in pip_requirements(wanted).items():
        assert name in pins, f"{name} is not pinned in {lock.name}"
        assert spec.contains(pins[name], prereleases=True), f"{name}=={pins[name]} not {spec}"
    assert "gmmpipe" not in pins  # the package itself is installed with -e .


def test_ci_tests_the_users_pins_and_installs_from_the_lock():
    user, ci = _locked(LOCK), _locked(TEST_LOCK)
    assert {name: ci.get(name) for name in user} == user
    tools = pip_requirements(_pyproject()["project"]["optional-dependencies"]["test"])
    assert not set(tools) & set(user), "development tools in the user's lock"
    assert f"-r {TEST_LOCK.relative_to(ROOT)} -e ." in (ROOT / ".ci" / "run").read_text()
