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
from gmmpipe.io import atomic_path, write_json

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


def write_dataset(dataset: Dataset, csv_path: str | Path, json_path: str | Path) -> None:
    """Write the observations (columns named as the dataset's coordinates, plus z when known)
    and the truth JSON."""
    frame = pd.DataFrame(dataset.y, columns=dataset.names)
    if dataset.z is not None:
        frame["z"] = dataset.z + 1
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.17g")
    write_json(json_path, {**dataset.truth, "n": dataset.n, "d": dataset.d})


def _read_table(path: Path) -> tuple[list[str], list[int], list[list[str]]]:
    """Header, file line numbers and cells of a CSV file; blank lines are skipped.

    Every data row must have as many fields as the header, so that no cell is silently
    filled in or dropped.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the data file ({err.strerror})") from None
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
    header = [name.strip() for name in rows[0]]
    for j, name in enumerate(header):
        if not name:
            raise DataError(f"{path}: row {lines[0]}, column {j + 1}: empty column name")
        if name in header[:j]:
            raise DataError(f"{path}: row {lines[0]}: column name {name!r} appears twice")
    for line, row in zip(lines[1:], rows[1:], strict=True):
        if len(row) != len(header):
            fields = f"{len(row)} field" + ("" if len(row) == 1 else "s")
            raise DataError(
                f"{path}: row {line}: {fields}, but the header has {len(header)} columns {header}"
            )
    return header, lines[1:], rows[1:]


#: File suffixes read as Parquet; any other file is read as CSV.
PARQUET_SUFFIXES = (".parquet", ".pq")


def _read_parquet(path: Path) -> tuple[list[str], list[int], list[list[str]]]:
    """Like :func:`_read_table` for a Parquet file: header, row numbers (the first data row
    being row 2, as in a CSV file with its header) and cells as text, so that the same
    validations apply."""
    try:
        frame = pd.read_parquet(path)
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
    path: str | Path, *, k: int, columns: Sequence[str] | None = None, d: int | None = None
) -> Dataset:
    """Read and validate a CSV or Parquet file (suffix .parquet or .pq) of observations.

    Parameters
    ----------
    path : CSV file with a header row, or Parquet file.
    k : number of mixture components to be fitted (the data need at least `k` rows).
    columns : columns to use; default: ``x1..xD`` when present, else every column but ``z``.
    d : the declared dimension, checked when given.

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
        header, lines, rows = _read_parquet(path)
    else:
        header, lines, rows = _read_table(path)
    if columns:
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}: columns {missing} not found (has {header})")
        cols = list(columns)
    else:
        cols = [c for c in header if c != "z"]
    if not cols:
        raise DataError(f"{path}: no data columns (has {header})")
    if d is not None and len(cols) != d:
        raise DataError(f"{path}: has {len(cols)} data columns {cols}, expected D = {d}")
    if not rows:
        raise DataError(f"{path}: header only, no data rows")
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    y = np.empty((len(frame), len(cols)))
    for j, col in enumerate(cols):
        cells = frame[col].str.strip()
        values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            cell = cells.iloc[row]
            problem = "empty cell" if not cell else f"{cell!r} is not a finite number"
            raise DataError(f"{path}: row {lines[row]}, column '{col}': {problem}")
        y[:, j] = values
    if len(y) < k:
        raise DataError(f"{path}: {len(y)} rows, fewer than the K = {k} mixture components")
    z = None
    if "z" in frame.columns and not columns:
        z = pd.to_numeric(frame["z"], errors="coerce").to_numpy()
        z = z.astype(int) - 1 if np.all(np.isfinite(z)) else None
    return Dataset(y=y, z=z, columns=tuple(cols))


#: The covariance structures of `stan/gmm.stan`, by their code in its data block.
COVARIANCES = ("identity", "diagonal", "full")
#: Priors of the component scales `sigma`, by their code in its data block.
SIGMA_PRIORS = ("lognormal", "half_normal")


def stan_data(dataset: Dataset, model: Mapping[str, Any]) -> dict[str, Any]:
    """The data block of `stan/gmm.stan` for a dataset and a validated model config.

    Keys missing from `model` take the schema's defaults (identity covariance, no ordering).
    """
    return {
        "N": dataset.n,
        "D": dataset.d,
        "K": int(model["K"]),
        "y": dataset.y,
        "covariance": COVARIANCES.index(model.get("covariance", "identity")),
        "order_means": int(bool(model.get("ordered", False))),
        "mu_sd": float(model["mu_sd"]),
        "alpha": float(model["alpha"]),
        "sigma_prior": SIGMA_PRIORS.index(model.get("sigma_prior", "lognormal")),
        "sigma_location": float(model.get("sigma_location", 0.0)),
        "sigma_scale": float(model.get("sigma_scale", 0.5)),
        "lkj_eta": float(model.get("lkj_eta", 2.0)),
        "grainsize": int(model.get("grainsize", 0)),
        "membership": int(bool(model.get("membership", False))),
    }
