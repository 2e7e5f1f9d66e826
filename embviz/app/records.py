"""What the detail panel shows about one sample: its fields and its nearest neighbours."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from embviz.dataset import Dataset

__all__ = ["Neighbours", "neighbours_for", "sample_record"]

#: Embedding tables up to this many float32 values are held in memory for exact neighbours;
#: larger datasets use the projection's neighbours until an index exists (``embviz index``).
MAX_EXACT_VALUES = 200_000_000


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


class Neighbours:
    """Exact nearest neighbours in one embedding table, loaded once per process."""

    _cache: dict[tuple[str, str], Neighbours] = {}
    _lock = threading.Lock()

    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        self.ids = ids
        self.row = {int(i): r for r, i in enumerate(ids)}
        self.vectors = vectors
        self.nn = NearestNeighbors(metric="cosine", algorithm="brute").fit(vectors)

    @classmethod
    def of(cls, ds: Dataset, table: str) -> Neighbours | None:
        """The shared instance for ``table`` of ``ds``, or None when it is too large or absent."""
        if not ds.has(table):
            return None
        entry = ds.table(table)
        dim = int((entry.get("meta") or {}).get("dim") or 0)
        if dim and entry["rows"] * dim > MAX_EXACT_VALUES:
            return None
        key = (str(Path(ds.root).resolve()), entry["dir"])
        with cls._lock:
            if key not in cls._cache:
                ids, vectors = ds.read_vectors(table)
                cls._cache[key] = cls(np.asarray(ids), np.asarray(vectors, dtype=np.float32))
            return cls._cache[key]

    def query(self, sample_id: int, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest other samples of ``sample_id`` as (id, cosine distance)."""
        r = self.row.get(int(sample_id))
        if r is None:
            return []
        dist, idx = self.nn.kneighbors(
            self.vectors[r : r + 1], n_neighbors=min(k + 1, len(self.ids))
        )
        out = [(int(self.ids[i]), float(d)) for i, d in zip(idx[0], dist[0], strict=True)]
        return [(i, d) for i, d in out if i != sample_id][:k]


def neighbours_for(ds: Dataset, store, projection_meta: dict, sample_id: int, k: int = 8):
    """Nearest neighbours of ``sample_id``: in the projection's source embedding when it fits
    in memory, else in the 2D map (labelled as such by the returned ``space``).

    Returns ``(space, [(id, distance), ...])``.
    """
    source = projection_meta.get("source")
    if source and ds.has(source):
        from embviz.index import load_for

        saved = load_for(ds, source.removeprefix("embeddings/"))
        if saved is not None:  # `embviz index` was run: any size, no vectors in memory
            ids, dist = saved.query_id(sample_id, k)
            return "embedding index", [
                (int(i), float(d)) for i, d in zip(ids, dist, strict=True) if i >= 0
            ]
    nn = Neighbours.of(ds, source) if source else None
    if nn is not None:
        return "embedding", nn.query(sample_id, k)
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
