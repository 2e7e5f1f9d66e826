"""Image-map frames at 1M, 10M and 50M synthetic points: seconds cold and warm, bytes, cache hits.

Thumbnails are synthetic: every sample is its own thumbnail (its own cache entry), whose bytes
are one of 256 64-px WebP sprites (``embviz.synth.draw_sprite``), so decoding and the cache
work as with one photo per sample. The frames are what the server computes for one view
change (``MapView.compute``: pick the representatives, fetch and decode thumbnails, compose,
encode, and the cells' tooltip columns).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
from bench_raster import HEIGHT, WIDTH, _dataset, _view_holding

CELL_PX = 64
SPRITES = 256


class SynthThumbs:
    """Thumb id = sample id; bytes = one of :data:`SPRITES` sprites (decoded per sample)."""

    def __init__(self, key: str):
        from embviz.synth import draw_sprite

        self.key = key
        self.pool = [draw_sprite(i, families=16, size=64) for i in range(SPRITES)]

    def thumb_ids(self, sample_ids):
        return np.asarray(sample_ids, dtype=np.int64)

    def read(self, thumb_ids):
        return [self.pool[int(t) % SPRITES] for t in thumb_ids]


def _describe(store):
    """Tooltip text like the app's (every category and number column of each row)."""

    def describe(rows):
        lines = [[f"id {int(i)}"] for i in store.ids[rows]]
        for name, (codes, names) in store.categorical.items():
            for line, c in zip(lines, codes[rows], strict=True):
                line.append(f"{name}: {names[c]}")
        for name, values in store.numeric.items():
            for line, v in zip(lines, values[rows], strict=True):
                line.append(f"{name}: {v:.4g}")
        return {"text": ["\n".join(line) for line in lines]}

    return describe


class _Frames:
    """The app's image-map frame, from the library (benchmarks never import the app): pick the
    cells' representatives, draw and encode the frame, build the cells' hover columns (centre,
    size, id, thumbnail URL, tooltip text), as ``MapView`` does for a view above its
    ``sprite_limit``."""

    def __init__(self, store, source, cache, cell_px: int = CELL_PX):
        from embviz.render.imagemap import ImageMapper

        self.store, self.cell_px = store, cell_px
        self.mapper = ImageMapper(store, source, cache=cache)
        self.describe = _describe(store)

    def request(self, view):
        return view

    def compute(self, view):
        import base64
        from types import SimpleNamespace

        from embviz.render.imagemap import cell_columns
        from embviz.render.overlay import hover_points
        from embviz.render.raster import Style

        opts = {"mode": "category", "color_by": "label", "style": Style()}
        picks = self.mapper.pick(view, WIDTH, HEIGHT, cell_px=self.cell_px, **opts)
        frame = self.mapper.draw(picks, view, WIDTH, HEIGHT, **opts)
        cells = picks.cells
        points = hover_points(
            self.store,
            picks.rows[cells],
            thumbs=lambda ids: [f"/embviz/thumb/bench-00000000/{int(i)}" for i in ids],
            describe=self.describe,
        )
        url = f"data:{frame.mime};base64," + base64.b64encode(frame.png).decode("ascii")
        return SimpleNamespace(frame=frame, url=url, cells={**points, **cell_columns(picks)})


def _map(store, source, cache, cell_px: int = CELL_PX) -> _Frames:
    return _Frames(store, source, cache, cell_px)


def _sent_bytes(result) -> int:
    """The JSON the server sends for the frame: its data URI and the cells' columns."""
    return len(json.dumps({"url": [result.url], "cells": result.cells}))


def _walk(store):
    """The scripted walk: full view, six zooms in (0.7x each) towards the densest chunk,
    four pans right by a quarter of the view, four back, six zooms out (21 frames)."""
    from embviz.render.store import View

    full = store.extent
    target = _view_holding(store, 0.01)
    cx, cy = (target.x0 + target.x1) / 2, (target.y0 + target.y1) / 2
    views, v = [full], full
    for _ in range(6):
        w, h = (v.x1 - v.x0) * 0.7, (v.y1 - v.y0) * 0.7
        x0 = v.x0 + (cx - v.x0) * 0.3  # the point under the cursor stays put
        y0 = v.y0 + (cy - v.y0) * 0.3
        v = View(x0, x0 + w, y0, y0 + h)
        views.append(v)
    for step in [1, 1, 1, 1, -1, -1, -1, -1]:
        d = (v.x1 - v.x0) * 0.25 * step
        v = View(v.x0 + d, v.x1 + d, v.y0, v.y1)
        views.append(v)
    views += views[1:6][::-1] + [full]
    return views


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Records ``imagemap.*`` at each size."""
    from embviz.render.store import clear_stores, load_store
    from embviz.render.thumbcache import ThumbCache

    sizes = [200_000, 1_000_000] if quick else [1_000_000, 10_000_000, 50_000_000]
    records: list[dict] = []
    for n in sizes:
        root = _dataset(work, n)
        clear_stores()
        store = load_store(root, "synth.2d")
        params = {"points": n, "width": WIDTH, "height": HEIGHT, "cell_px": CELL_PX}
        source = SynthThumbs(f"bench-{n}")
        # The first image frame of the store in this process: its per-chunk category counts
        # are computed, its columns paged in, the kernels loaded from Numba's disk cache.
        first = _map(store, source, ThumbCache(128 * 2**20))
        t0 = time.perf_counter()
        first.compute(first.request(store.extent))
        first_s = time.perf_counter() - t0
        # Cold: the same view with an empty thumbnail cache (every thumbnail read and decoded).
        cache = ThumbCache(128 * 2**20)
        mv = _map(store, source, cache)
        req = mv.request(store.extent)
        t0 = time.perf_counter()
        cold = mv.compute(req)
        cold_s = time.perf_counter() - t0
        warm_s = []
        for _ in range(3):
            t0 = time.perf_counter()
            warm = mv.compute(req)
            warm_s.append(time.perf_counter() - t0)
        assert warm.frame.png == cold.frame.png
        # The walk, from an empty cache.
        cache = ThumbCache(128 * 2**20)
        mv = _map(store, source, cache)
        walk_s, sent = [], []
        for view in _walk(store):
            t0 = time.perf_counter()
            res = mv.compute(mv.request(view))
            walk_s.append(time.perf_counter() - t0)
            sent.append(_sent_bytes(res))
        walk = "full, 6 zooms in x0.7, 4 pans right x0.25, 4 back, 6 zooms out (21 frames)"
        small = _map(store, source, ThumbCache(128 * 2**20), cell_px=24)
        smallest = _sent_bytes(small.compute(small.request(store.extent)))
        records += [
            {
                "name": "imagemap.frame_seconds",
                "params": {**params, "thumbnails": "first frame"},
                "value": first_s,
                "unit": "s",
            },
            {
                "name": "imagemap.frame_seconds",
                "params": {**params, "thumbnails": "cold"},
                "value": cold_s,
                "unit": "s",
            },
            {
                "name": "imagemap.frame_seconds",
                "params": {**params, "thumbnails": "warm"},
                "value": statistics.median(warm_s),
                "unit": "s",
            },
            {
                "name": "imagemap.walk_frame_seconds",
                "params": {**params, "walk": walk, "stat": "median"},
                "value": statistics.median(walk_s),
                "unit": "s",
            },
            {
                "name": "imagemap.bytes_per_frame",
                "params": {**params, "views": "the walk's, largest"},
                "value": max(sent),
                "unit": "bytes",
            },
            {
                "name": "imagemap.bytes_per_frame",
                "params": {**params, "cell_px": 24, "views": "full"},
                "value": smallest,
                "unit": "bytes",
            },
            {
                "name": "imagemap.cache_hit_rate",
                "params": {**params, "walk": walk},
                "value": cache.hit_rate,
                "unit": "ratio",
            },
        ]
        del store, mv, small, first
        clear_stores()
    return records
