"""Many people on one real server: frame latency and memory with 1, 10 and 25 websocket sessions.

``panel serve apps/explorer.py`` runs on loopback with a 10M-point synthetic map. Each person
is an :class:`embviz.loadtest.Person`: a Bokeh-protocol websocket session, as a browser tab
opens, that sends the map the ``rangesupdate`` event a pan or zoom sends and waits for the new
frame to come back over the websocket; ``THINK`` seconds later it moves again (a walk between
the overview and 1/64 of the width). The latency is the whole round trip: event out, server
render, frame back. Memory is the server process's resident set (psutil), sampled every half
second:

- ``serve.libraries_mb``: the same server on a 2,000-point map once a session has come and gone
  (Python, Panel, Bokeh, Datashader, the compiled kernels);
- ``serve.dataset_mb``: what the 10M-point map adds to that, once a warm-up session has left;
- ``serve.memory_mb``: the largest sample with N people on, less the libraries (the dataset plus
  the sessions; goal: at most the dataset plus 50 MB per session);
- ``serve.memory_per_session_mb``: that largest sample less the idle server, over N;
- ``serve.memory_after_close_mb``: once the N people have left and the server has discarded
  their sessions, less the libraries.

The server discards a session one second after its websocket closes
(``--unused-session-lifetime 1000``; Bokeh's default is 15 s).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Seconds a simulated person waits after a frame before the next pan or zoom.
THINK = 0.5
#: Bokeh server options: closed sessions are discarded after a second instead of 15.
SESSION_OPTIONS = ("--check-unused-sessions", "500", "--unused-session-lifetime", "1000")


def _dataset(work: Path, n: int) -> Path:
    from embviz.pipeline.synth import synth

    out = work / f"serve-synth-{n}"
    if not (out / "manifest.json").exists():
        synth(out, points=n, dims=(2,), progress=False)
    return out


class _Server:
    """``panel serve`` of the explorer on one dataset, with its resident memory at hand."""

    def __init__(self, root: Path, log: Path, processes: int = 1):
        import psutil

        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import PanelServer

        procs = ("--num-procs", str(processes)) if processes > 1 else ()
        self.server = PanelServer(root, log, extra=(*SESSION_OPTIONS, *procs))
        self.server.wait(timeout=600)
        self.url = self.server.url
        self._proc = psutil.Process(self.server.proc.pid)

    def rss_mb(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def pss_mb(self) -> float:
        """Proportional set size of the server and every process it forked: a page shared by
        k processes counts 1/k in each, so the sum is the memory the server really holds."""
        import psutil

        total = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_full_info().pss
        return total / 2**20

    def opening(self, count: int, seed: int = 0):
        """``count`` people opening the page at the same instant, then leaving: their first
        frames' seconds."""
        return self.people(count, 0.1, seed=seed).first_frames

    def people(self, count: int, seconds: float, seed: int = 0):
        from embviz.loadtest import run_people, run_sync

        return run_sync(
            run_people(
                self.url,
                sessions=count,
                seconds=seconds,
                think=THINK,
                seed=seed,
                monitor=self.rss_mb,
                timeout=60.0,
            )
        )

    def settled_mb(self, wait: float = 30.0) -> float:
        """Resident memory once the sessions that just closed have been discarded: the lowest
        of samples every 2 s for ``wait`` seconds (a closed session's objects were measured to
        go 12-14 s after its websocket closed)."""
        low = self.rss_mb()
        for _ in range(int(wait / 2)):
            time.sleep(2.0)
            low = min(low, self.rss_mb())
        return low

    def stop(self) -> None:
        self.server.stop()


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """p50/p95 frame round trip and server memory at 1, 10 and 25 websocket sessions."""
    n = 200_000 if quick else 10_000_000
    counts = (1, 3) if quick else (1, 10, 25, 50)
    seconds = 8.0 if quick else 30.0

    small = _Server(_dataset(work, 2_000), work / "serve-small.log")
    try:
        small.people(1, 3.0)
        libraries = small.settled_mb()
    finally:
        small.stop()

    server = _Server(_dataset(work, n), work / "serve.log")
    records: list[dict] = []
    try:
        server.people(1, 8.0 if quick else 20.0, seed=99)  # warm-up: every kernel compiled
        idle = server.settled_mb()
        records += [
            {
                "name": "serve.libraries_mb",
                "params": {},
                "value": round(libraries, 1),
                "unit": "MB",
            },
            {
                "name": "serve.dataset_mb",
                "params": {"points": n},
                "value": round(idle - libraries, 1),
                "unit": "MB",
            },
        ]
        for count in counts:
            got = server.people(count, seconds, seed=count)
            after = server.settled_mb()
            peak = max(got.samples)
            params = {"points": n, "sessions": count, "think_s": THINK, "seconds": seconds}
            records += [
                {
                    "name": "serve.p95_frame_seconds",
                    "params": params,
                    "value": got.percentile(95),
                    "unit": "s",
                },
                {
                    "name": "serve.p50_frame_seconds",
                    "params": params,
                    "value": got.percentile(50),
                    "unit": "s",
                },
                {
                    "name": "serve.first_frame_seconds",
                    "params": {**params, "stat": "p95"},
                    "value": got.opening(95),
                    "unit": "s",
                },
                {
                    "name": "serve.first_frame_seconds",
                    "params": {**params, "stat": "max"},
                    "value": max(got.first_frames),
                    "unit": "s",
                },
                {"name": "serve.frames", "params": params, "value": len(got.latencies), "unit": ""},
                {"name": "serve.frames_lost", "params": params, "value": got.lost, "unit": ""},
                {
                    "name": "serve.memory_mb",
                    "params": params,
                    "value": round(peak - libraries, 1),
                    "unit": "MB",
                },
                {
                    "name": "serve.memory_per_session_mb",
                    "params": params,
                    "value": round((peak - idle) / count, 1),
                    "unit": "MB",
                },
                {
                    "name": "serve.memory_after_close_mb",
                    "params": {"points": n, "sessions": count},
                    "value": round(after - libraries, 1),
                    "unit": "MB",
                },
            ]
    finally:
        server.stop()
    records += _processes(work, n, counts, quick=quick)
    return records


def _processes(work: Path, n: int, counts, *, quick: bool) -> list[dict]:
    """Opening with 2 processes (one per core), and the memory of 1 and 4 processes with the
    same people on (each process forked after the maps were loaded and the kernels compiled)."""
    import statistics

    records: list[dict] = []
    held: dict[int, float] = {}
    people = 4 if quick else 8
    for procs in (1, 2, 4):
        server = _Server(_dataset(work, n), work / f"serve-{procs}p.log", processes=procs)
        try:
            if procs == 2:
                for count in counts:
                    server.opening(1, seed=7)  # every process has served a page
                    firsts = server.opening(count, seed=count)
                    records.append(
                        {
                            "name": "serve.first_frame_seconds",
                            "params": {
                                "points": n,
                                "sessions": count,
                                "processes": procs,
                                "stat": "p95",
                                "what": "opening only",
                            },
                            "value": float(statistics.quantiles(firsts, n=20)[-1])
                            if len(firsts) > 1
                            else firsts[0],
                            "unit": "s",
                        }
                    )
                continue
            server.people(people, 10.0 if not quick else 3.0, seed=3)
            held[procs] = server.pss_mb()
            records.append(
                {
                    "name": "serve.memory_mb",
                    "params": {
                        "points": n,
                        "processes": procs,
                        "sessions": people,
                        "measure": "PSS of all processes, after the sessions",
                    },
                    "value": round(held[procs], 1),
                    "unit": "MB",
                }
            )
        finally:
            server.stop()
    records.append(
        {
            "name": "serve.memory_ratio",
            "params": {"points": n, "processes": "4 over 1", "sessions": people},
            "value": round(held[4] / held[1], 3),
            "unit": "ratio",
        }
    )
    return records
