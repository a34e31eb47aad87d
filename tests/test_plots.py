"""Figures: every seed figure renders (any K and D), is non-blank, and uses one palette."""

from __future__ import annotations

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from fixtures.report.fake_fits import write_fake_dataset
from matplotlib.collections import PolyCollection

from gmmpipe.plots import FIGURES, axis_units, component_colors, draw_data, make_figure

# Figures whose layout depends on K and D (the others are checked once with K = D = 2).
SHAPED = ["data", "nuts_mu", "weights", "vi_contours", "posterior_means", "marginals"]


def _assert_non_blank(path):
    image = mpimg.imread(path)[..., :3]
    assert image.shape[0] > 150 and image.shape[1] > 150
    assert (image.std(axis=(0, 1)) > 0.05).any(), f"{path} looks blank"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("k2d2"), shift=2.0)


def _render(folder, name, fake, posteriors, *, dpi):
    """Draw figure `name` of a fake dataset into `folder`; returns the PNG path."""
    out = folder / f"{name}.png"
    make_figure(
        name,
        out,
        data=fake["data"],
        truth=fake["truth"],
        posteriors=posteriors,
        settings={"dpi": dpi},
    )
    return out


def test_palette_is_stable_and_distinct():
    assert component_colors(2) == component_colors(5)[:2]
    many = component_colors(12)
    assert len(many) == 12 and len(set(many)) == 12


def test_the_density_figure_uses_the_same_colours_beyond_seven_components():
    """Component 8 of the fitted-density figure has the colour it has in the other figures."""
    import matplotlib.colors as mcolors

    from gmmpipe.mixture_plots import plot_fitted_density

    k = 9
    rng = np.random.default_rng(0)
    mu = np.arange(k, dtype=float)[:, None] * [4.0, 0.0]
    posterior = {"mu": mu[None, None], "theta": np.full((1, 1, k), 1 / k)}
    fig = plot_fitted_density(rng.normal(size=(90, 2)) + mu[rng.integers(0, k, 90)], posterior)
    edges = [mcolors.to_hex(p.get_edgecolor()) for p in fig.axes[2].patches]  # the ellipses
    assert edges == [c.lower() for c in component_colors(k)]


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_renders_non_blank(fake, tmp_path, name):
    posteriors = fake["posteriors"]
    if name in ("trace", "rank"):
        posteriors = {"nuts": posteriors["nuts"]}
    elif name == "data":
        posteriors = {}
    out = _render(tmp_path, name, fake, posteriors, dpi=60)
    _assert_non_blank(out)
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


@pytest.mark.parametrize("k,d", [(3, 1), (2, 3)])
@pytest.mark.parametrize("name", SHAPED)
def test_other_shapes_degrade_gracefully(tmp_path, k, d, name):
    methods = {"map": "optimize", "nuts": "nuts", "mf": "advi"}
    fake = write_fake_dataset(tmp_path, k=k, d=d, n=120, methods=methods)
    posteriors = {} if name == "data" else fake["posteriors"]
    _assert_non_blank(_render(tmp_path, name, fake, posteriors, dpi=50))


@pytest.mark.parametrize("name", FIGURES)
def test_one_component_draws_every_figure(tmp_path, name):
    """K = 1 (the first of ``K: [1, 2, 3]``): theta is the constant 1, and no figure fails."""
    methods = {"map": "optimize", "nuts": "nuts", "mf": "advi"}
    fake = write_fake_dataset(tmp_path, k=1, d=2, n=120, methods=methods)
    posteriors = fake["posteriors"]
    if name in ("trace", "rank"):
        posteriors = {"nuts": posteriors["nuts"]}
    elif name == "data":
        posteriors = {}
    _assert_non_blank(_render(tmp_path, name, fake, posteriors, dpi=50))


def test_large_data_is_a_hexbin_density():
    y = np.random.default_rng(0).standard_normal((20_000, 2))
    fig, (small, large) = plt.subplots(1, 2)
    draw_data(small, y[:100], max_points=5000)
    draw_data(large, y, max_points=5000)
    assert not any(isinstance(c, PolyCollection) for c in small.collections)
    assert any(isinstance(c, PolyCollection) for c in large.collections)
    plt.close(fig)


def test_coordinates_on_different_scales_get_an_axis_scale_each():
    """Columns of sd 1 and 100 (a user's unstandardized data): each axis gets its column's
    scale, so the data are not squeezed into a sliver and a zoom spans as many sds along x as
    along y; columns of similar sd share one scale (circles stay round)."""
    from gmmpipe.plots import _zoom_limits, plot_data

    rng = np.random.default_rng(0)
    y = rng.standard_normal((300, 2)) * [1.0, 100.0] + [0.0, 500.0]
    assert axis_units(rng.standard_normal((300, 2)) * [1.0, 1.5]) is None
    np.testing.assert_allclose(axis_units(y), y.std(axis=0))
    fig = plot_data(y, {})
    ax = fig.axes[0]
    assert ax.get_aspect() == "auto"
    fig.canvas.draw()
    box = ax.get_position()
    assert 0.5 < box.width / box.height < 2, box  # was 0.01: one column of pixels
    zoom = fig.add_subplot(2, 2, 4)
    _zoom_limits(zoom, y[:50], units=axis_units(y))
    width, height = np.ptp(zoom.get_xlim()), np.ptp(zoom.get_ylim())
    assert height / width == pytest.approx(y[:, 1].std() / y[:, 0].std())
    plt.close(fig)
    fig, ax = plt.subplots()
    draw_data(ax, rng.standard_normal((300, 2)))
    assert ax.get_aspect() == 1.0
    plt.close(fig)


def test_failed_methods_are_labelled(tmp_path):
    fake = write_fake_dataset(tmp_path)
    (tmp_path / "pathfinder" / "diagnostics.json").write_text(
        '{"algorithm": "pathfinder", "passed": false, "failures": ["k"], "checks": []}'
    )
    from gmmpipe.plots import plot_weights
    from gmmpipe.summarize import align_components, load_fits

    fig = plot_weights(align_components(load_fits(fake["posteriors"])), {})
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "pathfinder\n(diagnostics FAILED)" in labels
    plt.close(fig)
