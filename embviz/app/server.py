"""Serve the explorer: the page for one dataset, for ``panel serve`` and for ``embviz serve``."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "URL_STATE",
    "clean_url_state",
    "dataset_keys",
    "explorer_page",
    "release_memory",
    "return_large_blocks",
]

#: Explorer parameters mirrored in the page URL (parameter -> query key), so a link reproduces
#: the view: projection, colouring, style, hidden classes, filters, zoom, the open sample and
#: the map mode (points or images, with the image cell size).
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
    "map_mode": "mode",
    "cell_px": "cell",
}


#: Longest value of one URL state key, in characters (a link never needs more).
MAX_URL_VALUE = 20_000


def _shape_ok(key: str, value) -> bool:
    """Whether a decoded URL state value has the shape its parameter needs (a page can send
    anything: NaN views, filters that are not lists, hidden entries that are not names)."""
    import math

    def finite(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if key == "view":
        return value == [] or (
            isinstance(value, list)
            and len(value) == 4
            and all(map(finite, value))
            and value[0] < value[1]
            and value[2] < value[3]
            and math.isfinite(value[1] - value[0])
            and math.isfinite(value[3] - value[2])
        )
    if key == "filter":
        return isinstance(value, dict) and all(
            isinstance(k, str)
            and isinstance(v, list)
            and all(isinstance(x, str) or finite(x) for x in v)
            for k, v in value.items()
        )
    if key == "hide":
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    if key == "sample":
        return finite(value) and value == int(value) and -1 <= value < 2**63
    if key in ("size", "opacity", "cell"):
        return finite(value)
    return isinstance(value, str)


def clean_url_state(location, session=None) -> None:
    """Drop from ``location``'s query string the URL state values that are malformed, over
    :data:`MAX_URL_VALUE` characters or of the wrong shape, before they reach the session.

    Panel applies a synced query in one update, so one bad value would silently drop the
    others; values of the right type but the wrong meaning (a NaN view) would reach the map.
    Dropped keys leave the default in place; the rest of the link still applies. With
    ``session`` (the :class:`~embviz.app.session.Session` synced), choices and numbers must
    also be among its parameter's objects and within its bounds.
    """
    import json
    from urllib.parse import urlencode

    query = location.query_params
    keep = {}
    for key, raw in query.items():
        if key not in URL_STATE.values():
            keep[key] = raw
            continue
        text = raw if isinstance(raw, str) else json.dumps(raw)
        if len(text) > MAX_URL_VALUE:
            continue
        try:
            value = json.loads(text) if key not in _PLAIN_KEYS else text
        except ValueError:
            continue
        if _shape_ok(key, value) and (session is None or _allowed(session, key, value)):
            keep[key] = text
    if keep != query:
        location.search = "?" + urlencode(keep) if keep else ""


def _allowed(session, key: str, value) -> bool:
    """Whether ``value`` is among the objects, or within the bounds, of the session's parameter."""
    import param

    name = next(p for p, k in URL_STATE.items() if k == key)
    par = session.param[name]
    if isinstance(par, param.Selector):
        return value in (par.objects or [])
    if isinstance(par, param.Number) and par.bounds and isinstance(value, int | float):
        lo, hi = par.bounds
        return (lo is None or value >= lo) and (hi is None or value <= hi)
    return True


#: URL state keys whose values are plain strings (not JSON).
_PLAIN_KEYS = frozenset({"projection", "color", "dims", "projection3d", "mode"})


def dataset_keys(datasets) -> dict[str, Path]:
    """URL key -> dataset path for the datasets a server was started with.

    A key is the folder's name made URL-safe (``-2``, ``-3`` ... for repeats): the ``dataset``
    query argument picks one of these keys, never a path, so a request cannot name a folder.
    """
    from embviz.dataset import slugify

    keys: dict[str, Path] = {}
    for d in datasets:
        path = Path(d)
        base = slugify(path.resolve().name).lower() or "dataset"
        key, n = base, 1
        while key in keys:
            n += 1
            key = f"{base}-{n}"
        keys[key] = path
    return keys


def _chosen(keys: dict[str, Path]) -> str:
    import panel as pn

    raw = (pn.state.session_args or {}).get("dataset") or [b""]
    wanted = raw[0].decode("utf-8", "replace") if isinstance(raw[0], bytes) else str(raw[0])
    return wanted if wanted in keys else next(iter(keys))


def _dataset_links(keys: dict[str, Path], current: str) -> str:
    import html
    from urllib.parse import quote

    if len(keys) < 2:
        return ""
    links = " · ".join(
        f"<b>{html.escape(k)}</b>"
        if k == current
        else f'<a href="?dataset={quote(k)}">{html.escape(k)}</a>'
        for k in keys
    )
    return f'<div class="embviz-datasets" style="font-size:13px">Datasets: {links}</div>'


def explorer_page(dataset: str | Path | list[str | Path], *, reports: str | Path | None = None):
    """The explorer page (a Panel template) for ``dataset``, its state synced with the URL.

    ``dataset``: one dataset, or several: the ``dataset`` query argument then picks one by its
    key (:func:`dataset_keys`), with links to the others. A dataset that cannot be opened (a
    corrupt manifest or Parquet file) gets a page saying what is wrong, and the others keep
    working. ``reports``: a report settings file (``config/reports.yaml``) whose schedule this
    server process runs (registered once per process, whichever session comes first).
    """
    import html

    import panel as pn

    from . import guard

    guard.install()  # also without the routes plugin: refused values are one log line

    from . import routes
    from .explorer import Explorer

    # Not "deckgl": the 3D view loads deck.gl into the page when it first opens (CloudPanel).
    pn.extension(sizing_mode="stretch_width")
    return_large_blocks()
    missing = routes.missing_message()  # served without --plugins embviz.app.routes
    if reports and _first_process():
        from .schedule import schedule_from_settings

        schedule_from_settings(reports)
    keys = dataset_keys(dataset if isinstance(dataset, list | tuple) else [dataset])
    key = _chosen(keys)
    links = _dataset_links(keys, key)
    # A link's map may be of any embedding: the session opens on it (the URL sync below
    # could only choose among the first embedding's maps).
    wanted = pn.state.location.query_params.get("projection") if pn.state.location else None
    first = {"projection": wanted} if isinstance(wanted, str) and len(wanted) < 500 else {}
    try:
        explorer = Explorer(keys[key], **first)
    except Exception as exc:  # a broken dataset must not take the server (or others) down
        import logging

        logging.getLogger(__name__).warning("dataset %s cannot be opened: %s", keys[key], exc)
        message = html.escape(f"{type(exc).__name__}: {exc}")
        return _template(
            title="embviz",
            main=[
                pn.pane.HTML(
                    f"{links}<h2>This dataset cannot be opened</h2>"
                    f'<pre class="embviz-error" style="white-space:pre-wrap">{message}</pre>'
                    "<p>Fix or rebuild it (e.g. re-run the step that wrote the file named "
                    "above); the server keeps serving the other datasets.</p>",
                    sizing_mode="stretch_width",
                )
            ],
        )
    doc = pn.state.curdoc
    if doc is not None and getattr(doc, "session_context", None) is not None:
        doc.on_session_destroyed(release_memory)
    if pn.state.location is not None:
        clean_url_state(pn.state.location, explorer.session)
        pn.state.location.sync(explorer.session, URL_STATE)
    header = [pn.pane.HTML(links, sizing_mode="stretch_width")] if links else []
    if missing:
        header.append(
            pn.pane.HTML(
                f'<div class="embviz-routes-missing" style="color:#b3261e">{html.escape(missing)}'
                "</div>",
                sizing_mode="stretch_width",
            )
        )
    # The page goes out with its map (and first frame); the side column and the sample
    # panels are built once it has loaded, so 25 people opening at once wait for maps only.
    side, below, fill = explorer.deferred()
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        from .fills import page_opened, request_fill

        page_opened()
        pn.state.onload(lambda: request_fill(doc, fill))
    else:
        fill()
    return _template(
        title=f"embviz · {explorer.session.dataset.name}",
        sidebar=[side],
        main=[*header, explorer.main(below)],
        sidebar_width=320,
    )


def _first_process() -> bool:
    """Whether this is the server's only process, or the first of its forked ones (the one
    that runs the report schedule)."""
    import tornado.process

    return tornado.process.task_id() in (None, 0)


def _template(**params):
    """The page around the explorer (or its error message); it loads nothing from other hosts."""
    import panel as pn
    from panel.theme.fast import Fast

    # Panel's Fast design links Google's Open Sans stylesheet into every page, so the page
    # waited on (and told) fonts.googleapis.com, and offline it fell back anyway. The same
    # design without that link, and the system's font. It keeps the class name "Fast": Panel
    # finds the design's bundled files (fast/js/fast_design.js) by it.
    design = pn.state.as_cached(
        "embviz-fast-design",
        lambda: type(
            "Fast",
            (Fast,),
            {"_resources": {k: v for k, v in Fast._resources.items() if k != "font"}},
        ),
    )
    # No header spinner: Panel drives every page's spinner from one process-wide "busy" flag,
    # so it spun in everyone's page whenever anyone panned, and each pan updated every open
    # page (25 sessions: the event loop saturated, p50 frame 4 s). The status line is per map.
    template = pn.state.as_cached("embviz-page-template", _frozen_template)
    return template(busy_indicator=None, design=design, font="system-ui, sans-serif", **params)


def _frozen_template():
    """FastListTemplate whose document is built with Bokeh's model index frozen.

    Building the page adds its roots one by one, and Bokeh re-walks every model of the
    document after each (seven walks a page, each reading every property's default): measured
    60-130 ms of the 250-300 ms a page's template costs, on the event loop that every session
    of the process shares. Frozen, the index is computed once when the page is complete. The
    class keeps its name: Panel finds a template's bundled files by it.
    """
    import panel as pn
    from panel.template import FastListTemplate

    def _init_doc(self, doc=None, *args, **kwargs):
        document = doc or pn.state.curdoc
        if document is None:
            return FastListTemplate._init_doc(self, doc, *args, **kwargs)
        with document.models.freeze():
            return FastListTemplate._init_doc(self, document, *args, **kwargs)

    return type("FastListTemplate", (FastListTemplate,), {"_init_doc": _init_doc})


#: Seconds after a session closes before its memory is collected: sessions that close together
#: (Bokeh discards every expired session in one pass) share one collection.
RELEASE_DELAY = 2.0
#: Seconds at least between two collections: a full collection holds the event loop (and with
#: it every session's frames) for 0.1-0.4 s, and pages opened and closed every 2 s had it
#: running every 2 s (a fifth of the loop's time in ``bench reliability``).
COLLECT_GAP = 30.0
_release_due = False
_collected_at = float("-inf")


def release_memory(*_args) -> None:
    """Collect closed sessions' objects and hand freed heap pages back to the OS, once for all
    the sessions that closed within :data:`RELEASE_DELAY` seconds, and at most once every
    :data:`COLLECT_GAP` seconds.

    glibc keeps freed blocks in its arenas, so without ``malloc_trim`` a server's resident
    memory stays at its high-water mark after sessions close (measured: 5 sessions of a
    200K-point map, 115 MB that never came back; with it, all of it). One full collection per
    closed session stalled the event loop: Bokeh discards every expired session in one pass,
    and 25 collections in a row held everyone's frames for 7 s (tests/test_hostile_session.py).
    No-op off glibc.
    """
    global _release_due
    if _release_due:
        return
    import asyncio
    import time

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no event loop (a script): collect now
        _collect()
        return
    _release_due = True
    wait = max(RELEASE_DELAY, _collected_at + COLLECT_GAP - time.monotonic())
    loop.call_later(wait, _collect)


def _collect() -> None:
    import contextlib
    import ctypes
    import gc
    import time

    global _release_due, _collected_at
    _release_due = False
    gc.collect()
    _collected_at = time.monotonic()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


#: Blocks at least this big are mapped from the OS and returned to it as soon as they are freed.
LARGE_BLOCK = 4 * 2**20


def return_large_blocks(threshold: int = LARGE_BLOCK) -> None:
    """Serve every allocation of ``threshold`` bytes or more straight from the OS (glibc only).

    glibc raises its mmap threshold after the first large block is freed (up to 32 MB), so the
    working arrays of a frame (gathered coordinates, a second aggregate, up to ~100 MB at 10M
    points per render thread) then come from the thread's heap arena and stay resident after
    the frame: the server's memory sits at its high-water mark. A fixed threshold keeps large
    arrays out of the arenas, so memory follows what the sessions hold. No-op off glibc.
    """
    import contextlib
    import ctypes

    m_mmap_threshold = -3  # mallopt's parameter number, from glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, int(threshold))
