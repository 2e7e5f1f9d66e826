"""A long run: 10 people on one server for hours, panning, zooming, selecting, opening samples,
tagging and exporting, while the server writes a scheduled report every period.

``panel serve apps/explorer.py`` runs on loopback with a synthetic map (1M points; 200K with
``--quick``) and ``--reports`` (a report every :data:`PERIOD`). Each person is a Bokeh-protocol
websocket session (:class:`embviz.hostile.HostileSession`, used here as a well-behaved scripted
page) that, :data:`THINK` seconds after each answer, does one of: pan or zoom (the frame's round
trip is timed), box-select a patch of the map (the grid fills), tap a point (the sample opens),
tag the grid's samples with a custom tag unique to that person and step, at most every
:data:`TAG_EVERY` seconds (the "Tagged ... on N samples" answer is the acknowledgement), or
download the grid's samples as Parquet.

Records (the run's length in ``params``):

- ``soak.rss_growth_fraction``: the server's resident memory at the end over its level after
  the first window, less 1 (goal <= 0.05): the mean of the samples (every 5 s) in the run's
  last :data:`MEAN_OVER` seconds (or a third of the window, if longer) over their mean in as
  long a span ending with the first window. Means, not a peak over a mean: resident memory
  swings by +-10% from frame to frame (each frame's arrays come and go), which would read as
  growth that is not there; ``soak.rss_mb`` is the largest sample of the last window;
- ``soak.p95_drift_fraction``: p95 frame round trip of the last window over the first, less 1
  (goal <= 0.2);
- ``soak.tags_lost``: samples of acknowledged tags missing from the tag store at the end
  (goal 0); ``soak.tags_acknowledged`` how many were acknowledged;
  ``soak.tag_answer_p95_last_seconds`` the p95 wait from a tag click to its answer in the last
  window (the series of frames and tag answers goes to ``soak-series.json``);
- ``soak.reports_missed``: periods of the run that ended without their report (goal 0; the
  one in progress when the run ends is not counted);
- ``soak.unhandled_errors``: error lines in the server's log (goal 0);
- ``soak.frames``, ``soak.exports``: how much was done.

The window is 10 minutes, or a sixth of a shorter run. ``EMBVIZ_SOAK_MINUTES`` sets the length
(default 120; ``--quick``: 3).
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PEOPLE = 10
THINK = 0.5
#: Report period of the server's schedule (``period:`` of its reports file).
PERIOD = "5m"
PERIOD_QUICK = "30s"
ACTIONS = {"frame": 12, "select": 2, "tap": 2, "tag": 1, "export": 1}
#: Seconds between one person's tag writes (each a new custom tag: a later write never replaces
#: an earlier one, so every acknowledged write can be counted in the store at the end).
TAG_EVERY = 60.0
#: Seconds of memory samples averaged at each end of the run (see ``soak.rss_growth_fraction``).
MEAN_OVER = 120.0
_TAGGED = re.compile(r"Tagged '(soak-\d+-\d+)' on ([\d,]+) samples|No samples to tag")


def _seconds(period: str) -> float:
    return float(period[:-1]) * {"s": 1, "m": 60, "h": 3600}[period[-1]]


class _Person:
    """One scripted page; what it did goes into ``log``."""

    def __init__(self, url: str, index: int, log: dict, tag_every: float = TAG_EVERY):
        self.url, self.index, self.log, self.tag_every = url, index, log, tag_every
        self.rng = random.Random(index)

    async def open(self):
        from embviz.hostile import HostileSession, find_models

        s = self.s = HostileSession(self.url, timeout=120)
        await s.open(first_frame=120)
        s.timeout = 60
        self.extent = s.view
        tabs = await s.wait_model(css_class="embviz-sidebar-tabs")
        before = len(s.received)
        await s.change(tabs, "active", 1)  # the Curate tab, built on demand
        for _ in range(100):
            await self.frame()
            sent = {"events": s.received[before:]}
            if find_models(sent, css_class="embviz-add-tag"):
                break
        one = lambda css: find_models(sent, css_class=css)[0]  # noqa: E731
        self.tag, self.value = one("embviz-tag"), one("embviz-tag-value")
        self.add, self.download = one("embviz-add-tag"), one("embviz-download")
        await s.change(self.tag, "value", "custom")
        self.step, self.tagged_at = 0, 0.0

    def _view(self):
        from embviz.render.store import View

        e, r = self.extent, self.rng
        w = (e.x1 - e.x0) * r.choice([1.0, 0.5, 0.25, 1 / 16, 1 / 64])
        h = (e.y1 - e.y0) * w / (e.x1 - e.x0)
        x0 = e.x0 + r.random() * (e.x1 - e.x0 - w)
        y0 = e.y0 + r.random() * (e.y1 - e.y0 - h)
        return View(x0, x0 + w, y0, y0 + h)

    async def frame(self) -> float:
        seconds = await self.s.frame(self._view())
        self.log["frames"].append((time.monotonic(), seconds))
        return seconds

    async def _answer(self, before: int, pattern, seconds: float = 60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            text = html.unescape(html.unescape(json.dumps(self.s.received[before:])))
            found = pattern(text)
            if found:
                return found
            await asyncio.sleep(0.2)
        return None

    async def act(self) -> None:
        s, r = self.s, self.rng
        action = r.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
        if action == "frame":
            await self.frame()
        elif action == "select":
            v = self._view()
            await s.select_box(v.x0, v.x0 + (v.x1 - v.x0) / 8, v.y0, v.y0 + (v.y1 - v.y0) / 8)
        elif action == "tag" and time.monotonic() - self.tagged_at >= self.tag_every:
            self.tagged_at = time.monotonic()
            self.step += 1
            note = f"soak-{self.index}-{self.step}"
            await s.change(self.value, "value", note)
            before, asked = len(s.received), time.monotonic()
            await s.click(self.add)
            found = await self._answer(before, _TAGGED.search)
            self.log["tag_seconds"].append((asked, time.monotonic() - asked))
            if found and found.group(1) == note:  # (an empty grid: "No samples to tag")
                self.log["tags"][note] = int(found.group(2).replace(",", ""))
            elif found is None:
                self.log["errors"].append(f"person {self.index}: no answer to tagging {note}")
        elif action in ("tap", "tag"):  # a tag too soon after the last: a tap instead
            v = self._view()
            await s.tap((v.x0 + v.x1) / 2, (v.y0 + v.y1) / 2)
        else:
            self.log["export_asked"] += 1
            before = len(s.received)
            await s.change(self.download, "clicks", self.log["export_asked"] * 1000 + self.index)
            got = await self._answer(before, lambda t: '"attr": "data"' in t and self.download in t)
            self.log["exports"] += bool(got)

    async def run(self, deadline: float) -> None:
        await self.open()
        while time.monotonic() < deadline:
            try:
                await self.act()
            except Exception as exc:  # a lost session: count it and open another
                self.log["errors"].append(f"person {self.index}: {type(exc).__name__}: {exc}")
                await self.s.close()
                await self.open()
            await asyncio.sleep(THINK)
        await self.s.close()


def _soak(url: str, seconds: float, rss, samples: list, tag_every: float) -> dict:
    from embviz.loadtest import run_sync

    log = {
        "frames": [],
        "tags": {},
        "tag_seconds": [],
        "exports": 0,
        "export_asked": 0,
        "errors": [],
    }

    async def main():
        deadline = time.monotonic() + seconds

        async def monitor():
            while time.monotonic() < deadline:
                samples.append((time.monotonic(), rss()))
                await asyncio.sleep(5)

        people = [_Person(url, i, log, tag_every).run(deadline) for i in range(PEOPLE)]
        await asyncio.gather(monitor(), *people)

    run_sync(main())
    return log


def run(work: Path, *, quick: bool = False) -> list[dict]:
    import numpy as np
    import psutil

    sys.path.insert(0, str(ROOT / "tests"))
    from bench_serve import SESSION_OPTIONS
    from conftest import PanelServer
    from test_hostile_session import _unhandled

    from embviz.pipeline.synth import synth
    from embviz.tags import TagStore

    minutes = 3.0 if quick else float(os.environ.get("EMBVIZ_SOAK_MINUTES", "120"))
    n = 200_000 if quick else 1_000_000
    ds = work / f"soak-synth-{n}"
    if not (ds / "manifest.json").exists():
        synth(ds, points=n, dims=(2,), progress=False)
    shutil.rmtree(ds / "tags", ignore_errors=True)
    out = work / "soak-reports"
    shutil.rmtree(out, ignore_errors=True)
    period = PERIOD_QUICK if quick else PERIOD
    settings = work / "soak-reports.yaml"
    settings.write_text(f"dataset: {ds}\nout_dir: {out}\nperiod: {period}\n")
    log_path = work / "soak-serve.log"
    server = PanelServer([ds, "--reports", settings], log_path, extra=SESSION_OPTIONS)
    samples: list[tuple[float, float]] = []
    try:
        server.wait(timeout=600)
        proc = psutil.Process(server.proc.pid)
        t0 = time.monotonic()
        rss_mb = lambda: proc.memory_info().rss / 2**20  # noqa: E731
        log = _soak(server.url, minutes * 60, rss_mb, samples, 15.0 if quick else TAG_EVERY)
        elapsed = time.monotonic() - t0
        alive = server.proc.poll() is None
    finally:
        server.stop()
    # The series, for looking into a growth or a drift afterwards.
    (work / "soak-memory.json").write_text(json.dumps([(t - t0, mb) for t, mb in samples]))
    series = {key: [(t - t0, v) for t, v in log[key]] for key in ("frames", "tag_seconds")}
    (work / "soak-series.json").write_text(json.dumps(series))
    window = min(600.0, minutes * 60 / 6)
    frames = np.array(log["frames"], dtype=float).reshape(-1, 2)
    first = frames[frames[:, 0] - t0 <= window, 1]
    span = minutes * 60  # the people stop acting then (elapsed adds their last answers)
    last = frames[(frames[:, 0] - t0 >= span - window) & (frames[:, 0] - t0 <= span), 1]
    p95 = lambda x: float(np.percentile(np.minimum(x, 120.0), 95)) if len(x) else float("nan")  # noqa: E731
    tags = np.array(log["tag_seconds"], dtype=float).reshape(-1, 2)
    tags_last = tags[tags[:, 0] - t0 >= span - window, 1]
    rss = np.array(samples, dtype=float).reshape(-1, 2)
    rss_t = rss[:, 0] - t0
    tail = max(MEAN_OVER, window / 3)
    base = rss[(rss_t <= window) & (rss_t >= window - tail), 1]
    end = rss[(rss_t >= span - tail) & (rss_t <= span), 1]
    peak = rss[rss_t >= span - window, 1]
    store = TagStore(ds)
    lost = sum(max(0, count - len(store.ids(tag))) for tag, count in log["tags"].items())
    reports = [p for p in out.glob("*.html") if p.name != "index.html"]
    due = int(elapsed // _seconds(period)) - 1  # the period in progress at the end not counted
    problems = _unhandled(log_path.read_text()) + log["errors"] + ([] if alive else ["died"])
    params = {"minutes": round(elapsed / 60, 1), "people": PEOPLE, "points": n}
    rec = lambda name, value, unit: {"name": name, "params": params, "value": value, "unit": unit}  # noqa: E731
    print(
        f"[soak] {elapsed / 60:.1f} min, {len(frames)} frames, {len(rss)} memory samples, "
        f"{len(log['tags'])} tags, {log['exports']} exports",
        *problems[:20],
        sep="\n",
        flush=True,
    )
    return [
        rec("soak.rss_growth_fraction", round(float(end.mean() / base.mean() - 1), 4), "fraction"),
        rec("soak.p95_drift_fraction", round(p95(last) / p95(first) - 1, 4), "fraction"),
        rec("soak.p95_first_seconds", round(p95(first), 3), "s"),
        rec("soak.p95_last_seconds", round(p95(last), 3), "s"),
        rec("soak.rss_mb", round(float(peak.max()), 1), "MB"),
        rec("soak.tags_acknowledged", len(log["tags"]), "tags"),
        rec("soak.tags_lost", lost, "samples"),
        rec("soak.tag_answer_p95_last_seconds", round(p95(tags_last), 3), "s"),
        rec("soak.reports_missed", max(0, due - len(reports)), "reports"),
        rec("soak.unhandled_errors", len(problems), "lines"),
        rec("soak.frames", len(frames), "frames"),
        rec("soak.frames_lost", int(np.isinf(frames[:, 1]).sum()), "frames"),
        rec("soak.exports", log["exports"], "downloads"),
    ]
