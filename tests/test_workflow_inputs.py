"""How the workflow takes a user's input (issue 15): a user's own config file replaces the
default one, a changed data file is ingested again even with its old mtime, `~` in a data path,
header-less files and a column named z. Needs no CmdStan (dry runs and the ingest step only)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import (
    copy_workflow,
    make_workflow,
    output,
    scheduled_outputs,
    scheduled_rules,
    small_config,
    snakemake,
)

MINE = """\
datasets:
  own:
    file: {path: data/own.csv}
    model: {K: 2}
methods:
  vi:
    algorithm: advi
    tol_rel_obj: 1e-4   # YAML 1.1 reads this as a string
sbc: {methods: []}
"""


@pytest.mark.workflow
def test_own_configfile_replaces_the_default_config(tmp_path: Path, root: Path) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    shutil.copyfile(root / "config" / "config.yaml", workdir / "config" / "config.yaml")
    (workdir / "data").mkdir()
    (workdir / "data" / "own.csv").write_text("a,b\n0,1\n1,0\n2,2\n")
    (workdir / "mine.yaml").write_text(MINE)
    result = snakemake(workdir, "-n", "--configfile", "mine.yaml")
    assert result.returncode == 0, output(result)
    rules = scheduled_rules(result)
    assert rules.get("ingest") == 1 and rules.get("variational") == 1, rules
    assert not {"simulate", "sample", "optimize", "pathfinder"} & set(rules), rules
    fits = {p for p in scheduled_outputs(result) if p.startswith("results/fits/")}
    assert {str(Path(p).parent) for p in fits} == {"results/fits/own/K2/vi"}
    assert "seed_large" not in output(result)
    # without --configfile the default config still applies, and --config still merges into it
    result = snakemake(workdir, "-n", "--config", "seed=5")
    assert result.returncode == 0, output(result)
    assert scheduled_rules(result)["simulate"] == 2


@pytest.fixture
def user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workflow copy whose user files are a header-less CSV under ~ and a file with z."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    y = np.random.default_rng(4).normal(size=(40, 3))
    np.savetxt(home / "plain.csv", y, delimiter=",", fmt="%.17g")
    workdir = tmp_path / "wf"
    (workdir / "data").mkdir(parents=True)
    pd.DataFrame(y, columns=["x", "y", "z"]).to_csv(workdir / "data" / "xyz.csv", index=False)
    config = small_config(
        datasets={
            "plain": {"file": {"path": "~/plain.csv", "header": False}, "model": {"K": 2}},
            "xyz": {"file": {"path": "data/xyz.csv"}, "model": {"K": 2}},
        }
    )
    return make_workflow(workdir, config)


TARGETS = ("results/data/plain.csv", "results/data/xyz.csv")


@pytest.mark.workflow
def test_user_files_are_ingested_whole_and_again_when_changed(
    user_data: Path, tmp_path: Path
) -> None:
    source = tmp_path / "home" / "plain.csv"
    result = snakemake(user_data, *TARGETS)
    assert result.returncode == 0, output(result)
    y = np.loadtxt(source, delimiter=",")
    # header-less columns are x1..xD; a file's own names (z included) carry through
    for name, columns in (("plain", ["x1", "x2", "x3"]), ("xyz", ["x", "y", "z"])):
        frame = pd.read_csv(user_data / "results" / "data" / f"{name}.csv")
        assert list(frame.columns) == columns  # z is a coordinate, no row lost
        np.testing.assert_array_equal(frame.to_numpy(), y)
        info = json.loads((user_data / "results" / "data" / f"{name}.json").read_text())
        assert info["coordinates"] == columns and info["assignments"] is None
    info = json.loads((user_data / "results" / "data" / "plain.json").read_text())
    assert info["path"] == str(source)  # ~ expanded
    result = snakemake(user_data, "-n", *TARGETS)
    assert result.returncode == 0 and scheduled_rules(result) == {}, output(result)
    # restored from an archive: other contents, same size and mtime
    before = os.stat(source)
    lines = source.read_text().splitlines()
    source.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(source).st_size == before.st_size
    result = snakemake(user_data, "-n", *TARGETS)
    assert result.returncode == 0, output(result)
    assert scheduled_rules(result) == {"ingest": 1}, output(result)
    assert "results/data/plain.csv" in scheduled_outputs(result)
    result = snakemake(user_data, *TARGETS)
    assert result.returncode == 0, output(result)
    first = pd.read_csv(user_data / "results" / "data" / "plain.csv").iloc[0].to_numpy()
    np.testing.assert_array_equal(first, np.array(lines[1].split(","), dtype=float))


@pytest.mark.workflow
def test_data_that_cannot_set_the_priors_fail_when_read(tmp_path: Path) -> None:
    """A constant column: the data-scale priors need its spread, so ingest fails (before any
    fit), naming the dataset and the column, and writes nothing."""
    config = small_config()
    config["datasets"]["own"] = {"file": {"path": "data/own.csv"}, "model": {"K": [1, 2]}}
    workdir = make_workflow(tmp_path / "wf", config)
    (workdir / "data").mkdir()
    (workdir / "data" / "own.csv").write_text("x,y\n0,1\n1,1\n2,1\n3,1\n")
    result = snakemake(workdir, "--cores", "1", "results/data/own.csv")
    assert result.returncode != 0
    assert "datasets.own: column 'y' of the data has no spread (sd 0)" in output(result)
    assert not (workdir / "results" / "data" / "own.csv").exists()
