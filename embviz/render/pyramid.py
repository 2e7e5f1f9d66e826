"""Wide views of big maps from a pyramid of cached per-category counts, re-binned to the view.

A full view of a billion points costs seconds to aggregate from the rows; its pixels are
each hundreds of cells of a pre-counted grid, so summing those cells (a few million, whatever
the number of points) costs tens of milliseconds. :class:`PyramidSource` is the
:class:`~embviz.render.sources.AggregateSource` that does it: it answers a view when each of
its pixels spans at least ``CELLS_PER_PIXEL`` base cells per axis and no filter applies, and
returns None otherwise, so narrow views keep going through the curve-ordered chunks.

Re-binning error: each cell of the chosen level (the coarsest with ``CELLS_PER_PIXEL`` cells
per pixel) goes to the pixel holding its centre. A view whose pixel edges lie on cell edges
gets exactly Datashader's counts; elsewhere a point moves at most half a cell (a quarter
pixel), so it lands in its own pixel or the neighbour across an edge its cell straddles, and
the view's total differs only by the points of the cells straddling the view's border.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from .sources import register_source
from .store import PointStore, View

__all__ = ["CELLS_PER_PIXEL", "MIN_POINTS", "Pyramid", "PyramidSource", "attach", "build_pyramid"]

#: A view is answered when each pixel spans at least this many base cells per axis; the level
#: used is the coarsest with that many. 2 keeps a point within a quarter pixel of where it
#: belongs; 1 would answer views twice as narrow with half-pixel error.
CELLS_PER_PIXEL = 2
#: Stores with fewer points get no pyramid from :func:`attach`: their full view aggregates
#: from the rows in a few tenths of a second.
MIN_POINTS = 10_000_000

log = logging.getLogger(__name__)


def build_pyramid(store, where, color_by=None, **options) -> Path:
    """Build the pyramid of ``store``'s counts by ``color_by`` under ``where`` (see
    :func:`embviz.render.pyramid_build.build_pyramid` for the options)."""
    from .pyramid_build import build_pyramid as build

    return build(store, Path(where), color_by, **options)


class Pyramid:
    """One built pyramid, memory-mapped: its levels' tile indexes and counts.

    Open one with :meth:`open`; :meth:`aggregate` re-bins it to a view.
    """

    def __init__(self, where: Path, meta: dict):
        self.where = where  #: the pyramid's folder
        self.meta = meta  #: what :func:`build_pyramid` wrote in ``meta.json``
        self.extent = tuple(meta["extent"])  #: ``(x0, x1, y0, y1)`` the grids cover
        self.names = list(meta["names"])  #: category names; empty for plain counts
        self.grids = sorted(meta["grids"])  #: cells per side of each level, coarsest first
        self.levels = {
            g: (
                np.load(where / f"g{g}.index.npy"),
                np.load(where / f"g{g}.counts.npy", mmap_mode="r"),
            )
            for g in self.grids
        }

    @classmethod
    def open(
        cls, where: Path, *, store: PointStore, key: str, column: str | None
    ) -> Pyramid | None:
        """The pyramid in ``where`` if it was built from this store's data (same key, size,
        extent and categories by the current layout), else None."""
        from .pyramid_build import LAYOUT

        try:
            meta = json.loads((where / "meta.json").read_text())
            e = store.extent
            names = store.categories(column) if column is not None else []
            if (
                meta.get("layout") != LAYOUT
                or meta.get("key") != key
                or meta.get("n") != store.n
                or meta.get("extent") != [e.x0, e.x1, e.y0, e.y1]
                or meta.get("column") != column
                or meta.get("names") != names
            ):
                return None
            return cls(where, meta)
        except (OSError, ValueError, KeyError):
            return None

    @property
    def base(self) -> int:
        """Cells per side of the finest level."""
        return self.grids[-1]

    def level_for(self, view: View, width: int, height: int, min_cells: float) -> int | None:
        """Cells per side of the coarsest level giving each pixel of the view at least
        ``min_cells`` cells per axis, or None when even the base is too coarse."""
        x0, x1, y0, y1 = self.extent
        per_x = (view.x1 - view.x0) / width * self.base / (x1 - x0)
        per_y = (view.y1 - view.y0) / height * self.base / (y1 - y0)
        per = min(per_x, per_y)
        if not per >= min_cells:  # also refuses NaN
            return None
        grid = self.base
        while grid > self.grids[0] and per >= 2 * min_cells:
            grid //= 2
            per /= 2
        return grid

    def aggregate(self, view: View, width: int, height: int, *, min_cells=CELLS_PER_PIXEL):
        """Datashader's aggregate of the view (``count_cat`` stack, or ``count`` for plain
        counts) re-binned from the pyramid, or None when the view is too narrow for it."""
        import xarray as xr

        from .pyramid_build import rebin

        grid = self.level_for(view, width, height, min_cells)
        if grid is None:
            return None
        index, counts = self.levels[grid]
        # Datashader's linear axis (its Canvas, without importing Datashader: 1.2-2 s of a
        # fresh server's first frame): ``s * x + t`` maps data to pixels.
        x_range, y_range = (float(view.x0), float(view.x1)), (float(view.y0), float(view.y1))
        x_st = _scale_and_translate(x_range, width)
        y_st = _scale_and_translate(y_range, height)
        x0, x1, y0, y1 = self.extent
        j0, j1, colpix = _pixel_of_cells(x0, x1, grid, view.x0, view.x1, x_st, width)
        i0, i1, rowpix = _pixel_of_cells(y0, y1, grid, view.y0, view.y1, y_st, height)
        k = counts.shape[3]
        out = np.zeros((height, width, k), dtype=np.uint32)
        if j1 > j0 and i1 > i0:
            rebin(np.asarray(counts), index, i0, i1, j0, j1, rowpix, colpix, out)
        coords = {"y": _axis_index(y_st, height), "x": _axis_index(x_st, width)}
        attrs = {"x_range": x_range, "y_range": y_range}
        if not self.names:
            return xr.DataArray(out[..., 0], coords=coords, dims=["y", "x"], attrs=attrs)
        coords["c"] = self.names
        return xr.DataArray(out, coords=coords, dims=["y", "x", "c"], attrs=attrs)


def _scale_and_translate(span: tuple[float, float], n: int) -> tuple[float, float]:
    """``datashader.core.LinearAxis.compute_scale_and_translate``."""
    s = n / (span[1] - span[0])
    return s, -span[0] * s


def _axis_index(st: tuple[float, float], n: int) -> np.ndarray:
    """``datashader.core.LinearAxis.compute_index``: the data value of each pixel's centre."""
    s, t = st
    return (np.arange(n) + 0.5 - t) / s


def _pixel_of_cells(lo, hi, grid, v0, v1, st, pixels):
    """``(first, stop, pixel)``: the cells of one axis whose centres lie in ``[v0, v1]`` and
    the pixel holding each centre, by Datashader's rule (``int(c * s + t)``, the far edge in
    the last pixel)."""
    centres = lo + (np.arange(grid) + 0.5) * ((hi - lo) / grid)
    inside = np.flatnonzero((centres >= v0) & (centres <= v1))
    if not len(inside):
        return 0, 0, np.empty(0, dtype=np.int64)
    first, stop = int(inside[0]), int(inside[-1]) + 1
    s, t = st
    pixel = np.minimum((centres[first:stop] * s + t).astype(np.int64), pixels - 1)
    return first, stop, np.maximum(pixel, 0)


class PyramidSource:
    """Answers the wide, unfiltered views of one store from its pyramids under ``root``.

    A column's pyramid is opened (memory-mapped) on its first use, and built when missing or
    stale: in a background thread at the lowest CPU priority by default, so the frames asked
    meanwhile (the first one included) aggregate from the rows without waiting. A pyramid that
    cannot be built (a read-only dataset) is not tried again; its views aggregate from the
    rows. A pyramid folder deleted while in use is built again.

    Parameters
    ----------
    store : the 2D store; held weakly, so a source kept beside a store does not keep it alive.
    root : the folder the store's pyramids live in (one folder per column).
    key : what identifies the store's data (default ``store.key``); a pyramid built under
        another key is rebuilt.
    background : build in a thread (True) or in the asking call (False: tests, benchmarks).
    max_bytes : byte budget of each pyramid (see :func:`build_pyramid`).
    min_cells : base cells a pixel must span per axis for a view to be answered.
    """

    def __init__(
        self,
        store: PointStore,
        root: Path,
        *,
        key: str | None = None,
        background: bool = True,
        max_bytes: int | None = None,
        min_cells: float = CELLS_PER_PIXEL,
    ):
        self._store = weakref.ref(store)
        self.root = Path(root)
        self.key = store.key if key is None else key
        self.background = background
        self.max_bytes = max_bytes
        self.min_cells = min_cells
        self._lock = threading.Lock()
        self._open: dict[str | None, Pyramid] = {}
        self._building: dict[str | None, threading.Thread] = {}
        self._failed: dict[str | None, str] = {}  #: column -> why its pyramid was not built

    def aggregate(self, view, width, height, *, mode, color_by, mask, hidden_codes):
        """The aggregate :meth:`Renderer.aggregate` would build, re-binned from the pyramid,
        or None (a filter, a numeric colouring, more categories than a stack takes, a view too
        narrow for the pyramid, or no pyramid yet)."""
        from .raster import MAX_STACKED_CATEGORIES

        store = self._store()
        if store is None or mask is not None:
            return None
        if mode == "density":
            column = None
        elif mode == "category" and color_by in store.categorical:
            if len(store.categories(color_by)) > MAX_STACKED_CATEGORIES:
                return None  # (count, top) with hidden categories: not counted per category
            column = color_by
        else:
            return None
        pyramid = self.pyramid(column)
        if pyramid is None:
            return None
        return pyramid.aggregate(view, width, height, min_cells=self.min_cells)

    def pyramid(self, column: str | None) -> Pyramid | None:
        """The opened pyramid of ``column`` (None: plain counts), or None while it is being
        built (a build starts here when it is missing or stale) or when it cannot be."""
        store = self._store()
        if store is None:
            return None
        with self._lock:
            found = self._open.get(column)
            if found is not None and (found.where / "meta.json").exists():
                return found
            self._open.pop(column, None)  # its folder was deleted: build it again
            building = self._building.get(column)
            if column in self._failed or (building is not None and building.is_alive()):
                return None  # (a thread of the process this one forked from is not alive here)
            where = _pyramid_dir(self.root, column)
            found = Pyramid.open(where, store=store, key=self.key, column=column)
            if found is not None:
                self._open[column] = found
                return found
            thread = threading.Thread(
                target=self._build,
                args=(store, column),
                kwargs={"low_priority": True},
                name=f"embviz-pyramid-{column}",
                daemon=True,
            )
            self._building[column] = thread  # other callers fall back meanwhile
        if not self.background:
            self._build(store, column)
            return self._open.get(column)
        thread.start()
        return None

    def failed(self, column: str | None) -> str | None:
        """Why the pyramid of ``column`` could not be built, or None."""
        return self._failed.get(column)

    def _build(self, store: PointStore, column: str | None, *, low_priority: bool = False):
        """Build, open and keep the pyramid of ``column`` (or record why it failed)."""
        if low_priority:
            # Linux threads have their own nice value: frames keep the CPU first.
            with contextlib.suppress(AttributeError, OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        found, why = None, ""
        try:
            found = self._build_or_wait(store, column)
        except (OSError, ValueError) as exc:
            why = str(exc)
            log.info("no pyramid of %s by %s (views aggregate the rows): %s", self.key, column, exc)
        except Exception as exc:  # in a server thread: say so, and keep serving from the rows
            why = repr(exc)
            log.exception("building the pyramid of %s by %s failed", self.key, column)
        with self._lock:
            self._building.pop(column, None)
            if found is None:
                self._failed[column] = why
            else:
                self._open[column] = found

    def _build_or_wait(self, store: PointStore, column: str | None) -> Pyramid:
        """The pyramid of ``column``, built here unless another process (a server with
        several) built it while this one waited for the build lock."""
        from .pyramid_build import build_lock

        where = _pyramid_dir(self.root, column)
        with build_lock(where):
            found = Pyramid.open(where, store=store, key=self.key, column=column)
            if found is None:
                build_pyramid(store, self.root, column, key=self.key, max_bytes=self.max_bytes)
                found = Pyramid.open(where, store=store, key=self.key, column=column)
        if found is None:
            raise OSError(f"{where}: the pyramid just built could not be read back")
        log.info(
            "pyramid of %s by %s ready (%s s to build)", self.key, column, found.meta["seconds"]
        )
        return found


def _pyramid_dir(root: Path, column: str | None) -> Path:
    from .pyramid_build import pyramid_dir

    return pyramid_dir(root, column)


#: The source of each store given a cache folder by :func:`attach` (weak: a dropped store goes).
_ATTACHED: weakref.WeakKeyDictionary[PointStore, PyramidSource] = weakref.WeakKeyDictionary()


def attach(store: PointStore, where: Path, *, key: str | None = None) -> PyramidSource:
    """Let every :class:`~embviz.render.raster.Renderer` of ``store`` (2D, at least
    ``MIN_POINTS`` points) answer wide views from pyramids under ``where / "pyramid"``, built
    in the background on first need; all renderers of the store share one source.

    ``key`` identifies the data (default ``store.key``): :func:`~embviz.render.store.load_store`
    passes the explorer cache folder's name (its tag names the data's versions), the same for
    the store it joins from the tables and the one it maps from that cache on the next start,
    whichever path the dataset was opened by.
    """
    source = PyramidSource(store, Path(where) / "pyramid", key=key)
    _ATTACHED[store] = source
    return source


def _source_for(store: PointStore) -> PyramidSource | None:
    source = _ATTACHED.get(store)
    if source is None or store.dims != 2 or store.n < MIN_POINTS:
        return None
    return source


register_source("pyramid", _source_for, priority=10)  # before remote sources (Dask)
