"""The 2D map: a Bokeh plot showing server-rendered frames, with points, sprites and events.

The browser never receives the points of a full view, only one PNG frame per view change.
Once the view holds at most ``hover_limit`` points they are sent too (for tooltips with the
thumbnail), and at most ``sprite_limit`` are drawn as their images, sized in data units so they
grow as the user zooms in. In ``images`` map mode a frame is the image map instead
(:mod:`embviz.render.imagemap`: one representative thumbnail per cell, a WebP frame) whose
cells are the hover and tap targets, down to ``sprite_limit`` points. Renders run on a bounded
process-wide pool; a session keeps one render in flight and coalesces later view changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from embviz.render.imagemap import ImageFrame, ImageMapper, cell_columns
from embviz.render.overlay import (
    HOVER_LIMIT,
    SPRITE_LIMIT,
    fit_images,
    hover_points,
    payload_bytes,
    sprites,
)
from embviz.render.raster import Renderer, Style, palette
from embviz.render.store import PointStore, View
from embviz.render.thumbcache import ThumbSource

from .map_figure import home_view
from .map_result import DEFAULT_SIZE, NO_THUMBNAILS, Annotate, MapRequest, MapResult
from .work import Coalescer

__all__ = ["MapRequest", "MapResult", "MapView"]

log = logging.getLogger(__name__)

HIGHLIGHT_LIMIT = 5000  #: most selected points outlined per frame (an even subsample beyond)


def _default_style() -> tuple[str, str | None, Style]:
    return "category", "label", Style()


class MapView:
    """Owns the Bokeh figure of one session and keeps it in step with the requested view.

    ``thumbs(sample_ids) -> list[str]`` gives tooltip and sprite image sources (URLs, or data
    URIs when ``image_budget`` is set: then a frame with its images stays under that many
    bytes); ``describe(rows)`` returns extra tooltip columns (name -> list of str).
    ``thumb_source`` gives the image map its thumbnails (None: ``images`` mode draws points);
    ``annotate`` (see :data:`Annotate`) returns labels and contours drawn over each frame; it
    runs in the render pool after the frame. :attr:`map_mode` and :attr:`cell_px` choose the
    image map.
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
        width: int = DEFAULT_SIZE[0],
        height: int = DEFAULT_SIZE[1],
        thumb_source: ThumbSource | None = None,
        annotate: Annotate | None = None,
    ):
        self.store = store
        self.renderer = Renderer(store, shared_frames=True)
        self.thumb_source = thumb_source
        self.images = ImageMapper(store, thumb_source) if thumb_source is not None else None
        self.annotate = annotate
        #: "points" or "images"; :attr:`cell_px`: the image map's cell side in pixels
        self.map_mode = "points"
        self.cell_px = 64
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
        #: the :class:`~embviz.app.motion.Motion` moving this map's points now, or None
        self.motion = None
        #: renders on the render pool, one in flight, the newest request wins
        self.renders = Coalescer(self.compute, self._apply, name="render")
        self._default_size = (width, height)
        self._style_fn: Callable[[], tuple[str, str | None, Style]] = _default_style
        self.figure = self._make_figure()
        self.view = home_view(store.extent)  # what the figure's ranges show

    def set_store(self, store: PointStore) -> None:
        """Draw ``store`` from now on, keeping the figure and the view (the same points with a
        new column, e.g. live tags): the page keeps its models, nothing is rebuilt there."""
        self.store = store
        self.renderer = Renderer(store, shared_frames=True)
        if self.thumb_source is not None:
            self.images = ImageMapper(store, self.thumb_source)

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
        self.cell_src, self.label_src, self.contour_src = m.cell_src, m.label_src, m.contour_src
        self.trail_src = m.trail_src
        self.color_mapper, self.color_bar = m.color_mapper, m.color_bar
        m.figure.on_event(RangesUpdate, self._on_ranges)
        m.figure.on_event(SelectionGeometry, self._on_selection)
        m.figure.on_event(Tap, self._on_tap)
        m.figure.on_change("inner_width", lambda attr, old, new: self._on_resize())
        m.figure.on_change("inner_height", lambda attr, old, new: self._on_resize())
        return m.figure

    def _on_resize(self) -> None:
        """Draw again at the plot's size once the page reports it (the first frame is drawn at
        DEFAULT_SIZE, and the browser scales it until then)."""
        last = self.last.request if self.last is not None else None
        if last is not None and (last.width, last.height) != self._size():
            self.refresh()

    # -- requests ----------------------------------------------------------------------------
    def set_style_source(self, fn: Callable[[], tuple[str, str | None, Style]]) -> None:
        """Where the current (mode, colour column, style) come from."""
        self._style_fn = fn

    def _size(self) -> tuple[int, int]:
        """The plot's inner size in pixels as the browser last reported it (default before)."""
        from bokeh.core.property.descriptors import UnsetValueError

        try:
            w, h = self.figure.inner_width, self.figure.inner_height
        except UnsetValueError:  # not reported by a page yet
            w, h = self._default_size
        w, h = w or self._default_size[0], h or self._default_size[1]
        return max(64, min(int(w), 2400)), max(64, min(int(h), 1600))

    def request(self, view: View | None = None) -> MapRequest:
        """The request for ``view`` (default: the current one) with the current style."""
        mode, color_by, style = self._style_fn()
        w, h = self._size()
        view = view or self.view
        return MapRequest(
            view, w, h, mode, color_by, style, self.mask_key, self.map_mode, int(self.cell_px)
        )

    def refresh(self, view: View | None = None, *, wait: bool = False) -> MapResult | None:
        """Render the current view again (after a style, colour or filter change).

        With ``wait`` (or no document) the frame is rendered and shown before returning, and
        returned; else it renders in the pool and None is returned.
        """
        if self.motion is not None:  # anything else to draw ends a motion: the new map shows
            self.motion.finish()
        if view is not None:
            self.view = view
        req = self.request()
        return self.renders.run(req) if wait else self.renders.submit(req)

    # -- the work ----------------------------------------------------------------------------
    def compute(self, req: MapRequest) -> MapResult:
        """Render ``req``: the frame (the image map in ``images`` mode, above ``sprite_limit``
        points), plus points/sprites when the view holds few enough, then the overlays."""
        t0 = time.perf_counter()
        result = self._image_map(req) if req.map_mode == "images" else None
        if result is None:
            result = self._points_map(req)
        if req.map_mode == "images" and self.images is None:
            result.notice = NO_THUMBNAILS
        hl = self.highlight_rows
        if hl is not None and len(hl):
            inside = hl[req.view.contains(self.store.x[hl], self.store.y[hl])]
            if len(inside) > HIGHLIGHT_LIMIT:
                inside = inside[:: len(inside) // HIGHLIGHT_LIMIT + 1]
            result.highlight = {
                "x": self.store.x[inside].astype(float).tolist(),
                "y": self.store.y[inside].astype(float).tolist(),
            }
        if self.annotate is not None:
            try:
                result.labels, result.contours = self.annotate(
                    req.view, req.width, req.height, result.frame
                )
            except Exception:  # overlays are extras: the frame is shown without them
                log.exception("map overlays failed for %s", req.view)
        result.seconds = time.perf_counter() - t0
        return result

    def _points_map(self, req: MapRequest) -> MapResult:
        """The frame of points, plus points/sprites when the view holds few enough."""
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
            points = self._hover(rows, result)
            if len(rows) <= self.sprite_limit and self.thumbs:
                result.sprites, points = sprites(
                    points, req.view, req.width, req.height, sprite_px=self.sprite_px
                )
            result.points = points
        return result

    def _image_map(self, req: MapRequest) -> MapResult | None:
        """The image map of ``req``; None where it does not apply (no thumbnails, or a view of
        at most ``sprite_limit`` points: each of them is drawn as its own image instead)."""
        if self.images is None:
            return None
        opts = {"mode": req.mode, "color_by": req.color_by, "style": req.style}
        args = (req.view, req.width, req.height)
        picks = self.images.pick(*args, cell_px=req.cell_px, mask=self.mask, **opts)
        if self.thumbs and picks.in_view <= self.sprite_limit:
            return None
        frame = self.images.draw(picks, *args, **opts)
        result = MapResult(req, frame)
        result.bytes = len(result.url)
        cells = picks.cells
        points = self._hover(picks.rows[cells], result)
        result.images = len(cells) - frame.empty  # drawn in the frame, not the tooltips'

        result.bytes += 32 * len(cells)  # the cells' centres and sizes
        result.cells = {**points, **cell_columns(picks, cells)}
        return result

    def _hover(self, rows: np.ndarray, result: MapResult) -> dict[str, list]:
        """Tooltip columns of ``rows`` with their images (inline ones within what the frame's
        budget leaves); adds their bytes to ``result.bytes``."""
        points = hover_points(self.store, rows, describe=self.describe)
        if self.thumbs:
            budget = None  # images by URL: the browser fetches (and caches) them
            if self.image_budget is not None:  # inline: what the rest leaves for images
                budget = max(0, self.image_budget - result.bytes - payload_bytes(points))
            ids = self.store.ids[rows]
            points["thumb"] = fit_images(ids, self.thumbs(ids), budget)
        result.images = sum(1 for t in points["thumb"] if t)
        result.bytes += payload_bytes(points, images=self.image_budget is not None)
        return points

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
        self.show_picture(result)
        labels = result.labels
        if labels:  # Bokeh sizes text by a CSS length
            labels = {**labels, "font": [f"{float(s):g}px" for s in labels["size"]]}
        for src, data in (
            (self.point_src, result.points),
            (self.sprite_src, result.sprites),
            (self.highlight_src, result.highlight),
            (self.cell_src, result.cells),
            (self.label_src, labels),
            (self.contour_src, result.contours),
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
        self._on_resize()

    def show_picture(self, result: MapResult) -> None:
        """Put ``result``'s picture on the plot, over the view it was drawn for."""
        v = result.frame.view
        w, h = v.x1 - v.x0, v.y1 - v.y0
        self.raster_src.data = {"url": [result.url], "x": [v.x0], "y": [v.y0], "w": [w], "h": [h]}

    # -- events from the browser -------------------------------------------------------------
    def _on_ranges(self, event) -> None:
        if None in (event.x0, event.x1, event.y0, event.y1):
            return
        x0, x1, y0, y1 = sorted((event.x0, event.x1)) + sorted((event.y0, event.y1))
        self.view = View(x0, x1, y0, y1)
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
            x0, x1, y0, y1 = sorted((geometry["x0"], geometry["x1"])) + sorted(
                (geometry["y0"], geometry["y1"])
            )
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
        row = self.image_at(event.x, event.y)
        self.on_tap(row if row is not None else self.nearest(event.x, event.y))

    def image_at(self, x: float, y: float) -> int | None:
        """The store row whose image the last frame drew in the cell holding ``(x, y)``, or
        None (no image map shown, or an empty cell there)."""
        frame = self.last.frame if self.last is not None else None
        if not isinstance(frame, ImageFrame) or frame.picks is None or self.last.cells is None:
            return None
        k = int(frame.picks.grid.cell_of(np.array([x]), np.array([y]))[0])
        row = int(frame.picks.rows[k]) if k >= 0 else -1
        return row if row >= 0 else None

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
