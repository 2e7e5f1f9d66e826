"""2D explorer frames at 1M, 10M and 50M synthetic points against plain Datashader, and Plotly's size.

All ratios compare measurements taken in the same run on the same in-memory arrays.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 900, 640  # the map's inner size on a 1400 px wide page
ROOT = Path(__file__).resolve().parent.parent


def _timed(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _dataset(work: Path, n: int) -> Path:
    from embviz.pipeline.synth import synth

    out = work / f"raster-synth-{n}"
    if not (out / "manifest.json").exists():
        synth(out, points=n, dims=(2,), progress=False)
    return out


def _view_holding(store, fraction: float):
    """A square-ish view around the densest chunk holding about ``fraction`` of the points."""
    from embviz.render.store import View

    e = store.extent
    i = np.argmax(
        1.0
        / (
            (store.bounds[:, 1] - store.bounds[:, 0]) * (store.bounds[:, 3] - store.bounds[:, 2])
            + 1e-12
        )
    )
    row = min(int(i) * store.chunk_rows, store.n - 1)
    cx, cy = float(store.x[row]), float(store.y[row])
    target = fraction * store.n
    lo, hi = 0.0, max(e.x1 - e.x0, e.y1 - e.y0)
    for _ in range(40):
        r = (lo + hi) / 2
        count = store.count_in(View(cx - r, cx + r, cy - r, cy + r))
        if count < target:
            lo = r
        else:
            hi = r
    r = (lo + hi) / 2
    return View(cx - r, cx + r, cy - r, cy + r)


def _frame_bytes(view, store) -> int:
    """Bytes the server sends for one view change: the frame's data URI plus the points (and
    sprites) the map overlays once the view holds at most its hover (sprite) limit."""
    from embviz.render.overlay import HOVER_LIMIT, SPRITE_LIMIT, hover_points, sprites
    from embviz.render.raster import Renderer

    frame = Renderer(store).render(view, WIDTH, HEIGHT, mode="category", color_by="label")
    payload: dict = {"url": ["data:image/png;base64," + base64.b64encode(frame.png).decode()]}
    if frame.points <= HOVER_LIMIT:
        rows = store.rows_in(view)[:HOVER_LIMIT]
        points = hover_points(
            store, rows, thumbs=lambda ids: [f"/embviz/thumb/bench-00000000/{i}" for i in ids]
        )
        if len(rows) <= SPRITE_LIMIT:
            payload["sprites"], points = sprites(points, view, WIDTH, HEIGHT)
        payload["points"] = points
    return len(json.dumps(payload))


def _plain_datashader(store, view) -> float:
    import datashader as dsh
    import datashader.transfer_functions as tf
    import pandas as pd

    from embviz.render.raster import category_colors

    codes, names = store.categorical["label"]
    df = pd.DataFrame(
        {"x": store.x, "y": store.y, "label": pd.Categorical.from_codes(codes, categories=names)},
        copy=False,
    )
    key = dict(zip(names, category_colors(len(names)), strict=True))

    def frame():
        cvs = dsh.Canvas(WIDTH, HEIGHT, x_range=(view.x0, view.x1), y_range=(view.y0, view.y1))
        img = tf.shade(cvs.points(df, "x", "y", dsh.count_cat("label")), color_key=key)
        buf = io.BytesIO()
        img.to_pil().save(buf, format="png")
        return buf.getvalue()

    frame()  # compile
    return _timed(frame)


def _ours(store, view, fixed: list[float] | None = None) -> tuple[float, float]:
    """Median seconds of a whole frame and of its aggregation step alone, from the rows (no
    pyramid, no cluster: what the renderer itself costs); ``fixed`` collects each frame's
    shade and encode seconds (the cost a frame has whatever the view holds)."""
    from embviz.render.raster import Renderer

    aggregate: list[float] = []

    def frame():
        r = Renderer(store, sources=[])  # no cached aggregate: the full cost of a new view
        f = r.render(view, WIDTH, HEIGHT, mode="category", color_by="label")
        aggregate.append(f.seconds["aggregate"])
        if fixed is not None:
            fixed.append(f.seconds["shade"] + f.seconds["encode"])
        return base64.b64encode(f.png)

    frame()
    aggregate.clear()
    if fixed is not None:
        fixed.clear()
    return _timed(frame, repeat=5), statistics.median(aggregate)


def _first_frame(dataset: Path) -> float:
    """Seconds from launching ``embviz serve`` to the first frame's status line in chromium."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import CHROMIUM_ARGS, free_port

    port = free_port()
    exe = os.environ.get("EMBVIZ_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("embviz")), "serve", str(dataset),
                "--address", "127.0.0.1", "--port", str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/explorer", timeout=300_000)
                    break
                except Exception:
                    if time.perf_counter() - t0 > 300:
                        raise
                    time.sleep(0.1)
            page.get_by_text(re.compile("points in view")).first.wait_for(timeout=300_000)
            return time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            browser.close()


def _keep_pyramid(root: Path, store) -> None:
    """Build the pyramid of ``store``'s labels where a server would have kept it."""
    from embviz.dataset import open_dataset
    from embviz.render.cache import cache_dir
    from embviz.render.pyramid import build_pyramid

    where = cache_dir(open_dataset(root), "synth.2d")
    build_pyramid(store, where / "pyramid", "label", key=where.name)


def _plotly_bytes(store) -> int:
    import plotly.graph_objects as go

    codes, _ = store.categorical["label"]
    fig = go.Figure(
        go.Scattergl(
            x=np.asarray(store.x),
            y=np.asarray(store.y),
            mode="markers",
            marker={"color": np.asarray(codes), "size": 2},
        )
    )
    return len(fig.to_json())


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Records ``raster.*`` at each size and ``plotly.figure_bytes`` at 1M."""
    from embviz.render.store import clear_stores, load_store

    sizes = [200_000, 1_000_000] if quick else [1_000_000, 10_000_000, 50_000_000]
    records: list[dict] = []
    for n in sizes:
        root = _dataset(work, n)
        params = {"points": n, "width": WIDTH, "height": HEIGHT}
        clear_stores()
        store = load_store(root, "synth.2d")
        full = store.extent
        zoom = _view_holding(store, 0.01)
        ours_full, agg_full = _ours(store, full)
        plain = _plain_datashader(store, full)
        fixed: list[float] = []
        ours_zoom, agg_zoom = _ours(store, zoom, fixed)
        views = [full, _view_holding(store, 0.1), zoom, _view_holding(store, 2000 / n)]
        biggest = max(_frame_bytes(v, store) for v in views)
        records += [
            {"name": "raster.full_view_seconds", "params": params, "value": ours_full, "unit": "s"},
            {
                "name": "raster.full_view_over_datashader",
                "params": params,
                "value": ours_full / plain,
                "unit": "ratio",
            },
            {
                "name": "raster.datashader_full_view_seconds",
                "params": params,
                "value": plain,
                "unit": "s",
            },
            {
                "name": "raster.zoom_1pct_seconds",
                "params": params,
                "value": ours_zoom,
                "unit": "s",
            },
            {
                "name": "raster.zoom_1pct_speedup",
                "params": params,
                "value": ours_full / ours_zoom,
                "unit": "ratio",
            },
            {
                "name": "raster.frame_fixed_ms",
                "params": {**params, "view": "1%", "what": "shade + encode, median"},
                "value": 1000 * statistics.median(fixed),
                "unit": "ms",
            },
            {
                "name": "raster.zoom_1pct_aggregate_speedup",
                "params": params,
                "value": agg_full / agg_zoom,
                "unit": "ratio",
            },
            {
                "name": "raster.bytes_per_interaction",
                "params": {**params, "views": "full, 10%, 1%, 2000 points"},
                "value": biggest,
                "unit": "bytes",
            },
        ]
        if n == sizes[0]:
            records.append(
                {
                    "name": "plotly.figure_bytes",
                    "params": {"points": n, "trace": "Scattergl"},
                    "value": _plotly_bytes(store),
                    "unit": "bytes",
                }
            )
        if n == sizes[-1]:
            _keep_pyramid(root, store)
            clear_stores()
            # The explorer cache exists now (written by the load above): a restart maps it,
            # and the pyramid a first server built in the background.
            records.append(
                {
                    "name": "raster.first_frame_seconds",
                    "params": {"points": n, "explorer_cache": "present"},
                    "value": _first_frame(root),
                    "unit": "s",
                }
            )
        del store
        clear_stores()
    return records
