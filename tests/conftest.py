"""Shared fixtures; CmdStan-, SLURM- and browser-marked tests are skipped loudly when their
requirement is missing (the reason and the count are printed at the end of the run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import slurm_cluster

from gmmpipe.cmdstan import INSTALL_HINT, cmdstan_available

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

_REQUIREMENTS = {
    "cmdstan": (cmdstan_available, "CmdStan not found. " + INSTALL_HINT),
    "browser": (
        lambda: shutil.which("chromium") is not None,
        "Debian's chromium is not installed (apt-get install chromium)",
    ),
    "slurm": (
        slurm_cluster.available,
        "a one-node SLURM test cluster " + slurm_cluster.REQUIREMENT,
    ),
}
_skipped: dict[str, int] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    available = {name: check() for name, (check, _) in _REQUIREMENTS.items()}
    for item in items:
        for name, (_, reason) in _REQUIREMENTS.items():
            if item.get_closest_marker(name) and not available[name]:
                item.add_marker(pytest.mark.skip(reason=f"[{name}] {reason}"))
                _skipped[name] = _skipped.get(name, 0) + 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    for name, count in _skipped.items():
        reason = _REQUIREMENTS[name][1]
        terminalreporter.write_sep("!", f"{count} {name} test(s) SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"Reason: {reason}", red=True, bold=True)


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """Recorded CmdStan outputs and other test data."""
    return FIXTURES


@pytest.fixture(scope="session")
def gmm_exe(request: pytest.FixtureRequest) -> Path:
    """stan/gmm.stan compiled once, cached across runs by the program's hash (needs CmdStan)."""
    import hashlib

    from gmmpipe.cmdstan import compile_model, find_cmdstan

    stan_file = ROOT / "stan" / "gmm.stan"
    key = hashlib.sha256(stan_file.read_bytes() + str(find_cmdstan()).encode()).hexdigest()[:16]
    exe = Path(request.config.cache.mkdir("gmm_exe")) / key / "gmm"
    if not exe.exists():
        compile_model(stan_file, exe)
    return exe
