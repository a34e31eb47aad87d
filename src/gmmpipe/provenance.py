"""Provenance of a workflow run: software versions, the Stan program's hash, the git commit,
the config, per-job wall times and the state of every diagnostics gate, as JSON and HTML."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gmmpipe.cmdstan import user_header
from gmmpipe.io import read_json, write_json, write_text
from gmmpipe.summarize import diagnostics_page, frame_to_html, html_page

logger = logging.getLogger(__name__)

PACKAGES = (
    "gmmpipe",
    "snakemake",
    "cmdstanpy",
    "arviz",
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "netCDF4",
    "matplotlib",
    "jsonschema",
)


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (``not installed`` when missing), plus Python's."""
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def job_times(workdir: str | Path = ".") -> pd.DataFrame:
    """Wall time of every job Snakemake recorded in ``<workdir>/.snakemake/metadata``.

    One row per job (rule, first output, start, wall time in s), oldest first; empty when no
    metadata is there. Unreadable records are skipped.
    """
    jobs: dict[tuple[str, float], dict[str, Any]] = {}
    folder = Path(workdir) / ".snakemake" / "metadata"
    for record in sorted(folder.glob("*")) if folder.is_dir() else []:
        try:
            meta = json.loads(record.read_text())
            output = base64.urlsafe_b64decode(record.name + "=" * (-len(record.name) % 4)).decode()
            start, end = float(meta["starttime"]), float(meta["endtime"])
        except (ValueError, KeyError, TypeError, OSError):
            continue
        key = (meta.get("rule", "?"), start)
        job = jobs.setdefault(key, {"rule": key[0], "output": output, "start": start})
        job["output"] = min(job["output"], output)
        job["wall_time_s"] = end - start
    frame = pd.DataFrame(jobs.values(), columns=["rule", "output", "start", "wall_time_s"])
    frame = frame.sort_values("start", ignore_index=True)
    frame["start"] = pd.to_datetime(frame["start"], unit="s", utc=True).dt.strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    return frame


def benchmark_times(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Snakemake benchmark files (wall s, CPU s, max RSS) as one table, one row per file."""
    rows = []
    for path in paths:
        table = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "benchmark": str(path),
                "wall_time_s": float(table["s"].iloc[-1]),
                "cpu_time_s": float(table.get("cpu_time", pd.Series([float("nan")])).iloc[-1]),
                "max_rss_mb": float(table.get("max_rss", pd.Series([float("nan")])).iloc[-1]),
            }
        )
    return pd.DataFrame(rows, columns=["benchmark", "wall_time_s", "cpu_time_s", "max_rss_mb"])


def collect(
    *,
    cmdstan: str | Path,
    stan: str | Path,
    fits: Mapping[str, str | Path],
    diagnostics: Mapping[str, str | Path],
    benchmarks: Sequence[str | Path],
    config: Mapping[str, Any],
    git: Mapping[str, Any],
    workdir: str | Path = ".",
) -> dict[str, Any]:
    """Everything the provenance record holds. `fits` and `diagnostics` map ``dataset/method``
    to the fit's ``fit.json`` and ``diagnostics.json``."""
    fit_records = {name: read_json(path) for name, path in fits.items()}
    checks = []
    for name, path in diagnostics.items():
        dataset, method = name.rsplit("/", 1)
        report = read_json(path)
        for item in report.get("checks", []):
            checks.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "algorithm": report["algorithm"],
                    "check": item["name"],
                    "value": item["value"],
                    "threshold": item["threshold"],
                    "passed": bool(item["passed"]),
                }
            )
    failed = sorted({f"{c['dataset']}/{c['method']}" for c in checks if not c["passed"]})
    header = user_header(stan)
    return {
        "cmdstan": read_json(cmdstan),
        "stan_program": {"path": str(stan), "sha256": sha256(stan), "text": Path(stan).read_text()},
        "user_header": {"path": str(header), "sha256": sha256(header)},
        "git": dict(git) or {"commit": "unknown (not a git checkout)"},
        "platform": {"system": platform.platform(), "machine": platform.machine()},
        "packages": package_versions(),
        "gmmpipe_path": str(Path(__file__).resolve().parent),  # the code that ran, not pip's
        "config": json.loads(json.dumps(dict(config), default=str)),
        "fits": {
            name: {
                "algorithm": rec.get("algorithm"),
                "seed": rec.get("seed"),
                "cmdstan_wall_time_s": rec.get("wall_time_s"),
                "settings": rec.get("settings"),
            }
            for name, rec in fit_records.items()
        },
        "diagnostics": {"failed_fits": failed, "checks": checks},
        "benchmarks": benchmark_times(benchmarks).to_dict(orient="records"),
        "jobs": job_times(workdir).to_dict(orient="records"),
    }


def render_html(record: Mapping[str, Any]) -> str:
    """The provenance record as a self-contained HTML page, failed diagnostics first."""
    failed = record["diagnostics"]["failed_fits"]
    status = (
        f'<p class="failed">Diagnostics FAILED for {len(failed)} fit(s): '
        f"{escape(', '.join(failed))}. Their numbers should not be trusted; see the "
        "diagnostics category.</p>"
        if failed
        else "<p>Every fit passed its diagnostics gate.</p>"
    )
    cmdstan = record["cmdstan"]
    git = record["git"]
    software = pd.DataFrame(
        [
            ("CmdStan", cmdstan.get("cmdstan", "?")),
            ("stanc", cmdstan.get("stanc", "?")),
            ("CmdStan path", cmdstan.get("path", "?")),
            ("compile options", json.dumps(cmdstan.get("options", {}))),
            ("platform", record["platform"]["system"]),
            *record["packages"].items(),
        ],
        columns=["item", "version"],
    )
    source = pd.DataFrame(
        [
            ("git commit", git.get("commit", "?")),
            ("gmmpipe imported from", record.get("gmmpipe_path", "?")),
            ("git branch", git.get("branch", "—")),
            ("uncommitted changes", "yes" if git.get("dirty") else "no"),
            ("Stan program", record["stan_program"]["path"]),
            ("Stan program SHA-256", record["stan_program"]["sha256"]),
            ("C++ user header", record["user_header"]["path"]),
            ("C++ user header SHA-256", record["user_header"]["sha256"]),
        ],
        columns=["item", "value"],
    )
    fits = pd.DataFrame(
        [
            {
                "fit": name,
                "algorithm": f["algorithm"],
                "seed": f["seed"],
                "CmdStan wall time (s)": f["cmdstan_wall_time_s"],
            }
            for name, f in record["fits"].items()
        ]
    )
    jobs = pd.DataFrame(record["jobs"], columns=["rule", "output", "start", "wall_time_s"])
    benchmarks = pd.DataFrame(record["benchmarks"])
    sections = [
        ("Diagnostics", status),
        ("Software", frame_to_html(software)),
        ("Source", frame_to_html(source)),
        ("Fits: seeds and CmdStan wall times", frame_to_html(fits)),
        ("Wall time per job (from Snakemake's records)", frame_to_html(jobs)),
        ("Benchmarks (rules with a benchmark: directive)", frame_to_html(benchmarks)),
        (
            "Config (validated, with defaults)",
            f"<pre>{escape(yaml.safe_dump(record['config'], sort_keys=False))}</pre>",
        ),
        ("Stan program", f"<pre>{escape(record['stan_program']['text'])}</pre>"),
    ]
    return html_page("Provenance", sections)


def write_provenance(
    *, json_path: str | Path, html_path: str | Path, overview_path: str | Path, **inputs: Any
) -> dict[str, Any]:
    """Collect the provenance record (see :func:`collect`) and write it as JSON and HTML, plus
    an overview page of every diagnostics check of every fit."""
    record = collect(**inputs)
    write_json(json_path, record)
    write_text(html_path, render_html(record))
    checks = pd.DataFrame(
        record["diagnostics"]["checks"],
        columns=["dataset", "method", "algorithm", "check", "value", "threshold", "passed"],
    )
    write_text(overview_path, diagnostics_page(checks, "Diagnostics of every fit"))
    if record["diagnostics"]["failed_fits"]:
        logger.warning("diagnostics failed for %s", ", ".join(record["diagnostics"]["failed_fits"]))
    return record
