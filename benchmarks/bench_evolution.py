"""How maps change: a transition's frames at 1M and 10M points, and embedding a training run.

Transitions: map ``a`` is a synthetic 2D projection (the ``raster`` suite's datasets, real
Parquet), map ``b`` the same samples placed elsewhere (``a`` turned a quarter and bent, so every
point moves). A motion's frames are what the server renders while a map moves
(:class:`embviz.render.transition.Transition`: a stratified sample of at most
:data:`~embviz.render.transition.DEFAULT_BUDGET` points, aggregated, shaded and PNG-encoded at
900x640), one after another for :data:`SECONDS`.

Records:

- ``evolution.transition_fps``: frames rendered per second during a motion (goal >= 10);
- ``evolution.transition_bytes``: bytes per frame as sent (the PNG as a data URI; goal <= 300 KB);
- ``evolution.transition_start_seconds``: from asking for a motion to its first frame (picking
  the sample of ``b`` and the rows of ``a``; kept per map, so a second motion starts at once);
- ``evolution.embed_series_seconds``: ``embed --checkpoints`` of the demo's training run (the
  5,000 MNIST digits, the ``cnn`` model, 5 checkpoints), with ``evolution.train_seconds`` (the
  whole run: reading the images, 4 epochs, saving) and ``evolution.test_accuracy`` of that run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from bench_raster import HEIGHT, WIDTH, _dataset

#: Seconds of motion measured per size.
SECONDS = 4.0


def _moved(a):
    """The same samples as store ``a``, placed elsewhere: turned a quarter and bent."""
    from embviz.render.store import PointStore

    x, y = a.x.astype(np.float64), a.y.astype(np.float64)
    span = float(max(x.max() - x.min(), 1e-9))
    nx, ny = -y + 0.15 * span * np.sin(3 * x / span), x
    return PointStore.from_arrays(
        nx, ny, ids=a.ids, categorical=a.categorical, numeric=a.numeric, key=a.key + ":moved"
    )


def _transition(n: int, work: Path) -> list[dict]:
    from embviz.render.store import clear_stores, load_store
    from embviz.render.transition import Transition

    clear_stores()
    a = load_store(_dataset(work, n), "synth.2d")
    b = _moved(a)
    params = {"points": n, "width": WIDTH, "height": HEIGHT}
    # The kernels compile once per process (the server's warm-up does it): not a motion's cost.
    Transition(a, b, src_view=a.extent, dst_view=b.extent, budget=1000).frame(
        0.5, WIDTH, HEIGHT, mode="category", color_by="label"
    )
    t0 = time.perf_counter()
    tr = Transition(a, b, src_view=a.extent, dst_view=b.extent)
    tr.frame(0.0, WIDTH, HEIGHT, mode="category", color_by="label")
    start = time.perf_counter() - t0
    sizes, t0, frames = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < SECONDS:
        t = min((time.perf_counter() - t0) / SECONDS, 1.0)
        f = tr.frame(t, WIDTH, HEIGHT, mode="category", color_by="label")
        sizes.append(22 + (len(f.png) + 2) // 3 * 4)
        frames += 1
    fps = frames / (time.perf_counter() - t0)
    print(f"[evolution] {n:,} points: {tr.n:,} moving, {fps:.1f} frames/s, start {start:.2f} s")
    return [
        {
            "name": "evolution.transition_fps",
            "params": params,
            "value": round(fps, 1),
            "unit": "frames/s",
        },
        {
            "name": "evolution.transition_bytes",
            "params": {**params, "stat": "mean"},
            "value": int(np.mean(sizes)),
            "unit": "bytes",
        },
        {
            "name": "evolution.transition_bytes",
            "params": {**params, "stat": "max"},
            "value": int(np.max(sizes)),
            "unit": "bytes",
        },
        {
            "name": "evolution.transition_start_seconds",
            "params": params,
            "value": round(start, 2),
            "unit": "s",
        },
    ]


def _series(work: Path, quick: bool) -> list[dict]:
    from embviz.pipeline.demo import write_mnist_folder
    from embviz.pipeline.embed import embed
    from embviz.pipeline.ingest import ingest
    from embviz.pipeline.train_demo import train_cnn

    limit = 1000 if quick else 5000
    ds = work / f"evolution-mnist-{limit}"
    if not (ds / "manifest.json").exists():
        images = write_mnist_folder(work / f"evolution-mnist-{limit}-images", limit=limit)
        ingest(ds, source=images, partition_rows=1000, thumb_size=64, progress=False)
    shutil.rmtree(ds / "checkpoints", ignore_errors=True)  # trained (and timed) every run
    trained = train_cnn(ds, "checkpoints", epochs=4, progress=False)
    t0 = time.perf_counter()
    embed(ds, model="cnn", checkpoints="checkpoints", batch_size=256, progress=False, force=True)
    seconds = time.perf_counter() - t0
    params = {"images": limit, "checkpoints": len(trained.checkpoints), "model": "cnn"}
    print(f"[evolution] embed series {seconds:.1f} s, test accuracy {trained.test_accuracy:.3f}")
    return [
        {
            "name": "evolution.embed_series_seconds",
            "params": params,
            "value": round(seconds, 1),
            "unit": "s",
        },
        {
            "name": "evolution.train_seconds",
            "params": {**params, "epochs": 4},
            "value": round(trained.seconds, 1),
            "unit": "s",
        },
        {
            "name": "evolution.test_accuracy",
            "params": {**params, "epochs": 4},
            "value": round(trained.test_accuracy, 3),
            "unit": "",
        },
    ]


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Records ``evolution.*``: transitions at 1M and 10M (200K with ``quick``), then the
    demo's checkpoint series."""
    records: list[dict] = []
    for n in [200_000] if quick else [1_000_000, 10_000_000]:
        records += _transition(n, work)
    records += _series(work, quick)
    return records
