"""Bad user data files give one clear error naming the file (and row/column), through the
library and through the workflow, and never leave a half-written dataset behind."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from workflow_helpers import make_workflow, output, small_config, snakemake, stray_temporaries

from gmmpipe.config import validate_config
from gmmpipe.data import read_dataset
from gmmpipe.errors import ConfigError, DataError

# name -> (file content, columns, message); row numbers are the file's line numbers
BAD_FILES: dict[str, tuple[bytes, list[str], str]] = {
    "nan": (b"x1,x2\n1,2\n3,4\nnan,3\n", [], "row 4, column 'x1': 'nan' is not a finite number"),
    "inf": (b"x1,x2\n1,2\n3,-inf\n4,5\n", [], "row 3, column 'x2': '-inf' is not a finite"),
    "overflow": (b"x1,x2\n1,2\n3,1e999\n4,5\n", [], "row 3, column 'x2': '1e999' is not a"),
    "text": (b"x1,x2\n1,2\n3,abc\n4,5\n", [], "row 3, column 'x2': 'abc' is not a finite"),
    "empty_cell": (b"x1,x2\n1,2\n3,\n4,5\n", [], "row 3, column 'x2': empty cell"),
    "id_column": (
        b"id,x\nS1,2\nS2,4\n",
        [],
        "row 2, column 'id': 'S1' is not a finite number; to fit only some columns, list them "
        "in the dataset's file.columns",
    ),
    "extra_field": (b"x1,x2\n1,2\n3,4,5\n6,7\n", [], "row 3: 3 fields, but the header has 2"),
    "short_row": (b"x1,x2\n1,2\n3,4\n6\n", [], "row 4: 1 field, but the header has 2"),
    "blank_line": (b"x1,x2\n1,2\n\n3,x\n4,5\n", [], "row 4, column 'x2': 'x' is not a"),
    "no_rows": (b"", [], "the file is empty"),
    "header_only": (b"x1,x2\n", [], "header only, no data rows"),
    "fewer_than_k": (b"x1,x2\n1,2\n", [], "1 row, fewer than the K = 2 mixture components"),
    "no_such_column": (b"a,b\n1,2\n3,4\n", ["a", "c"], "columns ['c'] not found"),
    "twice": (b"x1,x1\n1,2\n3,4\n", [], "row 1: column name 'x1' appears twice"),
    "binary": (b"x1,x2\n1,2\n\xff\xfe,3\n", [], "not a UTF-8 text file"),
    "gzip": (b"\x1f\x8b\x08\x00", [], "a gzip-compressed file (decompress it first), not a CSV"),
    "utf16": ("x1,x2\n1,2\n".encode("utf-16"), [], "UTF-16 text (Excel's 'Unicode text')"),
    "semicolons": (b"x1;x2\n1;2\n3;4\n", [], "the file seems to be separated by semicolons"),
    "row_names": (b'"","x","y"\n"1",0.5,1.2\n"2",0.7,1.9\n', [], "empty column name (a row-name"),
    "comment": (b"# exported\nx,y\n1,2\n3,4\n", [], "'# exported' looks like a comment line"),
    "huge": (b"x1,x2\n1,2\n3,-1e200\n", [], "row 3, column 'x2': -1e+200 is too large"),
    "tiny": (b"x1,x2\n1,1e-200\n3,-3e-180\n", [], "column 'x2': every value is below 1e-150"),
    "offset": (
        b"x1,x2\n1,1e16\n2,10000000000000002\n",
        [],
        "column 'x2': the values span only 2 at magnitude 1e+16",
    ),
    "no_header": (
        b"0.5,1\n-2,3e-2\n4,5\n",
        [],
        "row 1: the header ['0.5', '1'] is all numbers, so the file seems to have no header row",
    ),
}


#: Bad files that the config check already refuses, before any job (gmmpipe.config reads a CSV
#: file's header for `file.columns`); the others fail their ingest job.
AT_CONFIG_TIME = {"no_such_column"}
INGESTED = [name for name in BAD_FILES if name not in AT_CONFIG_TIME]


def _write(directory: Path, name: str) -> Path:
    path = directory / f"{name}.csv"
    path.write_bytes(BAD_FILES[name][0])
    return path


@pytest.mark.parametrize("name", BAD_FILES)
def test_read_dataset_names_file_row_and_column(tmp_path: Path, name: str) -> None:
    _, columns, message = BAD_FILES[name]
    path = _write(tmp_path, name)
    with pytest.raises(DataError) as err:
        read_dataset(path, k=2, columns=columns)
    text = str(err.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_a_column_missing_from_the_header_fails_the_config_check(tmp_path: Path) -> None:
    """`file.columns` with a typo is refused before any job runs (the compile would start beside
    a failing ingest job); a header the check cannot read plainly is left to the ingest job."""
    (tmp_path / "data").mkdir()
    path = _write(tmp_path / "data", "no_such_column")
    (tmp_path / "data" / "semi.csv").write_bytes(b"a;b\n1;2\n3;4\n")
    config = small_config(datasets={"d": {"file": {"path": str(path), "columns": ["a", "c"]},
                                          "model": {"K": 2}}})  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape(
        "config: 'datasets.d.file.columns' = ['a', 'c']: ['c'] not in the header of "
    )):  # fmt: skip
        validate_config(config, base_dir=tmp_path)
    config["datasets"]["d"]["file"]["path"] = "data/semi.csv"  # one field: ingest explains
    validate_config(config, base_dir=tmp_path)
    (tmp_path / "data" / "plain.csv").write_bytes(b"1.5,2.5\n3,4\n")  # no header row: ingest
    config["datasets"]["d"]["file"] = {"path": "data/plain.csv", "columns": ["x1", "x2"]}
    validate_config(config, base_dir=tmp_path)  # ... says to set header: false
    config["datasets"]["d"]["file"] = {"path": str(path), "columns": ["a"], "id_column": "id"}
    with pytest.raises(ConfigError, match=re.escape(
        "config: 'datasets.d.file.id_column' = 'id': ['id'] not in the header of "
    )):  # fmt: skip
        validate_config(config, base_dir=tmp_path)
    config["datasets"]["d"]["file"]["id_column"] = "a"
    with pytest.raises(
        ConfigError, match=re.escape("'datasets.d.file.id_column' = 'a' is also in")
    ):
        validate_config(config, base_dir=tmp_path)


def test_unused_columns_may_be_unnamed_or_repeated(tmp_path: Path) -> None:
    """R's write.csv row names and a repeated note column, neither of them used."""
    path = tmp_path / "export.csv"
    path.write_bytes(b'"","x","y","note","note"\n"1",0.5,1.2,a,b\n"2",0.7,1.9,c,d\n')
    data = read_dataset(path, k=2, columns=["x", "y"])
    assert data.columns == ("x", "y") and data.y.tolist() == [[0.5, 1.2], [0.7, 1.9]]


def test_read_dataset_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.csv'}: data file not found"):
        read_dataset(tmp_path / "nope.csv", k=2)
    with pytest.raises(DataError, match="is a directory"):
        read_dataset(tmp_path, k=2)


def test_read_dataset_accepts_quotes_spaces_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_bytes(b'\xef\xbb\xbf"x1", x2\n" 1.5",2\n\n3,4e-1\n')
    data = read_dataset(path, k=2)
    assert data.y.tolist() == [[1.5, 2.0], [3.0, 0.4]]


def _config(workdir: Path) -> dict[str, Any]:
    datasets: dict[str, Any] = {
        f"bad_{name}": {
            "file": {"path": f"data/{name}.csv", "columns": BAD_FILES[name][1]},
            "model": {"K": 2},
        }
        for name in INGESTED
    }
    datasets["good"] = {"file": {"path": "data/good.csv"}, "model": {"K": 2}}
    return small_config(seed=3, datasets=datasets)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One workflow run that ingests every bad file (and a good one), keeping going."""
    workdir = tmp_path_factory.mktemp("ingest")
    (workdir / "data").mkdir()
    for name in INGESTED:
        _write(workdir / "data", name)
    (workdir / "data" / "good.csv").write_text("x1,x2\n1,2\n3,4\n5,6\n")
    config = _config(workdir)
    make_workflow(workdir, config)
    targets = [f"results/data/{name}.csv" for name in config["datasets"]]
    result = snakemake(workdir, "--cores", "2", "--keep-going", *targets)
    assert result.returncode != 0
    return workdir, output(result)


@pytest.mark.workflow
@pytest.mark.parametrize("name", INGESTED)
def test_workflow_bad_file_fails_cleanly(ingested: tuple[Path, str], name: str) -> None:
    workdir, text = ingested
    log = (workdir / "logs" / "data" / f"bad_{name}.log").read_text()
    message = f"DataError: data/{name}.csv: "
    assert message in log
    assert BAD_FILES[name][2] in log.split(message, 1)[1]
    assert f"logs/data/bad_{name}.log" in text  # snakemake points at the log
    assert f"data/{name}.csv: " in text  # and shows the failed log's message
    assert not (workdir / "results" / "data" / f"bad_{name}.csv").exists()
    assert not (workdir / "results" / "data" / f"bad_{name}.json").exists()
    assert stray_temporaries(workdir / "results") == []


@pytest.mark.workflow
def test_workflow_good_file_is_ingested(ingested: tuple[Path, str]) -> None:
    workdir, _ = ingested
    assert (workdir / "results" / "data" / "good.csv").read_text().startswith("x1,x2\n1")


@pytest.mark.workflow
def test_workflow_missing_file_fails_before_any_job(tmp_path: Path) -> None:
    config = small_config(
        datasets={"mine": {"file": {"path": "data/absent.csv"}, "model": {"K": 2}}}
    )
    workdir = make_workflow(tmp_path / "wf", config)
    result = snakemake(workdir, "--cores", "1", "results/data/mine.csv")
    assert result.returncode != 0
    text = output(result)
    assert "config: 'datasets.mine.file.path' = 'data/absent.csv': data file not found" in text
    assert str(workdir / "data" / "absent.csv") in text
    assert not (workdir / "results").exists()


def test_an_id_column_must_exist_and_not_be_a_coordinate(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_bytes(b"id,x,y\nA,1,2\nB,3,4\n")
    with pytest.raises(DataError, match=r"id column 'name' not found \(has \['id', 'x', 'y'\]\)"):
        read_dataset(path, k=2, id_column="name")
    with pytest.raises(DataError, match="id column 'x' is also one of the columns"):
        read_dataset(path, k=2, columns=["x", "y"], id_column="x")
    data = read_dataset(path, k=2, columns=["y"], id_column="id")
    assert data.names == ["y"] and data.ids.tolist() == ["A", "B"]


@pytest.mark.parametrize("name", ["point", "label", "entropy", "p2", "p1_q95"])
def test_columns_may_not_take_a_membership_column_name(tmp_path: Path, name: str) -> None:
    """membership.csv writes point, label, entropy and p{k}...: a coordinate or id of that name
    would be overwritten (or crash the job), so the file's column is refused, naming it."""
    path = tmp_path / "named.csv"
    path.write_text(f"{name},x,y\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=f"column '{name}' has a name membership.csv gives"):
        read_dataset(path, k=2)
    with pytest.raises(DataError, match=f"column '{name}' has a name membership.csv gives"):
        read_dataset(path, k=2, columns=["x", "y"], id_column=name)
    config = small_config(datasets={"d": {"file": {"path": str(path), "id_column": name},
                                          "model": {"K": 2}}})  # fmt: skip
    with pytest.raises(ConfigError, match=f"'datasets.d.file.id_column' names '{name}'"):
        validate_config(config, base_dir=tmp_path)


def test_parquet_integer_ids_with_a_missing_value_stay_integers(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "ids.parquet"
    table = pa.table({"sid": pa.array([101, None, 103], pa.int64()), "x": [1.0, 2.5, 4.0]})
    pq.write_table(table, path)
    assert read_dataset(path, k=2, id_column="sid").ids.tolist() == ["101", "", "103"]
    with pytest.raises(DataError, match="row 3, column 'sid': empty cell"):
        read_dataset(path, k=2, columns=["sid", "x"])
    floats = tmp_path / "floats.parquet"  # a missing value and a NaN stay apart
    pq.write_table(pa.table({"a": [1.0, None, 2.0], "b": [1.0, 2.0, float("nan")]}), floats)
    with pytest.raises(DataError, match="row 3, column 'a': empty cell"):
        read_dataset(floats, k=2)
    with pytest.raises(DataError, match="row 4, column 'b': 'nan' is not a finite number"):
        read_dataset(floats, k=2, columns=["b"])
