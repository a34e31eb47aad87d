"""Small helpers for the Snakemake script adapters in `scripts/` and for the Snakemake
controller (rules/common.smk): stdlib only, as the controller may have nothing but Snakemake."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from gmmpipe.errors import PipelineError


def log_to(path: str | Path) -> None:
    """Send stderr and the library's logging to the rule's log file; the pipeline's own errors
    (bad input, a full disk) end it with their one-line message instead of a traceback."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = open(path, "w")  # noqa: SIM115 - lives as long as the script
    sys.excepthook = report_error
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def report_error(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """An uncaught exception on stderr: one line for a :class:`PipelineError`, whose message
    says all a user needs, else the full traceback."""
    if isinstance(error, PipelineError):
        sys.stderr.write(f"{kind.__module__}.{kind.__qualname__}: {error}\n")
    else:
        traceback.print_exception(kind, error, tb, file=sys.stderr)


#: The last line of :func:`failed_diagnostics`: where the failures are explained.
GATE_HELP = "What a failed gate usually means, and what helps: docs/methods.md#the-diagnostics-gate"


def failed_diagnostics(
    paths: Iterable[str | Path], *, details: str = "", limit: int = 10, width: int = 200
) -> list[str]:
    """A few lines for the end of a run: every fit whose ``diagnostics.json`` (of `paths`, the
    target fits; missing files are skipped) did not pass, with the failures it lists, and
    :data:`GATE_HELP`.

    Empty when all passed. At most `limit` fits are named, each line cut at `width` characters.
    """
    failed, checked = [], 0
    for path in map(Path, paths):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        checked += 1
        if not report.get("passed", True):
            failures = "; ".join(report.get("failures") or ["failed"])
            failed.append(f"  {_fit_label(path)}: {failures}")
    if not failed:
        return []
    where = f" (see {details} and each fit's diagnostics.json)" if details else ""
    lines = [f"Diagnostics failed for {len(failed)} of {checked} fits{where}:"]
    lines += [line if len(line) <= width else line[: width - 3] + "..." for line in failed[:limit]]
    if len(failed) > limit:
        lines.append(f"  ... and {len(failed) - limit} more")
    return [*lines, GATE_HELP]


def _fit_label(path: Path) -> str:
    """results/fits/<dataset>/.../<method>/diagnostics.json -> <dataset>/.../<method>."""
    parts = path.parent.parts
    for i in range(len(parts) - 1):
        if parts[i : i + 2] == ("results", "fits"):
            return "/".join(parts[i + 2 :])
    return str(path.parent)


def git_state(path: str | Path) -> dict[str, Any]:
    """Commit, branch and whether the work tree has uncommitted changes (``{}`` outside git)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.CalledProcessError):
        return {}
