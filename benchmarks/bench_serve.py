"""Many people on one server: frame latency and memory with 1, 10 and 25 concurrent sessions.

Each session is a real :class:`~embviz.app.explorer.Explorer` (what ``panel serve`` builds per
browser tab: its own map view, renderer and aggregate cache, sharing the process's one copy of
the points) whose map is attached to a stand-in for the session's Bokeh document: frames are
rendered on the server's render pool and applied on one event-loop thread, as in a real
server. Each simulated person pans and zooms (a new view every ``THINK`` seconds after the
last frame arrived); the latency of a frame is from the request to the frame being applied.
The websocket transfer is not included: a frame is 20-250 KB, well under a millisecond on
loopback. Memory is the process's resident set (psutil): before the dataset, with it loaded,
with N sessions, and after they are closed. Libraries loaded once per process (Panel, Bokeh,
compiled kernels: one warm-up session) are left out of the per-dataset and per-session figures.
"""

from __future__ import annotations

import gc
import queue
import statistics
import threading
import time
from pathlib import Path

import numpy as np

#: Seconds a simulated person waits after a frame before the next pan or zoom.
THINK = 0.5


class _Loop:
    """One thread running callbacks in order: the stand-in for a server's IO loop."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            cb = self._queue.get()
            if cb is None:
                return
            try:
                cb()
            except Exception as exc:  # a bench must report, not hang
                print(f"[bench serve] callback failed: {exc!r}", flush=True)

    def add_next_tick_callback(self, cb) -> None:
        self._queue.put(cb)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)


def _dataset(work: Path, n: int) -> Path:
    from pipeline.synth import synth

    out = work / f"serve-synth-{n}"
    if not (out / "manifest.json").exists():
        synth(out, points=n, dims=(2,), progress=False)
    return out


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _views(extent, rng: np.random.Generator, count: int):
    """A walk of pans and zooms between the overview and 1/64 of the map's width."""
    from embviz.app.store import View

    x0, x1, y0, y1 = extent.x0, extent.x1, extent.y0, extent.y1
    w, h = x1 - x0, y1 - y0
    out = []
    cx, cy, scale = (x0 + x1) / 2, (y0 + y1) / 2, 1.0
    for _ in range(count):
        scale = float(np.clip(scale * rng.choice([0.5, 0.7, 1.0, 1.4, 2.0]), 1 / 64, 1.0))
        cx = float(np.clip(cx + rng.normal(0, 0.15) * w * scale, x0, x1))
        cy = float(np.clip(cy + rng.normal(0, 0.15) * h * scale, y0, y1))
        out.append(
            View(cx - w * scale / 2, cx + w * scale / 2, cy - h * scale / 2, cy + h * scale / 2)
        )
    return out


def _session(root: Path, loop: _Loop):
    from embviz.app.explorer import Explorer

    e = Explorer(root)
    e.map.doc = loop
    arrived = threading.Event()
    shown = e.map.on_frame

    def on_frame(result):
        shown(result)
        arrived.set()

    e.map.on_frame = on_frame
    return e, arrived


def _drive(e, arrived, views, latencies: list, stop: threading.Event) -> None:
    for view in views:
        if stop.is_set():
            return
        arrived.clear()
        t0 = time.perf_counter()
        e.map.refresh(view)
        if not arrived.wait(timeout=60):
            latencies.append(float("inf"))
            return
        latencies.append(time.perf_counter() - t0)
        time.sleep(THINK)


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """p95 frame latency and memory at 1, 10 and 25 sessions on a 10M-point synthetic map."""
    from embviz.app.server import release_memory
    from embviz.app.store import clear_stores, load_store

    n = 200_000 if quick else 10_000_000
    counts = (1, 3) if quick else (1, 10, 25)
    duration = 5.0 if quick else 30.0
    root = _dataset(work, n)
    gc.collect()
    base = _rss_mb()
    clear_stores()
    store = load_store(root, "synth.2d")
    # The columns are memory-mapped from the explorer cache: touch every page, so the
    # dataset's share is counted here and not in the first sessions that render it.
    for column in (store.x, store.y, store.ids, *store.numeric.values()):
        np.asarray(column).sum()
    for codes, _ in store.categorical.values():
        np.asarray(codes).sum()
    store.row_of(store.ids[:1])  # the id -> row table: built once per map, shared by sessions
    data_mb = _rss_mb() - base
    extent = store.extent
    records: list[dict] = [
        {
            "name": "serve.dataset_mb",
            "params": {"points": n},
            "value": round(data_mb, 1),
            "unit": "MB",
        }
    ]
    loop = _Loop()
    rng = np.random.default_rng(0)
    # One session opened and closed first: Panel, Bokeh and the compiled kernels load once per
    # process whatever the number of people; memory below is measured from after that, plus
    # the dataset's own copy (``data_mb``).
    warm, _ = _session(root, loop)
    warm.map.refresh(wait=True)
    del warm
    release_memory()
    base = _rss_mb() - data_mb
    for count in counts:
        gc.collect()
        before = _rss_mb()
        sessions = [_session(root, loop) for _ in range(count)]
        for e, _ in sessions:  # the first frame of each session, as a page load renders it
            e.map.refresh(wait=True)
        latencies: list[list[float]] = [[] for _ in sessions]
        stop = threading.Event()
        threads = [
            threading.Thread(target=_drive, args=(e, arrived, _views(extent, rng, 1000), lat, stop))
            for (e, arrived), lat in zip(sessions, latencies, strict=True)
        ]
        for t in threads:
            t.start()
        time.sleep(duration)
        peak = _rss_mb()
        stop.set()
        for t in threads:
            t.join(timeout=120)
        flat = [x for lat in latencies for x in lat]
        params = {"points": n, "sessions": count, "think_s": THINK, "seconds": duration}
        per_session = (peak - before) / count
        records += [
            {
                "name": "serve.p95_frame_seconds",
                "params": params,
                "value": float(np.percentile(flat, 95)),
                "unit": "s",
            },
            {
                "name": "serve.p50_frame_seconds",
                "params": params,
                "value": statistics.median(flat),
                "unit": "s",
            },
            {"name": "serve.frames", "params": params, "value": len(flat), "unit": "frames"},
            {
                "name": "serve.memory_mb",
                "params": params,
                "value": round(peak - base, 1),
                "unit": "MB",
            },
            {
                "name": "serve.memory_per_session_mb",
                "params": params,
                "value": round(per_session, 1),
                "unit": "MB",
            },
        ]
        del sessions, threads
        time.sleep(1.0)
        release_memory()  # what the server does when a session closes
        records.append(
            {
                "name": "serve.memory_after_close_mb",
                "params": {"points": n, "sessions": count},
                "value": round(_rss_mb() - base, 1),
                "unit": "MB",
            }
        )
    loop.stop()
    clear_stores()
    return records
