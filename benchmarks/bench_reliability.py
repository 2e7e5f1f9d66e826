"""Hostile pages against one server while a well-behaved person pans: does the person notice?

``panel serve apps/explorer.py`` runs on loopback with a synthetic map (1M points; 200K with
``--quick``). One person (:class:`embviz.loadtest.Person`) pans and zooms for :data:`QUIET`
seconds alone, then for :data:`ATTACK` seconds while two hostile pages
(:class:`embviz.hostile.HostileSession`) send, round after round, every input of
``tests/test_hostile_session.py`` and ``tests/test_hostile_curate.py``: NaN, infinite, inverted,
zero-width and 1e300-wide ranges, bursts of range updates as fast as the socket takes them,
box and lasso geometry with NaN and 100,000 vertices, taps outside the data, card clicks and
marks with ids that are not there, malformed messages, widget values no widget offers, and
uploads (a decompression bomb, a truncated image, 12 MB of zeros); and a third opens pages
with malformed, injected and 1 MB URL state, one every 2 s.

Records:

- ``reliability.hostile_events``: events the hostile pages sent (page openings included);
- ``reliability.unhandled_errors``: error lines in the server's log (goal 0; a refused value
  is one ``refused ... from a page`` line, not an error);
- ``reliability.other_session_p95_seconds``: the person's p95 frame round trip during the
  attack, with ``stat=quiet`` the same alone; ``reliability.other_session_p95_ratio`` the
  attack's over the quiet one (goal <= 1.2).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

QUIET = 45.0
ATTACK = 90.0
THINK = 0.5
NAN, INF = float("nan"), float("inf")
BAD_URLS = [
    {"view": "[NaN, 1, 2, 3]"},
    {"view": "[1e300, -1e300, 0, 0]"},
    {"filter": '{"<script>alert(1)</script>": ["x"]}'},
    {"hide": '"<img src=x onerror=alert(1)>"'},
    {"sample": "99999999999999999999"},
    {"color": "../../etc/passwd"},
    {"dataset": "../../../etc"},
    {"size": "1e308", "opacity": "NaN", "cell": "-4", "mode": "x", "dims": "9D"},
    {"filter": json.dumps({"label": ["x"] * 100_000})},
    {"view": "[" + "1," * 500_000 + "1]"},
]


def _images() -> list[bytes]:
    from PIL import Image

    bomb, png = io.BytesIO(), io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(png, "PNG")
    return [bomb.getvalue(), png.getvalue()[:60], bytes(12 * 2**20)]


async def _hostile(url: str, deadline: float, sent: list[int]) -> None:
    """One hostile page, round after round until ``deadline``; ``sent[0]`` counts its events."""
    from embviz.hostile import HostileSession, find_models

    s = HostileSession(url, timeout=60)
    await s.open(first_frame=10)
    e = s.view
    cx, cy = (e.x0 + e.x1) / 2, (e.y0 + e.y1) / 2
    tabs = await s.wait_model(css_class="embviz-sidebar-tabs")
    await s.change(tabs, "active", 1)
    await s.select_box(e.x0, e.x1, e.y0, e.y1)  # a grid to click in
    await asyncio.sleep(5)  # the Curate tab's widgets and the grid arrive
    sent_doc = {"events": s.received}
    upload = find_models(sent_doc, name="FileInput")
    tag = find_models(sent_doc, css_class="embviz-tag")
    grid = find_models(sent_doc, css_class="embviz-image-grid")
    import numpy as np

    t = np.linspace(0, 2 * np.pi, 100_000)
    lasso = ((cx + np.cos(t)).tolist(), (cy + np.sin(3 * t)).tolist())
    images = _images()
    while time.monotonic() < deadline:
        for r in [(NAN, e.x1, e.y0, e.y1), (e.x1, e.x0, e.y1, e.y0), (cx, cx, cy, cy)]:
            await s.ranges(*r)
        await s.ranges(-1e300, 1e300, -1e300, 1e300)
        await s.select_box(NAN, e.x1, e.y0, INF)
        await s.select_poly(*lasso)
        await s.tap(1e9, -1e9)
        sent[0] += 7
        for model in grid:
            for data in ({"action": "click", "id": 10**30}, {"action": "mark", "id": -5}, "x"):
                await s.message(model, data)
                sent[0] += 1
        for model in grid:  # malformed: a reference to a model that does not exist
            await s.event("esm_event", [["model", {"id": model}], ["data", {"id": "nope"}]])
        for model in tag:
            await s.change(model, "value", "<script>")
        sent[0] += len(grid) + len(tag)
        for data in images if upload else []:
            await s.change(upload[0], "value", base64.b64encode(data).decode("ascii"))
            sent[0] += 1
        await s.flood(300)  # as fast as the socket takes them
        sent[0] += 300
        await asyncio.sleep(1.0)
    await s.close()


async def _openers(url: str, deadline: float, sent: list[int]) -> None:
    """Pages opened with hostile URL state, one every 2 s."""
    from embviz.hostile import HostileSession

    i = 0
    while time.monotonic() < deadline:
        s = HostileSession(url, arguments=BAD_URLS[i % len(BAD_URLS)], timeout=30)
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await s.open(first_frame=1.0)  # (a 1 MB URL is refused at the door)
        sent[0] += 1
        await s.close()
        i += 1
        await asyncio.sleep(2.0)


async def _person(url: str, seconds: float, seed: int) -> list[float]:
    import random

    from embviz.loadtest import Person
    from embviz.render.store import View

    p = Person(url, timeout=60)
    await p.open(first_frame=60)
    e, rng, out = p.view, random.Random(seed), []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        w = (e.x1 - e.x0) * rng.choice([1.0, 0.5, 0.25, 1 / 16])
        x0 = e.x0 + rng.random() * (e.x1 - e.x0 - w)
        out.append(await p.frame(View(x0, x0 + w, e.y0, e.y1)))
        await asyncio.sleep(THINK)
    await p.close()
    return out


def run(work: Path, *, quick: bool = False) -> list[dict]:
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from bench_serve import SESSION_OPTIONS, _dataset
    from conftest import PanelServer
    from test_hostile_session import _unhandled

    from embviz.loadtest import run_sync

    n = 200_000 if quick else 1_000_000
    quiet, attack = (15.0, 30.0) if quick else (QUIET, ATTACK)
    log_path = work / "reliability-serve.log"
    server = PanelServer(_dataset(work, n), log_path, extra=SESSION_OPTIONS)
    sent = [0]
    try:
        server.wait(timeout=600)
        run_sync(_person(server.url, 10.0, seed=1))  # warm: the kernels compile
        calm = run_sync(_person(server.url, quiet, seed=2))

        async def under_attack():
            deadline = time.monotonic() + attack
            hostile = [_hostile(server.url, deadline, sent) for _ in range(2)]
            person = _person(server.url, attack, seed=3)
            got = await asyncio.gather(person, _openers(server.url, deadline, sent), *hostile)
            return got[0]

        stormy = run_sync(under_attack())
        alive = server.proc.poll() is None
    finally:
        server.stop()
    problems = _unhandled(log_path.read_text()) + ([] if alive else ["the server died"])
    print(*problems[:20], sep="\n", flush=True)
    p95 = lambda x: float(np.percentile(np.minimum(x, 60.0), 95))  # noqa: E731
    params = {"points": n, "attack_seconds": attack}
    return [
        {
            "name": "reliability.hostile_events",
            "params": params,
            "value": sent[0],
            "unit": "events",
        },
        {
            "name": "reliability.unhandled_errors",
            "params": params,
            "value": len(problems),
            "unit": "lines",
        },
        {
            "name": "reliability.other_session_p95_seconds",
            "params": {**params, "stat": "quiet"},
            "value": round(p95(calm), 3),
            "unit": "s",
        },
        {
            "name": "reliability.other_session_p95_seconds",
            "params": {**params, "stat": "attack"},
            "value": round(p95(stormy), 3),
            "unit": "s",
        },
        {
            "name": "reliability.other_session_p95_ratio",
            "params": params,
            "value": round(p95(stormy) / p95(calm), 3),
            "unit": "ratio",
        },
        {
            "name": "reliability.frames_lost",
            "params": params,
            "value": int(np.isinf(stormy).sum()),
            "unit": "frames",
        },
    ]
