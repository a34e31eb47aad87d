"""The compile step without CmdStan: STAN_THREADS only when the config asks for threads, the
CmdStan in use triggers a recompile, and a killed compile's scratch directory is removed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from workflow_helpers import make_workflow, output, small_config, snakemake_command

from gmmpipe.cmdstan import (
    cmdstan_identity,
    compile_model,
    compile_options,
    remove_stale_builds,
    threads_wanted,
)
from gmmpipe.config import validate_config
from gmmpipe.errors import ConfigError


def _config(stan_threads=None, threads_per_chain=1, grainsize=0):
    config = small_config()
    config["methods"]["nuts"] = {"algorithm": "nuts", "threads_per_chain": threads_per_chain}
    config["datasets"]["tiny"]["model"]["grainsize"] = grainsize
    if stan_threads is not None:
        config["compile"] = {"stan_threads": stan_threads}
    return validate_config(config)


@pytest.mark.parametrize(
    "stan_threads,threads_per_chain,grainsize,expected",
    [
        (None, 1, 0, False),  # the default config: chains as processes, no STAN_THREADS
        ("auto", 2, 0, True),
        ("auto", 1, 50, True),
        (True, 1, 0, True),  # forced
        (False, 1, 0, False),
    ],
)
def test_stan_threads_only_when_the_config_asks_for_threads(
    stan_threads, threads_per_chain, grainsize, expected
):
    config = _config(stan_threads, threads_per_chain, grainsize)
    assert config["compile"]["stan_threads"] == (
        stan_threads if stan_threads is not None else "auto"
    )
    assert compile_options(config) == {"stan_threads": expected, "cpp_flags": ""}


def test_threads_wanted_names_the_keys():
    assert threads_wanted(_config(threads_per_chain=4, grainsize=7)) == [
        "methods.nuts.threads_per_chain = 4",
        "datasets.tiny.model.grainsize = 7",
    ]


def test_stan_threads_false_with_threads_asked_for_is_one_clear_error():
    with pytest.raises(ConfigError) as err:
        compile_options(_config(False, threads_per_chain=2))
    assert str(err.value) == (
        "config: 'compile.stan_threads' = False, but methods.nuts.threads_per_chain = 2 needs a "
        "model compiled with STAN_THREADS; set compile.stan_threads to auto (or true)"
    )


def test_the_workflow_refuses_stan_threads_false_with_threads_before_any_job(tmp_path):
    config = small_config(compile={"stan_threads": False})
    config["methods"]["map"] = {"algorithm": "nuts", "threads_per_chain": 2}
    work = make_workflow(tmp_path / "wf", config)
    done = subprocess.run(
        snakemake_command("-n"), cwd=work, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "config: 'compile.stan_threads' = False, but methods.map.threads_per_chain = 2" in (
        output(done)
    )
    assert not (work / "results").exists()


def fake_cmdstan(path: Path, version: str) -> Path:
    """A directory that passes for a CmdStan installation (makefile, bin/stanc) but builds
    nothing."""
    (path / "bin").mkdir(parents=True)
    (path / "makefile").write_text(f"CMDSTAN_VERSION := {version}\n")
    stanc = path / "bin" / "stanc"
    stanc.write_text(f"#!/bin/sh\necho stanc3 v{version}\n")
    stanc.chmod(0o755)
    return path


def test_cmdstan_identity_is_version_path_and_make_local(tmp_path, monkeypatch):
    cmdstan = fake_cmdstan(tmp_path / "cmdstan", "2.35.0")
    (cmdstan / "make").mkdir()
    (cmdstan / "make" / "local").write_text("CXXFLAGS += -O3\n")
    monkeypatch.setenv("CMDSTAN", str(cmdstan))
    assert cmdstan_identity() == {
        "version": "2.35.0",
        "path": str(cmdstan.resolve()),
        "make_local": "CXXFLAGS += -O3\n",
    }
    monkeypatch.setenv("CMDSTAN", str(tmp_path / "nowhere"))
    assert cmdstan_identity() == {"version": None, "path": None, "make_local": None}


@pytest.mark.workflow
def test_switching_cmdstan_recompiles(tmp_path):
    """Issue 15 (5): the CmdStan a compile used is part of the compile's params, a rerun trigger."""
    work = make_workflow(tmp_path / "wf", small_config())
    model = work / "results" / "model"
    model.mkdir(parents=True)
    (model / "gmm").write_text("built by 2.35.0")
    (model / "cmdstan.json").write_text(json.dumps({"cmdstan": "2.35.0"}))
    later = time.time() + 5
    for name in ("gmm", "cmdstan.json"):
        os.utime(model / name, (later, later))
    old = fake_cmdstan(tmp_path / "cmdstan-2.35.0", "2.35.0")
    new = fake_cmdstan(tmp_path / "cmdstan-2.36.0", "2.36.0")

    def run(cmdstan: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, CMDSTAN=str(cmdstan))
        done = subprocess.run(
            snakemake_command(*args, "results/model/gmm"),
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, output(done)
        return done

    run(old, "--touch", "-f")  # records the compile's metadata as if 2.35.0 had built it
    assert "Nothing to be done" in output(run(old, "-n"))
    switched = output(run(new, "-n"))
    assert "reason: Params have changed since last execution" in switched
    assert "now: {'version': '2.36.0'" in switched


def test_a_killed_compiles_scratch_directory_is_removed(tmp_path):
    model = tmp_path / "results" / "model"
    stale = model / ".build-k1ll3d0"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "gmm.o").write_text("half an object file")
    keep = model / "build-notes"
    keep.mkdir()
    assert remove_stale_builds(model / "gmm") == [stale]
    assert not stale.exists() and keep.is_dir()


def test_compile_removes_stale_scratch_before_it_builds(tmp_path, monkeypatch):
    """Issue 15 (11): the next compile clears `.build-*` even when it fails itself, and leaves
    none of its own."""
    monkeypatch.setenv("CMDSTAN", str(fake_cmdstan(tmp_path / "cmdstan", "2.35.0")))
    stan = tmp_path / "stan"
    stan.mkdir()
    (stan / "gmm.stan").write_text("parameters { real x; } model { x ~ std_normal(); }\n")
    (stan / "user_header.hpp").write_text("// header\n")
    model = tmp_path / "results" / "model"
    (model / ".build-k1ll3d0").mkdir(parents=True)
    with pytest.raises(ValueError):  # the fake CmdStan's stanc answers nothing cmdstanpy reads
        compile_model(stan / "gmm.stan", model / "gmm")
    assert list(model.iterdir()) == []


@pytest.mark.cmdstan
def test_an_executable_from_the_output_cache_runs(gmm_exe, tmp_path):
    """Snakemake's --cache stores the executable without the executable bit (and links
    results/model/gmm to it): load_model runs a private executable copy, removed with it."""
    import gc
    import shutil

    from gmmpipe.cmdstan import load_model

    cached = tmp_path / "cache-entry_exe"
    shutil.copyfile(gmm_exe, cached)
    cached.chmod(0o644)
    model = load_model(cached)
    copy = Path(model.exe_file)
    assert copy != cached and os.access(copy, os.X_OK)
    assert model.exe_info()["STAN_THREADS"].lower() == "false"  # the default config's build
    del model
    gc.collect()
    assert not copy.parent.exists()


@pytest.mark.cmdstan
def test_the_model_compile_uses_cmdstans_precompiled_header():
    """The flags compile_model gives make let g++ load the precompiled model header of
    `make build` (g++ -H marks a header it used with "!", one it refused with "x")."""
    import shlex

    from gmmpipe.cmdstan import find_cmdstan, make_variable, precompiled_header_options

    cmdstan = find_cmdstan()
    if make_variable("CXX_TYPE", cmdstan) != "gcc":
        pytest.skip("the precompiled header is used by g++ builds only")
    headers = cmdstan / "stan" / "src" / "stan" / "model" / "model_header.hpp.gch"
    if not any(p.name.startswith("model_header_") and "threads" not in p.name
               for p in headers.glob("*.gch")):  # fmt: skip
        pytest.skip(f"{cmdstan} has no precompiled model header (make build makes one)")
    flags = precompiled_header_options(cmdstan)["CPPFLAGS"]
    command = [
        *shlex.split(make_variable("CXX", cmdstan)),
        *shlex.split(make_variable("CXXFLAGS", cmdstan)),
        *shlex.split(flags),
        "-Winvalid-pch", "-H", "-fsyntax-only", "-x", "c++", os.devnull,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=cmdstan, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^! \S+model_header\S*\.gch$", done.stderr, re.M), done.stderr[:2000]
