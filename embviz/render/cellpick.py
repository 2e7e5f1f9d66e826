"""One representative point per cell of a grid anchored in data space, picked in one pass (Numba).

The grid's cells are squares of ``cell_px`` screen pixels rounded to a power of two in data
units on each axis and anchored at the data origin: panning keeps every cell (and its
representative) where it was, zooming within a factor of sqrt(2) keeps the grid, and a zoom
to the next level splits each cell into four, so a representative picked by a minimum over a
cell is still picked in one of its four children: zooming in only adds images.

A representative is the most typical of its cell's shown points: the one with the lowest
score (an outlier score: lowest = most typical by embedding) when the store has one, else the
point nearest the centre of the cell's density peak, the densest of its ``SUB x SUB``
sub-cells. Work follows the store's chunks (8,192 rows close on the map): a chunk inside the
view takes its category counts from per-chunk histograms (computed once per store and
column), and one that also lies inside one cell reads neither x nor y; it counts in the
sub-cell of its centre, so the peak is a density estimate smoothed by at most one chunk's
extent. The peak's point is then searched in the cell's chunk nearest the peak (only the
cells without a chunk of their own read the chunks reaching their peak). Filters (a mask)
make every row be tested. Measured on 2 loaded cores, full view coloured by label: 14 ms at
10M points, about 30 ms at 50M, where Datashader's ``where(min(score))`` reduction took 1.3 s
at 10M.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from .cellkernels import chunk_histograms, peak_pick, scan
from .store import PointStore, View

__all__ = ["SUB", "Grid", "Picks", "grid_for", "pick"]

#: Sub-cells per cell side used to find a cell's density peak (16 px sub-cells at 64 px
#: cells); a power of two.
SUB = 4
#: Category columns with at most this many values keep per-chunk counts (4 bytes per chunk
#: and category), so a chunk inside the view counts its categories without reading a row.
MAX_HISTOGRAM = 256


@dataclass(frozen=True)
class Grid:
    """Cells ``(i, j)`` covering ``[x0 + i * cw, x0 + (i + 1) * cw) x [y0 + j * ch, ...)``;
    cell ``k = j * nx + i`` (row-major from the bottom-left)."""

    x0: float  #: data x of the left edge of column 0 (a multiple of ``cw``)
    y0: float  #: data y of the bottom edge of row 0 (a multiple of ``ch``)
    cw: float  #: cell width in data units (a power of two)
    ch: float  #: cell height in data units (a power of two)
    nx: int  #: columns
    ny: int  #: rows

    @property
    def view(self) -> View:
        """The rectangle the cells cover (the view widened to whole cells)."""
        return View(self.x0, self.x0 + self.nx * self.cw, self.y0, self.y0 + self.ny * self.ch)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The cell index ``k`` of each point (-1 outside the grid), as the kernels compute it."""
        fx = (np.asarray(x, dtype=np.float64) - self.x0) * (1.0 / self.cw)
        fy = (np.asarray(y, dtype=np.float64) - self.y0) * (1.0 / self.ch)
        ok = (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)
        k = np.floor(fy).astype(np.int64) * self.nx + np.floor(fx).astype(np.int64)
        return np.where(ok, k, -1)

    def rects(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower-left corners ``(xs, ys)`` in data units of cells ``cells`` (each cw x ch)."""
        cells = np.asarray(cells, dtype=np.int64)
        return self.x0 + (cells % self.nx) * self.cw, self.y0 + (cells // self.nx) * self.ch


def _level(span_per_px: float, cell_px: float) -> float:
    """The power of two nearest (in ratio) to ``cell_px`` pixels of ``span_per_px`` units each."""
    want = max(cell_px * span_per_px, 1e-300)
    return 2.0 ** round(math.log2(want))


def grid_for(view: View, width: int, height: int, cell_px: int) -> Grid:
    """The grid whose cells are about ``cell_px`` screen pixels (between 0.71 and 1.41 times)
    in a ``width`` x ``height`` plot of ``view``; it covers the view with whole cells."""
    cw = _level((view.x1 - view.x0) / width, cell_px)
    ch = _level((view.y1 - view.y0) / height, cell_px)
    i0, j0 = math.floor(view.x0 / cw), math.floor(view.y0 / ch)
    nx = math.floor(view.x1 / cw) - i0 + 1
    ny = math.floor(view.y1 / ch) - j0 + 1
    return Grid(i0 * cw, j0 * ch, cw, ch, nx, ny)


_HISTOGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HISTOGRAMS_LOCK = threading.Lock()


def _histograms(store: PointStore, codes: np.ndarray, k: int) -> np.ndarray:
    """The per-chunk counts of each category of ``codes`` (a column of ``store``), computed
    once per store and column (a pass over the codes: about 0.1 s for 50M rows)."""
    with _HISTOGRAMS_LOCK:
        per_store = _HISTOGRAMS.setdefault(store, {})
        key = (id(codes), k)
        hist = per_store.get(key)
        if hist is None:
            hist = per_store[key] = chunk_histograms(codes, store.chunk_rows, k)
    return hist


@dataclass
class Picks:
    """The representatives of one grid over the shown rows (filters and hidden categories)."""

    grid: Grid
    counts: np.ndarray  #: (ny * nx,) shown points in each cell
    rows: np.ndarray  #: (ny * nx,) store row of each cell's representative, -1 for none
    in_view: int  #: shown points inside the view itself (not the widened grid)
    #: points inside the view per category code (filters applied, hidden ones counted too),
    #: None without category codes
    per_category: np.ndarray | None
    how: str  #: "lowest <column>" or "nearest the density peak"

    @property
    def cells(self) -> np.ndarray:
        """Indices of the occupied cells, ascending."""
        return np.flatnonzero(self.rows >= 0)


def pick(
    store: PointStore,
    view: View,
    grid: Grid,
    *,
    mask: np.ndarray | None = None,
    categories: tuple[np.ndarray, np.ndarray] | None = None,
    score: tuple[str, np.ndarray] | None = None,
) -> Picks:
    """Pick each occupied cell's representative among the shown points of ``store``.

    Parameters
    ----------
    store : the points (their chunk bounds prune the rows read).
    view : the visible rectangle (for ``in_view`` and ``per_category``).
    grid : from :func:`grid_for`.
    mask : rows passing the filters (None: all).
    categories : ``(codes, hidden)``: each row's category code (counted per category in
        view) and a bool per category; the rows of hidden categories are not shown.
    score : ``(column name, values)``: the representative is the lowest (NaN last; ties to
        the lowest row); None: the point nearest the cell's density peak.
    """
    empty_b, empty_i, empty_f = np.zeros(0, np.bool_), np.zeros(0, np.int8), np.zeros(0, np.float32)
    chunks = store.chunks_in(grid.view).astype(np.int64)
    mask = empty_b if mask is None else mask
    codes_a, hidden_a, per_cat = empty_i, empty_b, np.zeros(0, np.int64)
    if categories is not None:
        codes_a, hidden = categories
        per_cat = np.zeros(len(hidden), np.int64)
        if np.any(hidden):
            hidden_a = np.asarray(hidden, dtype=np.bool_)
    sub = 1 if score is not None else SUB
    shift = sub.bit_length() - 1  # sub is a power of two: cells from sub-cells by shifts
    nxs, nys = grid.nx * sub, grid.ny * sub
    common = (
        store.x,
        store.y,
        chunks,
        store.chunk_rows,
        store.bounds,
        grid.x0,
        grid.y0,
        sub / grid.cw,
        sub / grid.ch,
        nxs,
        nys,
        shift,
    )
    counts = np.zeros(nxs * nys, np.int64)
    best = np.full(grid.nx * grid.ny, np.inf, np.float64)
    rows = np.full(grid.nx * grid.ny, -1, np.int64)
    values = empty_f if score is None else score[1]
    v = (view.x0, view.x1, view.y0, view.y1)
    # Per chunk: the one cell holding it all (inside the view), else -1, and its shown points.
    chunk_cell = np.full(len(chunks), -1, np.int64)
    chunk_shown = np.zeros(len(chunks), np.int64)
    out = (counts, best, rows, per_cat, chunk_cell, chunk_shown)
    hist = np.zeros((0, 0), np.int32)
    if categories is not None and len(per_cat) <= MAX_HISTOGRAM:
        hist = _histograms(store, codes_a, len(per_cat))
    in_view = scan(*common, *v, mask, codes_a, hidden_a, hist, values, *out)
    if sub > 1:
        # The densest sub-cell of each cell (ties: the first), then the point nearest its centre.
        blocks = counts.reshape(grid.ny, sub, grid.nx, sub).transpose(0, 2, 1, 3)
        blocks = blocks.reshape(grid.ny * grid.nx, sub * sub)
        top = blocks.argmax(1)
        occupied = blocks.max(1) > 0
        peak = np.zeros(nxs * nys, np.bool_)
        k = np.flatnonzero(occupied)
        si = (k % grid.nx) * sub + top[k] % sub
        sj = (k // grid.nx) * sub + top[k] // sub
        peaks = np.full(grid.ny * grid.nx, -1, np.int64)  # each cell's peak sub-cell
        peaks[k] = sj * nxs + si
        peak[peaks[k]] = True
        peak_pick(
            *common, peak, peaks, chunk_cell, chunk_shown, mask, hidden_a, codes_a, best, rows
        )
        counts = blocks.sum(1)
    return Picks(
        grid=grid,
        counts=counts,
        rows=rows,
        in_view=int(in_view),
        per_category=per_cat if categories is not None else None,
        how=f"lowest {score[0]}" if score is not None else "nearest the density peak",
    )
