"""The image map: one representative thumbnail per grid cell composed into the frame, at any zoom.

A frame in ``images`` mode is one picture of the plot's size in which every occupied cell of a
grid anchored in data space (:mod:`embviz.render.cellpick`) shows the thumbnail of its
representative: the most typical of the cell's shown points by embedding (lowest
:data:`TYPICAL_COLUMNS` score) when the store has such a column, else the point nearest the
cell's density peak. Filters and hidden categories apply before picking, so a hidden class
never lends a cell its image. The thumbnail is fitted in a square inside its cell, with a gap
of :data:`GAP` pixels on each side (no two images touch), framed by a border in the point's
colour: its category's colour, the colour map at its value, or the fire map at the cell's
density rank; the frame is drawn on the page's white. A thumbnail that is missing or broken
draws the frame alone.

Photos compress badly as PNG, so these frames are WebP (quality :data:`QUALITY`): a 900x640
frame of 140 thumbnails is 30-90 KB against 300-600 KB as a palette PNG. The picking pass
works on the store's x, y and one column, without a per-pixel aggregate, so an image frame
costs less than a frame of points at the same size.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np

from .cellpick import Grid, Picks, grid_for, pick
from .colors import category_colors, palette, rgb
from .raster import Frame, Mode, Style, _nonempty, _numeric_span
from .store import PointStore, View
from .thumbcache import BROKEN, ThumbCache, ThumbSource, thumb_cache

__all__ = [
    "GAP",
    "QUALITY",
    "TYPICAL_COLUMNS",
    "ImageFrame",
    "ImageMapper",
    "cell_columns",
]

#: Numeric columns that rank points from most typical (lowest) to most unusual, by embedding:
#: the first one a store has picks each cell's representative.
TYPICAL_COLUMNS = ("outlier_score",)
#: Pixels left empty on each side of a cell's image, so images never touch or overlap.
GAP = 2
#: WebP quality of image frames (80: thumbnails look as they do in the grid).
QUALITY = 80
_PLAIN = Style()
_BACKGROUND = (255, 255, 255)
_MISSING = np.array([153, 153, 153], dtype=np.uint8)  #: border of a point with no colour (NaN)


@dataclass
class ImageFrame(Frame):
    """A frame of thumbnails (``png`` holds the encoded image, of type :attr:`mime`)."""

    mime: str = "image/webp"
    picks: Picks | None = None  #: the cells and their representatives
    #: drawn cells whose thumbnail was missing or did not decode (drawn as empty frames)
    empty: int = 0


class ImageMapper:
    """Draws image-map frames of one store with thumbnails from ``source``.

    ``cache`` defaults to the process's :func:`~embviz.render.thumbcache.thumb_cache`, shared
    by every session.
    """

    def __init__(self, store: PointStore, source: ThumbSource, cache: ThumbCache | None = None):
        self.store = store
        self.source = source
        self.cache = cache if cache is not None else thumb_cache()
        self._spans: dict[str, tuple[float, float]] = {}

    def typical(self) -> tuple[str, np.ndarray] | None:
        """``(column, values)`` of the score that picks representatives, or None (density)."""
        for name in TYPICAL_COLUMNS:
            if name in self.store.numeric:
                return name, self.store.numeric[name]
        return None

    def pick(
        self,
        view: View,
        width: int,
        height: int,
        *,
        cell_px: int = 64,
        mode: Mode = "category",
        color_by: str | None = None,
        style: Style = _PLAIN,
        mask: np.ndarray | None = None,
    ) -> Picks:
        """The cells of ``view`` drawn ``width`` x ``height`` at ``cell_px`` and their
        representatives among the shown points (``mask``, ``style.hidden``)."""
        view = _nonempty(view)
        grid = grid_for(view, width, height, cell_px)
        categories = None
        if mode == "category" and color_by in self.store.categorical:
            codes, names = self.store.categorical[color_by]
            hidden = np.array([n in style.hidden for n in names], dtype=np.bool_)
            categories = (codes, hidden)
        return pick(self.store, view, grid, mask=mask, categories=categories, score=self.typical())

    def draw(
        self,
        picks: Picks,
        view: View,
        width: int,
        height: int,
        *,
        mode: Mode = "category",
        color_by: str | None = None,
        style: Style = _PLAIN,
    ) -> ImageFrame:
        """The frame of ``picks`` (from :meth:`pick` with the same arguments), encoded."""
        t0 = time.perf_counter()
        view = _nonempty(view)
        cells = picks.cells
        rows = picks.rows[cells]
        colours, span = self._colours(picks, cells, mode, color_by, style)
        tids = self.source.thumb_ids(self.store.ids[rows])
        thumbs = self.cache.get(self.source, tids)
        t1 = time.perf_counter()
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        canvas[:] = _BACKGROUND
        empty = 0
        for k, colour, img in zip(cells.tolist(), colours, thumbs, strict=True):
            empty += not _draw_cell(canvas, picks.grid, k, view, colour, img)
        t2 = time.perf_counter()
        data = encode_webp(canvas)
        t3 = time.perf_counter()
        counts: dict[str, int] = {}
        if mode == "category" and picks.per_category is not None:
            names = self.store.categories(color_by)
            counts = {n: int(c) for n, c in zip(names, picks.per_category, strict=True)}
        return ImageFrame(
            png=data,
            view=view,
            width=width,
            height=height,
            points=picks.in_view,
            mode=mode,
            color_by=color_by,
            counts=counts,
            span=span,
            seconds={"thumbs": t1 - t0, "compose": t2 - t1, "encode": t3 - t2},
            picks=picks,
            empty=empty,
        )

    def render(
        self,
        view: View,
        width: int,
        height: int,
        *,
        cell_px: int = 64,
        mode: Mode = "category",
        color_by: str | None = None,
        style: Style = _PLAIN,
        mask: np.ndarray | None = None,
    ) -> ImageFrame:
        """:meth:`pick` then :meth:`draw`; ``seconds["pick"]`` times the picking pass."""
        t0 = time.perf_counter()
        opts = {"mode": mode, "color_by": color_by, "style": style}
        picks = self.pick(view, width, height, cell_px=cell_px, mask=mask, **opts)
        t1 = time.perf_counter()
        frame = self.draw(picks, view, width, height, **opts)
        frame.seconds["pick"] = t1 - t0
        return frame

    def _colours(self, picks: Picks, cells: np.ndarray, mode, color_by, style):
        """RGB (n, 3) of each drawn cell's border, and the numeric span (colour bar)."""
        rows = picks.rows[cells]
        if mode == "category" and color_by in self.store.categorical:
            codes, names = self.store.categorical[color_by]
            return rgb(category_colors(len(names)))[codes[rows]], None
        if mode == "numeric" and color_by in self.store.numeric:
            span = self._spans.get(color_by)
            if span is None:
                span = self._spans[color_by] = _numeric_span(self.store.numeric[color_by])
            lut = rgb(palette(style.cmap))
            v = self.store.numeric[color_by][rows].astype(np.float64)
            t = np.clip((v - span[0]) / (span[1] - span[0]), 0.0, 1.0)
            idx = np.rint(np.nan_to_num(t) * (len(lut) - 1)).astype(np.int64)
            out = lut[idx]
            out[~np.isfinite(v)] = _MISSING
            return out, span
        import colorcet

        # Density: the fire map at each cell's rank among the drawn cells (equalised).
        lut = rgb(list(colorcet.fire[40:]))
        n = picks.counts[cells]
        rank = np.argsort(np.argsort(n, kind="stable"), kind="stable")
        idx = (rank * (len(lut) - 1) // max(len(n) - 1, 1)).astype(np.int64)
        return lut[idx], None


def encode_webp(rgb_image: np.ndarray, quality: int = QUALITY) -> bytes:
    """WebP bytes of an (H, W, 3) uint8 image (top row first)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb_image, "RGB").save(buf, format="WEBP", quality=quality, method=0)
    return buf.getvalue()


def cell_box(grid: Grid, k: int, view: View, width: int, height: int) -> tuple[int, int, int]:
    """``(left, top, side)`` in frame pixels (top row 0) of the square image of cell ``k``:
    centred in the cell, :data:`GAP` pixels in from its nearer edges (it may reach past the
    frame's edges: the caller clips)."""
    ux = (view.x1 - view.x0) / width
    uy = (view.y1 - view.y0) / height
    i, j = k % grid.nx, k // grid.nx
    left = round((grid.x0 + i * grid.cw - view.x0) / ux)
    right = round((grid.x0 + (i + 1) * grid.cw - view.x0) / ux)
    top = round((view.y1 - (grid.y0 + (j + 1) * grid.ch)) / uy)
    bottom = round((view.y1 - (grid.y0 + j * grid.ch)) / uy)
    side = min(right - left, bottom - top) - 2 * GAP
    return left + (right - left - side) // 2, top + (bottom - top - side) // 2, side


def _paint(canvas: np.ndarray, left: int, top: int, pixels) -> None:
    """Paint ``pixels`` (an (h, w, 3) array or one RGB colour for an (h, w) box given as
    ``(colour, h, w)``) at ``(left, top)``, clipped to the canvas."""
    h, w = canvas.shape[:2]
    if isinstance(pixels, tuple):
        colour, ph, pw = pixels
    else:
        colour, ph, pw = None, pixels.shape[0], pixels.shape[1]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ph, h), min(left + pw, w)
    if y1 <= y0 or x1 <= x0:
        return
    if colour is not None:
        canvas[y0:y1, x0:x1] = colour
    else:
        canvas[y0:y1, x0:x1] = pixels[y0 - top : y1 - top, x0 - left : x1 - left]


def _draw_cell(canvas: np.ndarray, grid: Grid, k: int, view: View, colour, img) -> bool:
    """Draw cell ``k``'s framed thumbnail; False when it had none to draw (empty frame)."""
    h, w = canvas.shape[:2]
    left, top, side = cell_box(grid, k, view, w, h)
    if side < 4:
        return True
    border = max(2, side // 14)
    _paint(canvas, left, top, (colour, side, side))
    inner = side - 2 * border
    _paint(canvas, left + border, top + border, (_BACKGROUND, inner, inner))
    if img is None or img is BROKEN or inner < 2:
        return False
    from PIL import Image

    scale = inner / max(img.width, img.height)
    tw, th = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    fitted = np.asarray(img.resize((tw, th), Image.Resampling.BILINEAR))
    _paint(canvas, left + border + (inner - tw) // 2, top + border + (inner - th) // 2, fitted)
    return True


def cell_columns(picks: Picks, cells: np.ndarray | None = None) -> dict[str, list]:
    """Centres and sizes in data units (``cx``, ``cy``, ``cw``, ``ch``) of the drawn cells
    (default: every occupied cell, in :attr:`Picks.cells` order): hover and tap targets."""
    g = picks.grid
    cells = picks.cells if cells is None else cells
    xs, ys = g.rects(cells)
    n = len(cells)
    return {
        "cx": (xs + g.cw / 2).tolist(),
        "cy": (ys + g.ch / 2).tolist(),
        "cw": [g.cw] * n,
        "ch": [g.ch] * n,
    }
