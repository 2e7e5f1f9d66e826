"""The ``cluster`` step at 1M and 10M synthetic points, and the map's label and contour overlays.

``clusters.seconds`` is the whole step (``force=True``: read the projection and labels, k-means
of the finest level, Ward merging, per-cluster records, write) on an ``embviz synth`` map with
40 Gaussian clusters of very different sizes and 10 labels with 5 % noise; no embedding, so the
typical samples are found on the map. ``clusters.purity_median`` is the median purity of the
finest level against the synthetic labels (a check that the numbers come from real clusters).
``clusters.label_ms`` and ``clusters.contours_ms`` time one overlay of a 900 x 640 view (median
of 20), at full view and zoomed to about 1 % of the points.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

WIDTH, HEIGHT = 900, 640


def _dataset(work: Path, n: int) -> Path:
    """A synthetic 2D map of ``n`` points of its own (the step writes a table into it)."""
    from embviz.pipeline.synth import synth

    out = work / f"clusters-synth-{n}"
    if not (out / "manifest.json").exists():
        synth(out, points=n, dims=(2,), progress=False)
    return out


def _median_ms(fn, repeat: int = 20) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Records ``clusters.*`` at each size."""
    from bench_raster import _view_holding  # around the densest chunk, as the raster bench

    from embviz.clusters import cluster_labels, read_clusters
    from embviz.dataset import open_dataset
    from embviz.pipeline.cluster import cluster
    from embviz.render.contours import density_contours
    from embviz.render.raster import Renderer
    from embviz.render.store import clear_stores, load_store

    sizes = [200_000] if quick else [1_000_000, 10_000_000]
    records: list[dict] = []
    for n in sizes:
        root = _dataset(work, n)
        params = {"points": n}
        t0 = time.perf_counter()
        result = cluster(root, projection="synth.2d", force=True)
        seconds = time.perf_counter() - t0
        ds = open_dataset(root)
        frame = read_clusters(ds, "synth.2d")
        finest = frame[frame["level"] == frame["level"].max()]
        records += [
            {"name": "clusters.seconds", "params": params, "value": seconds, "unit": "s"},
            {
                "name": "clusters.purity_median",
                "params": {**params, "clusters": int(len(finest))},
                "value": float(finest["purity"].median()),
                "unit": "fraction",
            },
        ]
        print(f"  cluster step: {result}", flush=True)
        clear_stores()
        store = load_store(ds, "synth.2d")
        renderer = Renderer(store)
        for view_name, view in (("full", store.extent), ("zoom_1pct", _view_holding(store, 0.01))):
            vp = {**params, "view": view_name, "width": WIDTH, "height": HEIGHT}
            counts = renderer.aggregate(view, WIDTH, HEIGHT, mode="density").values
            records += [
                {
                    "name": "clusters.label_ms",
                    "params": vp,
                    "value": _median_ms(
                        lambda f=frame, v=view: cluster_labels(f, v, WIDTH, HEIGHT)
                    ),
                    "unit": "ms",
                },
                {
                    "name": "clusters.contours_ms",
                    "params": vp,
                    "value": _median_ms(lambda c=counts, v=view: density_contours(c, v)),
                    "unit": "ms",
                },
            ]
        del store, renderer
        clear_stores()
    return records
