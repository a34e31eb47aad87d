"""Shared fixtures; CmdStan-, SLURM- and browser-marked tests are skipped loudly when their
requirement is missing (the reason and the count are printed at the end of the run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import slurm_cluster

from gmmpipe.cmdstan import cmdstan_missing

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _slurm_missing() -> str | None:
    reason = slurm_cluster.unavailable_reason()
    return reason and f"a one-node SLURM test cluster {slurm_cluster.REQUIREMENT}: {reason}"


#: Per marker: why its tests cannot run here, or None when they can.
_REQUIREMENTS = {
    "cmdstan": cmdstan_missing,
    "browser": lambda: (
        None
        if shutil.which("chromium")
        else "Debian's chromium is not installed (apt-get install chromium)"
    ),
    "slurm": _slurm_missing,
}
_reasons: dict[str, str] = {}
_skipped: dict[str, int] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name, missing in _REQUIREMENTS.items():
            if item.get_closest_marker(name):
                if name not in _reasons:
                    _reasons[name] = missing() or ""
                if _reasons[name]:
                    item.add_marker(pytest.mark.skip(reason=f"[{name}] {_reasons[name]}"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the tests that did not run for a missing requirement (after -k and -m)."""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2].removeprefix("Skipped: ")
        for name in _REQUIREMENTS:
            if reason.startswith(f"[{name}] "):
                _skipped[name] = _skipped.get(name, 0) + 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    for name, count in _skipped.items():
        terminalreporter.write_sep("!", f"{count} {name} test(s) SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"Reason: {_reasons[name]}", red=True, bold=True)


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
