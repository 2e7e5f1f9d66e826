"""3D view updates at 10M and 50M synthetic points: down-sampling to the budget as the view moves.

Each update is what the server does when the browser's view state changes: the view box, the
sample, and the pandas frame the DeckGL pane sends (float32 x, y, z; uint8 r, g, b; int32 id).
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 900, 640  # the 3D view's canvas on a 1400 px wide page


def _dataset(work: Path, n: int) -> Path:
    from embviz.pipeline.synth import synth

    out = work / f"cloud-synth-{n}"
    if not (out / "manifest.json").exists():
        synth(out, points=n, dims=(3,), progress=False)
    return out


def _view_states(store) -> list[tuple[str, dict]]:
    """Overview, zooms 1..5 above the fit into the densest chunk, then an orbit there."""
    e = store.extent
    lo, hi = np.asarray(e.lo), np.asarray(e.hi)
    span = float(max(hi - lo)) or 1.0
    fit = math.log2(min(WIDTH, HEIGHT) / (span * 1.3))  # as the 3D view frames the cloud
    b = store.bounds
    volume = (b[:, 1] - b[:, 0]) * (b[:, 3] - b[:, 2]) * (b[:, 5] - b[:, 4])
    densest = int(np.argmin(volume + 1e-12))
    centre = [float(v) for v in (b[densest, 0::2] + b[densest, 1::2]) / 2]
    states = [("overview", {"target": [float(v) for v in (lo + hi) / 2], "zoom": fit})]
    for k in range(1, 6):
        states.append((f"zoom+{k}", {"target": centre, "zoom": fit + k, "rotationOrbit": 30}))
    states.append(("orbit", {**states[-1][1], "rotationOrbit": 120, "rotationX": 40}))
    return states


def _update(store, view_state: dict, lut: np.ndarray, codes: np.ndarray):
    import pandas as pd

    from embviz.render.sample3d import box_from_view_state, sample

    box = box_from_view_state(view_state, WIDTH, HEIGHT, store.extent)
    rows = sample(store, box)
    rgb = lut[codes[rows]]
    return pd.DataFrame(
        {
            "x": store.x[rows],
            "y": store.y[rows],
            "z": store.z[rows],
            "r": rgb[:, 0],
            "g": rgb[:, 1],
            "b": rgb[:, 2],
            "id": store.ids[rows].astype(np.int32),
        }
    )


def _timed_load(root: Path):
    from embviz.render.store import clear_stores, load_store

    clear_stores()
    t0 = time.perf_counter()
    store = load_store(root, "synth.3d", dims=3)
    return store, time.perf_counter() - t0


def _rank_seconds(store) -> float:
    from embviz.render.sample3d import rank

    x, y, z = (np.asarray(a) for a in (store.x, store.y, store.z))
    t0 = time.perf_counter()
    rank(x, y, z)
    return time.perf_counter() - t0


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Records ``cloud3d.*`` at each size: load, rank and update seconds, points and bytes sent.

    Updates are timed after a first one (the overview, recorded apart), so the sequence
    measures the steady state of a running server.
    """
    from embviz.render.raster import category_colors, rgb
    from embviz.render.sample3d import DEFAULT_BUDGET
    from embviz.render.store import clear_stores

    sizes = [200_000, 1_000_000] if quick else [10_000_000, 50_000_000]
    records: list[dict] = []
    for n in sizes:
        root = _dataset(work, n)
        params = {"points": n, "budget": DEFAULT_BUDGET, "width": WIDTH, "height": HEIGHT}
        for cache in (root / "cache" / "explorer").glob("synth.3d--*"):
            shutil.rmtree(cache, ignore_errors=True)  # the cold load joins, ranks and writes it
        _, cold = _timed_load(root)  # joins the tables, ranks, writes the cache
        store, warm = _timed_load(root)  # a server restart: maps the cache
        codes, names = store.categorical["label"]
        lut = rgb(category_colors(len(names)))
        states = _view_states(store)
        # The first update after a restart touches the mapped cache's pages: timed apart.
        t0 = time.perf_counter()
        _update(store, states[0][1], lut, codes)
        first = time.perf_counter() - t0
        seconds, sent, nbytes = [], [], []
        for _, state in states:
            t0 = time.perf_counter()
            frame = _update(store, state, lut, codes)
            seconds.append(time.perf_counter() - t0)
            sent.append(len(frame))
            nbytes.append(int(sum(frame[c].to_numpy().nbytes for c in frame.columns)))
        views = {**params, "views": "overview, zoom +1..+5 on the densest chunk, orbit"}
        records += [
            {
                "name": "cloud3d.load_seconds",
                "params": {"points": n, "explorer_cache": "absent"},
                "value": cold,
                "unit": "s",
            },
            {
                "name": "cloud3d.load_seconds",
                "params": {"points": n, "explorer_cache": "present"},
                "value": warm,
                "unit": "s",
            },
            {
                "name": "cloud3d.rank_seconds",
                "params": {"points": n},
                "value": _rank_seconds(store),
                "unit": "s",
            },
            {
                "name": "cloud3d.first_update_seconds",
                "params": {**params, "views": "overview", "explorer_cache": "present"},
                "value": first,
                "unit": "s",
            },
            {
                "name": "cloud3d.update_seconds",
                "params": {**views, "stat": "median"},
                "value": statistics.median(seconds),
                "unit": "s",
            },
            {
                "name": "cloud3d.update_seconds",
                "params": {**views, "stat": "max"},
                "value": max(seconds),
                "unit": "s",
            },
            {"name": "cloud3d.points_sent", "params": views, "value": max(sent), "unit": "points"},
            {
                "name": "cloud3d.bytes_per_update",
                "params": views,
                "value": max(nbytes),
                "unit": "bytes",
            },
        ]
        del store
        clear_stores()
    return records
