"""Time the SHA-256 of user data files that the ingest rule computes at every DAG build
(its params trigger a new ingest when a file's contents change under an old mtime).

    python benchmarks/checksum.py [--rows 100000 1000000] [--dims 2] [--repeats 5]
                                  [--out benchmarks/results]

Writes <out>/checksum.csv: rows, file size in MB, the fastest of `repeats` hashes in ms (the
file in the page cache, as after the first DAG build) and the first, cold-ish hash right
after writing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gmmpipe.io import atomic_path, file_checksum


def time_checksum(path: Path, repeats: int) -> list[float]:
    """Seconds of each of `repeats` checksums of `path`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        file_checksum(path)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dims", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in args.rows:
            path = Path(scratch) / f"data_{n}.csv"
            y = np.random.default_rng(n).normal(size=(n, args.dims))
            pd.DataFrame(y).to_csv(path, index=False, float_format="%.17g")
            times = time_checksum(path, args.repeats)
            rows.append(
                {
                    "rows": n,
                    "dims": args.dims,
                    "megabytes": path.stat().st_size / 1e6,
                    "first_ms": times[0] * 1e3,
                    "best_ms": min(times) * 1e3,
                }
            )
            print(rows[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "checksum.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4g")


if __name__ == "__main__":
    main()
