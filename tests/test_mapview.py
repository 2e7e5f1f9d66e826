"""Tests for the map view: exact selections and taps, hover points and sprites, resilient renders."""

from __future__ import annotations

import base64
import logging
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import FakeDoc, wait_until

from embviz.app.mapview import MapView
from embviz.curve import hilbert_order
from embviz.render.overlay import IMAGE_BUDGET
from embviz.render.raster import Style
from embviz.render.store import PointStore, View

PLOT_W, PLOT_H = 900, 640  # MapView's default size until the browser reports one


def make_store(xy: np.ndarray, codes: np.ndarray, names: list[str]) -> PointStore:
    order = hilbert_order(xy)
    x, y = (np.ascontiguousarray(xy[order, i], dtype=np.float32) for i in (0, 1))
    ids = (np.arange(len(x)) * 2 + 1000)[order]  # ids differ from rows
    return PointStore.from_arrays(
        x, y, ids=ids, chunk_rows=256, categorical={"label": (codes[order], names)}
    )


@pytest.fixture(scope="module")
def store() -> PointStore:
    """20k points spread over [0, 100]^2 with three labels."""
    rng = np.random.default_rng(0)
    n = 20_000
    xy = rng.uniform(0, 100, (n, 2))
    return make_store(xy, rng.integers(0, 3, n).astype(np.int16), ["a", "b", "c"])


def thumbs(ids) -> list[str]:
    return [thumb(int(i)) for i in ids]


def thumb(sample_id: int) -> str:
    return f"/thumb/{sample_id}"


def brute_rect(s: PointStore, x0, x1, y0, y1, mask=None) -> np.ndarray:
    inside = (s.x >= x0) & (s.x <= x1) & (s.y >= y0) & (s.y <= y1)
    return np.flatnonzero(inside if mask is None else inside & mask)


def in_triangle(s: PointStore, tri: np.ndarray) -> np.ndarray:
    px, py = s.x.astype(float), s.y.astype(float)
    (ax, ay), (bx, by), (cx, cy) = tri
    d1 = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    d2 = (cx - bx) * (py - by) - (cy - by) * (px - bx)
    d3 = (ax - cx) * (py - cy) - (ay - cy) * (px - cx)
    return ((d1 >= 0) & (d2 >= 0) & (d3 >= 0)) | ((d1 <= 0) & (d2 <= 0) & (d3 <= 0))


# -- selection and taps ---------------------------------------------------------------------------
def test_select_rect_and_poly_equal_brute_force_and_respect_filters(store):
    mv = MapView(store)
    rng = np.random.default_rng(1)
    filt = rng.random(store.n) < 0.4
    for mask in (None, filt):
        mv.mask = mask
        for _ in range(10):
            xs, ys = rng.uniform(0, 100, 2), rng.uniform(0, 100, 2)
            # Bokeh sends the corners as dragged: x0 may exceed x1.
            geom = {"type": "rect", "x0": xs[1], "x1": xs[0], "y0": ys[0], "y1": ys[1]}
            got = mv.select(geom)
            expect = brute_rect(store, xs.min(), xs.max(), ys.min(), ys.max(), mask)
            np.testing.assert_array_equal(got, expect)
            tri = rng.uniform(0, 100, (3, 2))
            inside = in_triangle(store, tri)
            expect = np.flatnonzero(inside if mask is None else inside & mask)
            got = mv.select({"type": "poly", "x": list(tri[:, 0]), "y": list(tri[:, 1])})
            np.testing.assert_array_equal(np.sort(got), expect)
    assert len(mv.select({"type": "point", "x": 1.0, "y": 1.0})) == 0


def test_selection_and_tap_events_call_back(store):
    chosen: list = []
    mv = MapView(store, on_select=chosen.append, on_tap=chosen.append)
    geom = {"type": "rect", "x0": 10.0, "x1": 20.0, "y0": 10.0, "y1": 20.0}
    mv._on_selection(SimpleNamespace(geometry=geom, final=False))
    assert chosen == []  # still dragging
    mv._on_selection(SimpleNamespace(geometry=geom, final=True))
    np.testing.assert_array_equal(chosen.pop(), brute_rect(store, 10, 20, 10, 20))
    row = 123
    mv._on_tap(SimpleNamespace(x=float(store.x[row]), y=float(store.y[row])))
    assert chosen.pop() == row


def test_nearest_within_screen_pixels_excludes_filtered_points(store):
    mv = MapView(store)
    mv.view = View(0.0, 100.0, 0.0, 100.0)
    px = 8.0
    radius = px  # distances below are in screen pixels (the plot is not square)
    rng = np.random.default_rng(2)
    fx, fy = store.x.astype(float), store.y.astype(float)
    hits = 0
    for qx, qy in rng.uniform(0, 100, (40, 2)):
        d = np.hypot((fx - qx) * PLOT_W / 100.0, (fy - qy) * PLOT_H / 100.0)
        row = mv.nearest(qx, qy, px)
        if d.min() > radius * 1.0001:
            assert row is None
        else:
            assert row is not None and d[row] <= d.min() + 1e-4
            hits += 1
            mv.mask = np.ones(store.n, dtype=bool)
            mv.mask[row] = False  # filter the tapped point out: the next nearest or nothing
            other = mv.nearest(qx, qy, px)
            assert other != row
            d[row] = np.inf
            assert (other is None) == (d.min() > radius * 1.0001)
            mv.mask = None
    assert hits >= 10
    assert mv.nearest(500.0, 500.0) is None


def test_nearest_radius_is_in_screen_pixels_on_both_axes():
    s = make_store(np.array([[50.0, 0.6], [0.0, 0.0]]), np.zeros(2, np.int16), ["a"])
    mv = MapView(s)
    mv.view = View(0.0, 100.0, 0.0, 1.0)  # 0.1 data units in y = 64 screen px
    assert mv.nearest(50.0, 0.5, px=8) is None


# -- hover points and sprites ----------------------------------------------------------------------
def _square(store: PointStore, cx: float, cy: float, h: float) -> View:
    return View(cx - h, cx + h, cy - h, cy + h)


def test_points_only_under_hover_limit_and_sprites_under_sprite_limit(store):
    described: list[np.ndarray] = []

    def describe(rows):
        described.append(rows)
        return {"text": [f"row {r}" for r in rows]}

    mv = MapView(store, thumbs=thumbs, describe=describe, hover_limit=600, sprite_limit=60)
    full = mv.compute(mv.request(store.extent))
    assert full.frame.points == store.n and full.points is None and full.sprites is None
    assert described == []  # no per-point work for a crowded view

    mid = _square(store, 50, 50, 7.5)  # ~450 points
    rows = store.rows_in(mid)
    assert 60 < len(rows) <= 600
    res = mv.compute(mv.request(mid))
    assert res.sprites is None
    np.testing.assert_array_equal(res.points["id"], store.ids[rows])
    np.testing.assert_allclose(res.points["x"], store.x[rows])
    np.testing.assert_allclose(res.points["y"], store.y[rows])
    assert res.points["thumb"] == [thumb(int(i)) for i in store.ids[rows]]
    assert res.points["text"] == [f"row {r}" for r in rows]

    small = _square(store, 50, 50, 2.0)
    rows = store.rows_in(small)
    assert 0 < len(rows) <= 60
    res = mv.compute(mv.request(small))
    # Every point has an image, so all are sprites; no point is sent twice.
    assert res.sprites["thumb"] == [thumb(int(i)) for i in store.ids[rows]]
    np.testing.assert_allclose(res.sprites["x"], store.x[rows])
    assert len(res.sprites["w"]) == len(rows) and res.points["id"] == []
    assert res.images == len(rows)

    # The limits are inclusive, and points come with no thumbnail function but sprites do not.
    mv.hover_limit = store.count_in(mid)
    assert mv.compute(mv.request(mid)).points is not None
    mv.hover_limit -= 1
    assert mv.compute(mv.request(mid)).points is None
    bare = MapView(store, sprite_limit=10_000)
    res = bare.compute(bare.request(small))
    assert res.sprites is None and set(res.points["thumb"]) == {""}


def test_filtered_points_are_not_hovered(store):
    mv = MapView(store, thumbs=thumbs, hover_limit=600)
    mv.mask = store.categorical["label"][0] == 1
    mv.mask_key = "label=b"
    view = _square(store, 50, 50, 7.5)
    res = mv.compute(mv.request(view))
    expect = store.rows_in(view, mv.mask)
    assert res.frame.points == len(expect)
    hovered = res.points["id"] + (res.sprites["id"] if res.sprites else [])
    np.testing.assert_array_equal(sorted(hovered), np.sort(store.ids[expect]))


def test_sprites_grow_on_screen_when_zooming_in(store):
    mv = MapView(store, thumbs=thumbs, sprite_limit=400)
    sizes = []
    for h in (5.5, 3.5, 2.0, 1.2, 0.6):
        view = _square(store, 40, 60, h)
        res = mv.compute(mv.request(view))
        assert res.sprites is not None, h
        per_px_x = (view.x1 - view.x0) / res.request.width
        per_px_y = (view.y1 - view.y0) / res.request.height
        w_px, h_px = res.sprites["w"][0] / per_px_x, res.sprites["h"][0] / per_px_y
        assert w_px == pytest.approx(h_px)  # square on screen
        assert 14 <= w_px <= 160
        sizes.append(w_px)
    assert all(b >= a for a, b in zip(sizes, sizes[1:], strict=False))
    assert sizes[-1] > 2 * sizes[0]


# -- keeping the Bokeh models in step --------------------------------------------------------------
def test_range_events_rerender_and_numeric_mode_shows_the_colour_bar():
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 10, (3000, 2))
    s = make_store(xy, rng.integers(0, 2, 3000).astype(np.int16), ["a", "b"])
    s.numeric["v"] = s.x.copy()
    frames = []
    mv = MapView(s, on_frame=frames.append)
    mv._on_ranges(SimpleNamespace(x0=6.0, x1=2.0, y0=1.0, y1=9.0))  # doc-less: synchronous
    assert mv.view == View(2.0, 6.0, 1.0, 9.0) and frames[-1].frame.view == mv.view
    assert mv.raster_src.data["url"][0].startswith("data:image/png;base64,")
    assert mv.raster_src.data["x"] == [2.0] and mv.raster_src.data["w"] == [4.0]
    assert frames[-1].frame.points == s.count_in(mv.view)
    mv._on_ranges(SimpleNamespace(x0=None, x1=1.0, y0=0.0, y1=1.0))
    assert len(frames) == 1 and mv.view == View(2.0, 6.0, 1.0, 9.0)
    assert not mv.color_bar.visible
    mv.set_style_source(lambda: ("numeric", "v", Style(cmap="fire")))
    res = mv.refresh(wait=True)
    lo, hi = res.frame.span
    assert mv.color_bar.visible and (mv.color_mapper.low, mv.color_mapper.high) == (lo, hi)
    assert lo < hi and mv.color_bar.title == "v"


def _wait_idle(mv: MapView) -> None:
    wait_until(lambda: not mv.renders.busy, 20, "the render job")


def test_a_failing_render_is_logged_and_the_next_one_works(store, monkeypatch, caplog):
    mv = MapView(store)

    def boom(*args, **kwargs):
        raise RuntimeError("broken frame")

    monkeypatch.setattr(mv.renderer, "render", boom)
    with caplog.at_level(logging.ERROR, logger="embviz.app.work"):
        mv.doc = FakeDoc()
        mv.refresh()  # through the render pool: must not raise
        _wait_idle(mv)
        mv.refresh()
        _wait_idle(mv)
    failures = [r for r in caplog.records if "render failed" in r.getMessage()]
    assert len(failures) == 2 and "broken frame" in failures[0].getMessage()
    assert mv.doc.callbacks == [] and mv.last is None
    monkeypatch.undo()
    mv.refresh()
    _wait_idle(mv)
    (apply,) = mv.doc.callbacks
    apply()  # on the document's thread
    assert mv.last is not None and mv.last.frame.points == store.n


def test_view_changes_during_a_render_are_coalesced(store, monkeypatch):
    mv = MapView(store)
    mv.doc = FakeDoc()
    release = threading.Event()
    rendered: list[View] = []
    real = mv.renderer.render

    def slow(view, *args, **kwargs):
        rendered.append(view)
        if len(rendered) == 1:
            assert release.wait(20)
        return real(view, *args, **kwargs)

    monkeypatch.setattr(mv.renderer, "render", slow)
    views = [_square(store, 50, 50, h) for h in (40, 30, 20, 10)]
    for v in views:
        mv.refresh(v)
    release.set()
    _wait_idle(mv)
    assert rendered == [views[0], views[-1]]  # the ones in between were superseded
    for apply in mv.doc.callbacks:
        apply()
    assert mv.last.frame.view == views[-1]


# -- hidden legend entries -------------------------------------------------------------------------
def test_hiding_a_category_on_the_map_does_not_reaggregate(store, monkeypatch):
    import datashader

    calls = []
    real = datashader.Canvas.points
    monkeypatch.setattr(
        datashader.Canvas, "points", lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    )
    style = {"now": Style()}
    mv = MapView(store)
    mv.set_style_source(lambda: ("category", "label", style["now"]))
    mv.refresh(wait=True)
    style["now"] = Style(hidden=frozenset({"a"}))
    mv.refresh(wait=True)
    assert len(calls) == 1


def test_hidden_categories_get_no_tooltips_or_sprites(store):
    mv = MapView(store, thumbs=thumbs, hover_limit=600, sprite_limit=600)
    mv.set_style_source(lambda: ("category", "label", Style(hidden=frozenset({"a"}))))
    res = mv.compute(mv.request(_square(store, 50, 50, 7.5)))
    codes = store.categorical["label"][0]
    ids = res.points["id"] + res.sprites["id"]
    assert len(ids) == res.frame.points
    assert not (codes[store.row_of(np.array(ids))] == 0).any()


def test_an_older_frame_never_replaces_a_newer_one(store):
    # Bokeh may run callbacks queued before the browser connects out of order.
    mv = MapView(store)
    mv.doc = FakeDoc()
    old, new = _square(store, 50, 50, 30), _square(store, 50, 50, 10)
    mv.refresh(old)
    _wait_idle(mv)
    mv.refresh(new)
    _wait_idle(mv)
    first, second = mv.doc.callbacks
    second()
    first()  # the older frame arrives last: dropped
    assert mv.last.frame.view == new
    # A frame rendered on the document's thread is newer than any still in flight.
    mv.refresh(old)
    _wait_idle(mv)
    shown = mv.refresh(new, wait=True)
    mv.doc.callbacks[-1]()
    assert mv.last is shown


# -- images inside the frame (notebooks) -------------------------------------------------------------
def _data_uri(n: int) -> str:
    return "data:image/webp;base64," + "A" * (n - 23)


def test_inline_images_keep_the_frame_under_its_budget(store):
    # 2,000-byte data URIs (a 96-px photo's size): 400 sprites would be 800 KB.
    mv = MapView(
        store,
        thumbs=lambda ids: [_data_uri(2000) for _ in ids],
        image_budget=IMAGE_BUDGET,
        hover_limit=3000,
        sprite_limit=3000,
    )
    view = _square(store, 50, 50, 12)
    assert 400 < store.count_in(view) <= 3000
    res = mv.compute(mv.request(view))
    sent = res.sprites["thumb"]
    assert 0 < res.images == len(sent) < store.count_in(view)
    assert res.bytes <= IMAGE_BUDGET
    # What the frame actually carries: the PNG as a data URI, points, text and images.
    actual = len(base64.b64encode(res.frame.png)) + sum(map(len, sent))
    actual += sum(len(t) for t in res.points["text"] + res.sprites["text"])
    assert actual <= res.bytes <= IMAGE_BUDGET
    # The points without an image still have tooltips; none is sent twice.
    ids = res.points["id"] + res.sprites["id"]
    assert len(ids) == len(set(ids)) == store.count_in(view)
    assert set(res.points["thumb"]) <= {""}
    # The kept images are spread over the view, not the first rows of the store.
    xs = np.asarray(res.sprites["x"])
    assert xs.min() < 45 and xs.max() > 55
    # Panning a little keeps the images of the points still in view.
    moved = mv.compute(mv.request(_square(store, 50.5, 50, 12)))
    both = set(moved.points["id"] + moved.sprites["id"]) & set(ids)
    kept = set(res.sprites["id"]) & both
    assert len(kept & set(moved.sprites["id"])) >= 0.8 * len(kept)


def test_route_urls_are_not_budgeted(store):
    mv = MapView(store, thumbs=thumbs, sprite_limit=400)
    view = _square(store, 50, 50, 2.0)
    res = mv.compute(mv.request(view))
    assert res.images == store.count_in(view) == len(res.sprites["thumb"])
    assert res.bytes < 22 + len(res.frame.png) * 2  # the PNG and the points, not the images


def test_rarely_drawn_layers_join_the_figure_when_first_filled():
    """A new map's figure holds only the layers every map draws (each model costs every new
    page's build); cells, trails, contours and labels get their renderer, once, when their
    source first holds data, and the cells then answer the hover tool."""
    from bokeh.models import HoverTool, MultiLine, Rect, Text

    from embviz.app.map_figure import map_figure

    m = map_figure(View(0, 1, 0, 1))
    glyphs = lambda: [type(r.glyph) for r in m.figure.renderers]  # noqa: E731
    before = len(m.figure.renderers)
    assert not {Rect, MultiLine, Text} & set(glyphs())
    m.label_src.data = {"x": [], "y": [], "text": [], "size": [], "font": []}  # still empty
    assert len(m.figure.renderers) == before
    m.label_src.data = {"x": [0.5], "y": [0.5], "text": ["a"], "size": [12], "font": ["12px"]}
    m.contour_src.data = {"xs": [[0, 1]], "ys": [[0, 1]]}
    m.label_src.data = {"x": [0.4], "y": [0.4], "text": ["b"], "size": [12], "font": ["12px"]}
    assert glyphs().count(Text) == 1 and glyphs().count(MultiLine) == 1
    m.cell_src.data = {k: [1.0] for k in m.cell_src.data}
    hover = next(t for t in m.figure.tools if isinstance(t, HoverTool))
    assert Rect in glyphs() and any(isinstance(r.glyph, Rect) for r in hover.renderers)
    assert len(m.figure.renderers) == before + 3
