"""The Session: one owner of a person's state; panels follow it; tags colour and filter live."""

from __future__ import annotations

import shutil

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tagged_copy(demo_dataset, tmp_path_factory):
    """A copy of the demo that tests may write tags into."""
    root = tmp_path_factory.mktemp("session") / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache", "tags", "reports"))
    return root


def test_the_session_opens_the_dataset_once_and_panels_share_it(demo_dataset):
    from embviz.app.explorer import Explorer
    from embviz.dataset import open_dataset

    ds = open_dataset(demo_dataset)
    ex = Explorer(ds)
    s = ex.session
    assert s.dataset is ds  # passed down, never re-opened from a path
    for panel in (ex.map_panel, ex.samples, ex.filters, ex.curator, ex.compare, ex.search):
        assert panel.session is s


def test_show_select_and_open_go_through_the_session(demo_dataset):
    from embviz.app.explorer import Explorer

    ex = Explorer(demo_dataset)
    s = ex.session
    s.show([5, 3, 9], title="Mine", captions=["a", "b", "c"], noun="picked")
    assert list(ex.grid.ids) == [5, 3, 9] and ex.grid.captions == ["a", "b", "c"]
    assert ex.grid.title == "Mine" and ex.grid.noun == "picked"
    assert len(ex.map.highlight_rows) == 3
    ex.grid.toggle_mark(3)  # ctrl-click in the page marks through the grid ...
    assert s.marked == [3]  # ... and the session owns the marks
    s.marked = []
    assert ex.grid.marked == []
    s.open(9)
    assert ex.details.visible_detail and ex.details.sample["id"] == 9
    s.open(None)
    assert not ex.details.visible_detail
    s.select([1, 2, 10**9])  # an id without a point is left out
    assert list(s.shown_ids) == [1, 2]
    assert s.selected["id"].tolist() == [1, 2]


def test_filters_mask_the_map_and_widgets_list_counts(demo_dataset):
    from embviz.app.explorer import Explorer

    ex = Explorer(demo_dataset)
    s = ex.session
    label = next(w for w in ex.filters.widgets if getattr(w, "label", "") == "label")
    counts = {v: k for k, v in label.options.items()}
    total = sum(int(k.rsplit("(", 1)[1].rstrip(")").replace(",", "")) for k in counts.values())
    assert total == s.store.n  # every category listed with its count
    label.value = ["3", "5"]
    assert s.filters == {"label": ["3", "5"]}
    ex.map.refresh(wait=True)
    codes, names = s.store.categorical["label"]
    want = int(np.isin(codes, [names.index("3"), names.index("5")]).sum())
    assert ex.map.last.frame.points == want
    assert "<svg" in ex.filters.widgets[-1].object  # a numeric range has its histogram


def test_tags_colour_and_filter_the_map_live(tagged_copy):
    from embviz.app.explorer import Explorer

    a, b = Explorer(tagged_copy), Explorer(tagged_copy)
    assert "tag" not in a.session.param.color_by.objects  # nothing tagged yet: no column
    a.session.tag([1, 2, 3, 4], "review")
    a.session.tag([2], "exclude")
    s = a.session
    assert "tag" in s.store.categorical and "tag" in s.param.color_by.objects
    codes, names = s.store.categorical["tag"]
    rows = s.store.row_of(np.array([1, 2, 3, 4]))
    assert [names[c] for c in codes[rows]] == ["review", "exclude", "review", "review"]
    s.color_by = "tag"
    a.map.refresh(wait=True)
    assert a.map.last.frame.counts["review"] == 3 and a.map.last.frame.counts["exclude"] == 1
    s.filters = {"tag": ["review"]}
    a.map.refresh(wait=True)
    assert a.map.last.frame.points == 3
    # Another session sees the tags once it polls (the page polls every few seconds).
    assert b.session.poll_tags()
    assert "tag" in b.session.store.categorical
    # Untagging updates the column; the shared store itself never gains the column.
    s.tag([1, 2, 3, 4], "review", remove=True)
    codes, names = s.store.categorical["tag"]
    assert [names[c] for c in codes[s.store.row_of(np.array([1, 3]))]] == ["(untagged)"] * 2
    from embviz.render.store import load_store

    assert "tag" not in load_store(tagged_copy, s.projection).categorical


def test_a_frame_for_a_view_the_plot_has_left_does_not_move_the_plot_back(demo_dataset):
    """Frames arrive late when the server is busy: one for an older view (a newer one is
    rendering) updates the status line only. Writing its view to the session moved the plot
    back to it, and the newer frame forward again: two views ping-ponged at ~50 frames/s."""
    from embviz.app.explorer import Explorer
    from embviz.render.store import View

    ex = Explorer(demo_dataset)
    s, m = ex.session, ex.map
    old = m.view
    stale = m.compute(m.request(old))
    w = old.x1 - old.x0
    new = View(old.x0 + w / 4, old.x1 + w / 4, old.y0, old.y1)
    m.set_view(new)  # the person panned; that frame is still rendering
    s.param.update(view=[new.x0, new.x1, new.y0, new.y1], status="")
    m.on_frame(stale)
    assert m.view == new and (m.figure.x_range.start, m.figure.x_range.end) == (new.x0, new.x1)
    assert s.view == [new.x0, new.x1, new.y0, new.y1]
    assert "points in view" in s.status  # its status is still shown
    current = m.refresh(wait=True)  # the current view's frame moves the session's view
    assert current.request.view is m.view and s.view == [new.x0, new.x1, new.y0, new.y1]


class _ServedDoc:
    """A served page's document as far as a session uses it: callbacks wait for the loop."""

    session_context = object()

    def __init__(self):
        import queue

        self.ticks = queue.Queue()

    def on_session_destroyed(self, _fn):
        pass

    def add_next_tick_callback(self, fn):
        self.ticks.put(fn)


def test_a_tag_write_builds_the_tag_column_off_the_session_thread(tagged_copy, monkeypatch):
    import threading

    from embviz.app import tagcolumn
    from embviz.app.session import Session

    built, build = [], tagcolumn._build
    monkeypatch.setattr(
        tagcolumn, "_build", lambda *a: built.append(threading.current_thread().name) or build(*a)
    )
    s = Session(tagged_copy)
    doc = _ServedDoc()
    s.attach(doc)
    before = s.tags_version
    s.tag([5, 6, 7], "duplicate")
    # Acknowledged (the event file is written) but the map keeps its column until it is built.
    assert s.tags().ids("duplicate").tolist() == [5, 6, 7]
    assert s.tags_version == before
    assert not s.poll_tags()  # that version's build is already under way: not asked twice
    doc.ticks.get(timeout=60)()  # the build's answer, run as the event loop would
    assert s.tags_version == s.tags().version
    codes, names = s.store.categorical["tag"]
    assert names[codes[s.store.row_of(np.array([6]))[0]]] == "duplicate"
    assert built and all(name.startswith("embviz-task") for name in built), built
