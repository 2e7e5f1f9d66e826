"""Building a map's pyramid: its points counted per category on tiled power-of-two grids (.npy).

A pyramid is a folder of grids over the store's extent, ``TILE`` cells across at the coarsest
and twice as many at each finer level up to a base chosen for a byte budget. Every grid is cut
into ``TILE`` x ``TILE`` tiles and only tiles holding points are stored: ``g{G}.index.npy``
maps a tile to its slot (-1: empty) and ``g{G}.counts.npy`` holds ``(slots, TILE, TILE, k)``
uint32 counts, memory-mapped when read. Cells follow Datashader's pixel rule (``int(x * s +
t)``, the last cell also taking the far edge), and because grids differ by powers of two a
coarse cell is exactly the union of its four children, so each level is summed from the one
below. The numba kernels that build and re-bin the counts live here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

__all__ = ["LAYOUT", "MAX_GRID", "TILE", "build_lock", "build_pyramid", "pyramid_dir", "rebin"]

#: Bumped when the files' layout changes, so old pyramids are rebuilt instead of read.
LAYOUT = 1
#: Cells per tile side: the unit of storage (empty tiles are not stored) and the coarsest grid.
TILE = 64
#: The finest base grid (cells per side) a pyramid may use.
MAX_GRID = 1 << 16
#: Default byte budget per point of the store (bounded by ``MIN_BYTES`` and ``MAX_BYTES``): the
#: counts cost about what the x and y columns do, so the base grid grows with the store.
BYTES_PER_POINT = 8
MIN_BYTES = 4 << 20
MAX_BYTES = 4 << 30
#: Rows handed to a kernel at a time: memory-mapped columns stream through in slices.
_ROWS = 1 << 22


def pyramid_dir(root: Path, column: str | None) -> Path:
    """The folder under ``root`` holding the pyramid of ``column`` (None: plain counts)."""
    import hashlib

    if column is None:
        return Path(root) / "density"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in column)[:40]
    return Path(root) / f"by-{safe}-{hashlib.sha1(column.encode()).hexdigest()[:8]}"


def grid_transform(extent: tuple[float, float, float, float], grid: int):
    """``(sx, tx, sy, ty)``: cell ``int(x * sx + tx)`` of a ``grid`` x ``grid`` grid over
    ``extent``. Scales of grids a power of two apart differ by exactly that power, so a
    point's cell on a coarse grid is its fine cell shifted right (no rounding disagreement)."""
    x0, x1, y0, y1 = extent
    sx, sy = grid / (x1 - x0), grid / (y1 - y0)
    return sx, -x0 * sx, sy, -y0 * sy


@numba.njit(nogil=True, cache=True)
def _tile_counts(x, y, extent, st, grid, tile, out):  # pragma: no cover - compiled
    """Add each point inside ``extent`` to the count of its tile (NaNs and outsiders skipped)."""
    x0, x1, y0, y1 = extent
    sx, tx, sy, ty = st
    last = grid - 1
    for r in range(len(x)):
        xv, yv = x[r], y[r]
        if xv >= x0 and xv <= x1 and yv >= y0 and yv <= y1:
            cx = min(int(xv * sx + tx), last)
            cy = min(int(yv * sy + ty), last)
            out[cy // tile, cx // tile] += 1


@numba.njit(nogil=True, cache=True)
def _count_cells(x, y, codes, extent, st, grid, tile, index, counts):  # pragma: no cover
    """Add each point inside ``extent`` to its cell's count of its category (code 0 without
    ``codes``); returns the points counted."""
    x0, x1, y0, y1 = extent
    sx, tx, sy, ty = st
    last = grid - 1
    use_codes = len(codes) > 0
    counted = 0
    for r in range(len(x)):
        xv, yv = x[r], y[r]
        if xv >= x0 and xv <= x1 and yv >= y0 and yv <= y1:
            cx = min(int(xv * sx + tx), last)
            cy = min(int(yv * sy + ty), last)
            c = codes[r] if use_codes else 0
            counts[index[cy // tile, cx // tile], cy % tile, cx % tile, c] += 1
            counted += 1
    return counted


@numba.njit(nogil=True, cache=True)
def _halve(child, child_index, parent, parent_index):  # pragma: no cover - compiled
    """Sum 2 x 2 cells of a grid's tiles into the grid half as fine."""
    tile, k = child.shape[1], child.shape[3]
    half = tile // 2
    tiles = parent_index.shape[0]
    for py in range(tiles):
        for px in range(tiles):
            s = parent_index[py, px]
            if s < 0:
                continue
            for qy in range(2):
                for qx in range(2):
                    cs = child_index[2 * py + qy, 2 * px + qx]
                    if cs < 0:
                        continue
                    for i in range(tile):
                        for j in range(tile):
                            for c in range(k):
                                v = child[cs, i, j, c]
                                if v:
                                    parent[s, qy * half + i // 2, qx * half + j // 2, c] += v


@numba.njit(nogil=True, cache=True)
def rebin(counts, index, i0, i1, j0, j1, rowpix, colpix, out):  # pragma: no cover - compiled
    """Add every stored cell of grid rows ``i0:i1`` and columns ``j0:j1`` to pixel
    ``(rowpix[i - i0], colpix[j - j0])`` of ``out`` (H, W, k): the pixel holding its centre."""
    tile, k = counts.shape[1], counts.shape[3]
    for ti in range(i0 // tile, (i1 - 1) // tile + 1):
        for tj in range(j0 // tile, (j1 - 1) // tile + 1):
            s = index[ti, tj]
            if s < 0:
                continue
            for gi in range(max(i0, ti * tile), min(i1, (ti + 1) * tile)):
                py = rowpix[gi - i0]
                li = gi - ti * tile
                for gj in range(max(j0, tj * tile), min(j1, (tj + 1) * tile)):
                    px = colpix[gj - j0]
                    lj = gj - tj * tile
                    for c in range(k):
                        v = counts[s, li, lj, c]
                        if v:
                            out[py, px, c] += v
    return out


def _spans(n: int):
    return ((a, min(a + _ROWS, n)) for a in range(0, n, _ROWS))


def _occupancy(store, extent) -> list[np.ndarray]:
    """Points per tile on every grid from ``MAX_GRID`` down to ``TILE`` (finest first): one
    pass over x and y at the finest grid, then 2 x 2 sums."""
    tiles = MAX_GRID // TILE
    occ = np.zeros((tiles, tiles), dtype=np.int64)
    st = np.array(grid_transform(extent, MAX_GRID))
    box = np.array(extent, dtype=np.float64)
    for a, b in _spans(store.n):
        _tile_counts(
            np.asarray(store.x[a:b]), np.asarray(store.y[a:b]), box, st, MAX_GRID, TILE, occ
        )
    out = [occ]
    while out[-1].shape[0] > 1:
        o = out[-1]
        out.append(o.reshape(o.shape[0] // 2, 2, o.shape[1] // 2, 2).sum(axis=(1, 3)))
    return out


def _choose_base(occupancy: list[np.ndarray], k: int, budget: int) -> int:
    """The finest grid whose pyramid (it and every coarser level) fits in ``budget`` bytes."""
    per_tile = TILE * TILE * k * 4
    grids = [MAX_GRID >> i for i in range(len(occupancy))]  # finest first
    total = np.cumsum([int((o > 0).sum()) * per_tile for o in occupancy][::-1])[::-1]
    fits = [g for g, t in zip(grids, total, strict=True) if t <= budget]
    return max(fits) if fits else TILE


def build_pyramid(
    store,
    where: Path,
    color_by: str | None = None,
    *,
    key: str | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Count ``store``'s points per cell (and per category of ``color_by``) on every grid of a
    pyramid and write it under ``where``; returns the pyramid's folder.

    Parameters
    ----------
    store : a 2D :class:`~embviz.render.store.PointStore`; its columns (memory-mapped or not)
        are read in slices, never copied whole. Three passes: tile occupancy, the base counts,
        then each coarser level summed from the finer one (about 0.1 s per million points).
    where : the folder holding the store's pyramids (created); one folder per column inside.
        Written to a temporary folder and renamed, so a reader never sees half a pyramid, and
        an existing pyramid of the column is replaced. Derived data: safe to delete.
    color_by : a categorical column of the store, or None for plain counts (density).
    key : what identifies the store's data in the pyramid's metadata (default ``store.key``):
        a pyramid whose key, size or extent differ from the store's is not read.
    max_bytes : byte budget for the counts; the base grid is the finest (at most
        ``MAX_GRID`` cells across) whose levels fit. Default ``BYTES_PER_POINT`` per point,
        within ``MIN_BYTES`` .. ``MAX_BYTES``. A finer base lets narrower views come from the
        pyramid; the counts cost ``4 * k`` bytes per stored cell.

    Raises ``ValueError`` for a 3D store, an unknown column or an extent without area, and
    ``OSError`` when ``where`` cannot be written (a read-only dataset).
    """
    t0 = time.perf_counter()
    if store.dims != 2:
        raise ValueError(f"{store.key}: a pyramid counts 2D maps; this store is {store.dims}D")
    e = store.extent
    extent = (e.x0, e.x1, e.y0, e.y1)
    if not (np.isfinite(extent).all() and e.x1 > e.x0 and e.y1 > e.y0):
        raise ValueError(f"{store.key}: no pyramid for a map with extent {extent} (no area)")
    if color_by is None:
        codes, names = np.zeros(0, dtype=np.int8), []
    elif color_by in store.categorical:
        codes, names = store.categorical[color_by]
    else:
        raise ValueError(
            f"{store.key}: no category column {color_by!r}; have {sorted(store.categorical)}"
        )
    k = max(len(names), 1)
    budget = max_bytes or min(max(BYTES_PER_POINT * store.n, MIN_BYTES), MAX_BYTES)
    occupancy = _occupancy(store, extent)
    base = _choose_base(occupancy, k, budget)
    levels = {MAX_GRID >> i: o > 0 for i, o in enumerate(occupancy) if (MAX_GRID >> i) <= base}

    target = pyramid_dir(where, color_by)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        arrays, counted, box = {}, 0, np.array(extent, dtype=np.float64)
        for grid in sorted(levels, reverse=True):  # the base first, then each coarser level
            busy = levels[grid]
            index = np.full(busy.shape, -1, dtype=np.int32)
            index[busy] = np.arange(int(busy.sum()), dtype=np.int32)
            np.save(tmp / f"g{grid}.index.npy", index)
            counts = np.lib.format.open_memmap(
                tmp / f"g{grid}.counts.npy",
                mode="w+",
                dtype=np.uint32,
                shape=(int(busy.sum()), TILE, TILE, k),
            )
            _allocate(tmp / f"g{grid}.counts.npy")
            if grid == base:
                st = np.array(grid_transform(extent, grid))
                for a, b in _spans(store.n):
                    c = np.asarray(codes[a:b]) if len(names) else codes
                    x, y = np.asarray(store.x[a:b]), np.asarray(store.y[a:b])
                    counted += _count_cells(x, y, c, box, st, grid, TILE, index, counts)
            else:
                _halve(*arrays[grid * 2], counts, index)
            arrays = {grid: (counts, index)}  # only the level below is needed
        # Not flushed (msync): readers map the same page cache, and waiting for the disk
        # (seconds at 200M points) buys nothing for a cache that is rebuilt when lost.
        del arrays, counts
        meta = {
            "layout": LAYOUT,
            "key": store.key if key is None else key,
            "n": int(store.n),
            "extent": list(extent),
            "column": color_by,
            "names": list(names),
            "tile": TILE,
            "grids": sorted(levels),
            "points": int(counted),
            "bytes": sum(int(v.sum()) for v in levels.values()) * TILE * TILE * k * 4,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def build_lock(target: Path):
    """Hold an exclusive lock on building ``target`` (a pyramid folder) across processes,
    waiting for another holder; ``OSError`` when its folder cannot be written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as f:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): builds may overlap, publishing stays atomic
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _allocate(path: Path) -> None:
    """Reserve the disk blocks of a new memory-mapped file: a full disk then fails here with
    ``OSError`` instead of killing the process (SIGBUS) at a write through the mapping."""
    if not hasattr(os, "posix_fallocate"):  # macOS: nothing to reserve them with
        return
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def _publish(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target``, replacing what is there."""
    if target.exists():
        trash = target.with_name(f".old-{target.name}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            target.rename(trash)  # readers with the old files mapped keep reading them
        except OSError:
            pass
        else:
            shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(OSError):  # another process published one first: keep theirs
        tmp.rename(target)
