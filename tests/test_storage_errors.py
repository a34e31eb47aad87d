"""A full disk or a read-only results directory is said in one line naming the directory, and
leaves no partial output (issue 15). Real file systems where root allows: a tiny tmpfs, filled
or mounted read-only; otherwise the same paths are driven by an OSError of that kind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from workflow_helpers import make_workflow, output, small_config, snakemake, stray_temporaries

from gmmpipe.data import simulate_mixture
from gmmpipe.errors import FitError, StorageError
from gmmpipe.io import atomic_path, storage_problem, write_json
from gmmpipe.plots import save_figure


def _mount(target: Path, *options: str) -> str | None:
    """Mount a tmpfs at `target`; why it failed, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"mount -t tmpfs failed: {result.stderr.strip()}" if result.returncode else None


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount tmpfs file systems (``mount(path, "size=1m", read_only=False)``; needs root),
    unmounted at the end."""
    mounted: list[Path] = []

    def mount(target: Path, *options: str, read_only: bool = False) -> Path:
        problem = _mount(target, *options)
        if problem:
            pytest.skip(problem)
        mounted.append(target)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=True)


@pytest.fixture
def full_disk(tmp_path: Path, tmpfs: Callable[..., Path]) -> Path:
    """A 256 KiB tmpfs with all but a few bytes taken (needs root: mount)."""
    disk = tmpfs(tmp_path / "disk", "size=256k")
    with (disk / "filler").open("wb") as fh:
        try:
            fh.write(b"\0" * (1 << 20))
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return disk


@pytest.fixture
def read_only_disk(tmp_path: Path, tmpfs: Callable[..., Path]) -> Path:
    """An empty read-only tmpfs as the results directory (needs root: mount)."""
    return tmpfs(tmp_path / "results", "size=256k", read_only=True)


def _figure() -> plt.Figure:
    fig, ax = plt.subplots()
    ax.scatter(*np.random.default_rng(0).normal(size=(2, 2000)))
    return fig


def test_figure_on_a_full_disk(full_disk: Path) -> None:
    target = full_disk / "figures" / "data.png"
    with pytest.raises(StorageError) as err:
        save_figure(_figure(), target)
    assert str(err.value) == (
        f"cannot write {target}: no space left on device in {full_disk / 'figures'}"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not target.exists() and stray_temporaries(full_disk) == []


def test_json_on_a_full_disk(full_disk: Path) -> None:
    target = full_disk / "fit.json"
    with pytest.raises(StorageError, match=f"no space left on device in {full_disk}"):
        write_json(target, {"values": list(range(100_000))})
    assert not target.exists() and stray_temporaries(full_disk) == []
    assert storage_problem(full_disk) is not None
    assert storage_problem(full_disk).startswith(f"no space left on device in {full_disk} (")


def test_outputs_in_a_read_only_results_directory(read_only_disk: Path) -> None:
    for target in (read_only_disk / "x.json", read_only_disk / "fits" / "d" / "m" / "x.json"):
        with pytest.raises(StorageError) as err:
            write_json(target, {})
        assert str(err.value).startswith(f"cannot write {target}: read-only file system in ")
        assert str(read_only_disk) in str(err.value)
    assert storage_problem(read_only_disk) == f"read-only file system in {read_only_disk}"
    assert list(read_only_disk.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_storage_errors_inside_a_writer_are_one_line(tmp_path: Path, code: int) -> None:
    """Without root: the writer's OSError as the C library raises it."""
    target = tmp_path / "out" / "table.csv"
    with pytest.raises(StorageError) as err, atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise OSError(code, os.strerror(code))
    reason = os.strerror(code).lower()
    assert str(err.value) == f"cannot write {target}: {reason} in {tmp_path / 'out'}"
    assert list((tmp_path / "out").iterdir()) == []


def test_other_errors_inside_a_writer_are_kept(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x") as tmp:
        tmp.write_text("partial")
        (tmp_path / "absent").read_text()
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporaries_are_removed_by_the_next_writer(tmp_path):
    """kill -9 leaves ``.<name>.XXXXXXXX.tmp`` (a file or a folder); the next atomic write of the
    same output removes them, and nothing else."""
    stale = [tmp_path / ".fit.json.ab12cd34.tmp", tmp_path / ".fit.json.x_y9z0w1.tmp"]
    stale[0].write_text("partial")
    stale[1].mkdir()
    (stale[1] / "inner").write_text("partial")
    kept = [tmp_path / ".fit.json.short.tmp", tmp_path / ".other.json.ab12cd34.tmp",
            tmp_path / ".hidden", tmp_path / "fit.json.ab12cd34.tmp"]  # fmt: skip
    for path in kept:
        path.write_text("keep")
    with atomic_path(tmp_path / "fit.json") as tmp:
        tmp.write_text("{}")
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "keep" for path in kept)
    assert (tmp_path / "fit.json").read_text() == "{}"


def test_a_pipeline_error_ends_a_script_in_one_line(tmp_path: Path) -> None:
    """What a rule's log shows (scripts call gmmpipe.workflow.log_to first)."""
    log = tmp_path / "job.log"
    code = (
        "from gmmpipe.workflow import log_to\n"
        f"log_to({str(log)!r})\n"
        "from gmmpipe.io import write_json\n"
        "from gmmpipe.errors import StorageError\n"
        "def plot():\n"
        "    raise StorageError('cannot write a.png: no space left on device in results')\n"
        "plot()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 1
    assert log.read_text() == (
        "gmmpipe.errors.StorageError: cannot write a.png: no space left on device in results\n"
    )
    code = f"from gmmpipe.workflow import log_to\nlog_to({str(log)!r})\n1 / 0\n"
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert "Traceback" in log.read_text()  # a bug keeps its traceback
    assert log.read_text().endswith("ZeroDivisionError: division by zero\n")


@pytest.mark.cmdstan
def test_fit_on_a_full_disk_names_the_directory(full_disk: Path, gmm_exe: Path) -> None:
    from gmmpipe.fit import fit_dataset
    from gmmpipe.layout import fit_paths

    (full_disk / "filler").unlink()  # 256 KiB: room for the data, not for 4 chains' draws
    outputs = fit_paths(full_disk / "fits" / "nuts")
    data = simulate_mixture(50, [[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5], seed=1)
    with pytest.raises(FitError) as err:
        fit_dataset(
            gmm_exe,
            data,
            dataset_spec={"model": {"K": 2, "mu_sd": 2.0, "alpha": 1.0}},
            method_spec={
                "algorithm": "nuts",
                "chains": 4,
                "parallel_chains": 1,
                "threads_per_chain": 1,
                "iter_warmup": 200,
                "iter_sampling": 1000,
                "adapt_delta": 0.8,
                "max_treedepth": 10,
                "metric": "diag_e",
            },
            seed=1,
            thresholds={},
            outputs=outputs,
        )
    assert str(err.value).startswith(
        f"CmdStan nuts failed: no space left on device in {full_disk / 'fits' / 'nuts'} ("
    )
    assert [p for p in full_disk.rglob("*") if p.is_file()] == []


def _workflow_with_data(workdir: Path, rows: int) -> Path:
    config = small_config(datasets={"own": {"file": {"path": "data/own.csv"}, "model": {"K": 2}}})
    make_workflow(workdir, config)
    (workdir / "data").mkdir()
    y = np.random.default_rng(0).normal(size=(rows, 2))
    np.savetxt(workdir / "data" / "own.csv", y, delimiter=",", header="a,b", comments="")
    return workdir


@pytest.mark.workflow
def test_workflow_job_on_a_full_disk_says_so_in_one_line(
    tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    """results/ on a 1.5 MiB file system: room to start, not for the ingested 60 000 rows."""
    workdir = _workflow_with_data(tmp_path / "wf", 60_000)
    tmpfs(workdir / "results", "size=1536k")
    result = snakemake(workdir, "--cores", "1", "results/data/own.csv")
    assert result.returncode != 0
    log = (workdir / "logs" / "data" / "own.log").read_text()
    message = (
        "gmmpipe.errors.StorageError: cannot write results/data/own.csv: "
        "no space left on device in results/data\n"
    )
    assert log == message
    assert message.strip() in output(result)
    assert [p for p in (workdir / "results").rglob("*") if p.is_file()] == []


@pytest.mark.workflow
def test_workflow_on_a_read_only_results_directory_stops_before_any_job(
    tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    workdir = _workflow_with_data(tmp_path / "wf", 10)
    tmpfs(workdir / "results", "size=64k", read_only=True)
    result = snakemake(workdir, "--cores", "1", "results/data/own.csv")
    assert result.returncode != 0
    text = output(result)
    assert f"cannot write the results: read-only file system in {workdir / 'results'}" in text
    assert "Traceback" not in text
    assert not (workdir / "logs" / "data").exists()
