"""The 3D view's server side without a browser: budgets, view-driven samples, colours, events."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import FakeDoc, wait_until

from embviz.app.cloud_view import CloudView
from embviz.render.sample3d import box_from_view_state
from embviz.render.store import Box, PointStore


@pytest.fixture(scope="module")
def store():
    rng = np.random.default_rng(0)
    n = 300_000
    centres = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 5]], dtype=float)
    label = rng.integers(0, 3, n)
    xyz = rng.normal(size=(n, 3)) + centres[label]
    return PointStore.from_arrays(
        xyz[:, 0],
        xyz[:, 1],
        xyz[:, 2],
        ids=np.arange(n),
        categorical={"label": (label.astype(np.int16), ["a", "b", "c"])},
        numeric={"score": rng.random(n).astype(np.float32)},
    )


def zoomed_on(view: CloudView, centre, zoom_steps: float) -> dict:
    state = dict(view._initial)
    state["target"] = [float(v) for v in centre]
    state["zoom"] = state["zoom"] + zoom_steps
    return state


def test_overview_respects_the_budget_and_zoom_sends_every_point_in_view(store):
    view = CloudView(store, budget=20_000)
    overview = view.compute({})
    assert len(overview.rows) == 20_000 and not overview.in_view
    assert overview.nbytes == 20_000 * (3 * 4 + 3)  # float32 x, y, z and uint8 r, g, b
    # Zoomed on blob "b", the box holds fewer points than the budget: all of them are sent.
    update = view.compute(zoomed_on(view, [20, 0, 0], 7.0))
    assert update.in_view and 0 < len(update.rows) < 20_000
    box = box_from_view_state(zoomed_on(view, [20, 0, 0], 7.0), *view._size, store.extent)
    np.testing.assert_array_equal(np.sort(update.rows), np.sort(store.rows_in(box)))


def test_colours_follow_the_column_and_hidden_classes_are_not_sent(store):
    view = CloudView(store, budget=50_000)
    view.color_by("label", hidden=frozenset({"b"}))
    update = view.compute({})
    codes = store.categorical["label"][0][update.rows]
    assert len(update.rows) and not (codes == 1).any()
    rgb = update.frame[["r", "g", "b"]].to_numpy()
    assert len({tuple(c) for c in rgb}) == 2  # the two visible classes, one colour each
    view.color_by("score")
    frame = view.compute({}).frame
    assert frame["r"].nunique() > 20  # a continuous colormap


def test_events_map_picked_indices_to_rows_and_updates_keep_the_old_points(store):
    taps: list = []
    view = CloudView(store, budget=10_000, on_tap=taps.append)
    view.refresh(wait=True)
    before = view.rows.copy()
    view._on_click(SimpleNamespace(new={"index": 5}))
    assert taps == [int(before[5])]
    view._on_click(SimpleNamespace(new={"index": 10**9}))
    assert taps[-1] is None


def _wait_idle(view: CloudView) -> None:
    wait_until(lambda: not view.updates.busy, 20, "the sample job")


def test_a_failing_sample_keeps_the_points_and_the_next_one_works(store, monkeypatch, caplog):
    view = CloudView(store, budget=10_000)
    view.refresh(wait=True)
    before = view.rows.copy()
    view.doc = FakeDoc()

    def boom(state):
        raise RuntimeError("boom")

    monkeypatch.setattr(view.updates, "compute", boom)
    with caplog.at_level(logging.ERROR, logger="embviz.app.work"):
        view._on_view(SimpleNamespace(new=zoomed_on(view, [0, 0, 0], 3.0)))
        _wait_idle(view)
    assert any("3D sample failed" in r.getMessage() for r in caplog.records)
    assert view.doc.callbacks == []
    np.testing.assert_array_equal(view.rows, before)
    monkeypatch.undo()
    view.refresh()
    _wait_idle(view)
    (apply,) = view.doc.callbacks
    apply()  # on the document's thread
    assert view.view_state and not np.array_equal(view.rows, before)  # the zoomed sample


def test_selection_takes_every_point_in_view_not_only_the_sample(store):
    view = CloudView(store, budget=1_000)
    view.color_by("label", hidden=frozenset({"c"}))
    view.view_state = zoomed_on(view, [0, 0, 0], 1.0)
    box = box_from_view_state(view.view_state, *view._size, store.extent)
    assert isinstance(box, Box) and isinstance(store.extent, Box)
    visible = store.categorical["label"][0] != 2
    rows = view.rows_in_view()
    np.testing.assert_array_equal(rows, store.rows_in(box, visible))  # the exact set
    assert len(rows) > 1_000 and (visible[rows]).all()
    view.color_by("label")
    np.testing.assert_array_equal(view.rows_in_view(), store.rows_in(box))
