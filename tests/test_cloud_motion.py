"""A new 3D projection of the same samples moves the points in the same deck (no browser)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import FakeDoc, wait_until

from embviz.app.cloud_motion import EASE, CloudMotion, same_samples
from embviz.app.cloud_view import CloudView
from embviz.render.store import PointStore

UMAP3D = "efficientnet_lite0.blocks.5.umap3d"
PCA3D = "efficientnet_lite0.blocks.5.pca3d"
STATUS3D = re.compile(r"^3D: [\d,]+ of 5,000 points sent")


class TimerDoc(FakeDoc):
    """A served document's next-tick and timeout callbacks, collected for the test to run."""

    def __init__(self):
        super().__init__()
        self.timeouts = []

    def add_timeout_callback(self, fn, ms):
        self.timeouts.append((fn, ms))


def layer(spec: dict) -> dict:
    return spec["layers"][0]


def xyz(frame) -> np.ndarray:
    return frame[["x", "y", "z"]].to_numpy()


def sent_ids(view: CloudView) -> np.ndarray:
    return view.store.ids[view.rows]


@pytest.fixture
def explorer(demo_dataset):
    from embviz.app.explorer import Explorer

    ex = Explorer(demo_dataset)
    assert ex.session.projection3d == UMAP3D and ex.session.color_by == "label"
    ex.session.dims = "3D"  # builds the 3D view (no document: samples are sent at once)
    return ex


def watch_specs(view: CloudView) -> list[dict]:
    specs: list[dict] = []
    view.pane.param.watch(lambda e: specs.append(e.new), "object")
    return specs


def test_same_samples_move_in_the_same_pane_with_a_deck_gl_transition(explorer):
    s = explorer.session
    cloud = explorer.cloud
    pane, ids0, before = cloud.pane, sent_ids(cloud).copy(), cloud.last.frame
    assert s.animate and len(ids0) == 5000
    old = cloud.store
    specs = watch_specs(cloud)

    s.projection3d = PCA3D
    new = s.store3d
    assert new is not old and same_samples(old, new, ids0)
    assert explorer.cloud is cloud and cloud.pane is pane and cloud.store is new  # no rebuild
    assert len(specs) == 2
    # First the transition over the points as they are (deck.gl needs it before the move) ...
    assert layer(specs[0])["transitions"] == layer(specs[1])["transitions"]
    np.testing.assert_array_equal(xyz(layer(specs[0])["data"]), xyz(before))
    # ... then the same samples, in the same order, at their places in the new map.
    move = layer(specs[1])
    np.testing.assert_array_equal(sent_ids(cloud), ids0)
    rows = new.row_of(ids0)
    expect = np.column_stack([new.x[rows], new.y[rows], new.z[rows]]).astype(np.float32)
    np.testing.assert_array_equal(xyz(move["data"]), expect)
    assert np.abs(expect - xyz(before)).max() > 1.0  # UMAP and PCA coordinates differ
    position = move["transitions"]["getPosition"]
    assert position == {"type": "interpolation", "duration": 1200, "easing": EASE}
    # The colours are the session's, by label: the same sample keeps its colour.
    np.testing.assert_array_equal(move["data"][["r", "g", "b"]], before[["r", "g", "b"]])
    assert len(np.unique(move["data"][["r", "g", "b"]].to_numpy(), axis=0)) == 10  # digits
    # The camera moves with the points to fit the new map (PCA spans four times UMAP's range).
    camera = specs[1]["initialViewState"]
    assert camera["transitionDuration"] == 1200 and camera["transitionEasing"] == EASE
    centre = (np.asarray(new.extent.lo) + np.asarray(new.extent.hi)) / 2
    np.testing.assert_allclose(camera["target"], centre, rtol=1e-6)
    assert camera["zoom"] < specs[0]["initialViewState"]["zoom"] - 1
    assert STATUS3D.match(s.status) and "moving to" in s.status

    # A later sample is the new map's own, with deck.gl's transition off first.
    cloud.refresh(wait=True)
    assert "transitions" not in layer(specs[-2]) and "transitions" not in layer(specs[-1])
    assert cloud.motion is None and cloud.last.store is new
    np.testing.assert_array_equal(xyz(layer(specs[-2])["data"]), expect)
    assert specs[-1]["initialViewState"] == camera  # unchanged: deck.gl keeps the user's view


def test_filters_and_hidden_classes_apply_to_the_new_map_while_moving(explorer):
    s = explorer.session
    cloud = explorer.cloud
    s.hidden = ["3"]
    s.set_filter("label", [str(d) for d in range(8)])  # 8 and 9 filtered out
    ids0 = sent_ids(cloud).copy()
    specs = watch_specs(cloud)

    s.projection3d = PCA3D
    labels = explorer.cloud.store.categorical["label"]
    names = np.asarray(labels[1])[labels[0][cloud.rows]]
    assert set(names) == {str(d) for d in range(8)} - {"3"}
    np.testing.assert_array_equal(sent_ids(cloud), ids0)  # the same points as before, moved
    assert "transitions" in layer(specs[-1])


def test_with_animate_off_a_new_3d_projection_rebuilds_the_view(explorer):
    s = explorer.session
    s.animate = False
    cloud, pane = explorer.cloud, explorer.cloud.pane

    s.projection3d = PCA3D
    assert explorer.cloud is not cloud and explorer.cloud.pane is not pane
    assert explorer.cloud.store is s.store3d and explorer.cloud.motion is None
    assert "transitions" not in layer(explorer.cloud.pane.object)
    assert explorer.cloud_panel.__panel__().objects[0] is explorer.cloud.pane


@pytest.fixture
def maps():
    """Two 3D maps of (mostly) the same 20,000 samples: ``b`` lacks 100 of ``a``'s and has 100
    others, its rows in another order, its points elsewhere; labels a, b, c and a score."""
    rng = np.random.default_rng(1)
    n = 20_000
    ids = np.arange(n, dtype=np.int64) * 3 + 5
    label = rng.integers(0, 3, n).astype(np.int16)
    score = rng.random(n).astype(np.float32)
    a = PointStore.from_arrays(
        *rng.normal(size=(3, n)),
        ids=ids,
        categorical={"label": (label, ["a", "b", "c"])},
        numeric={"score": score},
    )
    order = rng.permutation(n)[100:]
    ids_b = np.concatenate([ids[order], np.arange(100, dtype=np.int64) * 3 + 1])
    label_b = np.concatenate([label[order], np.zeros(100, dtype=np.int16)])
    score_b = np.concatenate([score[order], np.ones(100, dtype=np.float32)])
    b = PointStore.from_arrays(
        *(10 + 5 * rng.normal(size=(3, n))),
        ids=ids_b,
        categorical={"label": (label_b, ["a", "b", "c"])},
        numeric={"score": score_b},
    )
    return a, b


def test_maps_of_other_samples_or_sizes_are_not_the_same_samples(maps):
    a, b = maps
    ids = a.ids[:5000]
    assert same_samples(a, b, ids)
    rng = np.random.default_rng(0)
    others = PointStore.from_arrays(*rng.normal(size=(3, a.n)), ids=a.ids + 1)
    fewer = PointStore.from_arrays(*rng.normal(size=(3, 19_000)), ids=a.ids[:19_000])
    flat = PointStore.from_arrays(*rng.normal(size=(2, a.n)), ids=a.ids)
    assert not same_samples(a, others, ids)
    assert not same_samples(a, fewer, ids[:1000])  # all found, but 5 % fewer samples
    assert not same_samples(a, flat, ids)
    assert not same_samples(a, b, ids[:0])


def test_points_the_new_map_lacks_or_leaves_out_go_and_the_rest_keep_their_order(maps):
    a, b = maps
    view = CloudView(a, budget=5_000)
    view.color_by("label", hidden=frozenset({"c"}))
    view.refresh(wait=True)
    ids0, before = sent_ids(view).copy(), view.last.frame
    specs = watch_specs(view)
    mask = b.numeric["score"] < 0.8  # a filter on the new map
    motion = CloudMotion(view, b, mask=mask, color_by=("label", frozenset({"c"})), duration=60)
    motion.start()

    moved = sent_ids(view)
    lacks = b.row_of(ids0) < 0
    left_out = ~lacks & ~mask[np.maximum(b.row_of(ids0), 0)]
    assert lacks.sum() > 5 and left_out.sum() > 500
    np.testing.assert_array_equal(moved, ids0[~lacks & ~left_out])  # a subsequence, in order
    assert motion.dropped == int((lacks | left_out).sum())
    # The first spec holds every point as it was, the ones to go last; the second the rest.
    first, second = layer(specs[0])["data"], layer(specs[1])["data"]
    keep = ~lacks & ~left_out
    order = np.concatenate([np.flatnonzero(keep), np.flatnonzero(~keep)])
    np.testing.assert_array_equal(xyz(first), xyz(before)[order])
    rows = view.rows
    np.testing.assert_array_equal(second["x"], b.x[rows])
    assert (b.categorical["label"][0][rows] != 2).all()  # the hidden class stays hidden
    assert "transitions" in layer(specs[0]) and "transitions" in layer(specs[1])
    # A tap on a moved point is a sample of the new map.
    taps = []
    view.on_tap = taps.append
    view._on_click(SimpleNamespace(new={"index": 7}))
    assert b.ids[taps[0]] == moved[7]


def test_view_events_wait_for_the_motion_and_its_end_samples_the_new_map(maps):
    a, b = maps
    view = CloudView(a, budget=5_000)
    view.refresh(wait=True)
    doc = view.doc = TimerDoc()
    view.refresh()  # a sample of the old map, still on its way when the motion starts
    wait_until(lambda: not view.updates.busy, 20, "the sample job")
    stale = doc.callbacks.pop()
    motion = CloudMotion(view, b, duration=60)
    motion.start()
    moved = view.rows.copy()
    specs = watch_specs(view)

    stale()  # it arrives after the motion started: dropped
    np.testing.assert_array_equal(view.rows, moved)
    # The camera moving with the points reports views: stored, not sampled while moving.
    zoom = view._initial["zoom"] + 3  # the fit of the new map, zoomed in
    state = {"target": [10.0, 10.0, 10.0], "zoom": zoom, "rotationX": 20, "rotationOrbit": 10}
    view._on_view(SimpleNamespace(new=state))
    assert motion.running and view.view_state["target"] == [10.0, 10.0, 10.0]
    assert not view.updates.busy and not doc.callbacks and not specs
    # The motion's end samples the view of the new map (on the pool, then the page's thread).
    ((end, ms),) = doc.timeouts
    assert ms >= 60_000
    end()
    wait_until(lambda: not view.updates.busy and doc.callbacks, 20, "the sample after the motion")
    doc.callbacks.pop()()
    assert view.motion is None and view.last.store is b
    np.testing.assert_array_equal(view.rows, view.compute(state).rows)  # the view it reported
    assert not np.array_equal(view.rows, moved)  # the new map's own sample of that view
    assert "transitions" not in layer(specs[0]) and "transitions" not in layer(specs[-1])
