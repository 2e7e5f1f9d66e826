"""Notebook entry points: the explorer, a HoloViews element of a 2D map, a pydeck Deck of a 3D one.

``embviz.explore``, ``embviz.points`` and ``embviz.deck`` load this module on first use (module
``__getattr__`` in ``embviz/__init__.py``), so ``import embviz`` stays cheap and the library never
imports the app. All three read the process-wide point stores the server shares
(:func:`embviz.render.store.load_store`), so a notebook next to a running app loads nothing twice.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embviz.dataset import Dataset, open_dataset
from embviz.errors import DatasetError
from embviz.render.sample3d import DEFAULT_BUDGET

if TYPE_CHECKING:
    import holoviews as hv
    import pydeck

    from .explorer import Explorer

__all__ = ["DECK_SIZE", "HOVER_LIMIT", "NOTEBOOK_BUDGET_3D", "deck", "explore", "points"]

#: Points in view at or under which :func:`points` overlays them as hoverable glyphs: a few
#: thousand draw at once in Bokeh; more would send megabytes per pan for tooltips no one reads.
HOVER_LIMIT = 5_000
#: Most points the explorer's 3D view sends per update in a notebook (a server's sends 250,000):
#: updates go over the kernel's comm, about 15 bytes a point.
NOTEBOOK_BUDGET_3D = 50_000
#: The canvas :func:`deck` assumes when it turns a ``view_state`` into the box it samples:
#: deck.gl's width in a notebook cell (pydeck draws 100 % wide) and pydeck's default height.
DECK_SIZE = (900, 500)


def explore(ds: Dataset | str | Path, **params) -> Explorer:
    """The full explorer of a dataset (a Panel component): display it in Jupyter, or serve it.

    Parameters
    ----------
    ds : an open :class:`~embviz.dataset.Dataset` or its directory.
    params : the session's parameters (``projection``, ``color_by``, ``filters`` ...). Two
        differ from a server's: ``images="inline"`` (thumbnails and images travel inside the
        data as data URIs, within the frame budget: Jupyter's server has no image routes) and
        ``budget3d=NOTEBOOK_BUDGET_3D`` (every 3D update crosses the kernel's comm).

    Returns the :class:`~embviz.app.explorer.Explorer`; ``selected``, ``select(ids)`` and
    its ``session`` (``session.filters``, ``session.color_by`` ...) work from Python. In a
    Jupyter kernel it first loads Panel into the notebook with every script inline (no CDN:
    :func:`~embviz.app.jupyter.setup_notebook`); do not call ``pn.extension`` yourself.
    """
    from .explorer import Explorer
    from .jupyter import setup_notebook

    setup_notebook()
    params = {"images": "inline", "budget3d": NOTEBOOK_BUDGET_3D, **params}
    return Explorer(_open(ds), **params)


def points(
    ds: Dataset | str | Path,
    projection: str | None = None,
    *,
    color_by: str | None = None,
    hover_limit: int = HOVER_LIMIT,
    **opts,
) -> hv.DynamicMap:
    """A 2D projection as a HoloViews element: Datashader's picture, plus hover once zoomed in.

    Parameters
    ----------
    ds : an open :class:`~embviz.dataset.Dataset` or its directory.
    projection : a 2D projection's name; default: the one the explorer opens with.
    color_by : a category column (one colour per category, the explorer's colours, counted
        with ``count_cat``), a numeric column (mean per pixel on viridis), or None (density).
    hover_limit : once the view holds at most this many points they are overlaid as
        invisible glyphs whose tooltip gives the id (and ``color_by``); above it, none.
    opts : HoloViews plot options for the result (``width=800, height=600`` ...).

    Returns a ``DynamicMap`` of an overlay: ``dynspread(datashade(points))`` with the hover
    points on top, re-aggregated on every pan or zoom (a live kernel is needed for that, as
    for any Datashader plot). Overlay it (``*``) or lay it out (``+``) like any element; the
    axes' ranges are the projection's stored bounds.
    """
    import datashader as dsh
    import holoviews as hv
    import pandas as pd
    from holoviews.operation.datashader import datashade, dynspread
    from holoviews.streams import RangeXY

    from embviz.render.colors import category_colors, palette
    from embviz.render.store import load_store

    from .jupyter import setup_notebook

    setup_notebook(holoviews=True)
    ds = _open(ds)
    store = load_store(ds, projection or _default_projection(ds, 2))
    e = store.extent
    kdims = [hv.Dimension("x", range=(e.x0, e.x1)), hv.Dimension("y", range=(e.y0, e.y1))]
    columns: dict = {"x": store.x, "y": store.y}
    if color_by is None:
        shade = {"cmap": palette("fire")[40:]}  # the palest tenth of fire vanishes on white
    elif color_by in store.categorical:
        codes, names = store.categorical[color_by]
        columns[color_by] = pd.Categorical.from_codes(codes, names)
        key = dict(zip(names, category_colors(len(names)), strict=True))
        shade = {"aggregator": dsh.count_cat(color_by), "color_key": key}
    elif color_by in store.numeric:
        columns[color_by] = store.numeric[color_by]
        shade = {"aggregator": dsh.mean(color_by), "cmap": palette("viridis")}
    else:
        raise ValueError(
            f"{ds.root}: no column {color_by!r} to colour by; "
            f"use one of {sorted([*store.categorical, *store.numeric])} or None"
        )
    element = hv.Points(pd.DataFrame(columns), kdims, [c for c in columns if c not in ("x", "y")])
    shaded = dynspread(datashade(element, **shade), threshold=0.5, max_px=4)
    hover = hv.DynamicMap(
        partial(_hover_points, store, kdims, color_by, hover_limit), streams=[RangeXY()]
    )
    return (shaded * hover).opts(**opts) if opts else shaded * hover


def _hover_points(store, kdims, color_by, limit, x_range=None, y_range=None) -> hv.Points:
    """The points in view as invisible hoverable glyphs, or none when there are over ``limit``."""
    import holoviews as hv
    import pandas as pd

    from embviz.render.store import View

    e = store.extent
    x0, x1 = x_range or (e.x0, e.x1)
    y0, y1 = y_range or (e.y0, e.y1)
    rows = store.rows_in(View(float(x0), float(x1), float(y0), float(y1)))
    if len(rows) > limit:
        rows = rows[:0]
    frame = pd.DataFrame({"x": store.x[rows], "y": store.y[rows], "id": store.ids[rows]})
    tips = [("id", "@id")]
    if color_by in store.categorical:
        codes, names = store.categorical[color_by]
        frame[color_by] = np.asarray(names, dtype=object)[codes[rows]]
    elif color_by in store.numeric:
        frame[color_by] = store.numeric[color_by][rows]
    if color_by is not None:
        tips.append((color_by, f"@{{{color_by}}}"))
    return hv.Points(frame, kdims, [c for c in frame.columns if c not in ("x", "y")]).opts(
        tools=["hover"],
        hover_tooltips=tips,
        size=7,
        alpha=0,  # Datashader draws the points; these only answer the hover
        hover_alpha=0.9,
        hover_color="black",
    )


def deck(
    ds: Dataset | str | Path,
    projection3d: str | None = None,
    *,
    color_by: str | None = None,
    budget: int = DEFAULT_BUDGET,
    view_state: dict | None = None,
    point_px: float = 2.0,
) -> pydeck.Deck:
    """A 3D projection as a :class:`pydeck.Deck`: the points a view would get, in deck.gl.

    Parameters
    ----------
    ds : an open :class:`~embviz.dataset.Dataset` or its directory.
    projection3d : a 3D projection's name; default: the one the explorer's 3D view opens with.
    color_by : a category column (the explorer's colours), a numeric column (viridis,
        1st to 99th percentile), or None (one colour).
    budget : most points in the Deck. pydeck stores them as JSON records (it has no binary
        path for HTML): about 90 bytes a point in a ``to_html`` file (23 MB for 250K points)
        and twice that in the notebook's output, where the page is escaped into an iframe.
    view_state : an ``OrbitView`` state (``target``, ``zoom``, as the explorer's 3D view
        reports it): the Deck opens there and holds the points inside that view (all of them
        when they fit the budget, else a density-keeping sample). None: the whole cloud.
    point_px : point size in pixels.

    Returns a ``pydeck.Deck`` (a ``PointCloudLayer`` in an ``OrbitView``, cartesian
    coordinates, no base map); a notebook shows it inline, and ``deck.to_html(path)`` writes a
    standalone page. The notebook's copy inlines pydeck's bundled deck.gl (about 4 MB, no
    request to another host); ``to_html(path)`` loads it from a CDN (jsDelivr), for a small
    page to share, and ``to_html(path, offline=True)`` inlines it and links nothing on
    another host. The tooltip shows each point's id (and ``color_by``).
    """
    import pandas as pd

    from embviz.render.sample3d import box_from_view_state, sample
    from embviz.render.store import load_store

    from .cloud_view import cloud_deck, fit_view

    ds = _open(ds)
    store = load_store(ds, projection3d or _default_projection(ds, 3), dims=3)
    box = box_from_view_state(view_state, *DECK_SIZE, store.extent) if view_state else None
    rows = sample(store, box, budget)
    rgb = _colors(store, color_by, rows)
    frame = pd.DataFrame(
        {
            # pydeck writes the points as JSON records: fewer digits, a smaller page.
            **{a: _short(getattr(store, a)[rows]) for a in "xyz"},
            "r": rgb[:, 0],
            "g": rgb[:, 1],
            "b": rgb[:, 2],
            "id": store.ids[rows],
        }
    )
    text = "id {id}"
    if color_by is not None:
        codes_or_values = store.categorical.get(color_by)
        if codes_or_values is not None:
            codes, names = codes_or_values
            frame[color_by] = np.asarray(names, dtype=object)[codes[rows]]
        else:
            frame[color_by] = _short(store.numeric[color_by][rows])
        text += f"\n{color_by}: {{{color_by}}}"
    state = {**fit_view(store.extent, *DECK_SIZE), **(view_state or {})}
    return cloud_deck(frame, state, point_px=point_px, tooltip={"text": text}, height=DECK_SIZE[1])


def _colors(store, column: str | None, rows: np.ndarray) -> np.ndarray:
    """``(len(rows), 3)`` uint8 colours of ``rows`` by ``column``, as the explorer draws them."""
    from embviz.render.colors import category_colors, palette, rgb

    if column is None:
        return np.tile(np.array([[31, 119, 180]], dtype=np.uint8), (len(rows), 1))
    if column in store.categorical:
        codes, names = store.categorical[column]
        return rgb(category_colors(len(names)))[codes[rows]]
    if column not in store.numeric:
        raise ValueError(
            f"{store.key}: no column {column!r} to colour by; "
            f"use one of {sorted([*store.categorical, *store.numeric])} or None"
        )
    values = store.numeric[column]
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, [1, 99]) if len(finite) else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    lut = rgb(palette("viridis"))
    v = np.nan_to_num((values[rows] - lo) / (hi - lo), nan=0.0)
    return lut[np.clip((v * (len(lut) - 1)).astype(np.int64), 0, len(lut) - 1)]


def _short(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the 7 significant digits float32 holds at their largest
    magnitude, as float64 (``0.1``, not ``0.10000000149011612``): JSON then writes about half
    the digits. (Formatting each value's shortest float32 decimal instead takes 2.5 us a value.)
    """
    values = np.asarray(values, dtype=np.float64)
    top = float(np.nanmax(np.abs(values), initial=0.0))
    if not np.isfinite(top) or top == 0.0:
        return values
    return np.round(values, 6 - int(np.floor(np.log10(top))))


def _open(ds: Dataset | str | Path) -> Dataset:
    return ds if isinstance(ds, Dataset) else open_dataset(ds)


def _default_projection(ds: Dataset, dims: int) -> str:
    """The projection the explorer opens with: the first embedding's first map, with
    neighbour-preserving methods (UMAP, PaCMAP, t-SNE) before PCA."""
    from embviz.projections import projection_choices

    for choices in projection_choices(ds, dims=dims).values():
        return next(iter(choices.values()))
    raise DatasetError(
        f"{ds.root}: no {dims}D projection; have {ds.projections or 'none'}. "
        f"Run 'embviz reduce {ds.root} --dims {dims}' to make one."
    )
