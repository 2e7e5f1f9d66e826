"""The websocket load client: its walks, its reading of the page's document, and real sessions on
a real server, each getting the frames of its own views."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import numpy as np
import pytest

from embviz.loadtest import Person, _find_map, run_sync, walk
from embviz.render.store import View


def test_walk_stays_in_the_map_and_never_repeats_a_view():
    extent = View(-10.0, 30.0, 0.0, 20.0)
    views = walk(extent, np.random.default_rng(0), 300)
    widths = np.array([v.x1 - v.x0 for v in views])
    assert widths.min() >= 40 / 64 * 0.999 and widths.max() <= 40 * 1.001
    centres = np.array([((v.x0 + v.x1) / 2, (v.y0 + v.y1) / 2) for v in views])
    nudge = 40 * 1e-6 * 301  # each view is moved right by a millionth of its width per step
    assert (centres[:, 0] >= -10.0).all() and (centres[:, 0] <= 30.0 + nudge).all()
    assert (centres[:, 1] >= 0.0).all() and (centres[:, 1] <= 20.0).all()
    assert len({v.x0 for v in views}) == len(views)  # each frame is told apart by its left edge
    assert len(set(np.round(widths, 6))) > 5  # it zooms, not only pans


def test_find_map_reads_the_figure_its_raster_and_view():
    source = {"type": "object", "name": "ColumnDataSource", "id": "p9", "attributes": {}}
    figure = {
        "type": "object",
        "name": "Figure",
        "id": "p1",
        "attributes": {
            "subscribed_events": {"type": "set", "entries": ["tap", "rangesupdate"]},
            "renderers": [{"type": "object", "attributes": {"data_source": source}}],
            "x_range": {"attributes": {"start": 1.0, "end": 2.0}},
            "y_range": {"attributes": {"start": 3.0, "end": 4.0}},
        },
    }
    doc = {
        "roots": [
            {"type": "object", "name": "Column", "id": "p0", "attributes": {"children": [figure]}}
        ]
    }
    assert _find_map(doc) == ("p1", "p9", View(1.0, 2.0, 3.0, 4.0))
    with pytest.raises(ValueError, match="no map figure"):
        _find_map({"roots": [source]})


def test_each_session_gets_the_frames_of_its_own_views(demo_server):
    """Two people pan at once over websockets: every frame that comes back to each shows the
    view that person asked for (a frame is matched to its request by its position)."""

    async def two():
        a, b = Person(demo_server.url, timeout=120), Person(demo_server.url, timeout=120)
        await asyncio.gather(a.open(), b.open())
        e = a.view
        w, h = e.x1 - e.x0, e.y1 - e.y0
        left = [View(e.x0 + i * w / 50, e.x0 + w / 2, e.y0, e.y0 + h / 2) for i in range(4)]
        right = [View(e.x0 + w / 2 + i * w / 50, e.x1, e.y0 + h / 2, e.y1) for i in range(4)]

        async def walk_(p, views):
            return [await p.frame(v) for v in views]

        got = await asyncio.gather(walk_(a, left), walk_(b, right))
        await asyncio.gather(a.close(), b.close())
        return got

    for seconds in run_sync(two()):
        assert all(np.isfinite(s) for s in seconds), seconds


def test_cli_loadtest_reports_latency(demo_server):
    from embviz.pipeline.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["loadtest", demo_server.url, "--sessions", "2", "--seconds", "4"]) == 0
    r = json.loads(out.getvalue())
    assert r["frames"] >= 4 and r["lost"] == 0
    assert 0 < r["p50_frame_seconds"] <= r["p95_frame_seconds"] < 60
