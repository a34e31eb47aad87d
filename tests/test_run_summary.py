"""The end of a Snakemake run names, in a few lines, every target fit whose diagnostics failed
and the failed checks that its diagnostics.json lists (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_helpers import make_workflow, output, small_config, snakemake

from gmmpipe.layout import fit_dir
from gmmpipe.workflow import GATE_HELP, failed_diagnostics


def _write(path: Path, failures: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"algorithm": "nuts", "passed": not failures, "checks": [], "failures": failures}
    path.write_text(json.dumps(report))
    return path


def test_failed_fits_are_named_with_their_failures(tmp_path: Path) -> None:
    fits = tmp_path / "results" / "fits"
    paths = [
        _write(fits / "big" / "nuts" / "diagnostics.json", ["r_hat_max = 1e+16 (threshold 1.01)"]),
        _write(fits / "big" / "K3" / "advi" / "diagnostics.json", ["pareto_khat = 3 (0.7)", "x"]),
        _write(fits / "ok" / "nuts" / "diagnostics.json", []),
        fits / "never" / "nuts" / "diagnostics.json",  # not built: skipped
    ]
    lines = failed_diagnostics(paths, details="results/tables/diagnostics.html")
    assert lines == [
        "Diagnostics failed for 2 of 3 fits (see results/tables/diagnostics.html and each "
        "fit's diagnostics.json):",
        "  big/nuts: r_hat_max = 1e+16 (threshold 1.01)",
        "  big/K3/advi: pareto_khat = 3 (0.7); x",
        GATE_HELP,
    ]


def test_all_passed_says_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path / "results" / "fits" / "a" / "m" / "diagnostics.json", [])
    assert failed_diagnostics([path]) == []
    assert failed_diagnostics([]) == []


def test_many_failures_stay_a_few_lines(tmp_path: Path) -> None:
    paths = [
        _write(tmp_path / "results" / "fits" / f"d{i}" / "m" / "diagnostics.json", ["y" * 500])
        for i in range(25)
    ]
    lines = failed_diagnostics(paths, limit=10, width=100)
    assert len(lines) == 13
    assert lines[0].startswith("Diagnostics failed for 25 of 25 fits")
    assert lines[-2:] == ["  ... and 15 more", GATE_HELP]
    assert all(len(line) <= 100 for line in lines[1:])


@pytest.mark.workflow
def test_the_end_of_a_run_reports_failed_fits(tmp_path: Path) -> None:
    """The Snakefile's onsuccess handler, on a run that needs no CmdStan."""
    workdir = make_workflow(tmp_path / "wf", small_config())
    _write(
        workdir / fit_dir("tiny", 2, "map") / "diagnostics.json",
        ["converged = 0 (threshold 1)"],
    )
    result = snakemake(workdir, "results/data/tiny.csv")
    assert result.returncode == 0, output(result)
    text = output(result)
    assert "Diagnostics failed for 1 of 1 fits" in text
    assert "  tiny/K2/map: converged = 0 (threshold 1)" in text
