"""One projection's points held once per process in curve order, with chunk bounds for zooming."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MAX_LASSO_VERTICES", "Box", "PointStore", "View", "clear_stores", "load_store"]

#: Rows per chunk whose bounding box is kept; a zoomed view gathers only the chunks it touches.
CHUNK_ROWS = 8192
#: Most lasso vertices tested against the points: a longer polygon (a page can send any) is
#: simplified to every k-th vertex, so one selection costs at most points x this.
MAX_LASSO_VERTICES = 10_000


@dataclass(frozen=True)
class View:
    """A rectangle in data coordinates: ``x0 <= x <= x1`` and ``y0 <= y <= y1``."""

    x0: float
    x1: float
    y0: float
    y1: float

    @property
    def lo(self) -> tuple[float, float]:
        """The lower corner ``(x0, y0)``."""
        return (self.x0, self.y0)

    @property
    def hi(self) -> tuple[float, float]:
        """The upper corner ``(x1, y1)``."""
        return (self.x1, self.y1)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside the rectangle."""
        return (x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in data coordinates: ``lo[i] <= p[i] <= hi[i]`` on each axis."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside the box."""
        (x0, y0, z0), (x1, y1, z1) = self.lo, self.hi
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)


#: A region a store is queried with: a :class:`View` tests x and y (on a 3D store it is the
#: column of every z above the rectangle), a :class:`Box` tests x, y and z.
Region = View | Box


@dataclass(eq=False, kw_only=True)
class PointStore:
    """A 2D or 3D projection's points in curve order plus the sample columns to colour by.

    Arrays are aligned row for row; ``z`` and ``rank`` are None in a 2D store. ``bounds[i]``
    is ``(xmin, xmax, ymin, ymax[, zmin, zmax])`` of rows ``i * chunk_rows`` to
    ``(i + 1) * chunk_rows``; because rows follow a space-filling curve, chunks are spatially
    compact and a zoomed view touches few of them. ``rank`` orders the rows for down-sampling
    (:func:`embviz.render.sample3d.rank`). Build one with :meth:`from_arrays` or
    :func:`load_store`.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray | None = None
    ids: np.ndarray
    rank: np.ndarray | None = None
    chunk_rows: int
    bounds: np.ndarray
    categorical: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    key: str = "arrays"
    _row_of_id: np.ndarray | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        z: np.ndarray | None = None,
        *,
        ids: np.ndarray,
        categorical: dict[str, tuple[np.ndarray, list[str]]] | None = None,
        numeric: dict[str, np.ndarray] | None = None,
        key: str = "arrays",
        chunk_rows: int = CHUNK_ROWS,
        rank: bool | None = None,
        seed: int = 0,
    ) -> PointStore:
        """A store over aligned arrays, computing chunk bounds (and the 3D sampling rank).

        Parameters
        ----------
        x, y, z : coordinates (converted to float32), in the order rows should keep; pass them
            sorted on a space-filling curve (as projections are stored) so chunks are compact.
            Without ``z`` the store is 2D.
        ids : sample id of each row (int64).
        categorical : ``{column: (codes aligned with rows, category names)}``.
        numeric : ``{column: float32 values aligned with rows}``.
        key : a name for the store (cache keys, logs).
        chunk_rows : rows per chunk whose bounding box is kept.
        rank : compute the sampling rank; default: for 3D stores (it needs ``z``). It takes
            about 2 s for 50M rows on two cores.
        seed : seeds the rank's within-voxel order; the same seed gives the same rank.
        """
        coords = [np.ascontiguousarray(a, dtype=np.float32) for a in (x, y, z) if a is not None]
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len({len(a) for a in (*coords, ids)}) > 1:
            names = ", ".join("xyz"[: len(coords)])
            raise ValueError(
                f"{names} and ids must have one length, got {[len(a) for a in (*coords, ids)]}"
            )
        if rank is None:
            rank = len(coords) == 3
        if rank and len(coords) != 3:
            raise ValueError("the sampling rank needs z: pass z or rank=False")
        ranks = None
        if rank:
            from .sample3d import rank as rank_rows

            ranks = rank_rows(*coords, seed=seed)
        return cls(
            x=coords[0],
            y=coords[1],
            z=coords[2] if len(coords) == 3 else None,
            ids=ids,
            rank=ranks,
            chunk_rows=chunk_rows,
            bounds=_chunk_bounds(coords, chunk_rows),
            categorical=dict(categorical or {}),
            numeric=dict(numeric or {}),
            key=key,
        )

    @property
    def dims(self) -> int:
        """2 or 3: whether the points have a ``z``."""
        return 2 if self.z is None else 3

    @property
    def n(self) -> int:
        """Number of points."""
        return len(self.x)

    @property
    def extent(self) -> View | Box:
        """The region holding every point: a :class:`View` in 2D, a :class:`Box` in 3D."""
        b, dims = self.bounds, self.dims
        lo = [float(b[:, 2 * i].min()) if len(b) else 0.0 for i in range(dims)]
        hi = [float(b[:, 2 * i + 1].max()) if len(b) else 1.0 for i in range(dims)]
        if dims == 2:
            return View(lo[0], hi[0], lo[1], hi[1])
        return Box(tuple(lo), tuple(hi))  # type: ignore[arg-type]

    def _coords(self, region: Region) -> tuple[np.ndarray, ...]:
        """The coordinate columns ``region`` tests (x, y for a View; x, y, z for a Box)."""
        axes = len(region.lo)
        if axes > self.dims:
            raise ValueError(f"a {axes}D region cannot query a {self.dims}D store ({self.key})")
        return (self.x, self.y, self.z)[:axes]  # type: ignore[return-value]

    def chunks_in(self, region: Region) -> np.ndarray:
        """Indices of the chunks whose bounding box meets ``region``."""
        axes = len(self._coords(region))
        # Points compare against the region in float32; prune with the same rounded bounds.
        lo = np.asarray(region.lo, dtype=np.float32).astype(np.float64)
        hi = np.asarray(region.hi, dtype=np.float32).astype(np.float64)
        b = self.bounds
        hit = np.ones(len(b), dtype=bool)
        for axis in range(axes):
            hit &= (b[:, 2 * axis + 1] >= lo[axis]) & (b[:, 2 * axis] <= hi[axis])
        return np.flatnonzero(hit)

    def runs(self, region: Region) -> list[tuple[int, int]]:
        """Row ranges ``[start, stop)`` of the chunks that meet ``region``, consecutive ones merged.

        Work is proportional to the chunks touched, not to the dataset; a region holding
        every chunk is the one run ``[(0, n)]``.
        """
        chunks = self.chunks_in(region)
        if not len(chunks):
            return []
        breaks = np.flatnonzero(np.diff(chunks) != 1) + 1
        starts = chunks[np.r_[0, breaks]] * self.chunk_rows
        stops = np.minimum(
            (chunks[np.r_[breaks - 1, len(chunks) - 1]] + 1) * self.chunk_rows, self.n
        )
        return list(zip(starts.tolist(), stops.tolist(), strict=True))

    @staticmethod
    def gather(column: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray:
        """``column``'s rows in ``runs``, copied run by run (contiguous copies, no row index)."""
        if not runs:
            return column[:0]
        return np.concatenate([column[a:b] for a, b in runs])

    def rows_in(self, region: Region, mask: np.ndarray | None = None) -> np.ndarray:
        """Row indices, ascending, of the points exactly inside ``region`` (and ``mask``).

        Only the row ranges of the chunks meeting the region are read, each as a slice of the
        columns (no gathered copy), so work follows the chunks touched, not the dataset.
        """
        coords = self._coords(region)
        parts = [np.empty(0, dtype=np.int64)]
        for a, b in self.runs(region):
            inside = region.contains(*(c[a:b] for c in coords))
            if mask is not None:
                inside &= mask[a:b]
            parts.append(np.flatnonzero(inside) + a)
        return np.concatenate(parts).astype(np.int64, copy=False)

    def count_in(self, region: Region, mask: np.ndarray | None = None) -> int:
        """How many points lie inside ``region``."""
        return len(self.rows_in(region, mask))

    def rows_in_polygon(
        self, xs: np.ndarray, ys: np.ndarray, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Row indices of the points inside the polygon with vertices ``(xs, ys)`` (a lasso).

        Non-finite vertices are dropped; a polygon of more than :data:`MAX_LASSO_VERTICES`
        vertices is simplified to every k-th vertex (a hand-drawn lasso never needs more).
        """
        from skimage.measure import points_in_poly

        xs, ys = np.asarray(xs, dtype=float).ravel(), np.asarray(ys, dtype=float).ravel()
        n = min(len(xs), len(ys))
        xs, ys = xs[:n], ys[:n]
        ok = np.isfinite(xs) & np.isfinite(ys)
        xs, ys = xs[ok], ys[ok]
        if len(xs) > MAX_LASSO_VERTICES:
            k = -(-len(xs) // MAX_LASSO_VERTICES)
            xs, ys = xs[::k], ys[::k]
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


def _chunk_bounds(coords: list[np.ndarray], chunk: int) -> np.ndarray:
    """``(chunks, 2 * axes)``: each chunk's min and max on every axis, in axis order."""
    if not len(coords[0]):
        return np.empty((0, 2 * len(coords)), dtype=np.float64)
    starts = np.arange(0, len(coords[0]), chunk)
    cols = []
    for a in coords:
        cols += [np.minimum.reduceat(a, starts), np.maximum.reduceat(a, starts)]
    return np.column_stack(cols).astype(np.float64)


def _load(ds, projection: str, dims: int = 2) -> PointStore:
    """Read the projection's ids and coordinates and join the sample columns (no caches)."""
    from .columns import sample_columns_for

    key = f"projections/{projection}"
    axes = ["x", "y", "z"][:dims]
    table = ds.read_arrow(key, columns=["id", *axes])
    ids = table.column("id").to_numpy().astype(np.int64, copy=False)
    categorical, numeric = sample_columns_for(ds, ids)
    if dims == 2:  # the map's named clusters (embviz cluster) colour it as cluster_l0 ...
        from embviz.clusters import cluster_columns

        categorical.update(cluster_columns(ds, projection, ids))
    return PointStore.from_arrays(
        *(table.column(a).to_numpy() for a in axes),
        ids=ids,
        categorical=categorical,
        numeric=numeric,
        key=f"{ds.root}:{ds.table(key)['dir']}",
        chunk_rows=CHUNK_ROWS,
    )


_STORES: dict[tuple[str, str, str, str, int], PointStore] = {}
_LOCK = threading.Lock()


def load_store(ds, projection: str, *, dims: int = 2) -> PointStore:
    """The process-wide :class:`PointStore` of ``projection`` in dataset ``ds``.

    Parameters
    ----------
    ds : an open :class:`~embviz.dataset.Dataset` (used as it is: ``ds.reload()`` sees tables
        written since it was opened), or a dataset directory (opened once here).
    projection : the projection's name (``ds.projections``).
    dims : 2 reads x and y (any projection); 3 also reads z and ranks the rows for sampling.

    Loaded once per process and shared by every session; a rebuilt projection or samples
    table (new table version in the manifest) is loaded afresh. The joined columns (and in
    3D the rank) are kept under ``<dataset>/cache/explorer/`` and memory-mapped on the next
    start (skipped when the dataset is read-only). Raises ``DatasetError`` for a missing
    projection, or a 2D one asked for in 3D.
    """
    from embviz.dataset import Dataset, open_dataset
    from embviz.errors import DatasetError
    from embviz.samples import samples_version

    from .cache import cache_dir, read_columns, write_columns

    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    if not isinstance(ds, Dataset):
        ds = open_dataset(Path(ds), check_files=False)
    if projection not in ds.projections:
        raise DatasetError(f"{ds.root}: no projection {projection!r}; have {ds.projections}")
    entry = ds.table(f"projections/{projection}")
    if dims == 3 and "z" not in entry["columns"]:
        cubes = [p for p in ds.projections if "z" in ds.table(f"projections/{p}")["columns"]]
        raise DatasetError(
            f"{ds.root}: projection {projection!r} has no z column (it is 2D); the 3D view "
            f"needs a 3D projection, one of {cubes}"
        )
    key = (_resolved(str(ds.root)), projection, entry["dir"], samples_version(ds), dims)
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            where = cache_dir(ds, projection, dims)
            fields = read_columns(where, dims)
            store = PointStore(**fields) if fields else None
            if store is None:
                store = _load(ds, projection, dims)
                write_columns(where, store)
            if dims == 2:  # wide views of big maps: counts cached beside the columns
                from .pyramid import attach

                # Keyed by the cache folder's name (its tag names the data's versions): the
                # same for ``serve data/x`` and ``serve /abs/data/x``, and for a moved dataset.
                attach(store, where, key=where.name)
            _STORES[key] = store
    return store


def clear_stores() -> None:
    """Forget every loaded store (tests and benchmarks)."""
    with _LOCK:
        _STORES.clear()


@functools.lru_cache(maxsize=256)
def _resolved(root: str) -> str:
    """``root`` resolved (a session asks for its store on every event; resolving walks the
    path with a system call per component)."""
    return str(Path(root).resolve())
