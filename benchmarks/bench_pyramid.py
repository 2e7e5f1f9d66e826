"""The pyramid of cached counts at 200M points: build time, and frames from it against the rows.

The store is built from arrays, not through ``embviz synth`` and Parquet (at 200M that route
needs ~12 GB of dataset and ~10 GB of memory to join the columns): the same generator
(``embviz.synth.generate_part``: 40 Gaussian clusters, 10 labels, 2 % background, far
outliers) writes x, y, label and id as .npy files, ordered by a counting sort on a 1024 x 1024
Hilbert grid (the projection's curve order, at a coarser grain), and the frames read them
memory-mapped, as the explorer reads its cache. Every timed frame uses a new ``Renderer`` (no
cached aggregate); "pyramid" frames ask an open :class:`PyramidSource` first (views too narrow
for it aggregate the rows), "direct" frames have no source.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
from bench_raster import HEIGHT, WIDTH, _view_holding

_PART = 1_000_000
_BITS = 10  # Hilbert grid of the curve order: 1024 x 1024 cells


def _scatter_kernel():
    import numba

    @numba.njit(nogil=True)
    def scatter(keys, x, y, label, start, cursor, ox, oy, olabel, oid):  # pragma: no cover
        for r in range(len(keys)):
            d = cursor[keys[r]]
            cursor[keys[r]] = d + 1
            ox[d], oy[d], olabel[d], oid[d] = x[r], y[r], label[r], start + r

    return scatter


def _store(work: Path, n: int):
    """A memory-mapped 2D store of ``n`` synthetic points in curve order (written once)."""
    from embviz.curve import hilbert_distances
    from embviz.render.store import PointStore
    from embviz.synth import generate_part, make_spec

    where = work / f"pyramid-store-{n}"
    spec = make_spec(clusters=40, labels=10, sprites=256, seed=0)
    names = [f"class_{i:02d}" for i in range(spec.labels)]
    if not (where / "meta.json").exists():
        where.mkdir(parents=True, exist_ok=True)
        tmp = {
            k: np.lib.format.open_memmap(where / f"tmp.{k}.npy", "w+", dt, (n,))
            for k, dt in (("x", np.float32), ("y", np.float32), ("l", np.int8), ("k", np.int32))
        }
        reach = 2.6 * spec.extent  # the outliers lie up to 2.5 x the clusters' half-width out
        counts = np.zeros(1 << (2 * _BITS), dtype=np.int64)
        for i, a in enumerate(range(0, n, _PART)):
            part = generate_part(spec, i, a, min(_PART, n - a))
            b = a + len(part["id"])
            xy = part["xy"]
            keys = hilbert_distances(xy, [[-reach, reach]] * 2, bits=_BITS).astype(np.int32)
            tmp["x"][a:b], tmp["y"][a:b] = xy[:, 0], xy[:, 1]
            tmp["l"][a:b], tmp["k"][a:b] = part["label"], keys
            counts += np.bincount(keys, minlength=len(counts))
        cursor = np.concatenate([[0], np.cumsum(counts)[:-1]])
        out = {
            k: np.lib.format.open_memmap(where / f"{k}.npy", "w+", dt, (n,))
            for k, dt in (
                ("x", np.float32),
                ("y", np.float32),
                ("label", np.int8),
                ("id", np.int64),
            )
        }
        scatter = _scatter_kernel()
        for a in range(0, n, 16 * _PART):
            b = min(a + 16 * _PART, n)
            cols = [np.asarray(tmp[k][a:b]) for k in ("k", "x", "y", "l")]
            scatter(*cols, a, cursor, *(np.asarray(out[k]) for k in ("x", "y", "label", "id")))
        for arr in out.values():
            arr.flush()
        del tmp, out
        for k in ("x", "y", "l", "k"):
            (where / f"tmp.{k}.npy").unlink()
        (where / "meta.json").write_text(json.dumps({"points": n, "bits": _BITS}))
    load = lambda k: np.load(where / f"{k}.npy", mmap_mode="r")  # noqa: E731
    return PointStore.from_arrays(
        load("x"),
        load("y"),
        ids=load("id"),
        categorical={"label": (load("label"), names)},
        key=str(where),
    )


def _frame(store, view, sources) -> tuple[float, str]:
    """Seconds of one whole frame (aggregate, shade, PNG) with no cached aggregate."""
    from embviz.render.raster import Renderer

    r = Renderer(store, sources=sources)
    t0 = time.perf_counter()
    r.render(view, WIDTH, HEIGHT, mode="category", color_by="label")
    return time.perf_counter() - t0, r.answered_by


def _median(store, view, sources, repeat: int = 3) -> float:
    return statistics.median(_frame(store, view, sources)[0] for _ in range(repeat))


def _walk(store, zoom, full) -> list:
    """Views from the full extent down to ``zoom``, centred on ``zoom``, each 0.7x as wide."""
    from embviz.render.store import View

    cx, cy = (zoom.x0 + zoom.x1) / 2, (zoom.y0 + zoom.y1) / 2
    rx, ry = (full.x1 - full.x0) / 2, (full.y1 - full.y0) / 2
    views = []
    while rx > (zoom.x1 - zoom.x0) / 2:
        views.append(View(cx - rx, cx + rx, cy - ry, cy + ry))
        rx, ry = rx * 0.7, ry * 0.7
    return [*views, zoom]


def _frame_during_build(store, root: Path, view, budget) -> float:
    """Seconds of a frame of ``view`` asked right after the pyramid went missing: it starts
    the background build and aggregates the rows while that runs (the build is then awaited)."""
    import shutil

    from embviz.render.pyramid import PyramidSource
    from embviz.render.pyramid_build import pyramid_dir

    shutil.rmtree(pyramid_dir(root, "label"))
    source = PyramidSource(store, root, max_bytes=budget)
    seconds, answered = _frame(store, view, [source])
    assert answered == "local", answered
    t0 = time.perf_counter()
    while source.pyramid("label") is None:  # a benchmark may poll: nothing asserts on time
        assert not source.failed("label"), source.failed("label")
        time.sleep(0.2)
    print(
        f"[pyramid] background build (lowest priority) done {time.perf_counter() - t0:.1f} s later"
    )
    return seconds


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Records ``raster.pyramid_build_seconds``, ``raster.full_view_seconds`` and
    ``raster.zoom_1pct_seconds`` (pyramid and direct), and the slowest frame of a zoom walk."""
    from embviz.render.pyramid import PyramidSource, build_pyramid

    sizes = [2_000_000] if quick else [200_000_000]
    # The default budget (8 bytes a point) gives a 2M-point map too coarse a base for a
    # full view: --quick checks the harness with the base a big map gets.
    budget = 256 << 20 if quick else None
    records: list[dict] = []
    for n in sizes:
        t0 = time.perf_counter()
        store = _store(work, n)
        print(f"[pyramid] store of {n} points ready in {time.perf_counter() - t0:.0f} s")
        root = work / f"pyramid-store-{n}" / "pyramid"
        t0 = time.perf_counter()
        where = build_pyramid(store, root, "label", max_bytes=budget)
        built = time.perf_counter() - t0
        meta = json.loads((where / "meta.json").read_text())
        source = PyramidSource(store, root, background=False, max_bytes=budget)
        assert source.pyramid("label") is not None
        base = {"points": n, "width": WIDTH, "height": HEIGHT}
        full, zoom = store.extent, _view_holding(store, 0.01)
        pyr, direct = {**base, "source": "pyramid"}, {**base, "source": "direct"}
        _frame(store, full, [source])  # compile the kernels, map the pages
        _frame(store, zoom, [])  # and Datashader's for the rows
        records += [
            {
                "name": "raster.pyramid_build_seconds",
                "params": {"points": n, "column": "label", "base_grid": meta["grids"][-1]},
                "value": built,
                "unit": "s",
            },
            {
                "name": "raster.pyramid_bytes",
                "params": {"points": n, "column": "label", "base_grid": meta["grids"][-1]},
                "value": meta["bytes"],
                "unit": "bytes",
            },
            {
                "name": "raster.full_view_seconds",
                "params": pyr,
                "value": _median(store, full, [source]),
                "unit": "s",
            },
            {
                "name": "raster.zoom_1pct_seconds",
                "params": pyr,
                "value": _median(store, zoom, [source]),
                "unit": "s",
            },
        ]
        walk = [(_frame(store, v, [source]), v) for v in _walk(store, zoom, full)]
        (slowest, answered), view = max(walk, key=lambda t: t[0][0])
        records.append(
            {
                "name": "raster.walk_max_frame_seconds",
                "params": {**pyr, "walk": f"{len(walk)} views, full to 1%, x0.7 each"},
                "value": slowest,
                "unit": "s",
            }
        )
        print(
            f"[pyramid] slowest walk frame {slowest:.3f} s by {answered}, holding "
            f"{store.count_in(view) / n:.1%} of the points; "
            f"{sum(a == 'PyramidSource' for (_, a), _ in walk)}/{len(walk)} from the pyramid"
        )
        records += [
            {
                "name": "raster.full_view_seconds",
                "params": direct,
                "value": _median(store, full, []),
                "unit": "s",
            },
            {
                "name": "raster.zoom_1pct_seconds",
                "params": direct,
                "value": _median(store, zoom, []),
                "unit": "s",
            },
        ]
        records.append(
            {
                "name": "raster.frame_during_pyramid_build_seconds",
                "params": direct,
                "value": _frame_during_build(store, root, full, budget),
                "unit": "s",
            }
        )
        del store, source
    return records
