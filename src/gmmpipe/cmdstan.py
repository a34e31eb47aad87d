"""CmdStan discovery, versions and compilation (the one place that knows where CmdStan lives)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gmmpipe.errors import CmdStanNotFoundError, ConfigError
from gmmpipe.io import atomic_path

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "CmdStan was not found. Install it with conda (`conda env create -f environment.yml`, which "
    "brings conda-forge's cmdstan and sets CMDSTAN), or with `python -m cmdstanpy.install_cmdstan` "
    "(installs into ~/.cmdstan), or point the CMDSTAN environment variable at an existing CmdStan "
    "directory."
)


def find_cmdstan() -> Path:
    """Return the CmdStan directory: ``$CMDSTAN``, else the newest ``~/.cmdstan/cmdstan-*``.

    Raises
    ------
    CmdStanNotFoundError
        With one message saying how to install CmdStan.
    """
    from cmdstanpy.utils import cmdstan_path

    env = os.environ.get("CMDSTAN", "")
    if env and not Path(env, "makefile").is_file():
        raise CmdStanNotFoundError(f"CMDSTAN={env!r} is not a CmdStan directory. {INSTALL_HINT}")
    try:
        path = Path(cmdstan_path())
    except (ValueError, OSError):
        raise CmdStanNotFoundError(INSTALL_HINT) from None
    if not (path / "bin" / "stanc").exists() and not (path / "bin" / "stanc.exe").exists():
        raise CmdStanNotFoundError(
            f"{path} has no bin/stanc; it is not a built CmdStan. {INSTALL_HINT}"
        )
    return path


def cmdstan_missing() -> str | None:
    """Why :func:`find_cmdstan` finds no installation (its message), or None when it finds one."""
    try:
        find_cmdstan()
    except CmdStanNotFoundError as err:
        return str(err)
    return None


def cmdstan_version(path: Path) -> str:
    """The CmdStan version an installation's makefile declares ("unknown" if none)."""
    makefile = (path / "makefile").read_text()
    match = re.search(r"^CMDSTAN_VERSION\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    return match.group(1) if match else "unknown"


def cmdstan_versions(path: Path | None = None) -> dict[str, str]:
    """CmdStan and stanc versions of an installation, for provenance."""
    path = path or find_cmdstan()
    stanc = subprocess.run(
        [str(path / "bin" / "stanc"), "--version"], capture_output=True, text=True, check=False
    )
    return {
        "cmdstan": cmdstan_version(path),
        "stanc": stanc.stdout.strip() or stanc.stderr.strip(),
        "path": str(path),
    }


def user_header(stan_file: str | Path) -> Path:
    """The C++ user header of a Stan program: ``user_header.hpp`` beside it, as in CmdStan."""
    return Path(stan_file).with_name("user_header.hpp")


#: Flags that select an instruction set: code built with them is ABI-incompatible with a CmdStan
#: built without them (Eigen's alignment; the model aborts with "double free or corruption").
_ISA_FLAG = re.compile(r"-march=\S+|-m(?:avx|sse|fma|bmi|f16c)\S*")


def check_cpp_flags(cpp_flags: str, path: Path | None = None) -> None:
    """`cpp_flags` and CmdStan's own build must agree on instruction-set flags.

    CmdStan takes its build flags from ``make/local``. Non-empty `cpp_flags` go to make's
    command line, where they replace make/local's CXXFLAGS for the model, so both must name the
    same instruction-set flags (empty `cpp_flags` leave make/local's flags in force). A mismatch
    gives one error naming the flags, before anything is compiled.
    """
    if not cpp_flags:
        return
    local = (path or find_cmdstan()) / "make" / "local"
    text = local.read_text() if local.is_file() else ""
    built = set(_ISA_FLAG.findall("\n".join(line.split("#")[0] for line in text.splitlines())))
    given = set(_ISA_FLAG.findall(cpp_flags))
    where = f"config: 'compile.cpp_flags' = {cpp_flags!r}"
    if given - built:
        flags = " ".join(sorted(given - built))
        raise ConfigError(
            f"{where}: {flags} must also be in the flags CmdStan was built with, or the model "
            f"crashes. Add `CXXFLAGS += {flags}` to {local} and rebuild CmdStan "
            f"(make clean-all && make build), or remove the flag."
        )
    if built - given:
        flags = " ".join(sorted(built - given))
        raise ConfigError(
            f"{where}: CmdStan was built with {flags} ({local}); compile.cpp_flags replace those "
            f"flags for the model, which then crashes. Add {flags} to compile.cpp_flags."
        )


def make_variable(name: str, path: Path | None = None) -> str:
    """The value of CmdStan's make variable `name` (``make print-<name>``); "" if make fails."""
    out = subprocess.run(
        ["make", "-s", f"print-{name}"],
        cwd=path or find_cmdstan(),
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.partition("=")[2].strip() if out.returncode == 0 else ""


#: Included before the user header, so that g++ uses CmdStan's precompiled model header.
PRECOMPILED_FIRST = "-include stan/model/model_header.hpp"


def precompiled_header_options(path: Path) -> dict[str, str]:
    """Make options that let g++ use CmdStan's precompiled model header despite a user header.

    g++ uses a precompiled header only for the first file a translation unit includes, and
    CmdStan includes the user header first; naming the model header before it (CPPFLAGS come
    first on the command line) saves about 15 s per compile. CPPFLAGS given to make replace
    CmdStan's own, and g++ refuses the header unless the macros it was built with
    (``-DTBB_INTERFACE_NEW`` ...) are defined again, so they are kept. Other compilers are
    left alone.
    """
    if make_variable("CXX_TYPE", path) != "gcc":
        return {}
    return {"CPPFLAGS": f"{make_variable('CPPFLAGS', path)} {PRECOMPILED_FIRST}".strip()}


#: Prefix of the scratch directories :func:`compile_model` builds in, beside the executable.
BUILD_PREFIX = ".build-"


def remove_stale_builds(exe_file: str | Path) -> list[Path]:
    """Remove the scratch directories that a killed compile left beside `exe_file`.

    Snakemake runs one compile job per executable at a time, so any ``.build-*`` directory
    there belongs to an earlier, dead attempt.
    """
    stale = [p for p in Path(exe_file).parent.glob(f"{BUILD_PREFIX}*") if p.is_dir()]
    for build in stale:
        shutil.rmtree(build, ignore_errors=True)
        logger.info("removed %s, left by an interrupted compile", build)
    return stale


def compile_model(
    stan_file: str | Path,
    exe_file: str | Path,
    *,
    stan_threads: bool = False,
    cpp_flags: str = "",
) -> Path:
    """Compile `stan_file`, with its :func:`user_header`, into the executable `exe_file`.

    It is built in a scratch directory; the executable appears at `exe_file` only once
    compilation succeeded. Without `stan_threads` CmdStan links its prebuilt ``main.o`` and
    uses the precompiled header of ``make build``; with it, CmdStan first builds
    ``main_threads.o`` (about two minutes, once per CmdStan installation).
    """
    import cmdstanpy

    path = find_cmdstan()
    cmdstanpy.set_cmdstan_path(str(path))
    check_cpp_flags(cpp_flags, path)
    stan_file, exe_file = Path(stan_file), Path(exe_file)
    cpp_options: dict[str, Any] = precompiled_header_options(path)
    if stan_threads:
        cpp_options["STAN_THREADS"] = True
    if cpp_flags:
        cpp_options["CXXFLAGS"] = cpp_flags
    exe_file.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(exe_file)
    with tempfile.TemporaryDirectory(dir=exe_file.parent, prefix=BUILD_PREFIX) as build:
        src = Path(build) / stan_file.name
        shutil.copyfile(stan_file, src)
        header = shutil.copyfile(user_header(stan_file), user_header(src))
        model = cmdstanpy.CmdStanModel(stan_file=src, cpp_options=cpp_options, user_header=header)
        with atomic_path(exe_file) as tmp:
            shutil.copy2(model.exe_file, tmp)
    logger.info("compiled %s -> %s", stan_file, exe_file)
    return exe_file


def load_model(exe_file: str | Path) -> Any:
    """A :class:`cmdstanpy.CmdStanModel` for an executable built by :func:`compile_model`.

    An executable without the executable bit is run from a private copy that has it (removed
    with the model): Snakemake's between-workflow cache (``--cache``) links
    ``results/model/gmm`` to a cache entry it stores with read and write permissions only.
    """
    import cmdstanpy

    cmdstanpy.set_cmdstan_path(str(find_cmdstan()))
    exe, scratch = Path(exe_file), None
    if not os.access(exe, os.X_OK):
        scratch = Path(tempfile.mkdtemp(prefix="gmmpipe-model-"))
        exe = Path(shutil.copy(exe, scratch / exe.name))
        exe.chmod(0o755)
    model = cmdstanpy.CmdStanModel(exe_file=str(exe))
    if scratch is not None:
        weakref.finalize(model, shutil.rmtree, scratch, ignore_errors=True)
    return model


def threads_wanted(config: Mapping[str, Any]) -> list[str]:
    """The config keys that ask for threads within a chain (`reduce_sum`), as ``key = value``.

    Any method with ``threads_per_chain`` > 1 or any dataset model with ``grainsize`` > 0.
    """
    wanted = [
        f"methods.{name}.threads_per_chain = {spec['threads_per_chain']}"
        for name, spec in config.get("methods", {}).items()
        if spec.get("threads_per_chain", 1) > 1
    ]
    wanted += [
        f"datasets.{name}.model.grainsize = {spec['model']['grainsize']}"
        for name, spec in config.get("datasets", {}).items()
        if spec.get("model", {}).get("grainsize", 0) > 0
    ]
    return wanted


def compile_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The compile settings of a validated config, with ``stan_threads`` resolved to a bool.

    ``stan_threads: auto`` (the default) builds with STAN_THREADS only when the config asks for
    threads within a chain (:func:`threads_wanted`); chains then run as parallel processes
    of a non-threaded executable, which CmdStan builds from the objects of ``make build``.

    Raises
    ------
    ConfigError
        When ``stan_threads`` is false but the config asks for threads within a chain.
    """
    compile_cfg = config.get("compile", {})
    setting = compile_cfg.get("stan_threads", "auto")
    wanted = threads_wanted(config)
    if setting is False and wanted:
        raise ConfigError(
            f"config: 'compile.stan_threads' = False, but {wanted[0]} needs a model compiled "
            "with STAN_THREADS; set compile.stan_threads to auto (or true)"
        )
    return {
        "stan_threads": bool(wanted) if setting == "auto" else bool(setting),
        "cpp_flags": str(compile_cfg.get("cpp_flags", "")),
    }


def cmdstan_identity() -> dict[str, str | None]:
    """What identifies the CmdStan a compile uses: its version, path and ``make/local``.

    Part of the compile rule's params, so that pointing CMDSTAN at another installation
    recompiles (and keys the between-workflow cache). ``None`` values when no CmdStan is found
    here (e.g. a conda-forge CmdStan that only the job's environment provides, or no cmdstanpy
    in a controller that has nothing but Snakemake).
    """
    try:
        path = find_cmdstan().resolve()
    except (CmdStanNotFoundError, ImportError):
        return {"version": None, "path": None, "make_local": None}
    local = path / "make" / "local"
    return {
        "version": cmdstan_version(path),
        "path": str(path),
        "make_local": local.read_text() if local.is_file() else "",
    }
