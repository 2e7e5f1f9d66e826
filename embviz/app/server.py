"""Serve the explorer: the page for one dataset, for ``panel serve`` and for ``embviz serve``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["URL_STATE", "bound_dask", "explorer_page", "serve", "warm_up"]

#: Explorer parameters mirrored in the page URL (parameter -> query key), so a link reproduces
#: the view: projection, colouring, style, hidden classes, filters, zoom and the open sample.
URL_STATE = {
    "projection": "projection",
    "color_by": "color",
    "point_size": "size",
    "opacity": "opacity",
    "hidden": "hide",
    "filters": "filter",
    "view": "view",
    "detail": "sample",
    "dims": "dims",
    "projection3d": "projection3d",
}


def explorer_page(dataset: str | Path, *, reports: str | Path | None = None):
    """The explorer page (a Panel template) for ``dataset``, its state synced with the URL.

    ``reports``: a report settings file (``config/reports.yaml``) whose schedule this server
    process runs (registered once per process, whichever session comes first).
    """
    import panel as pn

    from . import routes
    from .explorer import Explorer

    pn.extension("deckgl", sizing_mode="stretch_width")
    routes.install()  # `panel serve` without --plugins: add the image routes to this server
    if reports:
        from .schedule import schedule_from_settings

        schedule_from_settings(reports)
    explorer = Explorer(dataset)
    doc = pn.state.curdoc
    if doc is not None and getattr(doc, "session_context", None) is not None:
        doc.on_session_destroyed(release_memory)
    if pn.state.location is not None:
        pn.state.location.sync(explorer, URL_STATE)
    return pn.template.FastListTemplate(
        title=f"embviz · {explorer._ds.name}",
        sidebar=[explorer.sidebar()],
        main=[explorer.main()],
        sidebar_width=320,
    )


def release_memory(*_args) -> None:
    """Collect a closed session's objects and hand freed heap pages back to the OS.

    glibc keeps freed blocks in its arenas, so without ``malloc_trim`` a server's resident
    memory stays at its high-water mark after sessions close (measured: 5 sessions of a
    200K-point map, 115 MB that never came back; with it, all of it). No-op off glibc.
    """
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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


def warm_up(dataset: str | Path, *, background: bool = True) -> None:
    """Load every 2D map of ``dataset`` and compile the kernels, before or beside the first session.

    With ``background`` (the default) everything runs in a daemon thread, so the first page is
    sent while the kernels compile (the browser loads its scripts meanwhile); the first map's
    full-view frame comes first, then the other maps and frame kinds (zoomed, numeric, density:
    each a separate Numba compilation).
    """
    import threading

    from embviz.dataset import open_dataset

    from .explorer import projection_choices
    from .raster import Renderer
    from .store import View, load_store

    ds = open_dataset(dataset)
    projections = [p for c in projection_choices(ds).values() for p in c.values()]

    def frames(projection: str, first_only: bool) -> None:
        store = load_store(ds.root, projection)
        r = Renderer(store)
        e = store.extent
        cats = list(store.categorical)[:1]
        if first_only:
            if cats:
                r.render(e, 400, 300, mode="category", color_by=cats[0])
            return
        quarter = View(e.x0, (e.x0 + e.x1) / 2, e.y0, (e.y0 + e.y1) / 2)
        for view in (e, quarter):
            for col in cats:
                r.render(view, 400, 300, mode="category", color_by=col)
            for col in list(store.numeric)[:1]:
                r.render(view, 400, 300, mode="numeric", color_by=col)
            r.render(view, 400, 300, mode="density")

    def rest() -> None:
        for p in projections:
            try:
                frames(p, first_only=False)
            except Exception:  # warming is an optimisation: a session will report real errors
                import logging

                logging.getLogger(__name__).exception("warm-up of %s failed", p)

    def everything() -> None:
        bound_dask()
        if projections:
            frames(projections[0], first_only=True)
        rest()

    if background:
        threading.Thread(target=everything, name="embviz-warm-up", daemon=True).start()
    else:
        everything()


def serve(
    dataset: str | Path,
    *,
    port: int = 5006,
    address: str = "localhost",
    show: bool = False,
    reports: str | Path | None = None,
) -> None:
    """Serve the explorer for ``dataset`` at ``http://address:port/explorer`` until interrupted.

    ``reports``: a report settings file; its schedule runs in this server process.
    """
    import panel as pn

    from . import routes

    warm_up(dataset)  # fails now, with the dataset's own message, rather than per session
    if reports:
        from embviz.config import load_report_settings

        load_report_settings(reports)  # a bad settings file fails now, naming the key
    pn.serve(
        {"explorer": lambda: explorer_page(dataset, reports=reports)},
        port=port,
        address=address,
        show=show,
        websocket_origin=[f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"],
        extra_patterns=routes.extra_patterns(),
        title="embviz",
    )
