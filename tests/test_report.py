"""Provenance, workflow targets, and the HTML report rendered in a real headless browser."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures.report.fake_fits import write_fake_dataset

from gmmpipe.layout import fit_dir
from gmmpipe.provenance import job_times, write_provenance
from gmmpipe.workflow import git_state

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=20000",
    "--window-size=1400,1000",
]


def _metadata(folder: Path, output: str, rule: str, start: float, end: float) -> None:
    name = base64.urlsafe_b64encode(output.encode()).decode()
    (folder / name).write_text(json.dumps({"rule": rule, "starttime": start, "endtime": end}))


def test_job_times_read_snakemake_records(tmp_path):
    folder = tmp_path / ".snakemake" / "metadata"
    folder.mkdir(parents=True)
    _metadata(folder, "results/model/gmm", "compile", 100.0, 190.0)
    _metadata(folder, "results/model/cmdstan.json", "compile", 100.0, 190.0)
    _metadata(folder, "results/data/a.csv", "simulate", 50.0, 51.5)
    (folder / "garbage").write_text("not json")
    times = job_times(tmp_path)
    assert list(times["rule"]) == ["simulate", "compile"]
    assert list(times["wall_time_s"]) == [1.5, 90.0]
    assert job_times(tmp_path / "nowhere").empty


def test_git_state_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == {}


def test_provenance_record_and_page(tmp_path, root):
    fake = write_fake_dataset(tmp_path / "d", methods={"nuts": "nuts", "pf": "pathfinder"})
    (tmp_path / "d" / "pf" / "diagnostics.json").write_text(
        '{"algorithm": "pathfinder", "passed": false, "failures": ["pareto_khat = 9"],'
        ' "checks": [{"name": "pareto_khat", "value": 9, "threshold": 0.7, "passed": false}]}'
    )
    cmdstan = tmp_path / "cmdstan.json"
    cmdstan.write_text('{"cmdstan": "2.35.0", "stanc": "stanc3 v2.35.0", "path": "/x"}')
    bench = tmp_path / "b.tsv"
    bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n1.5\t0:00:01\t100\t1.2\n")
    out = {k: tmp_path / f"out.{k}" for k in ("json", "html", "overview")}
    record = write_provenance(
        json_path=out["json"],
        html_path=out["html"],
        overview_path=out["overview"],
        cmdstan=cmdstan,
        stan=root / "stan" / "gmm.stan",
        fits={f"d/{m}": p.parent / "fit.json" for m, p in fake["posteriors"].items()},
        diagnostics={
            f"d/{m}": p.parent / "diagnostics.json" for m, p in fake["posteriors"].items()
        },
        benchmarks=[bench],
        config={"seed": 1},
        git={"commit": "abc123", "dirty": True},
        workdir=tmp_path,
    )
    stan_hash = hashlib.sha256((root / "stan" / "gmm.stan").read_bytes()).hexdigest()
    assert record["stan_program"]["sha256"] == stan_hash
    assert record["gmmpipe_path"] == str(root / "src" / "gmmpipe")  # this checkout's code
    header_hash = hashlib.sha256((root / "stan" / "user_header.hpp").read_bytes()).hexdigest()
    assert record["user_header"]["sha256"] == header_hash
    assert json.loads(out["json"].read_text())["diagnostics"]["failed_fits"] == ["d/pf"]
    page = out["html"].read_text()
    for text in (
        "2.35.0",
        "stanc3",
        str(root / "src" / "gmmpipe"),
        stan_hash,
        header_hash,
        "abc123",
        "arviz",
        "cmdstanpy",
        "Diagnostics FAILED",
    ):
        assert text in page
    assert page.index("Diagnostics FAILED") < page.index("Software")
    assert "1 check(s) FAILED, in: d/pf" in out["overview"].read_text()


def _dry_run(root: Path, tmp_path: Path, methods: list[str]) -> str:
    """Jobs of a forced dry run of the default target for `methods` on seed_small."""
    (tmp_path / "stan").symlink_to(root / "stan")
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(root / "config" / "config.yaml"), "-n", "-F", "--cores", "1",
         "--config", f"targets={{datasets: [seed_small], methods: {methods}}}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


@pytest.mark.workflow
@pytest.mark.parametrize("methods", [["nuts", "advi_meanfield"], ["optimize", "pathfinder"]])
def test_default_target_has_one_figures_job_per_dataset(root, tmp_path, methods):
    jobs = _dry_run(root, tmp_path, methods)
    for rule in ["summarize", "figures", "provenance"]:
        assert re.search(rf"^{rule}\s+1$", jobs, re.MULTILINE), rule


# --- The report in a browser ------------------------------------------------------------------

TINY_CONFIG = {  # the methods of fixtures/report/fake_fits.py
    "seed": 7,
    "datasets": {
        "tiny": {
            "simulate": {"generator": "seed_notebook", "n": 300},
            "model": {"K": [2, 3], "mu_sd": 1.0, "alpha": 0.1},  # two K: a comparison
        }
    },
    "methods": {
        "map": {"algorithm": "optimize"},
        "nuts": {"algorithm": "nuts", "chains": 2, "parallel_chains": 2, "iter_warmup": 300,
                 "iter_sampling": 300},
        "advi_meanfield": {"algorithm": "advi", "variational": "meanfield"},
        "advi_fullrank": {"algorithm": "advi", "variational": "fullrank"},
        "pathfinder": {"algorithm": "pathfinder"},
    },
    "compare": {"max_refits": 0},  # the executable is fake: no refits
}  # fmt: skip
# (category, label of a result in it) opened in the browser; one per category
VIEWS = [
    ("data", "data and true means"),
    ("NUTS", "NUTS draws of the means"),
    ("ADVI", "VI posterior contours of the means"),
    ("comparison", "NUTS vs VI marginals"),
    ("diagnostics", "NUTS trace (nuts)"),
    ("choosing K", "elpd, weights, k-hat by K"),
]


def _faked_workflow(root: Path, work: Path, config: dict) -> Path:
    """A copy of the workflow whose data, compiled model and fits (those of `config`'s methods)
    are faked (tiny, no CmdStan, older than nothing they depend on)."""
    for name in ("Snakefile", "rules", "scripts", "report", "stan", "config", "envs"):
        source = root / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, work / name)
    # the results must be newer than the program, its header and the rules' scripts, and older
    # than the outputs Snakemake writes now: the copied sources are dated an hour ago
    stamp = time.time() - 3600
    for path in work.rglob("*"):
        os.utime(path, (stamp, stamp))
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    results = work / "results"
    (results / "model").mkdir(parents=True)
    (results / "model" / "gmm").write_text("fake executable")
    (results / "model" / "cmdstan.json").write_text(
        '{"cmdstan": "2.35.0", "stanc": "stanc3 v2.35.0 (Unix)", "path": "/fake"}'
    )
    methods = {m: spec["algorithm"] for m, spec in config["methods"].items()}
    (results / "data").mkdir()
    ks = config["datasets"]["tiny"]["model"]["K"]
    for k in ks if isinstance(ks, list) else [ks]:
        # the data of the first K's fake; every K's fits are drawn near its own true means
        fake = write_fake_dataset(
            work / Path(fit_dir("tiny", k, "any")).parent, k=k, n=300, shift=2.0, methods=methods
        )
        for name, suffix in (("data", "csv"), ("truth", "json")):
            target = results / "data" / f"tiny.{suffix}"
            if target.exists():
                fake[name].unlink()
            else:
                fake[name].rename(target)
        for method, posterior in fake["posteriors"].items():
            (posterior.parent / "summary.csv").write_text("parameter,mean\n")
            (posterior.parent / "cmdstan").mkdir()
            bench = results / "benchmarks" / "tiny" / f"K{k}" / f"{method}.tsv"
            bench.parent.mkdir(parents=True, exist_ok=True)
            bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n0.5\t0:00:00\t100\t0.4\n")
    for step, folder in enumerate(["model", "data", "fits", "benchmarks"], start=1):
        for path in [results / folder, *(results / folder).rglob("*")]:
            os.utime(path, (stamp + 10 * step, stamp + 10 * step))
    return work


@pytest.fixture(scope="module")
def report(root, tmp_path_factory) -> Path:
    """The HTML report of a faked workflow (:func:`_faked_workflow`, every method): Snakemake
    builds the tables, figures, provenance and the report from the faked fits."""
    work = _faked_workflow(root, tmp_path_factory.mktemp("workflow"), TINY_CONFIG)
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "2"]
    for args in (["-n"], [], ["--report", "report.html"]):
        done = subprocess.run(
            [*snakemake, *args], cwd=work, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr[-4000:]
        if args == ["-n"]:  # only the new rules run: nothing needs CmdStan
            assert not re.search(r"^(compile|simulate|sample|optimize)\s", done.stdout, re.M)
    return work / "report.html"


@pytest.mark.workflow
def test_every_figure_of_every_method_is_drawn(report):
    """Every figure of each K, and the data once for the dataset (the same for every K)."""
    figures = report.parent / "results" / "figures" / "tiny"
    assert sorted(p.name for p in figures.iterdir()) == ["K2", "K3", "data.png"]
    for k in ("K2", "K3"):
        assert sorted(p.stem for p in (figures / k).glob("*.png")) == sorted(
            ["nuts_mu", "density", "weights", "posterior_means", "marginals",
             "vi_contours", "elbo", "ppc", "trace_nuts", "rank_nuts"]
        )  # fmt: skip


def _caption(root: Path, path: Path, **wildcards: str) -> str:
    """A report caption rendered as Snakemake renders it (Jinja2, then reStructuredText to HTML),
    with the default config; docutils' warnings raise instead of being printed into the page."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    from gmmpipe.config import load_schema, validate_config

    config = validate_config(
        yaml.safe_load((root / "config" / "config.yaml").read_text()),
        load_schema(root / "config" / "schema.yaml"),
    )
    snakemake = SimpleNamespace(wildcards=SimpleNamespace(**wildcards), config=config)
    text = jinja2.Environment().from_string(path.read_text()).render(snakemake=snakemake)
    settings = {"report_level": 2, "halt_level": 2, "warning_stream": False}
    with warnings.catch_warnings():  # as Snakemake calls it: writer_name, deprecated in 0.22
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return publish_parts(text, writer_name="html", settings_overrides=settings)["body"]


def test_every_caption_is_valid_restructured_text(root):
    """Markup that docutils reads as a substitution or a link (``|x|``, ``lp__``) shows as an
    error in the report."""
    for path in sorted((root / "report").rglob("*.rst")):
        assert _caption(root, path, dataset="tiny", name="nuts_mu", method="nuts"), path


@pytest.mark.workflow
def test_every_figure_has_a_caption(report, root):
    """Each figure the workflow draws has its own caption in report/figures.rst."""
    figures = sorted((report.parent / "results" / "figures" / "tiny" / "K2").glob("*.png"))
    captions = {p.stem: _caption(root, root / "report" / "figures.rst", dataset="tiny",
                                 name=p.stem) for p in figures}  # fmt: skip
    assert all(captions.values()), [name for name, text in captions.items() if not text]
    assert len(set(captions.values())) == len(captions)


@pytest.mark.workflow
def test_figures_are_the_ones_the_methods_allow(root, tmp_path):
    """MAP and Pathfinder only: no NUTS or ADVI figures, no trace or rank plots."""
    config = {
        **TINY_CONFIG,
        "methods": {m: TINY_CONFIG["methods"][m] for m in ("map", "pathfinder")},
    }
    work = _faked_workflow(root, tmp_path, config)
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "results/figures/tiny/K2"],
        cwd=work, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    figures = sorted(p.stem for p in (work / "results" / "figures" / "tiny" / "K2").glob("*.png"))
    assert figures == ["posterior_means", "vi_contours", "weights"]


def _chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = page.parent / f".chromium-{page.stem}"
    return subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def _open(report: Path, steps: list[str], name: str) -> tuple[str, np.ndarray]:
    """Click through `steps` in a copy of the report; the DOM afterwards and a screenshot."""
    script = (Path(__file__).parent / "fixtures" / "report" / "navigate.html").read_text()
    head, body_end, tail = report.read_text().rpartition("</body>")
    page = report.parent / f"{name}.html"
    page.write_text(head + script.replace("__STEPS__", json.dumps(steps)) + body_end + tail)
    dom = _chromium(page, "--dump-dom").stdout
    shot = report.parent / f"{name}.png"
    _chromium(page, f"--screenshot={shot}")
    return dom, mpimg.imread(shot)[..., :3]


@pytest.mark.browser
@pytest.mark.workflow
def test_report_renders_every_category(report):
    dom, shot = _open(report, [], "home")
    for category in (
        "data",
        "NUTS",
        "ADVI",
        "comparison",
        "diagnostics",
        "provenance",
        "choosing K",
    ):
        assert f"<span>{category}</span>" in dom, category
    assert "Gaussian Mixture Model with ADVI" in dom  # the workflow description rendered
    assert shot.std() > 0.05


@pytest.mark.browser
@pytest.mark.workflow
@pytest.mark.parametrize("category,label", VIEWS)
def test_report_shows_non_blank_figures(report, category, label):
    dom, shot = _open(report, [category, "?tiny", f"eye:{label}"], category)
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-nav="done"' in body and "missing" not in body, body
    images = re.findall(r'<img[^>]*src="data:image/png[^"]*base64,([^"]+)"', dom)
    assert images, f"no figure shown for {category}/{label}"
    figure = mpimg.imread(io.BytesIO(base64.b64decode(images[-1])), format="png")[..., :3]
    assert figure.shape[0] > 300 and figure.std() > 0.05, "blank figure"
    panel = shot[:, shot.shape[1] // 2 :]  # the result is shown right of the menu
    assert panel.std() > 0.05, "nothing rendered where the figure should be"


@pytest.mark.workflow
def test_report_has_the_k_comparison_table_and_figure(report):
    """The compare step ran on the fake fits; its table and figure are results of the report."""
    text = report.read_text()
    for name in ("loo.html", "loo.png", "K compared by LOO", "elpd, weights, k-hat by K"):
        assert name in text, name
    work = report.parent
    table = pd.read_csv(work / "results" / "compare" / "tiny" / "loo.csv")
    assert table["K"].tolist() == [2, 3] and table["suggested"].sum() == 1
    membership = pd.read_csv(work / fit_dir("tiny", 2, "nuts") / "membership.csv")
    assert len(membership) == 300 and {"x1", "x2", "z", "label", "p1", "p2_q95"} <= set(
        membership.columns
    )
