"""The 2D map: a Bokeh plot showing server-rendered frames, with points, sprites and events.

The browser never receives the points of a full view, only one PNG frame per view change.
Once the view holds at most ``hover_limit`` points they are sent too (for tooltips with the
thumbnail), and at most ``sprite_limit`` are drawn as their images, sized in data units so they
grow as the user zooms in. Renders run on a bounded process-wide thread pool; a session keeps at
most one render in flight and coalesces the view changes that arrive meanwhile.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from embviz.render.overlay import (
    HOVER_LIMIT,
    SPRITE_LIMIT,
    fit_images,
    hover_points,
    payload_bytes,
    sprites,
)
from embviz.render.raster import Frame, Renderer, Style, category_colors, palette
from embviz.render.store import PointStore, View

from .work import Coalescer

__all__ = ["MapRequest", "MapResult", "MapView"]

#: Most selected points outlined on the map per frame (an even subsample beyond).
HIGHLIGHT_LIMIT = 5000


@dataclass(frozen=True)
class MapRequest:
    """Everything one frame depends on."""

    view: View
    width: int
    height: int
    mode: str
    color_by: str | None
    style: Style
    mask_key: object = None


@dataclass
class MapResult:
    """A rendered frame plus the points (and sprites) to overlay, ready for the browser."""

    request: MapRequest
    frame: Frame
    points: dict[str, list] | None = None
    sprites: dict[str, list] | None = None
    seconds: float = 0.0
    highlight: dict[str, list] | None = None
    extra: dict = field(default_factory=dict)
    #: images sent with the frame (sprites and tooltip images)
    images: int = 0
    #: about how many bytes the frame sends: PNG (as a data URI), points, inline images
    bytes: int = 0


class MapView:
    """Owns the Bokeh figure of one session and keeps it in step with the requested view.

    ``thumbs(sample_ids) -> list[str]`` gives tooltip and sprite image sources (URLs, or data
    URIs when ``image_budget`` is set: then a frame with its images stays under that many
    bytes); ``describe(rows)`` returns extra tooltip columns (name -> list of str).
    """

    def __init__(
        self,
        store: PointStore,
        *,
        thumbs: Callable[[np.ndarray], list[str]] | None = None,
        image_budget: int | None = None,
        describe: Callable[[np.ndarray], dict[str, list]] | None = None,
        hover_limit: int = HOVER_LIMIT,
        sprite_limit: int = SPRITE_LIMIT,
        sprite_px: int = 40,
        on_frame: Callable[[MapResult], None] | None = None,
        on_select: Callable[[np.ndarray], None] | None = None,
        on_tap: Callable[[int | None], None] | None = None,
        width: int = 900,
        height: int = 640,
    ):
        self.store = store
        self.renderer = Renderer(store)
        self.thumbs = thumbs
        self.image_budget = image_budget
        self.describe = describe
        self.hover_limit = hover_limit
        self.sprite_limit = sprite_limit
        self.sprite_px = sprite_px
        self.on_frame = on_frame
        self.on_select = on_select
        self.on_tap = on_tap
        self.mask: np.ndarray | None = None
        self.mask_key: object = None
        self.highlight_rows: np.ndarray | None = None
        self.last: MapResult | None = None
        #: renders on the render pool, one in flight, the newest request wins
        self.renders = Coalescer(self.compute, self._apply, name="render")
        self._default_size = (width, height)
        self._style_fn: Callable[[], tuple[str, str | None, Style]] = lambda: (
            "category",
            "label",
            Style(),
        )
        self.figure = self._make_figure()
        self.view = store.extent

    def set_store(self, store: PointStore) -> None:
        """Draw ``store`` from now on, keeping the figure and the view (the same points with a
        new column, e.g. live tags): the page keeps its models, nothing is rebuilt there."""
        self.store = store
        self.renderer = Renderer(store)

    @property
    def doc(self):
        """The session's Bokeh document: renders run in the pool and come back on its thread;
        None (notebooks, tests) renders synchronously."""
        return self.renders.doc

    @doc.setter
    def doc(self, doc) -> None:
        self.renders.doc = doc

    # -- Bokeh model -------------------------------------------------------------------------
    def _make_figure(self):
        from bokeh.events import RangesUpdate, SelectionGeometry, Tap

        from .map_figure import map_figure

        m = map_figure(self.store.extent)
        self.raster_src, self.sprite_src = m.raster_src, m.sprite_src
        self.highlight_src, self.point_src = m.highlight_src, m.point_src
        self.color_mapper, self.color_bar = m.color_mapper, m.color_bar
        m.figure.on_event(RangesUpdate, self._on_ranges)
        m.figure.on_event(SelectionGeometry, self._on_selection)
        m.figure.on_event(Tap, self._on_tap)
        return m.figure

    # -- requests ----------------------------------------------------------------------------
    def set_style_source(self, fn: Callable[[], tuple[str, str | None, Style]]) -> None:
        """Where the current (mode, colour column, style) come from."""
        self._style_fn = fn

    def _size(self) -> tuple[int, int]:
        """The plot's inner size in pixels as the browser last reported it (default before)."""
        from bokeh.core.property.descriptors import UnsetValueError

        try:
            w, h = self.figure.inner_width, self.figure.inner_height
        except UnsetValueError:
            w, h = None, None
        w, h = w or self._default_size[0], h or self._default_size[1]
        return max(64, min(int(w), 2400)), max(64, min(int(h), 1600))

    def request(self, view: View | None = None) -> MapRequest:
        """The request for ``view`` (default: the current one) with the current style."""
        mode, color_by, style = self._style_fn()
        w, h = self._size()
        return MapRequest(view or self.view, w, h, mode, color_by, style, self.mask_key)

    def refresh(self, view: View | None = None, *, wait: bool = False) -> MapResult | None:
        """Render the current view again (after a style, colour or filter change).

        With ``wait`` (or no document) the frame is rendered and shown before returning, and
        returned; else it renders in the pool and None is returned.
        """
        if view is not None:
            self.view = view
        req = self.request()
        return self.renders.run(req) if wait else self.renders.submit(req)

    # -- the work ----------------------------------------------------------------------------
    def compute(self, req: MapRequest) -> MapResult:
        """Render ``req``: the frame, plus points/sprites when the view holds few enough."""
        t0 = time.perf_counter()
        frame = self.renderer.render(
            req.view,
            req.width,
            req.height,
            mode=req.mode,
            color_by=req.color_by,
            style=req.style,
            mask=self.mask,
            mask_key=req.mask_key,
        )
        result = MapResult(req, frame)
        result.bytes = 22 + (len(frame.png) + 2) // 3 * 4
        if frame.points <= self.hover_limit:
            rows = self._drop_hidden(self.store.rows_in(req.view, self.mask), req)
            rows = rows[: self.hover_limit]
            points = hover_points(self.store, rows, describe=self.describe)
            if self.thumbs:
                budget = None  # images by URL: the browser fetches (and caches) them
                if self.image_budget is not None:  # inline: what the rest leaves for images
                    budget = max(0, self.image_budget - result.bytes - payload_bytes(points))
                ids = self.store.ids[rows]
                points["thumb"] = fit_images(ids, self.thumbs(ids), budget)
            result.images = sum(1 for t in points["thumb"] if t)
            result.bytes += payload_bytes(points, images=self.image_budget is not None)
            if len(rows) <= self.sprite_limit and self.thumbs:
                result.sprites, points = sprites(
                    points, req.view, req.width, req.height, sprite_px=self.sprite_px
                )
            result.points = points
        hl = self.highlight_rows
        if hl is not None and len(hl):
            inside = hl[req.view.contains(self.store.x[hl], self.store.y[hl])]
            if len(inside) > HIGHLIGHT_LIMIT:
                inside = inside[:: len(inside) // HIGHLIGHT_LIMIT + 1]
            result.highlight = {
                "x": self.store.x[inside].astype(float).tolist(),
                "y": self.store.y[inside].astype(float).tolist(),
            }
        result.seconds = time.perf_counter() - t0
        return result

    def _drop_hidden(self, rows: np.ndarray, req: MapRequest | None = None) -> np.ndarray:
        """``rows`` without those of hidden legend entries (work in proportion to ``rows``)."""
        req = req or self.request()
        if req.mode != "category" or not req.style.hidden or req.color_by is None:
            return rows
        codes, names = self.store.categorical[req.color_by]
        hidden = np.array([i for i, n in enumerate(names) if n in req.style.hidden])
        return rows[~np.isin(codes[rows], hidden)] if len(hidden) else rows

    def _apply(self, result: MapResult) -> None:
        """Push a result into the Bokeh models (on the document's thread, via :attr:`renders`,
        which drops a result older than the one on screen)."""
        f = result.frame
        v = f.view
        url = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
        self.raster_src.data = {
            "url": [url],
            "x": [v.x0],
            "y": [v.y0],
            "w": [v.x1 - v.x0],
            "h": [v.y1 - v.y0],
        }
        for src, data in (
            (self.point_src, result.points),
            (self.sprite_src, result.sprites),
            (self.highlight_src, result.highlight),
        ):
            # An empty source stays as it is: re-emptying it costs a websocket message each.
            if data or any(len(v) for v in src.data.values()):
                src.data = data or {k: [] for k in src.data}
        if f.mode == "numeric" and f.span:
            self.color_mapper.palette = palette(result.request.style.cmap)
            self.color_mapper.low, self.color_mapper.high = f.span
            self.color_bar.title = f.color_by or ""
            self.color_bar.visible = True
        else:
            self.color_bar.visible = False
        self.last = result
        if self.on_frame:
            self.on_frame(result)

    # -- events from the browser -------------------------------------------------------------
    def _on_ranges(self, event) -> None:
        if None in (event.x0, event.x1, event.y0, event.y1):
            return
        self.view = View(
            min(event.x0, event.x1),
            max(event.x0, event.x1),
            min(event.y0, event.y1),
            max(event.y0, event.y1),
        )
        self.refresh()

    def set_view(self, view: View) -> None:
        """Move the plot to ``view`` (e.g. from the URL); the resulting range event re-renders."""
        self.view = view
        self.figure.x_range.start, self.figure.x_range.end = view.x0, view.x1
        self.figure.y_range.start, self.figure.y_range.end = view.y0, view.y1

    def _on_selection(self, event) -> None:
        geom = event.geometry or {}
        if not event.final or self.on_select is None:
            return
        self.on_select(self.select(geom))

    def select(self, geometry: dict) -> np.ndarray:
        """Store rows inside a Bokeh selection geometry (``rect`` or ``poly``), filters applied."""
        kind = geometry.get("type")
        if kind == "rect":
            x0, x1 = sorted((geometry["x0"], geometry["x1"]))
            y0, y1 = sorted((geometry["y0"], geometry["y1"]))
            return self._drop_hidden(self.store.rows_in(View(x0, x1, y0, y1), self.mask))
        if kind == "poly":
            return self._drop_hidden(
                self.store.rows_in_polygon(
                    np.asarray(geometry["x"]), np.asarray(geometry["y"]), self.mask
                )
            )
        return np.empty(0, dtype=np.int64)

    def _on_tap(self, event) -> None:
        if self.on_tap is None or event.x is None:
            return
        self.on_tap(self.nearest(event.x, event.y))

    def nearest(self, x: float, y: float, px: float = 8.0) -> int | None:
        """The visible store row nearest to ``(x, y)`` within ``px`` screen pixels, or None.

        Distances are measured in screen pixels: the plot does not keep the aspect ratio, so a
        data unit on x and on y can cover very different numbers of pixels.
        """
        w, h = self._size()
        sx = w / max(self.view.x1 - self.view.x0, 1e-300)  # pixels per data unit
        sy = h / max(self.view.y1 - self.view.y0, 1e-300)
        rx, ry = px / sx, px / sy
        rows = self._drop_hidden(
            self.store.rows_in(View(x - rx, x + rx, y - ry, y + ry), self.mask)
        )
        if not len(rows):
            return None
        d2 = ((self.store.x[rows] - x) * sx) ** 2 + ((self.store.y[rows] - y) * sy) ** 2
        best = int(np.argmin(d2))
        return int(rows[best]) if d2[best] <= px * px else None

    @staticmethod
    def legend_items(store: PointStore, color_by: str, counts: dict[str, int]) -> list[dict]:
        """Legend entries for a categorical column: name, colour, points in view."""
        names = store.categories(color_by)
        colors = category_colors(len(names))
        return [
            {"name": n, "color": c, "count": int(counts.get(n, 0))}
            for n, c in zip(names, colors, strict=True)
        ]
