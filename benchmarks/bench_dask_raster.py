"""Frames aggregated on a Dask LocalCluster (two worker processes) against one-process frames.

The store's partitions are persisted on the workers first (``raster.dask_persist_seconds``);
each timed frame is a new full view of the whole map (a new Renderer: no cached aggregate),
rendered once on the cluster and once here, and the two PNGs are checked to be identical.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench_raster import HEIGHT, WIDTH, _dataset, _timed

WORKERS = 2


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Records ``raster.dask_full_view_seconds`` and its ratio to the one-process frame."""
    from distributed import Client, LocalCluster

    from embviz.render.dask_source import DaskSources
    from embviz.render.raster import Renderer
    from embviz.render.store import clear_stores, load_store

    n = 200_000 if quick else 50_000_000
    root = _dataset(work, n)
    clear_stores()
    load_store(root, "synth.2d")  # writes the explorer cache the workers read, if missing
    clear_stores()
    store = load_store(root, "synth.2d")
    full = store.extent
    params = {"points": n, "workers": WORKERS, "width": WIDTH, "height": HEIGHT}

    def frame(sources):
        r = Renderer(store, sources=sources)
        png = r.render(full, WIDTH, HEIGHT, mode="category", color_by="label").png
        assert r.answered_by == ("DaskSource" if sources else "local")
        return png

    with (
        LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        t0 = time.perf_counter()
        factory = DaskSources(client)
        source = factory(store)
        assert source is not None, "no explorer cache"
        # Each partition's length, computed where it lies: waits for all without moving any.
        assert sum(client.gather([client.submit(len, f) for f in source.parts.futures])) == n
        persist = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = frame([source])  # the workers compile Datashader's kernels
        cold = time.perf_counter() - t0
        assert first == frame([]), "the cluster's frame differs from the one-process frame"
        remote = _timed(lambda: frame([source]))
        local = _timed(lambda: frame([]))
        partitions = len(source.parts.futures)
        factory.close()
    clear_stores()
    return [
        {"name": "raster.dask_full_view_seconds", "params": params, "value": remote, "unit": "s"},
        {
            "name": "raster.dask_full_view_over_local",
            "params": {**params, "local_seconds": round(local, 3)},
            "value": remote / local,
            "unit": "ratio",
        },
        {
            "name": "raster.dask_first_frame_seconds",
            "params": params,
            "value": cold,
            "unit": "s",
        },
        {
            "name": "raster.dask_persist_seconds",
            "params": {**params, "partitions": partitions},
            "value": persist,
            "unit": "s",
        },
    ]
