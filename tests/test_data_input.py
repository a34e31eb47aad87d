"""User data are read as written: no column is dropped, no row is taken for a header, and the
pipeline's own dataset files say which of their columns are coordinates (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gmmpipe.data import Dataset, load_dataset, read_dataset, simulate_mixture, write_dataset
from gmmpipe.errors import DataError


def test_user_column_named_z_is_a_coordinate(tmp_path: Path) -> None:
    path = tmp_path / "xyz.csv"
    path.write_text("x,y,z\n1,2,3\n4,5,6\n7,8,9\n")
    data = read_dataset(path, k=2)
    assert data.d == 3
    assert data.y[:, 2].tolist() == [3.0, 6.0, 9.0]
    assert data.z is None


def test_ingested_z_column_stays_a_coordinate_through_the_fit_reader(tmp_path: Path) -> None:
    """What scripts/ingest.py writes and scripts/fit.py reads: 3 coordinates, no truth."""
    path = tmp_path / "xyz.csv"
    path.write_text("x,y,z\n1,2,1\n4,5,2\n7,8,1\n")
    user = read_dataset(path, k=2)
    write_dataset(Dataset(y=user.y), tmp_path / "d.csv", tmp_path / "d.json")
    assert json.loads((tmp_path / "d.json").read_text())["assignments"] is None
    back = load_dataset(tmp_path / "d.csv", tmp_path / "d.json", k=2)
    assert back.d == 3 and back.z is None
    np.testing.assert_array_equal(back.y, user.y)


def test_simulated_assignments_are_read_from_the_column_the_json_names(tmp_path: Path) -> None:
    data = simulate_mixture(30, [[0.0], [5.0]], [0.5, 0.5], seed=2)
    write_dataset(data, tmp_path / "d.csv", tmp_path / "d.json")
    info = json.loads((tmp_path / "d.json").read_text())
    assert (info["coordinates"], info["assignments"]) == (["x1"], "z")
    back = load_dataset(tmp_path / "d.csv", tmp_path / "d.json", k=2)
    assert back.d == 1
    np.testing.assert_array_equal(back.z, data.z)


def test_json_coordinate_names_are_used_as_written(tmp_path: Path) -> None:
    """Whatever the coordinate columns are called (e.g. the user's names), the JSON decides."""
    pd.DataFrame({"z": [1.0, 2.0, 3.0], "height": [4.0, 5.0, 6.0]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    (tmp_path / "d.json").write_text(json.dumps({"coordinates": ["z", "height"]}))
    back = load_dataset(tmp_path / "d.csv", tmp_path / "d.json", k=2)
    assert back.y.tolist() == [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]
    assert back.z is None


def test_dataset_json_of_an_older_run_is_still_read(tmp_path: Path) -> None:
    """results/data/*.json written before the JSON named its columns: x1..xD plus our z."""
    (tmp_path / "d.csv").write_text("x1,x2,z\n0.5,1,1\n2,3,2\n")
    (tmp_path / "d.json").write_text(json.dumps({"generator": "mixture", "n": 2, "d": 2}))
    back = load_dataset(tmp_path / "d.csv", tmp_path / "d.json", k=2)
    assert back.y.tolist() == [[0.5, 1.0], [2.0, 3.0]]
    assert back.z.tolist() == [0, 1]


def test_header_false_reads_every_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=(400, 2))
    path = tmp_path / "plain.csv"
    np.savetxt(path, y, delimiter=",", fmt="%.17g")
    with pytest.raises(DataError, match=r"row 1: the header .* is all numbers"):
        read_dataset(path, k=2)
    data = read_dataset(path, k=2, header=False)
    assert data.n == 400
    np.testing.assert_array_equal(data.y, y)
    second = read_dataset(path, k=2, header=False, columns=["x2"])
    np.testing.assert_array_equal(second.y[:, 0], y[:, 1])


def test_header_false_names_rows_from_one(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("1,2\n3\n")
    with pytest.raises(DataError, match=r"row 2: 1 field, but row 1 has 2 columns"):
        read_dataset(path, k=1, header=False)
    path.write_text("1,2\n3,x\n")
    with pytest.raises(DataError, match=r"row 2, column 'x2': 'x' is not a finite number"):
        read_dataset(path, k=1, header=False)


def test_header_false_is_refused_for_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(path)
    with pytest.raises(DataError, match="'header: false' is for CSV files"):
        read_dataset(path, k=1, header=False)


def test_a_header_with_some_numeric_names_is_a_header(tmp_path: Path) -> None:
    path = tmp_path / "years.csv"
    path.write_text("site,2020,2021\n1,2,3\n4,5,6\n")
    assert read_dataset(path, k=2).y.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_a_column_selected_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x1,x2\n1,2\n3,4\n")
    with pytest.raises(DataError, match=r"columns \['x1', 'x1'\] name \['x1'\] more than once"):
        read_dataset(path, k=2, columns=["x1", "x1"])


@pytest.mark.parametrize("scale", [1e-100, 1e-3, 1e6, 1e100])
def test_large_and_small_but_representable_scales_are_read(tmp_path: Path, scale: float) -> None:
    path = tmp_path / "d.csv"
    y = np.array([[1.0, -2.0], [3.5, 4.0], [0.0, 1.0]]) * scale
    pd.DataFrame(y, columns=["a", "b"]).to_csv(path, index=False, float_format="%.17g")
    np.testing.assert_array_equal(read_dataset(path, k=2).y, y)
