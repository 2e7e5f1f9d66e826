"""3D sampling: a rank that keeps density and rare points, and the sample one view sends."""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

from .store import Box, PointStore

__all__ = ["DEFAULT_BUDGET", "box_from_view_state", "rank", "sample"]

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


def rank(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, seed: int = 0) -> np.ndarray:
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


# What sampling derives from a store once (the overview per budget, the tier-1 rows): kept
# here, beside the code that reads it, for as long as the store lives.
_MEMO: weakref.WeakKeyDictionary[PointStore, dict] = weakref.WeakKeyDictionary()
_MEMO_LOCK = threading.Lock()


def _memo(store: PointStore) -> dict:
    with _MEMO_LOCK:
        return _MEMO.setdefault(store, {})


def sample(
    store: PointStore,
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
    if store.rank is None:
        raise ValueError(f"{store.key}: no sampling rank; build the store in 3D (rank=True)")
    if budget <= 0:
        return np.empty(0, dtype=np.int64)
    if box is None and mask is None:
        memo = _memo(store)
        cached = memo.get(("overview", budget))
        if cached is None:
            if store.n <= budget:
                cached = np.arange(store.n, dtype=np.int64)
            else:
                cached = np.sort(_lowest(np.asarray(store.rank), budget)).astype(np.int64)
            memo[("overview", budget)] = cached
        return cached
    runs = [(0, store.n)] if box is None else store.runs(box)
    if sum(b - a for a, b in runs) > 4 * budget:
        rows = _sample_by_rank(store, box, runs, budget, mask)
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
    store: PointStore,
    box: Box | None,
    runs: list[tuple[int, int]],
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

    memo = _memo(store)
    if "tier1" not in memo:
        memo["tier1"] = np.flatnonzero(np.asarray(store.rank) < _TIER2)
    first = inside(memo["tier1"])
    if len(first) >= budget:
        return np.sort(first[np.argpartition(store.rank[first], budget - 1)[:budget]])
    need = budget - len(first)
    share = min(
        1.0, (need * 1.1 + 64) / sum(b - a for a, b in runs)
    )  # the lowest share that can be enough
    while True:
        cut = _TIER2 + int(share * 2**32)
        parts = [np.empty(0, dtype=np.int64)]
        for a, b in runs:
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
    extent : the cloud's extent (:attr:`PointStore.extent`).

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
