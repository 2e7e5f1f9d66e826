"""What the detail panel shows about one sample: its fields and its nearest neighbours."""

from __future__ import annotations

from typing import Any

import numpy as np

from embviz.dataset import Dataset

__all__ = ["neighbour_cards", "neighbours_for", "sample_record"]


def sample_record(ds: Dataset, sample_id: int) -> dict[str, Any]:
    """All samples-table fields of ``sample_id`` (reads one partition, filtered), or {}."""
    rows = ds.read_ids("samples", [sample_id]).slice(0, 1).to_pylist()
    return {k: v for k, v in rows[0].items() if k != "thumb_id"} if rows else {}


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
    from embviz.render.store import View

    for _ in range(12):
        rows = store.rows_in(View(x - radius, x + radius, y - radius, y + radius))
        if len(rows) > k or radius > max(e.x1 - e.x0, e.y1 - e.y0):
            break
        radius *= 3
    d = np.hypot(store.x[rows] - x, store.y[rows] - y)
    order = np.argsort(d)
    out = [(int(store.ids[rows[i]]), float(d[i])) for i in order if store.ids[rows[i]] != sample_id]
    return "map", out[:k]


def neighbour_cards(ds: Dataset, store, projection_meta: dict, sample_id: int, thumb_url):
    """The detail panel's neighbour cards of ``sample_id``: ``(space, [{id, label, src,
    distance}, ...])``, labels from ``store``, images from ``thumb_url(id)``."""
    space, near = neighbours_for(ds, store, projection_meta, sample_id, k=8)
    rows = store.row_of(np.array([i for i, _ in near], dtype=np.int64))
    label_col = store.categorical.get("label")
    items = []
    for (nid, dist), row in zip(near, rows, strict=True):
        label = label_col[1][label_col[0][row]] if label_col is not None and row >= 0 else ""
        items.append({"id": nid, "label": str(label), "src": thumb_url(nid), "distance": dist})
    return space, items
