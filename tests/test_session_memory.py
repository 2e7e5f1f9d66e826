"""A long-lived session keeps no memory per action (the soak of issue 17): the page's actions
leave no widgets, models or watchers behind, and a tag write keeps neither the old versions of
the tag column nor a new filter widget per session, nor an event file's name per tagged row."""

from __future__ import annotations

import gc
import shutil
import weakref
from collections import Counter

import numpy as np
import pytest


@pytest.fixture(scope="module")
def copy(demo_dataset, tmp_path_factory):
    """A copy of the demo that tests may write tags into."""
    root = tmp_path_factory.mktemp("memory") / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache", "tags", "reports"))
    return root


def _census() -> Counter:
    """Live Panel/Bokeh/param objects by kind, after a full collection."""
    import param
    from bokeh.model import Model

    gc.collect()
    counts: Counter = Counter()
    for o in gc.get_objects():
        # By type(), not isinstance(): that falls back to ``o.__class__``, which some objects
        # turn into a deprecation warning (torch.distributed's reduce_op, once imported).
        kind = type(o)
        if issubclass(kind, param.parameterized.Watcher):
            counts["watchers"] += 1
        elif issubclass(kind, Model):
            counts["bokeh models"] += 1
        elif issubclass(kind, param.Parameterized):
            counts["parameterized"] += 1
    return counts


def _served(explorer):
    """The explorer's side column (curation tab open, as the soak's people have it), map and
    sample panels as Bokeh models in a document, the way a page holds them."""
    import panel as pn
    from bokeh.document import Document

    doc = Document()
    side = explorer.sidebar()
    pn.Column(side, explorer.main(), explorer.filters).get_root(doc)
    side.active = 1
    return doc


def test_repeated_actions_leave_no_panel_objects_behind(copy):
    from embviz.app.explorer import Explorer
    from embviz.render.store import View

    ex = Explorer(copy)
    s = ex.session
    doc = _served(ex)
    e = ex.map.store.extent
    rng = np.random.default_rng(0)

    def act(i: int) -> None:
        w = (e.x1 - e.x0) * rng.choice([1.0, 0.25, 1 / 16])
        h = (e.y1 - e.y0) * w / (e.x1 - e.x0)
        x0 = e.x0 + rng.random() * (e.x1 - e.x0 - w)
        y0 = e.y0 + rng.random() * (e.y1 - e.y0 - h)
        ex.map.refresh(View(x0, x0 + w, y0, y0 + h), wait=True)  # a pan or zoom
        rows = ex.map.select({"type": "rect", "x0": x0, "x1": x0 + w, "y0": y0, "y1": y0 + h})
        s.show(ex.map.store.ids[rows])  # a box selection fills the grid
        s.open(int(ex.map.store.ids[i % ex.map.store.n]))  # a tap opens a sample
        assert ex.curator._export_file().getbuffer().nbytes > 0  # the grid's download

    for i in range(4):  # first use builds panels and fills caches
        act(i)
    before, models = _census(), len(doc.models)
    for i in range(4, 16):
        act(i)
    after = _census()
    assert after == before, f"12 rounds of actions left {after - before} behind"
    assert len(doc.models) == models


def test_tag_writes_keep_no_old_tag_columns_nor_new_filter_widgets(copy):
    import param

    from embviz.app import tagcolumn
    from embviz.app.explorer import Explorer

    ex = Explorer(copy)
    s = ex.session
    _served(ex)
    other = Explorer(copy)  # another page of the same server, polling
    _served(other)

    def tag(i: int) -> weakref.ref:
        s.tag([1 + i, 2, 3], f"memory-{i}")
        assert other.session.poll_tags()
        return weakref.ref(s.store.categorical["tag"][0])

    for i in range(3):
        tag(i)
    widget = next(w for w in ex.filters.widgets if getattr(w, "label", "") == "tag")
    before = _census()
    writes = 2 * tagcolumn._KEEP
    gc.disable()  # what the writes leave to the cycle collector counts too
    try:
        columns = [tag(i) for i in range(3, 3 + writes)]
        watchers = sum(issubclass(type(o), param.parameterized.Watcher) for o in gc.get_objects())
    finally:
        gc.enable()
    after = _census()
    assert after == before, f"{writes} tag writes left {after - before} behind"
    # Each write seen by a session used to make it a new filter widget with its watchers (7),
    # left to the cycle collector; the widget is kept and given the new options instead.
    assert watchers - before["watchers"] < writes, "tag writes leave watchers to the collector"
    assert next(w for w in ex.filters.widgets if getattr(w, "label", "") == "tag") is widget
    assert f"memory-{writes + 2}" in widget.options.values()
    # Only the versions the tag-column cache keeps (and the one shown) stay alive: the filter
    # counts used to hold every version's column (one byte per point per write).
    gc.collect()
    alive = sum(ref() is not None for ref in columns)
    assert alive <= tagcolumn._KEEP + 1, f"{alive} of {len(columns)} tag columns still alive"


def test_tag_cache_keeps_each_event_file_name_once(copy, tmp_path):
    import pyarrow as pa

    from embviz.tags import TagStore

    root = tmp_path / "demo"
    shutil.copytree(copy, root, ignore=shutil.ignore_patterns("cache", "tags", "reports"))
    writer = TagStore(root)
    rng = np.random.default_rng(1)
    for i in range(20):
        writer.add(rng.choice(1000, 500, replace=False), f"file-{i}")
    gc.collect()
    start = pa.total_allocated_bytes()
    reader = TagStore(root)  # a fresh process-wide cache, as a new server has
    live = reader.current()
    gc.collect()
    held = pa.total_allocated_bytes() - start
    assert len(live) == 20 * 500
    # The text a process keeps per tagged row: the tag, value and user of the state and of the
    # live view (~54 bytes). The event file's name on every row added ~90 more.
    assert held / len(live) < 80, f"{held / len(live):.0f} bytes of Arrow text per tagged row"
