"""Frames aggregated on a Dask cluster: Datashader over a store's partitions persisted there.

``embviz serve --scheduler ADDRESS`` calls :func:`use_scheduler`, which registers a
:class:`DaskSources` factory (:func:`~embviz.render.sources.register_source`). For each store
with an explorer cache (:mod:`embviz.render.cache`) it persists a Dask dataframe whose
partitions are groups of the store's curve-ordered chunks, read by the workers from the cache's
``.npy`` files (memory-mapped: the dataset folder must be readable at the same path on every
worker). A frame aggregates only the partitions whose chunks meet the view, each with
Datashader on its worker (the renderer's own reductions), sums them in a tree on the workers
(the many-category top code: max) and brings one aggregate back: the object the local path
builds, so the frame is identical (counts exactly; numeric means up to float64 rounding, as
partial sums add up in another order). A lost worker costs a re-read of its partitions. Not
``Canvas.points`` on the Dask dataframe: Datashader computes that with Dask's global scheduler
setting, which the server points at its own thread pool (``embviz.app.server``).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .raster import GATHER_LIMIT, MAX_STACKED_CATEGORIES
from .sources import register_source
from .store import PointStore, View

__all__ = ["DEFAULT_PARTITION_ROWS", "DaskSource", "DaskSources", "cache_of", "use_scheduler"]

log = logging.getLogger(__name__)

#: Rows per persisted partition (whole chunks): few tasks for a full view, few partitions read
#: for a zoomed one, and a lost one is re-read in about a second.
DEFAULT_PARTITION_ROWS = 4_000_000
#: Aggregates summed per task of the reduction tree (each a frame-sized array on the wire).
SPLIT_EVERY = 4
#: Seconds frames are rendered here after the cluster failed one (not a timeout every frame).
RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class _Task:
    """What one partition aggregates; sent to the worker holding it."""

    view: View
    width: int
    height: int
    kind: str  # "stacked" (count_cat), "top" (count, max code), "numeric", "density"
    column: str | None  # the partition's column ("cat.label", "num.score")
    categories: int
    hide: tuple[int, ...]
    runs: tuple[tuple[int, int], ...] | None = None  # rows of the partition in view; None: all


def _read_partition(
    rows: tuple[int, int], *, where: str, categories: dict[str, list[str]], numeric: list[str]
):
    """Rows ``[start, stop)`` of the explorer cache at ``where`` as a DataFrame (on a worker):
    x, y, ``cat.NAME`` as a Categorical of the store's names, ``num.NAME``."""
    import pandas as pd

    def load(name: str) -> np.ndarray:
        return np.array(np.load(f"{where}/{name}.npy", mmap_mode="r")[slice(*rows)])

    data: dict[str, Any] = {"x": load("x"), "y": load("y")}
    for name, names in categories.items():
        data[f"cat.{name}"] = pd.Categorical.from_codes(load(f"cat.{name}"), names, validate=False)
    data |= {f"num.{name}": load(f"num.{name}") for name in numeric}
    return pd.DataFrame(data, copy=False)


def _aggregate_partition(part, task: _Task):
    """Datashader's aggregate of one partition's rows in ``task.view`` (on a worker): the
    reductions :meth:`Renderer.aggregate` runs, with a mean split into its sum and count."""
    import datashader as dsh
    import pandas as pd

    def take(values: np.ndarray) -> np.ndarray:
        return values if task.runs is None else PointStore.gather(values, list(task.runs))

    v = task.view
    x, y = take(part["x"].to_numpy()), take(part["y"].to_numpy())
    canvas = dsh.Canvas(task.width, task.height, x_range=(v.x0, v.x1), y_range=(v.y0, v.y1))
    data: dict[str, Any] = {"x": x, "y": y}
    if task.kind == "stacked":
        c = part[task.column]
        data["c"] = pd.Categorical.from_codes(take(c.cat.codes.to_numpy()), dtype=c.dtype)
        return canvas.points(pd.DataFrame(data, copy=False), "x", "y", dsh.count_cat("c"))
    if task.kind == "top":
        codes = take(part[task.column].cat.codes.to_numpy())
        counts = np.bincount(codes[v.contains(x, y)], minlength=task.categories)
        if task.hide:
            keep = ~np.isin(codes, np.array(task.hide, dtype=codes.dtype))
            x, y, codes = x[keep], y[keep], codes[keep]
        frame = pd.DataFrame({"x": x, "y": y, "c": codes.astype(np.float32)}, copy=False)
        agg = canvas.points(frame, "x", "y", dsh.summary(n=dsh.count(), top=dsh.max("c")))
        agg.attrs["counts"] = counts
        return agg
    if task.kind == "numeric":
        data["v"] = take(part[task.column].to_numpy())
        summary = dsh.summary(n=dsh.count(), k=dsh.count("v"), s=dsh.sum("v"))
        agg = canvas.points(pd.DataFrame(data, copy=False), "x", "y", summary)
        # Datashader's mean sums from zero; its sum starts empty pixels at NaN (0 + v == v).
        agg["s"].data[np.isnan(agg["s"].data)] = 0.0
        return agg
    return canvas.points(pd.DataFrame(data, copy=False), "x", "y", dsh.count())


def _combine(*aggs):
    """The sum of partition aggregates (the top code: their max), on a worker; inputs are
    left as they are (a retried task may read them again)."""
    import xarray as xr

    out = aggs[0].copy(deep=True)
    for other in aggs[1:]:
        pairs = (
            [(out, other)] if isinstance(out, xr.DataArray) else [(out[k], other[k]) for k in out]
        )
        for a, b in pairs:
            (np.fmax if a.name == "top" else np.add)(a.data, b.data, out=a.data)
        if "counts" in out.attrs:
            out.attrs["counts"] = out.attrs["counts"] + other.attrs["counts"]
    return out


def _finish(agg, kind: str):
    """The renderer's aggregate from the summed one: a numeric mean from its sum and count."""
    if kind != "numeric":
        return agg
    n, k, s = agg["n"], agg["k"].data, agg["s"].data
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(k > 0, s / k, np.nan)  # Datashader's own mean finalisation
    return agg[["n"]].assign(v=(n.dims, mean, dict(n.attrs)))


def cache_of(store: PointStore) -> Path | None:
    """The explorer cache folder (absolute) holding ``store``'s columns, or None.

    A store mapped from its cache names the folder; one loaded from the tables (the first start,
    before the cache existed) names ``dataset:table``, whose cache folder is looked up. The
    folder is used only when its rows and chunk bounds are the store's. None for a store built
    from arrays, a 3D store, or when the cache could not be written (read-only dataset).
    """
    from .cache import cache_dir

    if store.dims != 2 or not store.n:
        return None
    where = Path(store.key)
    if not (where / "meta.json").is_file():
        root, sep, table = store.key.rpartition(":")
        if not sep or not Path(root).is_dir():
            return None
        from embviz.dataset import open_dataset
        from embviz.errors import EmbvizError

        try:
            ds = open_dataset(Path(root), check_files=False)
            named = [p for p in ds.projections if ds.table(f"projections/{p}")["dir"] == table]
            where = cache_dir(ds, named[0], 2)
        except (EmbvizError, OSError, KeyError, IndexError):
            return None
    try:
        meta = json.loads((where / "meta.json").read_text())
        rows = np.load(where / "x.npy", mmap_mode="r").shape[0]
        same = meta["chunk_rows"] == store.chunk_rows and rows == store.n
        same = same and np.array_equal(np.load(where / "bounds.npy"), store.bounds)
    except (OSError, ValueError, KeyError):
        return None
    return where.resolve() if same else None


@dataclass(eq=False)
class _Partitions:
    """One store's partitions persisted on the cluster (alive while this object is)."""

    where: Path
    frame: Any  #: the persisted Dask dataframe
    futures: list  #: its partitions' futures, in row order
    rows: int  #: rows per partition (the last may hold fewer)
    bounds: np.ndarray  #: ``(partitions, 4)``: each partition's x/y bounds
    categories: dict[str, list[str]]
    numeric: list[str]
    answered: bool = False  #: whether a frame came from them yet (logged once)


def _persist(client, where: Path, store: PointStore, partition_rows: int) -> _Partitions:
    """The store's cache at ``where`` as a Dask dataframe of whole chunks, persisted."""
    import dask.dataframe as dd
    from distributed import futures_of

    meta = json.loads((where / "meta.json").read_text())
    columns = {"categories": meta["categories"], "numeric": list(meta["numeric"])}
    chunks = max(1, round(partition_rows / store.chunk_rows))
    rows = chunks * store.chunk_rows
    starts = range(0, store.n, rows)
    first = np.arange(0, len(store.bounds), chunks)
    lo, hi = np.minimum.reduceat(store.bounds, first), np.maximum.reduceat(store.bounds, first)
    ranges = [(a, min(a + rows, store.n)) for a in starts]
    options = {"where": str(where), "label": "embviz-partition", **columns}
    empty = _read_partition((0, 0), where=str(where), **columns)
    frame = dd.from_map(_read_partition, ranges, meta=empty, **options)
    # Optimised before persisting: dask-expr renames an expression as it optimises it, and the
    # futures must be those of the graph that runs.
    frame = client.persist(frame.optimize())
    futures = sorted(futures_of(frame), key=lambda f: f.key[1])
    assert len(futures) == len(starts), f"{len(futures)} futures for {len(starts)} partitions"
    bounds = np.column_stack([lo[:, 0], hi[:, 1], lo[:, 2], hi[:, 3]])
    return _Partitions(where, frame, futures, rows, bounds, **columns)


class DaskSource:
    """Answers a store's aggregates from its partitions persisted on a Dask cluster.

    Returns None (the renderer then aggregates locally) for a filter mask, a column the cache
    does not hold (live tags), a view with no points, and when the cluster fails or takes
    longer than ``timeout`` seconds (logged once).
    """

    def __init__(self, client, store: PointStore, parts: _Partitions, *, timeout: float):
        self.client = client
        self.store = store
        self.parts = parts
        self.timeout = timeout
        #: partitions the last answered aggregate read (the others were pruned by their bounds)
        self.last_partitions = 0
        self._failed_at = -RETRY_SECONDS

    def _task(self, view: View, width: int, height: int, mode: str, color_by):
        """The partition task of an aggregate, or None when the cache cannot answer it."""
        kind, column, k = mode, None, 0
        if mode == "category":
            names = self.parts.categories.get(color_by)
            if names is None or names != self.store.categories(color_by):
                return None  # a column only this process has (live tags)
            kind = "stacked" if len(names) <= MAX_STACKED_CATEGORIES else "top"
            column, k = f"cat.{color_by}", len(names)
        elif mode == "numeric":
            if color_by not in self.parts.numeric:
                return None
            column = f"num.{color_by}"
        return _Task(view, width, height, kind, column, k, ())

    def _runs(self, view: View) -> dict[int, tuple[tuple[int, int], ...] | None]:
        """``{partition: rows of it that may lie in view}`` (None: most of it, read whole)."""
        size, n = self.parts.rows, self.store.n
        found: dict[int, list[tuple[int, int]]] = {}
        for a, b in self.store.runs(view):
            for p in range(a // size, (b - 1) // size + 1):
                lo = p * size
                found.setdefault(p, []).append((max(a, lo) - lo, min(b, lo + size) - lo))
        out: dict[int, tuple[tuple[int, int], ...] | None] = {}
        for p, runs in found.items():
            whole = min(size, n - p * size)
            out[p] = None if sum(b - a for a, b in runs) > GATHER_LIMIT * whole else tuple(runs)
        return out

    def aggregate(self, view: View, width, height, *, mode, color_by, mask, hidden_codes):
        """The aggregate :meth:`Renderer.aggregate` would build, computed on the cluster, or
        None (:class:`~embviz.render.sources.AggregateSource`, whose parameters these are)."""
        if time.monotonic() - self._failed_at < RETRY_SECONDS:
            return None
        task = None if mask is not None else self._task(view, width, height, mode, color_by)
        runs = self._runs(view) if task is not None else {}
        if not runs:
            return None
        task = replace(task, hide=tuple(hidden_codes))  # type: ignore[arg-type]
        key = f"embviz-%s-{uuid.uuid4().hex}-%d"  # a frame's own keys: never an older result
        futures, submit, sums = self.parts.futures, self.client.submit, itertools.count()
        aggs = [
            submit(_aggregate_partition, futures[p], replace(task, runs=r), key=key % ("agg", p))
            for p, r in runs.items()
        ]
        while len(aggs) > 1:
            groups = [aggs[i : i + SPLIT_EVERY] for i in range(0, len(aggs), SPLIT_EVERY)]
            aggs = [submit(_combine, *g, key=key % ("sum", next(sums))) for g in groups]
        try:
            agg = aggs[0].result(timeout=self.timeout)
        except Exception as exc:  # the cluster is gone, a worker cannot read the files ...
            aggs[0].cancel()
            self._failed_at = time.monotonic()
            log.warning("%s failed (%r): rendering here for %.0f s", self, exc, RETRY_SECONDS)
            return None
        self.last_partitions = len(runs)
        if not self.parts.answered:
            self.parts.answered = True
            log.info("first frame of %s from the Dask cluster", self.parts.where)
        return _finish(agg, task.kind)

    def __repr__(self) -> str:
        return f"DaskSource({self.parts.where}, {len(self.parts.futures)} partitions)"


class DaskSources:
    """The factory :func:`register_source` calls with each new renderer's store.

    Parameters
    ----------
    scheduler : a scheduler address (``tcp://host:8786``; connected on first use, in the
        process that renders) or a ``distributed.Client``.
    partition_rows : rows per persisted partition (rounded to whole chunks).
    timeout : seconds a frame waits for the cluster before it is rendered here instead.
    keep : stores whose partitions stay persisted while no renderer uses them (least recently
        asked for go first), so a rebuilt projection does not pin the old one on the cluster.
    """

    def __init__(
        self,
        scheduler,
        *,
        partition_rows: int = DEFAULT_PARTITION_ROWS,
        timeout: float = 120.0,
        keep: int = 4,
    ):
        self.scheduler = scheduler
        self.partition_rows = partition_rows
        self.timeout = timeout
        self.keep = keep
        self._client = None if isinstance(scheduler, str) else scheduler
        self._own = self._broken = False
        self._lock = threading.Lock()
        self._parts: OrderedDict[Path, _Partitions] = OrderedDict()
        self._where = weakref.WeakKeyDictionary()  # store -> its cache folder, looked up once

    def _connect(self):
        """The client, connected on first use (in a forked server process: its own). Not the
        default client: the server's own Dask work stays on its thread pool."""
        if self._client is None and not self._broken:
            from distributed import Client

            try:
                self._client = Client(self.scheduler, set_as_default=False, timeout=30)
                self._own = True
            except OSError as exc:
                self._broken = True
                log.error("no Dask scheduler at %s (%s): rendering here", self.scheduler, exc)
        return self._client

    def __call__(self, store: PointStore) -> DaskSource | None:
        """A source for ``store`` over its persisted partitions (persisted on first use), or
        None when its columns are not in an explorer cache the workers can read."""
        with self._lock:
            if store not in self._where:
                self._where[store] = cache_of(store)
                if self._where[store] is None:
                    log.info("%s has no explorer cache: its frames are rendered here", store.key)
            where = self._where[store]
            client = None if where is None else self._connect()
            if client is None:
                return None
            parts = self._parts.get(where)
            if parts is None:
                parts = self._parts[where] = _persist(client, where, store, self.partition_rows)
                workers = len(client.scheduler_info().get("workers", {}))
                at = f"{client.scheduler.address} ({workers} workers)"
                log.info("rendering %s on the Dask cluster at %s: %d partitions of %d rows",
                         where, at, len(parts.futures), parts.rows)  # fmt: skip
            self._parts.move_to_end(where)
            while len(self._parts) > self.keep:
                self._parts.popitem(last=False)
        return DaskSource(client, store, parts, timeout=self.timeout)

    def close(self) -> None:
        """Forget the persisted partitions and close the client this factory connected."""
        with self._lock:
            self._parts.clear()
            if self._own:  # a client given to it stays open, and stays its client
                self._client.close()
                self._client, self._own = None, False


_ACTIVE: DaskSources | None = None
_ACTIVE_LOCK = threading.Lock()


def use_scheduler(scheduler, **options) -> DaskSources | None:
    """Render on the Dask cluster at ``scheduler`` from now on in this process (None: stop).

    Registers a :class:`DaskSources` (``options``: its keyword arguments) as the ``"dask"``
    aggregate source, so every renderer built afterwards asks it first; calling again with the
    same scheduler returns the one already registered (once per process, whatever calls it).
    """
    global _ACTIVE
    with _ACTIVE_LOCK:
        if _ACTIVE is not None and scheduler is not None and _ACTIVE.scheduler == scheduler:
            return _ACTIVE
        if _ACTIVE is not None:
            _ACTIVE.close()
        _ACTIVE = None if scheduler is None else DaskSources(scheduler, **options)
        register_source("dask", _ACTIVE)
        return _ACTIVE
