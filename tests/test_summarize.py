"""Per-dataset comparison tables, built from tiny fits written without CmdStan."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fixtures.report.fake_fits import true_params, write_fake_dataset

from gmmpipe.io import read_json
from gmmpipe.summarize import (
    COMPARISON_COLUMNS,
    align_components,
    comparison_table,
    estimates_wide,
    load_fits,
    reference_method,
    write_comparison,
)


@pytest.fixture
def fake(tmp_path):
    return write_fake_dataset(tmp_path / "d", shift=3.0)


def test_reference_is_the_first_nuts_fit(fake):
    fits = load_fits(fake["posteriors"])
    assert reference_method(fits) == "nuts"
    without_nuts = {m: f for m, f in fits.items() if f.algorithm != "nuts"}
    fewer = without_nuts["advi_meanfield"]  # the fake fits all have 200 draws
    without_nuts["advi_meanfield"] = replace(fewer, posterior=fewer.posterior.isel(draw=slice(50)))
    without_nuts["advi_fullrank"] = replace(
        without_nuts["advi_fullrank"],
        posterior=xr.concat([without_nuts["advi_fullrank"].posterior] * 2, dim="draw"),
    )
    assert reference_method(without_nuts) == "advi_fullrank"  # the most draws


def test_components_are_aligned_to_the_reference(fake):
    fits = align_components(load_fits(fake["posteriors"]))
    assert fits["advi_meanfield"].permutation == [1, 0]
    assert fits["nuts"].permutation == [0, 1]
    for fit in fits.values():
        np.testing.assert_allclose(fit.mean_mu(), fits["nuts"].mean_mu(), atol=0.5)


def test_comparison_table_has_every_parameter_and_method(fake):
    table = comparison_table(load_fits(fake["posteriors"]), read_json(fake["truth"]))
    assert list(table.columns) == COMPARISON_COLUMNS
    assert list(dict.fromkeys(table["method"])) == ["truth", *fake["posteriors"]]
    params = {"mu[1, x1]", "mu[1, x2]", "mu[2, x1]", "mu[2, x2]", "theta[1]", "theta[2]"}
    for _, rows in table.groupby("method"):
        assert set(rows["parameter"]) == params
    nuts = table[table["method"] == "nuts"]
    assert nuts["ess_bulk"].notna().all() and nuts["r_hat"].notna().all()
    assert table.loc[table["algorithm"] == "advi", "khat"].eq(0.4).all()
    assert table.loc[table["method"] == "map", "sd"].isna().all()


def test_truth_is_put_in_the_fits_component_order(fake):
    table = comparison_table(load_fits(fake["posteriors"]), read_json(fake["truth"]))
    mu, theta = true_params(2, 2)  # fits are ordered by weight; the truth file is reversed
    truth = table[table["method"] == "truth"].set_index("parameter")["mean"]
    assert truth["mu[1, x1]"] == mu[0, 0] and truth["theta[2]"] == pytest.approx(theta[1])


def test_discrepancy_is_in_nuts_sd_units(fake):
    table = comparison_table(load_fits(fake["posteriors"]), read_json(fake["truth"]))
    mu_rows = table[(table["variable"] == "mu") & (table["method"] == "advi_fullrank")]
    # means shifted by 0.3 with posterior sd 0.1: about 3 NUTS sd off; same sd
    np.testing.assert_allclose(mu_rows["mean_error_nuts_sd"], 3.0, atol=0.6)
    np.testing.assert_allclose(mu_rows["sd_error_nuts_sd"], 0.0, atol=0.3)
    assert table.loc[table["method"] == "nuts", "mean_error_nuts_sd"].isna().all()
    assert table.loc[table["method"] == "map", "mean_error_nuts_sd"].notna().all()


def test_without_nuts_there_is_no_discrepancy_and_no_crash(tmp_path):
    fake = write_fake_dataset(tmp_path, methods={"mf": "advi", "pf": "pathfinder"})
    table = comparison_table(load_fits(fake["posteriors"]), read_json(fake["truth"]))
    assert table["mean_error_nuts_sd"].isna().all()


def test_truth_of_another_shape_is_left_out(fake):
    truth = {"mu": [[0.0, 0.0]] * 3, "theta": [1 / 3] * 3}
    table = comparison_table(load_fits(fake["posteriors"]), truth)
    assert "truth" not in set(table["method"])


def test_written_tables_flag_failures_and_discrepancies(tmp_path):
    fake = write_fake_dataset(tmp_path / "d", shift=3.0)
    (tmp_path / "d" / "pathfinder" / "diagnostics.json").write_text(
        '{"algorithm": "pathfinder", "passed": false, "failures": ["pareto_khat = 3.1"],'
        ' "checks": [{"name": "pareto_khat", "value": 3.1, "threshold": 0.7, "passed": false}]}'
    )
    out = {
        "csv": tmp_path / "t.csv",
        "markdown": tmp_path / "t.md",
        "html": tmp_path / "t.html",
        "diagnostics_csv": tmp_path / "dg.csv",
        "diagnostics_html": tmp_path / "dg.html",
    }
    write_comparison(load_fits(fake["posteriors"]), read_json(fake["truth"]), dataset="d", **out)
    assert len(pd.read_csv(out["csv"])) == 6 * 6
    html = out["html"].read_text()
    assert "FAILED" in html and 'class="flag"' in html and "pareto_khat = 3.1" in html
    md = out["markdown"].read_text()
    assert "| parameter | truth | map | nuts |" in md and "Δmean +3" in md
    checks = pd.read_csv(out["diagnostics_csv"])
    assert not checks.set_index("method").loc["pathfinder", "passed"]
    assert "1 check(s) FAILED, in: d/pathfinder" in out["diagnostics_html"].read_text()


def test_wide_table_cells(fake):
    wide = estimates_wide(comparison_table(load_fits(fake["posteriors"]), read_json(fake["truth"])))
    assert wide.loc["mu[1, x1]", "nuts"].count("ESS") == 1
    assert "±" not in wide.loc["mu[1, x1]", "map"]


def test_cells_show_a_mean_to_the_resolution_of_its_sd(fake):
    """Data far from 0 (a year, an altitude): the mean keeps the digits its sd resolves."""
    table = comparison_table(load_fits(fake["posteriors"]))
    row = table[(table["method"] == "nuts") & (table["parameter"] == "mu[1, x1]")].index[0]
    table.loc[row, ["mean", "sd", "hdi_3%", "hdi_97%"]] = [2019.5312, 0.0812, 2019.38, 2019.69]
    cell = estimates_wide(table).loc["mu[1, x1]", "nuts"]
    assert cell.startswith("2019.531 ± 0.081; [2019.380, 2019.690]"), cell


def test_point_estimates_keep_six_significant_digits(fake):
    """A MAP has no sd to round to: 185.5743 is not shown as 186 (1.5 posterior sd off on a
    user's 300 points), nor 0.0019712 as 0.00197."""
    table = comparison_table(load_fits(fake["posteriors"]))
    for parameter, value, text in (
        ("mu[1, x1]", 185.5743, "185.574"),
        ("mu[1, x2]", 0.0019712, "0.0019712"),
    ):
        row = table[(table["method"] == "map") & (table["parameter"] == parameter)].index[0]
        table.loc[row, "mean"] = value
        cell = estimates_wide(table).loc[parameter, "map"]
        assert cell.split(";")[0] == text, cell


def test_components_at_one_place_are_aligned_by_their_spread(fake):
    """Two components at almost one place with equal weights, one narrow and one wide: a method
    that lists them the other way round is aligned by sigma (its means alone match the other
    way, by 0.02)."""
    fits = load_fits(fake["posteriors"])
    rng = np.random.default_rng(0)

    def with_scales(fit, sigma):
        post = fit.posterior
        shape = (post.sizes["chain"], post.sizes["draw"], 2, post.sizes["dim"])
        mu = np.array([0.0, 0.02])[None, None, :, None] + rng.normal(0, 0.01, shape)
        sig = np.broadcast_to(np.asarray(sigma)[None, None, :, None], shape)
        sig = sig * np.exp(rng.normal(0, 0.01, shape))
        dims = ("chain", "draw", "component", "dim")
        post = post.assign(mu=(dims, mu), sigma=(dims, sig))
        return replace(fit, posterior=post.assign(theta=post["theta"] * 0 + 0.5))

    nuts = with_scales(fits["nuts"], [0.5, 3.0])
    advi = with_scales(fits["advi_meanfield"], [3.0, 0.5])
    aligned = align_components({"nuts": nuts, "advi_meanfield": advi})
    assert aligned["advi_meanfield"].permutation == [1, 0]
    np.testing.assert_allclose(
        aligned["advi_meanfield"].posterior["sigma"].mean(("chain", "draw", "dim")),
        [0.5, 3.0],
        rtol=0.05,
    )


def test_html_tables_escape_names_from_users_headers():
    """A column named ``a<b>`` (it becomes ``mu[1, a<b>]``) stays text in the HTML tables; the
    estimates' own markup (the flags) stays markup."""
    from gmmpipe.summarize import frame_to_html

    frame = pd.DataFrame(
        {"nuts": ['1.0<br><b class="flag">Δmean +3.00</b>']}, index=["mu[1, a<b>]"]
    )
    frame.index.name = "parameter"
    html = frame_to_html(frame, index=True, markup=True)
    assert "<td>mu[1, a&lt;b&gt;]</td>" in html and '<b class="flag">' in html
    plain = frame_to_html(pd.DataFrame({"prior": ["mu[1, a<b>] ~ normal(0, 1)"]}))
    assert "a&lt;b&gt;" in plain and "<b>" not in plain
