"""One projection's points held once per process in curve order, with chunk bounds for zooming."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embviz.samples import read_sample_columns, sample_columns, samples_version

__all__ = ["PointStore", "View", "load_store", "clear_stores"]

#: Rows per chunk whose bounding box is kept; a zoomed view gathers only the chunks it touches.
CHUNK_ROWS = 8192
#: Category columns with more distinct values than this are not offered for colouring.
MAX_CATEGORIES = 4096


@dataclass(frozen=True)
class View:
    """A rectangle in data coordinates: ``x0 <= x <= x1`` and ``y0 <= y <= y1``."""

    x0: float
    x1: float
    y0: float
    y1: float

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside the rectangle."""
        return (x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1)


@dataclass(eq=False)
class PointStore:
    """A 2D projection's points in Hilbert order plus the sample columns the app colours by.

    Arrays are aligned row for row. ``bounds[i]`` is ``(xmin, xmax, ymin, ymax)`` of rows
    ``i * chunk_rows`` to ``(i + 1) * chunk_rows``; because rows follow a space-filling curve,
    chunks are spatially compact and a zoomed view touches few of them.
    """

    key: str
    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    chunk_rows: int
    bounds: np.ndarray
    categorical: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    _row_of_id: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Number of points."""
        return len(self.x)

    @property
    def extent(self) -> View:
        """The rectangle holding every point."""
        if not len(self.bounds):
            return View(0.0, 1.0, 0.0, 1.0)
        b = self.bounds
        return View(
            float(b[:, 0].min()), float(b[:, 1].max()), float(b[:, 2].min()), float(b[:, 3].max())
        )

    def chunks_in(self, view: View) -> np.ndarray:
        """Indices of the chunks whose bounding box meets ``view``."""
        b = self.bounds
        hit = (
            (b[:, 1] >= view.x0)
            & (b[:, 0] <= view.x1)
            & (b[:, 3] >= view.y0)
            & (b[:, 2] <= view.y1)
        )
        return np.flatnonzero(hit)

    def runs(self, view: View) -> list[tuple[int, int]]:
        """Row ranges ``[start, stop)`` of the chunks that meet ``view``, consecutive ones merged.

        Work is proportional to the chunks touched, not to the dataset.
        """
        chunks = self.chunks_in(view)
        if not len(chunks):
            return []
        breaks = np.flatnonzero(np.diff(chunks) != 1) + 1
        starts = chunks[np.r_[0, breaks]] * self.chunk_rows
        stops = np.minimum(
            (chunks[np.r_[breaks - 1, len(chunks) - 1]] + 1) * self.chunk_rows, self.n
        )
        return list(zip(starts.tolist(), stops.tolist(), strict=True))

    def window(self, view: View) -> slice | np.ndarray:
        """Rows that may lie in ``view``: a slice when every chunk is hit, else row indices."""
        runs = self.runs(view)
        if runs == [(0, self.n)]:
            return slice(0, self.n)
        if not runs:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b) for a, b in runs])

    @staticmethod
    def gather(column: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray:
        """``column``'s rows in ``runs``, copied run by run (contiguous copies, no row index)."""
        if not runs:
            return column[:0]
        return np.concatenate([column[a:b] for a, b in runs])

    def rows_in(self, view: View, mask: np.ndarray | None = None) -> np.ndarray:
        """Row indices of the points exactly inside ``view`` (and ``mask`` when given)."""
        rows = self.window(view)
        if isinstance(rows, slice):
            rows = np.arange(self.n)
        inside = view.contains(self.x[rows], self.y[rows])
        if mask is not None:
            inside &= mask[rows]
        return rows[inside]

    def count_in(self, view: View, mask: np.ndarray | None = None) -> int:
        """How many points lie inside ``view``."""
        return len(self.rows_in(view, mask))

    def rows_in_polygon(
        self, xs: np.ndarray, ys: np.ndarray, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Row indices of the points inside the polygon with vertices ``(xs, ys)`` (a lasso)."""
        from skimage.measure import points_in_poly

        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if len(xs) < 3:
            return np.empty(0, dtype=np.int64)
        rows = self.rows_in(View(xs.min(), xs.max(), ys.min(), ys.max()), mask)
        if not len(rows):
            return rows
        pts = np.column_stack([self.x[rows], self.y[rows]]).astype(float)
        return rows[points_in_poly(pts, np.column_stack([xs, ys]))]

    def nearest(
        self, x: float, y: float, radius: float, mask: np.ndarray | None = None
    ) -> int | None:
        """The row of the point nearest ``(x, y)`` within ``radius`` (data units), or None."""
        rows = self.rows_in(View(x - radius, x + radius, y - radius, y + radius), mask)
        if not len(rows):
            return None
        d2 = (self.x[rows] - x) ** 2 + (self.y[rows] - y) ** 2
        best = int(np.argmin(d2))
        return int(rows[best]) if d2[best] <= radius * radius else None

    def row_of(self, sample_ids: np.ndarray) -> np.ndarray:
        """Rows of the given sample ids (-1 where an id has no point)."""
        if self._row_of_id is None:
            table = np.full(int(self.ids.max()) + 1 if self.n else 0, -1, dtype=np.int64)
            table[self.ids] = np.arange(self.n)
            self._row_of_id = table
        ids = np.asarray(sample_ids, dtype=np.int64)
        ok = (ids >= 0) & (ids < len(self._row_of_id))
        out = np.full(len(ids), -1, dtype=np.int64)
        out[ok] = self._row_of_id[ids[ok]]
        return out

    def categories(self, column: str) -> list[str]:
        """The category names of a categorical column, in code order."""
        return self.categorical[column][1]


def _chunk_bounds(x: np.ndarray, y: np.ndarray, chunk: int) -> np.ndarray:
    n = len(x)
    if not n:
        return np.empty((0, 4), dtype=np.float64)
    starts = np.arange(0, n, chunk)
    return np.column_stack(
        [
            np.minimum.reduceat(x, starts),
            np.maximum.reduceat(x, starts),
            np.minimum.reduceat(y, starts),
            np.maximum.reduceat(y, starts),
        ]
    ).astype(np.float64)


def _load(root: Path, projection: str) -> PointStore:
    import pyarrow as pa

    from embviz.dataset import open_dataset
    from embviz.errors import DatasetError

    ds = open_dataset(root)
    key = f"projections/{projection}"
    if projection not in ds.projections:
        raise DatasetError(f"{root}: no projection {projection!r}; have {ds.projections}")
    table = ds.read_arrow(key, columns=["id", "x", "y"])
    x = table.column("x").to_numpy().astype(np.float32, copy=False)
    y = table.column("y").to_numpy().astype(np.float32, copy=False)
    ids = table.column("id").to_numpy().astype(np.int64, copy=False)
    store = PointStore(
        key=f"{ds.root}:{ds.table(key)['dir']}",
        x=np.ascontiguousarray(x),
        y=np.ascontiguousarray(y),
        ids=ids,
        chunk_rows=CHUNK_ROWS,
        bounds=_chunk_bounds(x, y, CHUNK_ROWS),
    )
    columns = sample_columns(ds)
    wanted = [c for c in columns if c not in ("id", "uri", "content_hash", "thumb_id")]
    samples = read_sample_columns(ds, wanted)
    sample_ids = samples.column("id").to_numpy()
    # Sample ids are usually dense (0..n-1): then the join is one array take, not a hash join.
    top = max(int(sample_ids.max()) if len(sample_ids) else -1, int(ids.max()) if len(ids) else -1)
    order = np.full(top + 1, -1, dtype=np.int64)  # ids with no sample stay -1: "(none)" / NaN
    order[sample_ids] = np.arange(len(sample_ids))
    rows = order[ids] if len(ids) else np.empty(0, dtype=np.int64)
    missing = rows < 0
    take = np.where(missing, 0, rows) if missing.any() else rows
    for name in wanted:
        col = samples.column(name)
        kind = col.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values = col.to_numpy().astype(np.float32)[take]
            values[missing] = np.nan
            store.numeric[name] = values
        elif pa.types.is_dictionary(kind):
            names = [str(v) for v in col.chunk(0).dictionary.to_pylist()] if col.num_chunks else []
            if len(names) > MAX_CATEGORIES:
                continue
            none = len(names)
            codes = np.concatenate(
                [c.indices.fill_null(none).to_numpy() for c in col.chunks]
                or [np.empty(0, dtype=np.int32)]
            )
            if (codes == none).any() or missing.any():
                names.append("(none)")
            # Sorted category names make colours and legends stable across datasets and runs.
            perm = np.argsort(np.array(names, dtype=object), kind="stable")
            remap = np.empty(len(names), dtype=np.int32)
            remap[perm] = np.arange(len(names))
            # The smallest type: pandas' Categorical (what Datashader counts by) takes int8
            # codes for up to 127 categories as they are, and copies anything wider.
            dtype = np.int8 if len(names) < 2**7 else np.int16 if len(names) < 2**15 else np.int32
            codes = remap.astype(dtype)[codes][take]
            if missing.any():
                codes[missing] = remap[none]
            store.categorical[name] = (codes, [names[i] for i in perm])
    return store


_STORES: dict[tuple[str, str, str, str], PointStore] = {}
_LOCK = threading.Lock()


def load_store(root: str | Path, projection: str) -> PointStore:
    """The process-wide :class:`PointStore` of ``projection`` in the dataset at ``root``.

    Loaded once per process and shared by every session; a rebuilt projection (new table
    version in the manifest) is loaded afresh.
    """
    from embviz.dataset import open_dataset

    ds = open_dataset(root, check_files=False)
    version = ds.table(f"projections/{projection}")["dir"] if projection in ds.projections else ""
    key = (str(ds.root.resolve()), projection, version, samples_version(ds))
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _read_cache(ds, projection)
            if store is None:
                store = _load(ds.root, projection)
                _write_cache(ds, projection, store)
            _STORES[key] = store
    return store


# -- the explorer cache: the joined, curve-ordered columns as .npy files, memory-mapped -------
#: Bumped when the cached columns' layout changes (2: int8 category codes), so old caches
#: are rebuilt instead of read.
CACHE_LAYOUT = 2


def _cache_dir(ds, projection: str) -> Path:
    import hashlib

    table = ds.table(f"projections/{projection}")["dir"]
    versions = f"{table}|{samples_version(ds)}|{CACHE_LAYOUT}"
    tag = hashlib.sha1(versions.encode()).hexdigest()[:12]
    return ds.root / "cache" / "explorer" / f"{projection}--{tag}"


def write_columns(target: Path, store, extra: dict[str, np.ndarray] | None = None) -> None:
    """Persist a store's columns (x, y, ids, bounds, categories, numbers, ``extra``) as .npy
    files in ``target`` so the next start memory-maps them instead of joining tables.

    Derived data only: safe to delete; written to a temp dir then renamed, and skipped with a
    log line (never an error) when the dataset is read-only.
    """
    import json
    import logging
    import shutil
    import tempfile

    if target.exists():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        arrays = {"x": store.x, "y": store.y, "ids": store.ids, "bounds": store.bounds}
        arrays |= extra or {}
        arrays |= {f"cat.{k}": v[0] for k, v in store.categorical.items()}
        arrays |= {f"num.{k}": v for k, v in store.numeric.items()}
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
        meta = {
            "chunk_rows": store.chunk_rows,
            "categories": {k: v[1] for k, v in store.categorical.items()},
            "numeric": list(store.numeric),
            "extra": list(extra or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            tmp.rename(target)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        logging.getLogger(__name__).info("explorer cache not written (%s): %s", target, exc)


def read_columns(where: Path) -> dict | None:
    """The fields written by :func:`write_columns` (arrays memory-mapped), or None."""
    import json

    if not (where / "meta.json").exists():
        return None
    try:
        meta = json.loads((where / "meta.json").read_text())
        load = lambda name: np.load(where / f"{name}.npy", mmap_mode="r")  # noqa: E731
        return {
            "key": str(where),
            "x": load("x"),
            "y": load("y"),
            "ids": load("ids"),
            "chunk_rows": int(meta["chunk_rows"]),
            "bounds": np.load(where / "bounds.npy"),
            "categorical": {k: (load(f"cat.{k}"), n) for k, n in meta["categories"].items()},
            "numeric": {k: load(f"num.{k}") for k in meta["numeric"]},
            **{k: load(k) for k in meta.get("extra", [])},
        }
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(ds, projection: str, store: PointStore) -> None:
    write_columns(_cache_dir(ds, projection), store)


def _read_cache(ds, projection: str) -> PointStore | None:
    fields = read_columns(_cache_dir(ds, projection))
    return PointStore(**fields) if fields else None


def clear_stores() -> None:
    """Forget every loaded store (tests and benchmarks)."""
    with _LOCK:
        _STORES.clear()
