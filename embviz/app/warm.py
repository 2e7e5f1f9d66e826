"""Getting a server process ready before and beside its first sessions: loading the maps,
compiling the kernels and rendering the first frames (in a background thread, or before a
multi-process server forks)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["bound_dask", "freeze_startup", "preload", "warm_up"]

_LOCK = threading.Lock()
_STARTED: set[str] = set()  #: datasets warmed (or warming) in this process
_FROZEN: list[bool] = []  #: [True] once :func:`freeze_startup` ran in this process


def bound_dask() -> None:
    """Give Dask one thread pool of at most one thread per core for the whole server process.

    Frames do not use Dask (the maps are in memory); this bounds anything that does (a
    Datashader call on a Dask frame, a dataset read) so sessions cannot oversubscribe the CPU.
    """
    from concurrent.futures import ThreadPoolExecutor

    import dask

    if dask.config.get("pool", None) is None:
        workers = max(1, os.cpu_count() or 1)
        dask.config.set(scheduler="threads", pool=ThreadPoolExecutor(workers, "embviz-dask"))


def preload(datasets: list[str]) -> None:
    """Import the app, load every 2D map of ``datasets``, compile the kernels and render the
    first frames, in this thread: run before a multi-process server forks (``--num-procs``),
    so its processes share all of it instead of each holding a copy (measured in bench serve).
    No thread is left running and no event loop is made (forking keeps only this thread)."""
    from . import explorer  # noqa: F401 - imported for its modules (Panel, HoloViews, ...)

    for dataset in datasets:
        warm_up(dataset, background=False)
    freeze_startup()


def freeze_startup() -> None:
    """Leave everything alive now (modules, maps, compiled kernels) out of later collections.

    A server process holds ~540K objects before its first session (Panel, Bokeh, pandas, torch,
    ...); every full collection walked them all: 0.2-0.4 s holding the event loop each time
    (Panel collects after sessions close, :func:`embviz.app.server.release_memory` too),
    measured as the worst stalls under ``bench reliability``. Frozen, a full collection walks
    only what sessions made (~2 ms for 5 sessions). In a process that forks, a collection also
    wrote to every inherited object, copying the parent's pages into each child. The cost: a
    session open at this moment (a page that came before the warm-up got this far) keeps its
    objects after it closes; call this before pages come, once.
    """
    import gc

    with _LOCK:
        if _FROZEN:
            return
        _FROZEN.append(True)
    gc.collect()  # the imports' own garbage first: frozen objects are never freed
    gc.freeze()


def warm_up(dataset: str | Path, *, background: bool = True) -> None:
    """Load every 2D map of ``dataset`` and compile the kernels, before or beside the first session.

    With ``background`` (the default) everything runs in a daemon thread, so the first page is
    sent while the kernels compile (the browser loads its scripts meanwhile); the first map's
    full-view frame comes first, then the other maps and frame kinds (zoomed, numeric, density:
    each a separate Numba compilation).
    """
    import threading

    from embviz.dataset import open_dataset
    from embviz.render.raster import Renderer, Style
    from embviz.render.store import View, load_store

    from .session import projection_choices

    with _LOCK:  # once per dataset and process (the server's start and its first page ask)
        if str(dataset) in _STARTED:
            return
        _STARTED.add(str(dataset))
    ds = open_dataset(dataset)
    projections = [p for c in projection_choices(ds).values() for p in c.values()]

    def frames(projection: str, first_only: bool) -> None:
        store = load_store(ds, projection)
        r = Renderer(store, sources=[])  # the kernels of the rows' path
        e = store.extent
        cats = list(store.categorical)[:1]
        if first_only:
            if cats:
                r.render(e, 400, 300, mode="category", color_by=cats[0])
            return
        quarter = View(e.x0, (e.x0 + e.x1) / 2, e.y0, (e.y0 + e.y1) / 2)
        # A view so sparse that points are spread: the first spread imports (and compiles)
        # datashader.composite, ~4 s holding the GIL, which would stall every session.
        cx, cy, dx, dy = (e.x0 + e.x1) / 2, (e.y0 + e.y1) / 2, (e.x1 - e.x0), (e.y1 - e.y0)
        sparse = View(cx - dx / 1e4, cx + dx / 1e4, cy - dy / 1e4, cy + dy / 1e4)
        for view in (e, quarter, sparse):
            for col in cats:
                r.render(view, 400, 300, mode="category", color_by=col)
            for col in list(store.numeric)[:1]:
                r.render(view, 400, 300, mode="numeric", color_by=col)
            r.render(view, 400, 300, mode="density")
        r.render(e, 400, 300, mode="density", style=Style(point_size=1))

    def rest() -> None:
        for p in projections:
            try:
                frames(p, first_only=False)
            except Exception:  # warming is an optimisation: a session will report real errors
                import logging

                logging.getLogger(__name__).exception("warm-up of %s failed", p)

    def first_page() -> None:
        # The frame a new page opens on (default map, colouring and size), rendered once into
        # the frames every session shares: each page then goes out with its first frame.
        from .filters import summarize
        from .map_result import DEFAULT_SIZE
        from .session import Session

        s = Session(ds)
        mode, color_by, style = s.style()
        Renderer(s.store, shared_frames=True).render(
            s.store.extent, *DEFAULT_SIZE, mode=mode, color_by=color_by, style=style
        )
        summarize(s.store)  # the side column's filters: counted here, not on the event loop

    def everything() -> None:
        bound_dask()
        if projections:
            try:  # first: from the pyramid when one is kept (no Datashader compilation)
                first_page()
                frames(projections[0], first_only=True)
            except Exception:  # an optimisation: the session renders it (and says what is wrong)
                import logging

                logging.getLogger(__name__).exception("first frame of %s failed", dataset)
        # Not frozen here (only before a fork, in preload): with the freeze in this thread the
        # 3D-motion browser test failed 2 runs in 5, 0 in 4 without; cause not found yet.
        rest()

    if background:
        threading.Thread(target=everything, name="embviz-warm-up", daemon=True).start()
    else:
        everything()
