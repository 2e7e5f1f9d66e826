"""Load a projection once per process as a narrow frame (x, y[, z], id, category columns)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["projection_frame"]


def projection_frame(
    root: str | Path, projection: str, *, columns: tuple[str, ...] = ("label", "split")
):
    """The projection's coordinates with the samples' category columns joined on ``id``.

    Category columns become pandas categoricals once here, so every render reuses them. Sample
    ids are dense (0..n-1), so the join is an array take rather than a hash join.
    """
    import numpy as np
    import pandas as pd

    from embviz.dataset import open_dataset

    ds = open_dataset(root)
    frame = ds.read_pandas(f"projections/{projection}")
    samples = ds.read_pandas(
        "samples", columns=["id", *[c for c in columns if c in ds.table("samples")["columns"]]]
    )
    order = np.empty(int(samples["id"].max()) + 1, dtype=np.int64)
    order[samples["id"].to_numpy()] = np.arange(len(samples))
    rows = order[frame["id"].to_numpy()]
    for col in columns:
        if col in samples:
            values = samples[col].astype("string").fillna("(none)").to_numpy()[rows]
            frame[col] = pd.Categorical(values)
    return frame
