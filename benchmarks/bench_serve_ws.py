"""EXPERIMENTAL, not in ``make bench`` yet: many people on one real server, over websockets:
frame latency and server memory with 1, 10 and 25 Bokeh client sessions on ``panel serve``.

Status: ``run(work, quick=True)`` (200K points, 1 and 3 sessions) works; the full run (10M
points, 25 sessions) did not finish within 15 minutes on the 2-core machine and was not
diagnosed (suspects: ``bokeh.client`` handles messages recursively, so deep stacks; one
frame lost per walk hangs that person for the 30 s timeout).

Each session is a ``bokeh.client`` session of ``apps/explorer.py`` on a 10M-point synthetic
map. A simulated person sends the map a ``RangesUpdate`` event (what a pan or zoom sends from
the browser) and waits until the new frame has arrived in its copy of the document, then waits
``THINK`` seconds: the latency is the whole round trip (websocket, server render, websocket
back, decoding). Memory is the server process's resident set (psutil): idle with the dataset
loaded and one warm-up session, with N sessions, and after they disconnect.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from bench_serve import THINK, _dataset, _views

ROOT = Path(__file__).resolve().parent.parent


def _client_models():
    """Import what the client must know to decode the page's models."""
    import panel.models  # noqa: F401
    import panel.models.deckgl  # noqa: F401

    from embviz.app import curate, explorer, widgets  # noqa: F401


def _ranges_event(fig, view):
    """A ``RangesUpdate`` whose coordinates go over the wire: Bokeh's Python class sends only
    the model (the browser's BokehJS adds the ranges), so the values are added here."""
    from bokeh.events import RangesUpdate

    class Ranges(RangesUpdate):
        def event_values(self):
            return dict(super().event_values(), x0=self.x0, x1=self.x1, y0=self.y0, y1=self.y1)

    return Ranges(fig, x0=view.x0, x1=view.x1, y0=view.y0, y1=view.y1)


class _Person:
    """One client session: its own connection and IO loop thread."""

    def __init__(self, url: str):
        from bokeh.client import pull_session
        from bokeh.events import DocumentReady
        from bokeh.models import ColumnDataSource, Plot

        self.session = pull_session(url=url)
        self.doc = self.session.document
        self.loop = self.session._connection._loop
        self.fig = next(m for m in self.doc.models if isinstance(m, Plot))
        self.raster = next(
            m
            for m in self.doc.models
            if isinstance(m, ColumnDataSource) and {"url", "w"} <= set(m.data)
        )
        self.arrived = threading.Event()
        self.raster.on_change("data", lambda attr, old, new: self.arrived.set())
        self.thread = threading.Thread(target=self.session._loop_until_closed, daemon=True)
        self.thread.start()
        self.loop.add_callback(lambda: self.doc.callbacks.send_event(DocumentReady()))

    def frame(self, view, timeout: float = 30.0) -> float:
        self.arrived.clear()
        t0 = time.perf_counter()
        event = _ranges_event(self.fig, view)
        self.loop.add_callback(lambda: self.doc.callbacks.send_event(event))
        if not self.arrived.wait(timeout):
            return float("inf")
        return time.perf_counter() - t0

    def close(self) -> None:
        self.loop.add_callback(self.session.close)
        self.thread.join(timeout=10)


def _drive(person: _Person, views, latencies: list, stop: threading.Event) -> None:
    from embviz.app.store import View

    for i, view in enumerate(views):
        if stop.is_set():
            return
        # A view never repeats exactly: a repeated one would bring an identical frame, which
        # changes nothing in the client's document and so could not be timed.
        nudge = (view.x1 - view.x0) * 1e-6 * (i + 1)
        view = View(view.x0 + nudge, view.x1 + nudge, view.y0, view.y1)
        latencies.append(person.frame(view))
        time.sleep(THINK)


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Round-trip frame latency and server memory at 1, 10 and 25 websocket sessions."""
    import psutil

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import PanelServer

    from embviz.app.store import load_store

    _client_models()
    # bokeh.client handles each incoming message one level deeper in a recursion (it is made
    # for tests): a session receiving hundreds of frames needs a deep stack.
    sys.setrecursionlimit(200_000)
    threading.stack_size(512 * 2**20)
    n = 200_000 if quick else 10_000_000
    counts = (1, 3) if quick else (1, 10, 25)
    duration = 5.0 if quick else 30.0
    root = _dataset(work, n)
    extent = load_store(root, "synth.2d").extent
    server = PanelServer(root, work / "serve-ws.log")
    records: list[dict] = []
    try:
        server.wait(timeout=300)
        proc = psutil.Process(server.proc.pid)
        warm = _Person(server.url)
        warm.frame(extent)
        warm.close()
        time.sleep(2)
        idle = proc.memory_info().rss / 2**20
        rng = np.random.default_rng(1)
        for count in counts:
            people = [_Person(server.url) for _ in range(count)]
            for p in people:
                p.frame(extent)  # the page load's first frame
            latencies: list[list[float]] = [[] for _ in people]
            stop = threading.Event()
            threads = [
                threading.Thread(target=_drive, args=(p, _views(extent, rng, 1000), lat, stop))
                for p, lat in zip(people, latencies, strict=True)
            ]
            for t in threads:
                t.start()
            time.sleep(duration)
            peak = proc.memory_info().rss / 2**20
            stop.set()
            for t in threads:
                t.join(timeout=120)
            for p in people:
                p.close()
            time.sleep(5)  # the server notices the closed sessions and releases them
            after = proc.memory_info().rss / 2**20
            flat = [x for lat in latencies for x in lat]
            params = {"points": n, "sessions": count, "think_s": THINK, "transport": "websocket"}
            records += [
                {
                    "name": "serve_ws.p95_frame_seconds",
                    "params": params,
                    "value": float(np.percentile(flat, 95)),
                    "unit": "s",
                },
                {
                    "name": "serve_ws.p50_frame_seconds",
                    "params": params,
                    "value": statistics.median(flat),
                    "unit": "s",
                },
                {"name": "serve_ws.frames", "params": params, "value": len(flat), "unit": "frames"},
                {
                    "name": "serve_ws.server_memory_mb",
                    "params": params,
                    "value": round(peak, 1),
                    "unit": "MB",
                },
                {
                    "name": "serve_ws.memory_per_session_mb",
                    "params": params,
                    "value": round((peak - idle) / count, 1),
                    "unit": "MB",
                },
                {
                    "name": "serve_ws.server_memory_after_close_mb",
                    "params": params,
                    "value": round(after, 1),
                    "unit": "MB",
                },
            ]
        records.append(
            {
                "name": "serve_ws.server_memory_idle_mb",
                "params": {"points": n},
                "value": round(idle, 1),
                "unit": "MB",
            }
        )
    finally:
        server.stop()
    return records
