"""Datasets: the seed notebook's exact simulation, general mixtures, and validated reading."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gmmpipe.errors import DataError
from gmmpipe.io import read_json, write_csv, write_json
from gmmpipe.layout import MEMBERSHIP_NAMES, PARQUET_SUFFIXES, is_number
from gmmpipe.priors import resolve_priors

logger = logging.getLogger(__name__)

SEED_MEANS = np.array([[-1.0, -1.5], [1.0, 1.0]])
SEED_WEIGHTS = np.array([0.2, 0.8])


@dataclass(frozen=True)
class Dataset:
    """Observations `y` (N x D) with, for simulated data, true assignments and parameters."""

    y: np.ndarray
    z: np.ndarray | None = None
    truth: dict[str, Any] = field(default_factory=dict)
    columns: tuple[str, ...] = ()  # the coordinates' names; empty: x1..xD
    ids: np.ndarray | None = None  # each row's name from the file's id column (text)
    id_column: str | None = None  # that column's name

    @property
    def names(self) -> list[str]:
        """The coordinates' names: the file's column names, or x1..xD for simulated data."""
        return list(self.columns) if self.columns else coordinate_names(self.d)

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def d(self) -> int:
        return int(self.y.shape[1])


def _notebook_draw(
    rng: np.random.RandomState, n: int, means: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One draw exactly as the notebook makes it (same calls, same order, same masking)."""
    zs = np.array([rng.multinomial(1, weights) for _ in range(n)]).T
    xs = [
        z[:, np.newaxis] * rng.multivariate_normal(m, np.eye(means.shape[1]), size=n)
        for z, m in zip(zs, means, strict=True)
    ]
    return np.sum(np.dstack(xs), axis=2), zs.argmax(axis=0)


def simulate_seed_notebook(n: int, *, seed: int = 123, drawn_before: Sequence[int] = ()) -> Dataset:
    """Reproduce the PyMC3 notebook's data bit for bit.

    The notebook draws every dataset from one ``np.random.RandomState(seed)`` stream, so the
    datasets drawn earlier (sizes `drawn_before`) are drawn first and discarded.
    """
    rng = np.random.RandomState(seed)
    for earlier in drawn_before:
        _notebook_draw(rng, earlier, SEED_MEANS, SEED_WEIGHTS)
    y, z = _notebook_draw(rng, n, SEED_MEANS, SEED_WEIGHTS)
    truth = {
        "generator": "seed_notebook",
        "seed": seed,
        "drawn_before": list(drawn_before),
        "n": n,
        "mu": SEED_MEANS.tolist(),
        "theta": SEED_WEIGHTS.tolist(),
        "sigma": [np.eye(2).tolist()] * 2,
    }
    return Dataset(y=y, z=z, truth=truth)


def simulate_mixture(
    n: int,
    means: Sequence[Sequence[float]],
    weights: Sequence[float],
    *,
    covariances: Sequence[Sequence[Sequence[float]]] | None = None,
    seed: int = 1,
) -> Dataset:
    """Draw `n` points from a K-component D-dimensional Gaussian mixture."""
    mu = np.asarray(means, dtype=float)
    theta = np.asarray(weights, dtype=float)
    k, d = mu.shape
    sigma = (
        np.asarray(covariances, dtype=float)
        if covariances is not None
        else np.tile(np.eye(d), (k, 1, 1))
    )
    rng = np.random.default_rng(seed)
    z = rng.choice(k, size=n, p=theta)
    chol = np.linalg.cholesky(sigma)
    y = mu[z] + np.einsum("nij,nj->ni", chol[z], rng.standard_normal((n, d)))
    truth = {
        "generator": "mixture",
        "seed": seed,
        "n": n,
        "mu": mu.tolist(),
        "theta": theta.tolist(),
        "sigma": sigma.tolist(),
    }
    return Dataset(y=y, z=z, truth=truth)


def simulate(spec: Mapping[str, Any]) -> Dataset:
    """Simulate from a validated `datasets.<name>.simulate` config entry."""
    if spec["generator"] == "seed_notebook":
        return simulate_seed_notebook(
            spec["n"], seed=spec.get("seed", 123), drawn_before=spec.get("drawn_before", ())
        )
    return simulate_mixture(
        spec["n"],
        spec["means"],
        spec["weights"],
        covariances=spec.get("covariances"),
        seed=spec.get("seed", 1),
    )


def coordinate_names(d: int) -> list[str]:
    """Column names of the coordinates: x1 .. xD."""
    return [f"x{i + 1}" for i in range(d)]


#: The column of the true component (1..K) in the pipeline's own dataset files, written for
#: simulated data only; the dataset's JSON names it, so a user's column is never mistaken for it.
ASSIGNMENT_COLUMN = "z"


def working_scale(y: np.ndarray, covariance: str) -> tuple[np.ndarray, np.ndarray]:
    """The column means m and the means' units u that stan/gmm.stan's transformed data computes
    (it samples the means as (mu - m) / u): the column sds (1 for a constant column), and 1
    for the identity covariance, whose components' sds are 1."""
    sd = y.std(axis=0, ddof=1) if len(y) > 1 else np.zeros(y.shape[1])
    unit = np.where(sd > 0, sd, 1.0) if covariance != "identity" else np.ones(y.shape[1])
    return y.mean(axis=0), unit


def write_dataset(dataset: Dataset, csv_path: str | Path, json_path: str | Path) -> None:
    """Write the observations (columns named as the dataset's coordinates, plus z when known,
    and the rows' ids first when the file has an id column) and the dataset's JSON.

    The JSON lists the coordinate columns (``coordinates``), the true-assignment column
    (``assignments``, null when unknown) and, when there are ids, their column
    (``id_column``), which :func:`load_dataset` reads back.
    """
    names = dataset.names
    frame = pd.DataFrame(dataset.y, columns=names)
    if dataset.ids is not None:
        frame.insert(0, dataset.id_column, dataset.ids)
    assignments = None
    if dataset.z is not None:
        assignments = ASSIGNMENT_COLUMN
        frame[assignments] = dataset.z + 1
    write_csv(csv_path, frame, float_format="%.17g")
    write_json(
        json_path,
        {
            **dataset.truth,
            "n": dataset.n,
            "d": dataset.d,
            "coordinates": names,
            "assignments": assignments,
            **({"id_column": dataset.id_column} if dataset.ids is not None else {}),
        },
    )


def load_dataset(csv_path: str | Path, json_path: str | Path | None, *, k: int = 1) -> Dataset:
    """Read a dataset the pipeline wrote (:func:`write_dataset`): the coordinates and the
    true assignments are the columns its JSON names, whatever the columns are called.

    Without a JSON, or with one written before the JSON named its columns, every column but
    z is a coordinate and z, when present, holds the assignments."""
    info = read_json(json_path) if json_path is not None else {}
    if "coordinates" in info:
        columns, assignments = info["coordinates"], info.get("assignments")
    else:
        header = pd.read_csv(csv_path, nrows=0).columns
        columns = [c for c in header if c != ASSIGNMENT_COLUMN]
        assignments = ASSIGNMENT_COLUMN if ASSIGNMENT_COLUMN in header else None
    return read_dataset(
        csv_path, k=k, columns=columns, assignments=assignments, id_column=info.get("id_column")
    )


#: Leading bytes of files that are not CSV text, and what they are.
_NOT_CSV = {
    b"\x1f\x8b": "a gzip-compressed file (decompress it first)",
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx workbook?)",
    b"\xff\xfe": "UTF-16 text (Excel's 'Unicode text')",
    b"\xfe\xff": "UTF-16 text (Excel's 'Unicode text')",
}


def _read_table(
    path: Path, *, header: bool = True, used: Sequence[str] | None = None
) -> tuple[list[str], list[int], list[list[str]]]:
    """Header, file line numbers and cells of a CSV file; blank lines are skipped.

    Every data row must have as many fields as the header, so that no cell is silently
    filled in or dropped. Without a `header` row the columns are named x1..xD. A header row of
    numbers only is refused: it is the file's first observation, not column names. Column names
    must be given and distinct among the `used` columns (default: all of them).
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the data file ({err.strerror})") from None
    for magic, what in _NOT_CSV.items():
        if raw.startswith(magic):
            raise DataError(f"{path}: {what}, not a CSV text file; save it as CSV (UTF-8, commas)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    lines: list[int] = []
    rows: list[list[str]] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                lines.append(reader.line_num)
                rows.append(row)
    except csv.Error as err:
        raise DataError(f"{path}: row {reader.line_num}: not valid CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: the file is empty (expected a header row and data rows)")
    if not header:
        names = coordinate_names(len(rows[0]))
        _check_row_lengths(path, names, lines, rows, first=f"row {lines[0]}")
        return names, lines, rows
    names = [name.strip() for name in rows[0]]
    for separator, word in ((";", "semicolons"), ("\t", "tabs")):
        if len(names) == 1 and separator in names[0]:
            raise DataError(
                f"{path}: row {lines[0]}: one column {names[0]!r}; the file seems to be separated "
                f"by {word}, not commas: save it comma-separated"
            )
    if len(names) == 1 and names[0].startswith("#") and len(rows) > 1 and len(rows[1]) > 1:
        raise DataError(
            f"{path}: row {lines[0]}: {rows[0][0]!r} looks like a comment line; remove it, so "
            "that the first row names the columns"
        )
    for j, name in enumerate(names):
        if used and name not in used:
            continue
        if not name:
            raise DataError(
                f"{path}: row {lines[0]}, column {j + 1}: empty column name (a row-name column, "
                "as R's write.csv and pandas' to_csv write? name the columns to use with "
                "'file: {columns: [...]}', or save the file without row names)"
            )
        if name in names[:j]:
            raise DataError(f"{path}: row {lines[0]}: column name {name!r} appears twice")
    if all(is_number(name) for name in names):
        raise DataError(
            f"{path}: row {lines[0]}: the header {names} is all numbers, so the file seems to "
            "have no header row and its first observation would be lost; add a header row, or "
            "set 'file: {header: false}' in the dataset's config"
        )
    _check_row_lengths(path, names, lines[1:], rows[1:], first="the header")
    return names, lines[1:], rows[1:]


def _check_row_lengths(
    path: Path, names: list[str], lines: list[int], rows: list[list[str]], *, first: str
) -> None:
    """Every row has as many fields as there are columns (`first`: the row that says how many)."""
    for line, row in zip(lines, rows, strict=True):
        if len(row) != len(names):
            fields = f"{len(row)} field" + ("" if len(row) == 1 else "s")
            raise DataError(
                f"{path}: row {line}: {fields}, but {first} has {len(names)} columns {names}"
            )


#: File suffixes read as Parquet; any other file is read as CSV.


def _read_parquet(path: Path) -> tuple[list[str], list[int], list[list[str]]]:
    """Like :func:`_read_table` for a Parquet file: header, row numbers (the first data row
    being row 2, as in a CSV file with its header) and cells as text, so that the same
    validations apply."""
    try:
        # Arrow's own dtypes: a missing value is an empty cell and a float NaN stays NaN, and an
        # integer column with a missing value stays integers (ids 101, not 101.0)
        frame = pd.read_parquet(path, dtype_backend="pyarrow")
    except ImportError as err:
        raise DataError(f"{path}: reading Parquet needs pyarrow ({err})") from None
    except Exception as err:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    header = [str(c) for c in frame.columns]
    for j, name in enumerate(header):
        if name in header[:j]:
            raise DataError(f"{path}: column name {name!r} appears twice")
    if not header:
        raise DataError(f"{path}: the file has no columns")
    rows = [[_cell_text(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return header, list(range(2, len(rows) + 2)), rows


def _cell_text(value: Any) -> str:
    """A Parquet cell as CSV-like text: floats exactly (repr), missing values empty."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def read_dataset(
    path: str | Path,
    *,
    k: int,
    columns: Sequence[str] | None = None,
    d: int | None = None,
    assignments: str | None = None,
    header: bool = True,
    id_column: str | None = None,
) -> Dataset:
    """Read and validate a CSV or Parquet file (suffix .parquet or .pq) of observations.

    Parameters
    ----------
    path : CSV file, or Parquet file.
    k : number of mixture components to be fitted (the data need at least `k` rows).
    columns : columns to use; default: every column (but `assignments`).
    d : the declared dimension, checked when given.
    assignments : a column of true components 1..K (the pipeline's simulated data only);
        read into ``z`` and never used as a coordinate. A user's file has none, so none of
        its columns is ever dropped.
    header : whether the CSV file's first row names the columns; without it they are named
        x1..xD. A Parquet file always names its columns.
    id_column : a column naming each row, read as text into ``ids`` and never a coordinate.

    Raises
    ------
    DataError
        Naming the file and, where it applies, the row (the line of the file, the header
        being row 1) and the column of the problem.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "data file not found"
        raise DataError(f"{path}: {what}")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        if not header:
            raise DataError(f"{path}: 'header: false' is for CSV files; Parquet names its columns")
        names, lines, rows = _read_parquet(path)
    else:
        used = [*columns, id_column] if columns and id_column else columns
        names, lines, rows = _read_table(path, header=header, used=used)
    cols = _coordinate_columns(path, names, columns, assignments, id_column)
    if d is not None and len(cols) != d:
        raise DataError(f"{path}: has {len(cols)} data columns {cols}, expected D = {d}")
    if not rows:
        raise DataError(f"{path}: header only, no data rows")
    frame = pd.DataFrame(rows, columns=names, dtype=str)
    y = np.column_stack(
        [_numbers(path, frame[col].str.strip(), col, lines, every=not columns) for col in cols]
    )
    taken = [c for c in [*cols, id_column] if c is not None and MEMBERSHIP_NAMES.match(c)]
    if taken:  # after the cells: a text column among every column is better told to leave out
        raise DataError(
            f"{path}: column {taken[0]!r} has a name membership.csv gives its own columns "
            "(point, label, entropy, p1, p1_q05, ...): rename it in the file"
        )
    if len(y) < k:
        rows = f"{len(y)} row" + ("" if len(y) == 1 else "s")
        raise DataError(f"{path}: {rows}, fewer than the K = {k} mixture components")
    z = None
    if assignments is not None and assignments in frame.columns:
        z = pd.to_numeric(frame[assignments], errors="coerce").to_numpy()
        z = z.astype(int) - 1 if np.all(np.isfinite(z)) else None
    ids = None if id_column is None else frame[id_column].str.strip().to_numpy(dtype=object)
    return Dataset(y=y, z=z, columns=tuple(cols), ids=ids, id_column=id_column)


def _coordinate_columns(
    path: Path,
    names: list[str],
    columns: Sequence[str] | None,
    assignments: str | None,
    id_column: str | None,
) -> list[str]:
    """The coordinates among a file's columns `names`: `columns`, else all but the assignments
    and the id column (see :func:`read_dataset`)."""
    if id_column is not None and id_column not in names:
        raise DataError(f"{path}: id column {id_column!r} not found (has {names})")
    if id_column is not None and columns and id_column in columns:
        raise DataError(f"{path}: id column {id_column!r} is also one of the columns {columns}")
    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: columns {missing} not found (has {names})")
        twice = sorted({c for c in columns if list(columns).count(c) > 1})
        if twice:
            raise DataError(f"{path}: columns {list(columns)} name {twice} more than once")
        return list(columns)
    cols = [c for c in names if c not in (assignments, id_column)]
    if not cols:
        raise DataError(f"{path}: no data columns (has {names})")
    return cols


def _numbers(path: Path, cells: pd.Series, col: str, lines: list[int], every: bool) -> np.ndarray:
    """A column's cells (text) as finite numbers on a sane scale, else a DataError naming the
    row and column; `every`: the column is one of every column (no `columns` given)."""
    values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        cell = cells.iloc[row]
        problem = "empty cell" if not cell else f"{cell!r} is not a finite number"
        if every and cell and np.isfinite(values).sum() < len(values) / 2:
            # mostly text (an id, a label) among every column: the default selection
            problem += "; to fit only some columns, list them in the dataset's file.columns"
        raise DataError(f"{path}: row {lines[row]}, column '{col}': {problem}")
    problem = _scale_problem(values)
    if problem:
        row, text = problem
        where = f"row {lines[row]}, column '{col}'" if row is not None else f"column '{col}'"
        raise DataError(f"{path}: {where}: {text}")
    return values


#: Largest magnitude of a coordinate: its square, and sums of squares over many rows, stay far
#: from overflowing double precision (1.8e308), which the likelihood needs.
MAX_MAGNITUDE = 1e150
#: Below this, a column's squares underflow (are 0 or lose their digits) in double precision.
MIN_MAGNITUDE = 1e-150
#: A column whose values span less than this fraction of their magnitude keeps fewer than about
#: four significant digits in its deviations from the mean (double precision has 16).
MIN_RELATIVE_SPREAD = 1e-12
_RESCALE = "rescale the column (e.g. to standard units) before fitting"


def _scale_problem(values: np.ndarray) -> tuple[int | None, str] | None:
    """Why a column's scale is absurd for double-precision fitting, with the row to blame.

    Independent of the prior: it catches values whose squares overflow or lose all precision.
    """
    magnitude = np.abs(values)
    if magnitude.size == 0:
        return None
    top = int(np.argmax(magnitude))
    scale = float(magnitude[top])
    if scale > MAX_MAGNITUDE:
        return top, (
            f"{values[top]:.6g} is too large: values beyond {MAX_MAGNITUDE:g} in magnitude "
            f"overflow their squares in double precision; {_RESCALE}"
        )
    if 0 < scale < MIN_MAGNITUDE:
        return None, (
            f"every value is below {MIN_MAGNITUDE:g} in magnitude (largest {scale:.6g}), so "
            f"their squares underflow in double precision; {_RESCALE}"
        )
    spread = float(np.max(values) - np.min(values))
    if 0 < spread < MIN_RELATIVE_SPREAD * scale:
        return None, (
            f"the values span only {spread:.3g} at magnitude {scale:.6g} (a relative spread "
            f"below {MIN_RELATIVE_SPREAD:g}), so their differences lose their precision; "
            "subtract an offset (e.g. the column's mean) before fitting"
        )
    return None


#: The covariance structures of `stan/gmm.stan`, by their code in its data block.
COVARIANCES = ("identity", "diagonal", "full", "tied")
#: Priors of the component scales `sigma`, by their code in its data block.
SIGMA_PRIORS = ("lognormal", "half_normal")


def stan_data(
    dataset: Dataset, model: Mapping[str, Any], priors: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The data block of `stan/gmm.stan` for a dataset and a validated model config.

    `priors` are the resolved priors (:func:`gmmpipe.priors.resolve_priors`), resolved here
    when not given. Keys missing from `model` take the schema's defaults (identity
    covariance, no ordering).
    """
    if priors is None:
        priors = resolve_priors(dataset.y, model)
    return {
        "N": dataset.n,
        "D": dataset.d,
        "K": int(model["K"]),
        "y": dataset.y,
        "covariance": COVARIANCES.index(model.get("covariance", "identity")),
        "order_means": int(bool(model.get("ordered", False))),
        "mu_location": np.asarray(priors["mu_location"], dtype=float),
        "mu_sd": np.asarray(priors["mu_sd"], dtype=float),
        "alpha": float(priors["alpha"]),
        "sigma_prior": SIGMA_PRIORS.index(priors["sigma_prior"]),
        "sigma_location": np.asarray(priors["sigma_location"], dtype=float),
        "sigma_scale": np.asarray(priors["sigma_scale"], dtype=float),
        "psi": np.asarray(priors["psi"], dtype=float),
        "lkj_eta": float(priors["lkj_eta"]),
        "grainsize": int(model.get("grainsize", 0)),
        "membership": int(bool(model.get("membership", False))),
    }
