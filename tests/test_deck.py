"""``embviz.deck`` and the 3D view's pane spec: pydeck's PointCloudLayer in an OrbitView."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import embviz

POINTS = 3000


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny synthetic dataset (3,000 seeded points, labels, a 2D and a 3D projection)."""
    from embviz.pipeline.synth import synth

    out = tmp_path_factory.mktemp("deck") / "synth"
    synth(out, points=POINTS, progress=False)
    return out


def spec_of(deck) -> dict:
    return json.loads(deck.to_json())


def test_deck_is_a_point_cloud_in_an_orbit_view_within_the_budget(root):
    import pydeck

    d = embviz.deck(embviz.open(root), color_by="label", budget=1000)
    assert isinstance(d, pydeck.Deck)
    spec = spec_of(d)
    (layer,) = spec["layers"]
    assert layer["@@type"] == "PointCloudLayer"
    assert layer["coordinateSystem"] == "@@#COORDINATE_SYSTEM.CARTESIAN"
    assert [v["@@type"] for v in spec["views"]] == ["OrbitView"]
    assert spec["mapStyle"] == ""  # no base map: an embedding is not a place
    assert len(layer["data"]) == 1000  # 3,000 points, a budget of 1,000
    assert len({p["id"] for p in layer["data"]}) == 1000
    # Every category is still there (the sample keeps the density and rare voxels).
    labels = {p["label"] for p in layer["data"]}
    assert len(labels) == 10


def test_a_view_state_gives_the_points_in_its_view(root):
    from embviz.app.notebook import DECK_SIZE
    from embviz.render.sample3d import box_from_view_state
    from embviz.render.store import load_store

    store = load_store(embviz.open(root), "synth.3d", dims=3)
    e = store.extent
    centre = [float(store.x[0]), float(store.y[0]), float(store.z[0])]
    whole = spec_of(embviz.deck(root))["initialViewState"]
    view = {"target": centre, "zoom": whole["zoom"] + 2.5}
    spec = spec_of(embviz.deck(root, view_state=view, budget=400))
    assert spec["initialViewState"]["target"] == centre  # it opens on that view
    box = box_from_view_state(view, *DECK_SIZE, e)
    assert box is not None
    data = spec["layers"][0]["data"]
    ids = np.array([p["id"] for p in data])
    rows = store.row_of(ids)
    assert 0 < len(rows) <= 400
    assert box.contains(store.x[rows], store.y[rows], store.z[rows]).all()
    inside = store.rows_in(box)
    if len(inside) <= 400:  # everything in view fits: all of it is there
        assert sorted(rows) == sorted(inside)


def test_to_html_writes_a_page_holding_the_points(root, tmp_path):
    d = embviz.deck(root, color_by="score", budget=500)
    path = tmp_path / "cloud.html"
    d.to_html(str(path))
    page = path.read_text()
    start = page.index("const jsonInput = ") + len("const jsonInput = ")
    written = json.JSONDecoder().raw_decode(page[start:])[0]
    expected = spec_of(d)["layers"][0]["data"]
    assert written["layers"][0]["data"] == expected and len(expected) == 500
    assert "cdn.jsdelivr.net/npm/@deck.gl/jupyter-widget" in page  # deck.gl from a CDN...
    d.to_html(str(path), offline=True)
    assert "cdn.jsdelivr.net/npm/@deck.gl/jupyter-widget" not in path.read_text()  # ...or inlined


# Bokeh 3.9's ColumnDataSource.from_df (which the pane calls) uses reset_index(inplace=True),
# deprecated in pandas 3.1; outside tests the DeprecationWarning is silent.
@pytest.mark.filterwarnings(
    "ignore:The inplace keyword in DataFrame.reset_index:pandas.errors.Pandas4Warning"
)
def test_pane_spec_sends_the_points_as_one_binary_source(root):
    """The 3D view hands Panel's pane a dict with the DataFrame: float32 / uint8 columns,
    about 16 bytes a point per update (a pydeck Deck would go as float64 / int64 records)."""
    import pandas as pd
    import panel as pn
    from bokeh.document import Document
    from bokeh.protocol import Protocol

    from embviz.app.cloud_view import fit_view, pane_spec
    from embviz.render.store import load_store

    store = load_store(embviz.open(root), "synth.3d", dims=3)
    state = fit_view(store.extent, 900, 640)

    def frame(rows):
        rgb = np.full((len(rows), 3), 7, dtype=np.uint8)
        xyz = {a: getattr(store, a)[rows] for a in "xyz"}
        return pd.DataFrame({**xyz, "r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2]})

    spec = pane_spec(frame(np.arange(2000)), state)
    assert spec["mapStyle"] == "" and spec["views"][0]["@@type"] == "OrbitView"
    pane = pn.pane.DeckGL(spec)
    doc = Document()
    model = pane.get_root(doc)
    doc.add_root(model)
    events: list = []
    doc.on_change(events.append)
    n = 1500  # a view with fewer points: every column, the index too, changes
    pane.object = pane_spec(frame(np.arange(500, 500 + n)), state)
    (source,) = model.data_sources
    assert {k: str(v.dtype) for k, v in source.data.items()} == {
        "index": "uint8",
        "x": "float32",
        "y": "float32",
        "z": "float32",
        "r": "uint8",
        "g": "uint8",
        "b": "uint8",
    }
    message = Protocol().create("PATCH-DOC", events)
    sent = sum(len(b.to_bytes()) for b in message.buffers) + len(message.content_json)
    assert sent <= 16 * n + 4096, sent


@pytest.mark.browser
def test_offline_page_draws_the_cloud_with_no_network(root, tmp_path, browser):
    from PIL import Image

    path = tmp_path / "cloud.html"
    embviz.deck(root, color_by="label").to_html(str(path), offline=True)
    page = browser.new_page(viewport={"width": 900, "height": 600})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Only the file itself loads: the stylesheets it links from CDNs are refused.
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
    page.goto(path.as_uri())
    page.wait_for_function(
        "() => document.querySelector('canvas') && document.querySelector('canvas').width > 0"
    )

    def coloured() -> int:
        img = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
        return int(((img.max(2) - img.min(2)) > 60).sum())

    for _ in range(40):  # deck.gl draws on a later animation frame
        if coloured() > 500:
            break
        page.wait_for_timeout(250)
    assert coloured() > 500, "the offline page drew nothing"
    assert not errors, errors
    page.close()
