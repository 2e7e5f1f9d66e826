"""What the detail panel shows about one sample: its fields and its nearest neighbours."""

from __future__ import annotations

from typing import Any

import numpy as np

from embviz.dataset import Dataset

__all__ = ["neighbours_for", "sample_record"]


def sample_record(ds: Dataset, sample_id: int) -> dict[str, Any]:
    """All samples-table fields of ``sample_id`` (reads one partition, filtered), or {}."""
    import pyarrow.parquet as pq

    entry = ds.table("samples")
    for part in entry["partitions"]:
        lo, hi = part.get("id_range") or (None, None)
        if lo is not None and not lo <= sample_id <= hi:
            continue
        table = pq.read_table(
            ds.root / entry["dir"] / part["file"], filters=[("id", "==", sample_id)]
        )
        if table.num_rows:
            row = table.slice(0, 1).to_pylist()[0]
            return {k: v for k, v in row.items() if k != "thumb_id"}
    return {}


def neighbours_for(ds: Dataset, store, projection_meta: dict, sample_id: int, k: int = 8):
    """Nearest neighbours of ``sample_id``: in the projection's source embedding when it fits
    in memory, else in the 2D map (labelled as such by the returned ``space``).

    Returns ``(space, [(id, distance), ...])``.
    """
    source = projection_meta.get("source")
    if source and ds.has(source):
        from embviz.errors import DatasetError
        from embviz.search import searcher

        try:
            s = searcher(ds, source)
            found = s.by_ids([sample_id], k)
        except DatasetError:  # too large to search without an index, or no vector for it
            found = None
        if found is not None:
            near = [(int(i), float(d)) for i, d in zip(found.ids, found.distances, strict=True)]
            return ("embedding index" if s.saved else "embedding"), near
    row = store.row_of(np.array([sample_id]))[0]
    if row < 0:
        return "map", []
    x, y = float(store.x[row]), float(store.y[row])
    e = store.extent
    radius = max(e.x1 - e.x0, e.y1 - e.y0) / 1000
    from .store import View

    for _ in range(12):
        rows = store.rows_in(View(x - radius, x + radius, y - radius, y + radius))
        if len(rows) > k or radius > max(e.x1 - e.x0, e.y1 - e.y0):
            break
        radius *= 3
    d = np.hypot(store.x[rows] - x, store.y[rows] - y)
    order = np.argsort(d)
    out = [(int(store.ids[rows[i]]), float(d[i])) for i in order if store.ids[rows[i]] != sample_id]
    return "map", out[:k]
