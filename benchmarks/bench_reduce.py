"""Projection time: UMAP 2D over 50-D vectors at 100K and 1M points (sample fit + transform)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def _vectors(
    n: int, dim: int = 50, clusters: int = 30, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(clusters, dim)).astype(np.float32)
    label = rng.integers(0, clusters, n)
    return centres[label] + rng.normal(size=(n, dim)).astype(np.float32), label


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Return ``reduce.seconds`` (and its fit / transform split) for each size."""
    import pandas as pd

    from embviz.pipeline.ingest import ingest
    from embviz.pipeline.reduce import reduce

    records = []
    for n in [20_000] if quick else [100_000, 1_000_000]:
        root = work / f"reduce-{n}"
        shutil.rmtree(root, ignore_errors=True)
        X, label = _vectors(n)
        np.save(work / f"vectors-{n}.npy", X)
        pd.DataFrame({"label": label.astype(str)}).to_parquet(work / f"meta-{n}.parquet")
        ingest(
            root,
            source=work / f"vectors-{n}.npy",
            metadata=work / f"meta-{n}.parquet",
            partition_rows=250_000,
            progress=False,
        )
        r = reduce(root, method="umap", dims=2, sample=100_000, progress=False)
        params = {"points": n, "dim": 50, "method": "umap", "dims": 2, "sample": r.sample_rows}
        records += [
            {"name": "reduce.seconds", "params": params, "value": r.seconds, "unit": "s"},
            {"name": "reduce.fit_seconds", "params": params, "value": r.fit_seconds, "unit": "s"},
            {
                "name": "reduce.transform_seconds",
                "params": params,
                "value": r.transform_seconds,
                "unit": "s",
            },
        ]
        shutil.rmtree(root, ignore_errors=True)
    return records
