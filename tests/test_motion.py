"""Maps moving into each other: the transition's frames, the map view's motion, the session's
series, and trails, on the demo's real maps (two UMAP maps of the same 5,000 digits, recorded as
a layers series)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from conftest import FakeDoc

from embviz.render.raster import Renderer, Style
from embviz.render.store import PointStore, load_store
from embviz.render.transition import Transition, ease, motion_rows, trail_paths

SERIES = "efficientnet_lite0-layers.umap2d"
MEMBERS = ["efficientnet_lite0.blocks.5.umap2d", "efficientnet_lite0.pooled.umap2d"]


def series_copy(demo, root):
    """A copy of the demo whose two 2D UMAP maps form the layers series :data:`SERIES`."""
    from embviz.dataset import open_dataset
    from embviz.series import series_entry

    shutil.copytree(demo, root, ignore=shutil.ignore_patterns("tags", "cache"))
    ds = open_dataset(root)

    def change(m):
        for i, p in enumerate(MEMBERS):
            member = p.removeprefix("efficientnet_lite0.").removesuffix(".umap2d")
            entry = series_entry(SERIES, "layers", i, member, len(MEMBERS))
            m["tables"][f"projections/{p}"]["meta"]["series"] = entry

    ds.update_manifest(change)
    return ds.reload()


@pytest.fixture(scope="module")
def series_ds(demo_dataset, tmp_path_factory):
    return series_copy(demo_dataset, tmp_path_factory.mktemp("motion") / "ds")


@pytest.fixture(scope="module")
def maps(series_ds):
    return [load_store(series_ds, p) for p in MEMBERS]


def test_points_start_on_one_map_and_end_on_the_other(maps):
    a, b = maps
    tr = Transition(a, b, src_view=a.extent, dst_view=b.extent)
    assert tr.n == b.n == 5000 and tr.matched == 1.0
    x0, y0 = tr.positions(0.0)
    rows_a = a.row_of(tr.ids)
    assert np.allclose(x0, a.x[rows_a]) and np.allclose(y0, a.y[rows_a])
    # At the end each point is where b puts it, drawn in a's view (screen space).
    x1, y1 = tr.positions(1.0)
    ea, eb = a.extent, b.extent
    sx = (ea.x1 - ea.x0) / (eb.x1 - eb.x0)
    expect = ea.x0 + (b.x[tr.rows] - eb.x0) * sx
    assert np.allclose(x1, expect, atol=1e-4 * (ea.x1 - ea.x0))
    mid_x, _ = tr.positions(0.5)
    assert np.allclose(mid_x, (x0 + x1) / 2, atol=1e-4 * (ea.x1 - ea.x0))
    assert ease(0) == 0 and ease(1) == 1 and ease(0.25) < 0.25 < 0.75 < ease(0.75)


def test_frames_keep_colours_filters_and_hidden_classes(maps):
    a, b = maps
    tr = Transition(a, b, src_view=a.extent, dst_view=b.extent)
    codes, names = b.categorical["label"]
    full = tr.frame(0.5, 400, 300, mode="category", color_by="label")
    assert full.points == b.n and set(full.counts) == set(names)
    keep = np.isin(codes, [names.index("3"), names.index("7")])
    filtered = tr.frame(0.5, 400, 300, mode="category", color_by="label", mask=keep)
    assert filtered.points == int(keep.sum())
    hidden = tr.frame(
        0.5, 400, 300, mode="category", color_by="label", style=Style(hidden=frozenset({"1"}))
    )
    assert hidden.points == b.n - int((codes == names.index("1")).sum())


def test_the_motion_sample_keeps_rare_structure():
    """A 1M-point blob and a far-off cluster of 30 points: a 20,000-point motion keeps every
    point of the small cluster, and the blob in proportion."""
    rng = np.random.default_rng(0)
    blob = rng.normal(0, 1, (1_000_000, 2))
    rare = rng.normal(40, 0.05, (30, 2))
    xy = np.vstack([blob, rare]).astype(np.float32)
    store = PointStore.from_arrays(xy[:, 0], xy[:, 1], ids=np.arange(len(xy)), rank=False)
    rows = motion_rows(store, 20_000)
    assert len(rows) == 20_000 and np.all(np.diff(rows) > 0)
    assert np.isin(np.arange(1_000_000, 1_000_030), rows).all()
    assert motion_rows(store, 20_000) is rows  # kept for the next motion to this map


def test_trails_follow_listed_samples_across_the_series(maps):
    ids = maps[0].ids[:25]
    paths = trail_paths(maps, ids)
    assert paths["id"] == [int(i) for i in ids]
    for sid, xs, ys in zip(paths["id"], paths["xs"], paths["ys"], strict=True):
        for store, x, y in zip(maps, xs, ys, strict=True):
            row = store.row_of(np.array([sid]))[0]
            assert (x, y) == pytest.approx((float(store.x[row]), float(store.y[row])))


def _pump(doc: FakeDoc, until, timeout: float = 60.0) -> None:
    """Run the document's next-tick callbacks as a server would until ``until()``."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the motion did not end"
        if doc.callbacks:
            doc.callbacks.pop(0)()
        else:
            time.sleep(0.01)


def test_a_session_steps_through_its_series_and_the_map_moves(series_ds):
    from embviz.app.explorer import Explorer

    ex = Explorer(series_ds, projection=MEMBERS[0])
    s, panel = ex.session, ex.map_panel
    assert [m.member for m in s.series()] == ["blocks.5", "pooled"] and s.series_index() == 0
    assert ex.series.player.end == 1 and ex.series.player.value == 0
    s.show(ex.map.store.ids[:40])  # a selection, outlined while it moves
    doc = FakeDoc()
    ex.map.doc = doc  # as in a server: frames come back through the document
    figure, changes = ex.map.figure, []
    s.param.watch(lambda e: changes.append(e.new), "projection")
    ex.series.player.value = 1  # the player's next step
    assert changes == [MEMBERS[1]], "the map changed more than once"
    assert s.embedding == "efficientnet_lite0.pooled" and s.series_index() == 1
    motion = panel.motion
    _pump(doc, lambda: motion.done and not ex.map.renders.busy and not doc.callbacks)
    assert motion.frames >= 2 and motion.bytes > 0
    assert ex.map.figure is figure and f"projections/{MEMBERS[1]}--" in ex.map.store.key
    assert ex.map.last.frame.points == 5000 and len(ex.map.highlight_src.data["x"]) == 40
    # The full map the motion ends on is the still map of the member.
    req = ex.map.last.request
    still = Renderer(load_store(series_ds, MEMBERS[1]), sources=[]).render(
        req.view, req.width, req.height, mode="category", color_by="label"
    )
    assert ex.map.last.frame.png == still.png


def test_anything_else_drawn_mid_motion_ends_it_on_the_new_map(series_ds):
    from embviz.app.explorer import Explorer

    ex = Explorer(series_ds, projection=MEMBERS[0])
    ex.map.doc = FakeDoc()
    ex.session.show_projection(MEMBERS[1])
    motion = ex.map_panel.motion
    assert ex.map.motion is motion and not motion.done
    ex.session.color_by = "split"  # a restyle while it moves
    assert (
        motion.done and ex.map.motion is None and f"projections/{MEMBERS[1]}--" in ex.map.store.key
    )


def test_without_motion_or_a_document_the_map_switches_at_once(series_ds):
    from embviz.app.explorer import Explorer

    ex = Explorer(series_ds, projection=MEMBERS[0], animate=False)
    ex.map.doc = FakeDoc()
    figure = ex.map.figure
    ex.session.show_projection(MEMBERS[1])
    assert ex.map_panel.motion is None and ex.map.figure is not figure
    ex2 = Explorer(series_ds, projection=MEMBERS[0])  # a notebook: no document
    ex2.session.show_projection(MEMBERS[1])
    assert f"projections/{MEMBERS[1]}--" in ex2.map.store.key and ex2.map.last.frame.points == 5000


def test_a_link_opens_on_a_map_of_any_embedding_and_trails_draw(series_ds):
    from embviz.app.explorer import Explorer

    ex = Explorer(series_ds, projection=MEMBERS[1], trails=True)
    assert ex.session.embedding == "efficientnet_lite0.pooled"
    assert f"projections/{MEMBERS[1]}--" in ex.map.store.key
    ex.session.select(ex.map.store.ids[:30])
    assert len(ex.map.trail_src.data["xs"]) == 30 and all(
        len(xs) == 2 for xs in ex.map.trail_src.data["xs"]
    )
    ex.session.trails = False
    assert ex.map.trail_src.data["xs"] == []
