"""Run the workflow in a throw-away copy: copy the workflow files into a temporary directory,
write a small config there, install a once-compiled Stan executable, and call `snakemake`.

The repository's own `results/` is never touched. The compiled model is cached across test
sessions under pytest's cache directory, keyed by the Stan program, the compile options and
the CmdStan installation, so the slow compile happens once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from gmmpipe.config import load_schema

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = (
    "Snakefile",
    "rules",
    "scripts",
    "stan",
    "report",
    "profiles",
    "environment.yml",
    "envs",
    "config/schema.yaml",
)
MODEL_FILES = ("gmm", "cmdstan.json")
SNAKEMAKE_TIMEOUT = 300


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow's files (not results, logs or .snakemake) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src, out = ROOT / name, dest / name
        if src.is_dir():
            shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
    return dest


def write_config(workdir: Path, config: Mapping[str, Any]) -> Path:
    """Write `config` as the workflow's config/config.yaml."""
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def snakemake(
    workdir: Path, *args: str, timeout: float = SNAKEMAKE_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``snakemake *args`` in `workdir` (its profiles/default applies) and capture output.

    Two cores unless `args` say otherwise.
    """
    return subprocess.run(
        snakemake_command(*args),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def snakemake_command(*args: str) -> list[str]:
    """The command line of a snakemake run (``--cores 2`` unless `args` set the cores)."""
    cores = [] if any(a in ("--cores", "-c") or a.startswith("-c") for a in args) else ["-c2"]
    return [sys.executable, "-m", "snakemake", *cores, *args]


def output(result: subprocess.CompletedProcess[str]) -> str:
    """Stdout and stderr of a finished snakemake run, for assertions and failure messages."""
    return f"{result.stdout}\n{result.stderr}"


def scheduled_outputs(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The output files of the jobs a dry run (``snakemake -n``) would run."""
    outputs: set[str] = set()
    for line in output(result).splitlines():
        stripped = line.strip()
        if stripped.startswith("output:"):
            outputs.update(p.strip() for p in stripped[len("output:") :].split(","))
    return outputs


def scheduled_rules(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Job counts per rule from a dry run's "Job stats" table (empty when nothing to do)."""
    counts: dict[str, int] = {}
    lines = output(result).splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _model_key() -> str:
    """Cache key of the compiled model: Stan program, default compile options, CmdStan."""
    from gmmpipe.cmdstan import find_cmdstan

    digest = hashlib.sha256()
    for path in sorted((ROOT / "stan").iterdir()):  # the program and its C++ header
        digest.update(path.read_bytes())
    digest.update((ROOT / "rules" / "model.smk").read_bytes())
    digest.update((ROOT / "scripts" / "compile.py").read_bytes())
    digest.update(str(find_cmdstan().resolve()).encode())
    return digest.hexdigest()[:16]


def compiled_model(cache: pytest.Cache, tmp_root: Path) -> Path:
    """A directory holding the compiled ``gmm`` and ``cmdstan.json``, compiling on a miss.

    The compile runs through the workflow's own `compile` rule (default compile options),
    so the executable is exactly what `snakemake` would build.
    """
    cached = cache.mkdir("gmmpipe-model") / _model_key()
    if all((cached / name).is_file() for name in MODEL_FILES):
        return cached
    build = copy_workflow(tmp_root / "compile")
    write_config(build, small_config())
    result = snakemake(build, "--cores", "2", "results/model/gmm", timeout=900)
    if result.returncode != 0:
        pytest.fail(f"compiling the Stan program failed:\n{output(result)}")
    partial = cached.with_name(cached.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(build / "results" / "model", partial)
    shutil.rmtree(cached, ignore_errors=True)
    partial.rename(cached)
    return cached


def install_model(workdir: Path, model_dir: Path) -> None:
    """Put the compiled model into `workdir` so that Snakemake sees it as up to date."""
    target = workdir / "results" / "model"
    target.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for stan in (workdir / "stan").iterdir():
        os.utime(stan, (now - 60, now - 60))
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, target / name)
        os.utime(target / name, (now, now))


def make_workflow(workdir: Path, config: Mapping[str, Any], model_dir: Path | None = None) -> Path:
    """A runnable workflow copy in `workdir` with `config` (and the model, when given)."""
    copy_workflow(workdir)
    write_config(workdir, config)
    if model_dir is not None:
        install_model(workdir, model_dir)
    return workdir


def small_config(**overrides: Any) -> dict[str, Any]:
    """A valid config with one tiny simulated dataset and a MAP method."""
    config: dict[str, Any] = {
        "seed": 11,
        "datasets": {
            "tiny": {
                "simulate": {
                    "generator": "mixture",
                    "n": 60,
                    "means": [[-2.0, 0.0], [2.0, 0.0]],
                    "weights": [0.5, 0.5],
                },
                "model": {"K": 2},
            }
        },
        "methods": {"map": {"algorithm": "optimize"}},
    }
    if "sbc" in load_schema()["properties"]:
        # SBC's default names methods `nuts` and `advi_meanfield`; these configs have neither
        config["sbc"] = {"methods": []}
    config.update(overrides)
    return config


def stray_temporaries(root: Path) -> list[Path]:
    """Files or directories that `gmmpipe.io.atomic_path` left behind (``.name.XXXX.tmp``)."""
    return sorted(p for p in root.rglob(".*.tmp") if ".snakemake" not in p.parts)


def files_under(root: Path, patterns: Sequence[str] = ("*",)) -> list[Path]:
    """Every regular file under `root` matching any of `patterns`."""
    return sorted({p for pat in patterns for p in root.rglob(pat) if p.is_file()})
