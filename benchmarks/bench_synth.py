"""Synthetic dataset generation time at scale (50M points: samples, sprites, 2D and 3D projections)."""

from __future__ import annotations

import shutil
from pathlib import Path


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Return ``synth.seconds`` for 50M points (1M with ``quick``)."""
    from embviz.pipeline.synth import synth

    n = 1_000_000 if quick else 50_000_000
    out = work / f"synth-{n}"
    shutil.rmtree(out, ignore_errors=True)
    r = synth(out, points=n, progress=False)
    shutil.rmtree(out, ignore_errors=True)
    params = {"points": n, "partition_rows": 1_000_000}
    return [
        {"name": "synth.seconds", "params": params, "value": r.seconds, "unit": "s"},
        {
            "name": "synth.points_per_second",
            "params": params,
            "value": n / r.seconds,
            "unit": "points/s",
        },
    ]
