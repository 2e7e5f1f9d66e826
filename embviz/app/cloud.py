"""One 3D projection's points held once per process, ranked so that any view fits a point budget."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embviz.samples import samples_version

from .store import CHUNK_ROWS, PointStore

__all__ = [
    "DEFAULT_BUDGET",
    "Box",
    "CloudStore",
    "box_from_view_state",
    "clear_clouds",
    "load_cloud",
    "sample",
]

#: Most points one update sends; browser-side WebGL scatter plots stall near 500K.
DEFAULT_BUDGET = 250_000
#: Voxels per axis of the rarity grid: about DEFAULT_BUDGET / 4 voxels in all, so one point
#: from every non-empty voxel takes about a quarter of an overview at most.
GRID = round((DEFAULT_BUDGET / 4) ** (1 / 3))
#: Points beyond each voxel's first that the rarest voxels may add to the front of the order:
#: a small isolated cluster comes whole, not as one dot, for a fortieth of the budget. More
#: would inflate sparse regions (a uniform background) at the expense of the density.
RARE_EXTRA = DEFAULT_BUDGET // 40
#: The visible sphere's radius is this times half the canvas' larger side (in pixels).
VIEW_MARGIN = 1.2
#: A view box covering this share of the extent on every axis is the overview.
COVERS = 0.99
#: Bumped whenever the ranking changes, so an on-disk cache of an older ranking is not reused.
RANK_VERSION = 1

# round(2**32 / golden ratio), odd: ``i * _GOLDEN mod 2**32`` is a bijection on 32-bit ints and,
# as a fraction of 2**32, a low-discrepancy (Kronecker) sequence in i.
_GOLDEN = 2654435769
# Ranks below this belong to the rarity tier; above it they are 2**32 + the row's key.
_TIER2 = (GRID**3) << 32


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in data coordinates: ``lo[i] <= p[i] <= hi[i]`` on each axis."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside the box."""
        (x0, y0, z0), (x1, y1, z1) = self.lo, self.hi
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)


@dataclass(eq=False)
class CloudStore:
    """A 3D projection's points in curve order, a sampling rank, and the columns to colour by.

    Arrays are aligned row for row. ``bounds[i]`` is ``(xmin, xmax, ymin, ymax, zmin, zmax)``
    of rows ``i * chunk_rows`` to ``(i + 1) * chunk_rows``; rows follow a space-filling curve,
    so a zoomed view touches few chunks. ``rank`` orders the rows for down-sampling (lower is
    kept first, every value distinct): the rows of the rarest voxels and one row per voxel
    first, then every other row by a low-discrepancy key, so that any prefix keeps the density.
    Build one with :meth:`from_arrays` or :func:`load_cloud`.
    """

    key: str
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    ids: np.ndarray
    rank: np.ndarray
    chunk_rows: int
    bounds: np.ndarray
    categorical: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    _row_of_id: np.ndarray | None = field(default=None, repr=False)
    _overview: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _tier1: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        z: np.ndarray,
        ids: np.ndarray,
        *,
        categorical: dict[str, tuple[np.ndarray, list[str]]] | None = None,
        numeric: dict[str, np.ndarray] | None = None,
        key: str = "arrays",
        chunk_rows: int = CHUNK_ROWS,
        seed: int = 0,
    ) -> CloudStore:
        """A store over aligned arrays, computing chunk bounds and the sampling rank.

        Parameters
        ----------
        x, y, z : coordinates (converted to float32), in the order rows should keep; pass them
            sorted on a space-filling curve (as projections are stored) so chunks are compact.
        ids : sample id of each row (int64).
        categorical : ``{column: (codes aligned with rows, category names)}``.
        numeric : ``{column: float32 values aligned with rows}``.
        key : a name for the store (cache keys, logs).
        chunk_rows : rows per chunk whose bounding box is kept.
        seed : seeds the within-voxel order; the same seed gives the same rank.

        Returns a :class:`CloudStore`; the rank takes about 2 s for 50M rows on two cores.
        """
        x, y, z = (np.ascontiguousarray(a, dtype=np.float32) for a in (x, y, z))
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(x) == len(y) == len(z) == len(ids):
            raise ValueError(
                f"x, y, z and ids must have one length, got {len(x)}, {len(y)}, {len(z)}, "
                f"{len(ids)}"
            )
        return cls(
            key=key,
            x=x,
            y=y,
            z=z,
            ids=ids,
            rank=_rank(x, y, z, seed=seed),
            chunk_rows=chunk_rows,
            bounds=_chunk_bounds(x, y, z, chunk_rows),
            categorical=dict(categorical or {}),
            numeric=dict(numeric or {}),
        )

    @property
    def n(self) -> int:
        """Number of points."""
        return len(self.x)

    @property
    def extent(self) -> Box:
        """The box holding every point."""
        if not len(self.bounds):
            return Box((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        b = self.bounds
        lo = tuple(float(b[:, i].min()) for i in (0, 2, 4))
        hi = tuple(float(b[:, i].max()) for i in (1, 3, 5))
        return Box(lo, hi)  # type: ignore[arg-type]

    def chunks_in(self, box: Box) -> np.ndarray:
        """Indices of the chunks whose bounding box meets ``box``."""
        # Points compare against the box in float32; prune with the same rounded bounds.
        lo = np.asarray(box.lo, dtype=np.float32).astype(np.float64)
        hi = np.asarray(box.hi, dtype=np.float32).astype(np.float64)
        b = self.bounds
        hit = np.ones(len(b), dtype=bool)
        for axis in range(3):
            hit &= (b[:, 2 * axis + 1] >= lo[axis]) & (b[:, 2 * axis] <= hi[axis])
        return np.flatnonzero(hit)

    def runs(self, box: Box) -> tuple[list[int], list[int]]:
        """``(starts, stops)`` of the row ranges that may hold points of ``box``.

        Consecutive chunks meeting the box are merged, so a zoomed view lists few ranges.
        """
        chunks = self.chunks_in(box)
        if not len(chunks):
            return [], []
        breaks = np.flatnonzero(np.diff(chunks) != 1) + 1
        starts = chunks[np.r_[0, breaks]] * self.chunk_rows
        stops = np.minimum(
            (chunks[np.r_[breaks - 1, len(chunks) - 1]] + 1) * self.chunk_rows, self.n
        )
        return starts.tolist(), stops.tolist()

    def rows_in(self, box: Box, mask: np.ndarray | None = None) -> np.ndarray:
        """Row indices, ascending, of the points exactly inside ``box`` (and ``mask`` when given).

        Only the row ranges of the chunks meeting the box are read, each as a slice of the
        columns (no gathered copy), so work follows the chunks touched, not the dataset.
        """
        parts = [np.empty(0, dtype=np.int64)]
        for a, b in zip(*self.runs(box), strict=True):
            inside = box.contains(self.x[a:b], self.y[a:b], self.z[a:b])
            if mask is not None:
                inside &= mask[a:b]
            parts.append(np.flatnonzero(inside) + a)
        return np.concatenate(parts).astype(np.int64, copy=False)

    def count_in(self, box: Box, mask: np.ndarray | None = None) -> int:
        """How many points lie inside ``box``."""
        return len(self.rows_in(box, mask))

    # The sample-id lookup and category names work exactly as in the 2D store.
    row_of = PointStore.row_of
    categories = PointStore.categories


def _chunk_bounds(x: np.ndarray, y: np.ndarray, z: np.ndarray, chunk: int) -> np.ndarray:
    if not len(x):
        return np.empty((0, 6), dtype=np.float64)
    starts = np.arange(0, len(x), chunk)
    cols = []
    for a in (x, y, z):
        cols += [np.minimum.reduceat(a, starts), np.maximum.reduceat(a, starts)]
    return np.column_stack(cols).astype(np.float64)


def _rank(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """The sampling priority of every row (int64, distinct values; lower is kept first).

    Tier 1, the rarity guarantee: rows of a ``GRID**3`` voxel grid's voxels ordered by how
    many points their 3x3x3 neighbourhood holds (the emptiest first, so lone outliers and
    small isolated clusters lead). Every non-empty voxel puts its first row there, and the
    rarest voxels, while their extra rows total at most ``RARE_EXTRA``, put all their rows.
    Tier 2, the density: every other row by a key spread evenly in [0, 2**32) within any run
    of consecutive rows, so the rows below a threshold are the same share of every voxel.

    The key is the row index times the golden ratio, modulo 1 (Fibonacci hashing), not a
    random draw sorted per voxel: it stratifies as well as ``(position + u) / count`` without
    an n-row sort (a 50M-row argsort takes 10-14 s on two cores), and consecutive rows along
    the curve get far-apart keys, so a thinned voxel stays evenly covered. The rank is then
    ``(tier-1 voxel position or GRID**3) * 2**32 + key``: a priority, not a dense 0..n-1
    position, which needs no sort either; samples take the lowest ranks, so only the order
    matters.
    """
    n = len(x)
    if not n:
        return np.empty(0, dtype=np.int64)
    g = GRID
    voxel = np.zeros(n, dtype=np.int32)
    for a in (x, y, z):
        lo, hi = float(a.min()), float(a.max())
        scale = g / (hi - lo) if hi > lo else 0.0
        with np.errstate(invalid="ignore"):  # a NaN coordinate lands in cell 0
            cell = ((a - np.float32(lo)) * np.float32(scale)).astype(np.int32)
        np.clip(cell, 0, g - 1, out=cell)
        voxel *= g
        voxel += cell
        del cell
    counts = np.bincount(voxel, minlength=g**3)
    offset = int(np.random.default_rng(seed).integers(0, 2**32))
    key = np.arange(n, dtype=np.uint32) * np.uint32(_GOLDEN) + np.uint32(offset)

    # Each voxel's first row is its lowest key: a pseudo-random member, and the one the
    # density tier would have taken first anyway.
    first = np.full(g**3, np.iinfo(np.uint32).max, dtype=np.uint32)
    np.minimum.at(first, voxel, key)
    tier1 = key == first[voxel]

    grid = np.pad(counts.reshape(g, g, g), 1)
    near = sum(
        grid[i : i + g, j : j + g, k : k + g] for i in range(3) for j in range(3) for k in range(3)
    ).ravel()
    filled = np.flatnonzero(counts)
    order = filled[np.lexsort((filled, counts[filled], near[filled]))]
    position = np.full(g**3, g**3, dtype=np.int64)
    position[order] = np.arange(len(order))
    whole = np.zeros(g**3, dtype=bool)
    whole[order[np.cumsum(counts[order] - 1) <= RARE_EXTRA]] = True
    tier1 |= whole[voxel]

    rank = np.where(tier1, position[voxel], g**3)
    rank <<= 32
    rank |= key
    return rank


def sample(
    store: CloudStore,
    box: Box | None,
    budget: int = DEFAULT_BUDGET,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Rows to send for one view: at most ``budget``, ascending.

    Parameters
    ----------
    store : the points.
    box : the region in view (:func:`box_from_view_state`); None is the whole cloud.
    budget : most rows returned.
    mask : boolean per row; rows where it is False are never returned (filters, hidden
        categories).

    Returns every row inside ``box`` and ``mask`` when they fit the budget (full density),
    else the ``budget`` of them with the lowest rank: rare voxels whole, one row from every
    other voxel, and the rest in proportion to the density. Work follows the chunks the box
    meets; when they hold many times the budget, rows are picked by rank before the box test.
    """
    if budget <= 0:
        return np.empty(0, dtype=np.int64)
    if box is None and mask is None:
        cached = store._overview.get(budget)
        if cached is None:
            if store.n <= budget:
                cached = np.arange(store.n, dtype=np.int64)
            else:
                cached = np.sort(_lowest(np.asarray(store.rank), budget)).astype(np.int64)
            store._overview[budget] = cached
        return cached
    starts, stops = ([0], [store.n]) if box is None else store.runs(box)
    if sum(stops) - sum(starts) > 4 * budget:
        rows = _sample_by_rank(store, box, starts, stops, budget, mask)
        if rows is not None:
            return rows
    rows = np.flatnonzero(mask) if box is None else store.rows_in(box, mask)
    if len(rows) <= budget:
        return rows.astype(np.int64, copy=False)
    return rows[np.sort(_lowest(store.rank[rows], budget))].astype(np.int64, copy=False)


def _lowest(ranks: np.ndarray, k: int) -> np.ndarray:
    """Indices into ``ranks`` of its ``k`` lowest values (``k < len(ranks)``), any order.

    Tier-2 keys spread evenly, so the share of them to keep gives a cut-off that leaves a
    little more than ``k`` candidates: one comparison pass instead of partitioning them all.
    """
    tier1 = np.count_nonzero(ranks < _TIER2)
    if tier1 >= k:
        keep = np.flatnonzero(ranks < _TIER2)
    else:
        rest = len(ranks) - tier1
        share = min(1.0, ((k - tier1) * 1.05 + 4 * math.sqrt(k) + 64) / rest)
        keep = np.flatnonzero(ranks < _TIER2 + int(share * 2**32))
        if len(keep) < k:  # the candidates' keys were unevenly spread: partition them all
            keep = np.arange(len(ranks))
    return keep[np.argpartition(ranks[keep], k - 1)[:k]]


def _sample_by_rank(
    store: CloudStore,
    box: Box | None,
    starts: list[int],
    stops: list[int],
    budget: int,
    mask: np.ndarray | None,
) -> np.ndarray | None:
    """:func:`sample` for views whose chunks hold many times the budget.

    Only rows below a rank cut-off are tested against the box: all tier-1 rows (a few per
    voxel), then tier-2 rows under a key share raised until the box holds enough of them.
    Returns None when the box holds too few points for that to pay (then test every row).
    """

    def inside(rows: np.ndarray) -> np.ndarray:
        ok = (
            np.ones(len(rows), dtype=bool)
            if box is None
            else box.contains(store.x[rows], store.y[rows], store.z[rows])
        )
        if mask is not None:
            ok &= mask[rows]
        return rows[ok]

    if store._tier1 is None:
        store._tier1 = np.flatnonzero(np.asarray(store.rank) < _TIER2)
    first = inside(store._tier1)
    if len(first) >= budget:
        return np.sort(first[np.argpartition(store.rank[first], budget - 1)[:budget]])
    need = budget - len(first)
    share = min(
        1.0, (need * 1.1 + 64) / (sum(stops) - sum(starts))
    )  # the lowest share that can be enough
    while True:
        cut = _TIER2 + int(share * 2**32)
        parts = [np.empty(0, dtype=np.int64)]
        for a, b in zip(starts, stops, strict=True):
            r = store.rank[a:b]
            parts.append(np.flatnonzero((r >= _TIER2) & (r < cut)) + a)
        rest = inside(np.concatenate(parts))
        if len(rest) >= need or share >= 1.0:
            break
        # Keys are spread evenly, so the share found says how much more is needed.
        share = min(1.0, share * 1.15 * need / max(len(rest), need / 64))
        if share > 0.25:  # the box holds few of the rows its chunks hold: test them all
            return None
    if len(rest) > need:
        rest = rest[np.argpartition(store.rank[rest], need - 1)[:need]]
    return np.sort(np.concatenate([first, rest])).astype(np.int64, copy=False)


def box_from_view_state(view_state: dict, width: int, height: int, extent: Box) -> Box | None:
    """The region a deck.gl ``OrbitView`` shows, as a box; None when that is the whole cloud.

    Parameters
    ----------
    view_state : the DeckGL pane's ``view_state``: ``target`` ``[x, y, z]`` and ``zoom`` are
        read (rotation is not: the box holds the sphere around the target that any rotation
        shows).
    width, height : the canvas size in pixels.
    extent : the cloud's extent (:attr:`CloudStore.extent`).

    In an ``OrbitView`` one data unit spans ``2**zoom`` pixels, so the visible region is about
    a sphere of radius ``VIEW_MARGIN * max(width, height) / 2 / 2**zoom`` around the target.
    Returns the cube around that sphere clipped to the extent; the unclipped cube when it
    misses the extent (an empty view); None when it covers at least ``COVERS`` of the extent
    on every axis, or the view state has no usable target and zoom (the overview).
    """
    target = (view_state or {}).get("target")
    zoom = (view_state or {}).get("zoom")
    if target is None or zoom is None:
        return None
    if isinstance(zoom, list | tuple):  # per-axis zoom: the smaller one shows more
        zoom = min(zoom)
    lo_e, hi_e = np.asarray(extent.lo, dtype=float), np.asarray(extent.hi, dtype=float)
    center = (lo_e + hi_e) / 2
    center[: len(target[:3])] = [float(t) for t in target[:3]]
    radius = VIEW_MARGIN * 0.5 * max(width, height, 1) / 2.0 ** float(zoom)
    if not (np.isfinite(center).all() and math.isfinite(radius)):
        return None
    lo, hi = np.maximum(center - radius, lo_e), np.minimum(center + radius, hi_e)
    if (lo > hi).any():
        return Box(_triple(center - radius), _triple(center + radius))
    if ((hi - lo) >= COVERS * (hi_e - lo_e)).all():
        return None
    return Box(_triple(lo), _triple(hi))


def _triple(a: np.ndarray) -> tuple[float, float, float]:
    return (float(a[0]), float(a[1]), float(a[2]))


def _load(ds, projection: str) -> CloudStore:
    from embviz.errors import DatasetError

    from .store import _load as _load_flat

    key = f"projections/{projection}"
    if "z" not in ds.table(key)["columns"]:
        raise DatasetError(
            f"{ds.root}: projection {projection!r} has no z column (it is 2D); the 3D view "
            f"needs a 3D projection, one of "
            f"{[p for p in ds.projections if 'z' in ds.table(f'projections/{p}')['columns']]}"
        )
    # The 2D loader reads ids, x and y and joins the sample columns; only z is left to read.
    flat = _load_flat(ds.root, projection)
    z = ds.read_arrow(key, columns=["z"]).column("z").to_numpy()
    return CloudStore.from_arrays(
        flat.x,
        flat.y,
        z,
        flat.ids,
        categorical=flat.categorical,
        numeric=flat.numeric,
        key=flat.key,
    )


_CLOUDS: dict[tuple[str, str, str, str], CloudStore] = {}
_LOCK = threading.Lock()


def load_cloud(root: str | Path, projection: str) -> CloudStore:
    """The process-wide :class:`CloudStore` of 3D ``projection`` in the dataset at ``root``.

    Loaded once per process and shared by every session; a rebuilt projection or samples
    table (new table version in the manifest) is loaded afresh. The joined columns and the
    rank are kept under ``<dataset>/cache/explorer3d/`` and memory-mapped on the next start
    (skipped when the dataset is read-only). Raises ``DatasetError`` for a missing or 2D
    projection.
    """
    from embviz.dataset import open_dataset
    from embviz.errors import DatasetError

    ds = open_dataset(root, check_files=False)
    if projection not in ds.projections:
        raise DatasetError(f"{ds.root}: no projection {projection!r}; have {ds.projections}")
    version = ds.table(f"projections/{projection}")["dir"]
    key = (str(ds.root.resolve()), projection, version, samples_version(ds))
    with _LOCK:
        store = _CLOUDS.get(key)
        if store is None:
            store = _read_cache(ds, projection)
            if store is None:
                store = _load(ds, projection)
                _write_cache(ds, projection, store)
            _CLOUDS[key] = store
    return store


def clear_clouds() -> None:
    """Forget every loaded cloud (tests and benchmarks)."""
    with _LOCK:
        _CLOUDS.clear()


# -- the 3D explorer cache: columns and rank as .npy files, memory-mapped ----------------------
def _cache_dir(ds, projection: str) -> Path:
    from .store import _cache_dir as _flat_cache_dir

    flat = _flat_cache_dir(ds, projection)  # named by the projection and samples versions
    return flat.parent.parent / "explorer3d" / f"{flat.name}--r{RANK_VERSION}g{GRID}"


def _write_cache(ds, projection: str, store: CloudStore) -> None:
    from .store import write_columns

    write_columns(_cache_dir(ds, projection), store, {"z": store.z, "rank": store.rank})


def _read_cache(ds, projection: str) -> CloudStore | None:
    from .store import read_columns

    fields = read_columns(_cache_dir(ds, projection))
    if fields is None or "z" not in fields or "rank" not in fields:
        return None
    return CloudStore(**fields)
