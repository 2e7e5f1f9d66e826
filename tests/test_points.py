"""``embviz.points``: a 2D map as a HoloViews element, Datashader's picture plus hover once zoomed."""

from __future__ import annotations

import numpy as np
import pytest

import embviz

POINTS = 3000


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny synthetic dataset (3,000 seeded points, labels, a 2D and a 3D projection)."""
    from embviz.pipeline.synth import synth

    out = tmp_path_factory.mktemp("points") / "synth"
    synth(out, points=POINTS, progress=False)
    return out


def hover_points(element, x_range, y_range):
    """The hover overlay's points after the plot's range streams report ``x_range, y_range``."""
    import holoviews as hv
    from holoviews.core.spaces import get_nested_streams

    for stream in get_nested_streams(element):
        if isinstance(stream, hv.streams.RangeXY):
            stream.event(x_range=x_range, y_range=y_range)
    return element[()].Points.I.dframe()


def test_points_is_an_element_with_stored_bounds_that_renders_and_composes(root):
    import holoviews as hv
    from bokeh.models import HoverTool, ImageRGBA

    from embviz.render.store import load_store

    ds = embviz.open(root)
    element = embviz.points(ds, color_by="label", width=400, height=300)
    assert isinstance(element, hv.DynamicMap)
    fig = hv.render(element, backend="bokeh")
    glyphs = [type(r.glyph) for r in fig.renderers]
    assert ImageRGBA in glyphs  # the Datashader picture
    assert any(isinstance(t, HoverTool) for t in fig.tools)
    assert (fig.width, fig.height) == (400, 300)
    # The axes are declared from the stored bounds (no pass over the data to find them).
    extent = load_store(ds, "synth.2d").extent
    points = element[()].Points.I
    assert points.get_dimension("x").range == (extent.x0, extent.x1)
    assert points.get_dimension("y").range == (extent.y0, extent.y1)
    # It overlays and lays out like any HoloViews element; a path works as well as a Dataset.
    layout = element + embviz.points(root, color_by="score") * hv.Text(0, 0, "centre")
    assert isinstance(hv.render(layout, backend="bokeh"), object)
    hv.render(embviz.points(root), backend="bokeh")  # density: no colour column


def test_zoomed_view_gets_a_hover_overlay_of_exactly_its_points(root):
    ds = embviz.open(root)
    element = embviz.points(ds, color_by="label", hover_limit=500)
    # The overview holds more than hover_limit points: no hover glyphs are sent.
    assert len(hover_points(element, None, None)) == 0
    table = ds.read_pandas("projections/synth.2d")
    labels = ds.read_pandas("samples", columns=["id", "label"]).set_index("id")["label"]
    x0, y0 = table[["x", "y"]].median()
    span = (table["x"].max() - table["x"].min()) / 20
    x_range, y_range = (x0 - span, x0 + span), (y0 - span, y0 + span)
    inside = table[table["x"].between(*x_range) & table["y"].between(*y_range)]
    assert 0 < len(inside) <= 500
    shown = hover_points(element, x_range, y_range)
    assert sorted(shown["id"]) == sorted(inside["id"])
    shown = shown.set_index("id")
    assert (shown["label"] == labels.reindex(shown.index)).all()  # the tooltip's label
    np.testing.assert_allclose(
        shown.loc[inside["id"], ["x", "y"]].to_numpy(), inside[["x", "y"]].to_numpy(), rtol=1e-6
    )


def test_unknown_colour_column_names_the_choices(root):
    with pytest.raises(ValueError, match=r"no column 'nope'.*'label'"):
        embviz.points(root, color_by="nope")
