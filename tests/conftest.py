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
    "cmdstan": (cmdstan_available, INSTALL_HINT),
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
def gmm_exe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stan/gmm.stan compiled once by the workflow's own compile rule, cached across runs
    (the same executable the workflow tests install; needs CmdStan)."""
    from workflow_helpers import compiled_model

    return compiled_model(request.config.cache, tmp_path_factory.mktemp("model")) / "gmm"
