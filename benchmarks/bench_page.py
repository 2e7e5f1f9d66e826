"""Page weight: what a first load of ``embviz serve`` sends, measured in chromium, and its cost.

The measurement is the page-weight test's (``tests/test_page_weight.py`` :func:`measure`):
chromium's own count of the bytes each response took on the wire (CDP
``Network.loadingFinished`` ``encodedDataLength``, headers included), from ``page.goto`` in a
fresh browser context until the first map frame shows, then from pressing 3D until the 3D
view draws. Records:

- ``serve.page_bytes`` (MB): ``what=first load, wire=compressed`` (goal <= 4 MB);
  ``wire=uncompressed``: the same responses' decoded bodies (what they weigh without gzip);
  ``what=3D view opened``: what opening the 3D view adds (deck.gl, loaded only then);
- ``serve.page_foreign_requests``: requests to any host but the server's over both steps
  (goal 0);
- ``serve.page_static_seconds``: fetching every static file of a first load (gzip accepted)
  from a fresh server, the first time (each file compressed) and again (compressed bytes
  kept): the server CPU a first load costs.

The dataset is the demo (``EMBVIZ_DEMO_DATASET``) when given, else a 5,000-point synthetic
map with a 3D projection: the page weighs the same whatever the map's size.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _dataset(work: Path) -> Path:
    given = os.environ.get("EMBVIZ_DEMO_DATASET")
    if given:
        return Path(given)
    from embviz.pipeline.synth import synth

    out = work / "page-synth-5000"
    if not (out / "manifest.json").exists():
        synth(out, points=5000, dims=(2, 3), progress=False)
    return out


def _static_seconds(origin: str, paths: list[str]) -> float:
    """Seconds to fetch ``paths`` from ``origin`` one after the other, asking for gzip."""
    import urllib.request

    t0 = time.perf_counter()
    for path in paths:
        req = urllib.request.Request(origin + path, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
    return time.perf_counter() - t0


def _static_paths(page_url: str) -> list[str]:
    """The paths of the page's own scripts and stylesheets, read from its HTML."""
    import re
    import urllib.request
    from urllib.parse import urljoin, urlsplit

    with urllib.request.urlopen(page_url, timeout=60) as r:
        html = r.read().decode("utf-8", "replace")
    found = re.findall(r'(?:src|href)="([^"]*static/[^"]+)"', html)
    absolute = (urlsplit(urljoin(page_url, u)) for u in dict.fromkeys(found))
    return [f"{u.path}?{u.query}" if u.query else u.path for u in absolute]


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Bytes of a first load and of opening 3D, foreign requests, and static-file seconds."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import CHROMIUM_ARGS
    from test_page_weight import embviz_serve, measure

    dataset = _dataset(work)
    exe = os.environ.get("EMBVIZ_CHROMIUM", "/usr/bin/chromium")
    records: list[dict] = []
    with embviz_serve(dataset, work / "page-serve.log") as url:
        static = _static_paths(url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
            try:
                got = measure(browser, url)
            finally:
                browser.close()
    # A fresh server that nobody has visited (a visit warms its caches up in the background,
    # which would be timed too): the page's static files as a first visitor fetches them.
    with embviz_serve(dataset, work / "page-serve-static.log", poll="favicon.ico") as url:
        origin = url.rsplit("/", 1)[0]
        cold = _static_seconds(origin, static)
        warm = min(_static_seconds(origin, static) for _ in range(3))
    first = {"what": "first load"}
    records += [
        {
            "name": "serve.page_bytes",
            "params": {**first, "wire": "compressed"},
            "value": round(got.first_wire / 1e6, 3),
            "unit": "MB",
        },
        {
            "name": "serve.page_bytes",
            "params": {**first, "wire": "uncompressed"},
            "value": round(got.first_body / 1e6, 3),
            "unit": "MB",
        },
        {
            "name": "serve.page_bytes",
            "params": {"what": "3D view opened", "wire": "compressed"},
            "value": round(got.three_d_wire / 1e6, 3),
            "unit": "MB",
        },
        {
            "name": "serve.page_foreign_requests",
            "params": {"what": "first load, then 3D"},
            "value": len(got.foreign),
            "unit": "",
        },
        {
            "name": "serve.page_static_seconds",
            "params": {"files": len(static), "fetch": "first (compressing)"},
            "value": round(cold, 3),
            "unit": "s",
        },
        {
            "name": "serve.page_static_seconds",
            "params": {"files": len(static), "fetch": "again (kept)"},
            "value": round(warm, 3),
            "unit": "s",
        },
    ]
    return records
