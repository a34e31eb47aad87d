"""The Snakemake controller needs only Snakemake (issue 14: `snakemake --sdm conda` with nothing
but Snakemake installed): parsing the workflow, its input and params functions and its handlers
import no numerical package. Checked by dry runs in a Python where importing them fails, and by
the pure-Python SeedSequence port against numpy's. Needs no CmdStan."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflow_helpers import (
    make_workflow,
    output,
    scheduled_outputs,
    scheduled_rules,
    snakemake_command,
)

from gmmpipe.config import derived_seed, fits, validate_config
from gmmpipe.layout import fit_dir

# Packages the jobs' conda envs bring but an environment with only Snakemake lacks.
BLOCKED = (
    "numpy",
    "pandas",
    "scipy",
    "xarray",
    "arviz",
    "matplotlib",
    "cmdstanpy",
    "netCDF4",
    "pyarrow",
)

# Imported first by every Python started with the folder on PYTHONPATH: importing a blocked
# package fails as if it were not installed, and installed Snakemake plugins (optional extras,
# e.g. the SLURM executor, which imports pandas) are hidden from Snakemake's plugin discovery.
SITECUSTOMIZE = f"""\
import pkgutil
import re
import sys

BLOCKED = {BLOCKED!r}
PLUGIN = re.compile(r"snakemake_\\w+_plugin_")


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or PLUGIN.match(name):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


def _iter_modules(*args, _iter=pkgutil.iter_modules, **kwargs):
    return (m for m in _iter(*args, **kwargs) if not PLUGIN.match(m.name))


sys.meta_path.insert(0, _Blocker())
pkgutil.iter_modules = _iter_modules
"""


@pytest.fixture
def only_snakemake(tmp_path: Path) -> dict[str, str]:
    """An environment whose Pythons cannot import the BLOCKED packages."""
    folder = tmp_path / "only_snakemake"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=str(folder))
    probe = "import snakemake, jsonschema, yaml\ntry:\n import numpy\nexcept ImportError:\n pass\n"
    probe += "else:\n raise SystemExit('numpy imported')\n"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return env


def _workflow(workdir: Path, root: Path, config: dict) -> Path:
    """A workflow copy with the package's src/ beside it, as a checkout has (common.smk puts
    it on sys.path; the blocked environment has no other gmmpipe than the copy's)."""
    make_workflow(workdir, config)
    shutil.copytree(root / "src", workdir / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return workdir


def _dry_run(workdir: Path, env: dict[str, str] | None, *targets: str):
    return subprocess.run(
        snakemake_command("-n", *targets),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _user_file_config(workdir: Path) -> dict:
    """A user's CSV dataset, NUTS and ADVI, and an SBC of both."""
    rng = np.random.default_rng(3)
    y = np.vstack([rng.normal(-2, 1, (40, 2)), rng.normal(2, 1, (40, 2))])
    (workdir / "data").mkdir(parents=True)
    np.savetxt(workdir / "data" / "own.csv", y, delimiter=",", header="a,b", comments="")
    return {
        "datasets": {"own": {"file": {"path": "data/own.csv"}, "model": {"K": [1, 2]}}},
        "methods": {
            "nuts": {"algorithm": "nuts", "chains": 2},
            "advi": {"algorithm": "advi"},
        },
        "sbc": {"methods": ["nuts", "advi"], "replications": 5, "batch_size": 2},
    }


@pytest.mark.workflow
@pytest.mark.parametrize("case", ["default", "user_file_and_sbc"])
def test_controller_needs_only_snakemake(
    case: str, tmp_path: Path, root: Path, only_snakemake: dict[str, str]
) -> None:
    workdir = tmp_path / "wf"
    if case == "default":
        config = yaml.safe_load((root / "config" / "config.yaml").read_text())
        targets: tuple[str, ...] = ()
    else:
        config = _user_file_config(workdir)
        targets = ("all", "sbc")
    _workflow(workdir, root, config)

    light = _dry_run(workdir, only_snakemake, *targets)
    assert light.returncode == 0, output(light)[-3000:]
    # the same jobs as a controller with every package installed
    full = _dry_run(workdir, None, *targets)
    assert full.returncode == 0, output(full)[-3000:]
    rules = scheduled_rules(light)
    assert rules == scheduled_rules(full)
    assert scheduled_outputs(light) == scheduled_outputs(full)
    assert rules["compile"] == 1
    outputs = scheduled_outputs(light)
    expected = fits(validate_config(config, base_dir=workdir))
    assert len(expected) >= 2
    assert {f"{fit_dir(*fit)}/summary.csv" for fit in expected} <= outputs
    if case == "user_file_and_sbc":
        assert rules["ingest"] == 1
        assert rules["sbc_batch"] == 2 * 3  # two methods, 5 replications in batches of 2


def test_every_module_the_controller_imports_needs_only_snakemake(
    root: Path, only_snakemake: dict[str, str]
) -> None:
    """Also those imported inside input/params functions and handlers (e.g. onsuccess), which a
    dry run does not call."""
    text = "\n".join(p.read_text() for p in [root / "Snakefile", *(root / "rules").glob("*.smk")])
    modules = sorted(set(re.findall(r"^\s*from (gmmpipe(?:\.\w+)*) import", text, re.M)))
    assert "gmmpipe.config" in modules and "gmmpipe.workflow" in modules
    code = f"import sys; sys.path.insert(0, {str(root / 'src')!r})\n"
    code += "".join(f"import {m}\n" for m in modules)
    code += "from gmmpipe.cmdstan import cmdstan_identity; cmdstan_identity()\n"
    done = subprocess.run(
        [sys.executable, "-c", code], env=only_snakemake, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_derived_seed_equals_numpy_seed_sequence() -> None:
    """The pure-Python port gives exactly numpy's SeedSequence seeds (so seeds are unchanged)."""
    rng = random.Random(14)
    alphabet = "abcxyz_-0123é"
    for _ in range(300):
        base = rng.choice([0, 1, rng.randrange(2**32), rng.randrange(2**80)])
        names = [
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(20)))
            for _ in range(rng.randrange(5))
        ]
        words = [int.from_bytes(n.encode(), "little") for n in names]
        state = np.random.SeedSequence([base, *words]).generate_state(1, dtype=np.uint32)
        assert derived_seed(base, *names) == int(state[0] >> 1), (base, names)
