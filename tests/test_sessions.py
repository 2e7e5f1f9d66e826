"""Sessions share one copy of the data and nothing else: one person's filter, colouring,
selection, view or difference view never shows in another's explorer."""

from __future__ import annotations

import numpy as np
import pytest


def test_sessions_share_the_points_and_keep_their_own_state(demo_dataset):
    from embviz.app.explorer import Explorer

    a, b = Explorer(demo_dataset), Explorer(demo_dataset)
    assert a.session.store is b.session.store  # one in-memory copy per process
    assert a.map is not b.map and a.map.renderer is not b.map.renderer
    before = (
        b.session.color_by,
        dict(b.session.filters),
        list(b.session.view),
        b.session.difference,
        b.map.mask,
    )

    a.session.filters = {"label": ["3"]}
    a.session.color_by = "split"
    a.select(np.arange(10, 60))
    a.compare.show_difference = True
    a.map.refresh(wait=True)

    assert (
        b.session.color_by,
        dict(b.session.filters),
        list(b.session.view),
        b.session.difference,
        b.map.mask,
    ) == before
    assert len(b.grid.ids) == 0 and b.map.highlight_rows is None
    assert a.map.last.frame.points < b.map.last.frame.points  # a's filter, not b's
    assert b.map.refresh(wait=True).frame.points == b.session.store.n


def test_sessions_closing_together_share_one_collection(monkeypatch):
    """Bokeh discards every expired session in one pass: their memory is collected once after
    it, not once per session (25 full collections in a row held every frame for 7 s), and
    collections are at least COLLECT_GAP apart (pages opened and closed every 2 s had one
    running every 2 s)."""
    import asyncio
    import gc
    import time

    from embviz.app import server
    from embviz.loadtest import run_sync

    calls: list[float] = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(time.monotonic()) or 0)
    monkeypatch.setattr(server, "RELEASE_DELAY", 0.05)
    monkeypatch.setattr(server, "COLLECT_GAP", 1.0)

    async def close(n: int) -> None:
        for _ in range(n):
            server.release_memory()
        assert len(calls) == before  # nothing collected on the turn that closed them
        for _ in range(500):
            if len(calls) > before:
                break
            await asyncio.sleep(0.01)

    before = 0
    run_sync(close(25))  # a loop of its own (Playwright's may run in this thread)
    assert len(calls) == 1
    before = 1
    run_sync(close(3))  # a later batch gets its own collection, a gap after the last
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.95


@pytest.mark.parametrize("warm", ["preload([sys.argv[1]])"])  # before a server forks
def test_a_warmed_server_process_leaves_its_startup_out_of_collections(demo_dataset, warm):
    """After the warm-up, a full collection walks only what sessions made, not the ~500K
    objects of the libraries and maps (0.2-0.4 s of event loop per collection before)."""
    import subprocess
    import sys

    code = (
        "import gc, sys, time\n"
        "from embviz.app.warm import preload, warm_up\n"
        f"{warm}\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(demo_dataset)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    frozen, walked = map(int, out.stdout.split()[-2:])
    assert frozen > 100_000, out.stdout
    assert walked < frozen / 20, out.stdout
