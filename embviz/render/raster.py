"""Server-side frames: Datashader aggregates of the points in view, shaded and encoded as PNG.

Aggregation is the expensive step and depends only on the data parameters (view, size, colour
column, filter); shading, spreading and opacity are applied to a cached aggregate, so style
changes and hiding a legend entry never re-aggregate. A frame is one PNG, so what crosses the
wire per interaction is bounded by the plot size, not by the number of points or categories.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .colors import category_colors, difference_rgba, palette, rgb
from .encode import encode_png
from .sources import AggregateSource, default_sources, register_source
from .store import PointStore, View

__all__ = [
    "AggregateSource",
    "Frame",
    "Renderer",
    "Style",
    "category_colors",
    "default_sources",
    "difference_rgba",
    "encode_png",
    "palette",
    "register_source",
    "rgb",
]

#: Beyond this many categories a per-category stack (H x W x k) costs too much memory and time;
#: each pixel then takes the colour of its highest-coded category and its alpha from the count.
MAX_STACKED_CATEGORIES = 40

Mode = Literal["category", "numeric", "density"]


@dataclass(frozen=True)
class Style:
    """How an aggregate is drawn; none of these re-aggregate."""

    point_size: int = 0  #: extra pixels every point is spread by (0 = one pixel)
    dynspread: bool = True  #: grow isolated points up to 3 px so sparse regions stay visible
    opacity: float = 1.0  #: 0..1 maximum alpha of the drawn points
    hidden: frozenset[str] = frozenset()  #: categories left out of the picture
    cmap: str = "viridis"  #: colormap for numeric colouring (a colorcet or matplotlib name)
    #: ``(A, B)``: draw where category A is over- or under-represented against B instead of
    #: the category colours (blue: more A, red: more B, grey: both in proportion).
    difference: tuple[str, str] | None = None


@dataclass
class Frame:
    """One rendered picture of a view plus what the legend and status line need."""

    png: bytes
    view: View
    width: int
    height: int
    points: int  #: points drawn in the view (after filters and hidden categories)
    mode: Mode
    color_by: str | None
    counts: dict[str, int] = field(default_factory=dict)  #: per-category points in view
    span: tuple[float, float] | None = None  #: numeric colour range (colour bar)
    seconds: dict[str, float] = field(default_factory=dict)


def _nonempty(view: View) -> View:
    """``view`` widened where it has no width or height (all points on one line, or one point)."""
    x0, x1, y0, y1 = view.x0, view.x1, view.y0, view.y1
    if not x1 > x0:
        pad = max(abs(x0) * 1e-3, 0.5)
        x0, x1 = x0 - pad, x1 + pad
    if not y1 > y0:
        pad = max(abs(y0) * 1e-3, 0.5)
        y0, y1 = y0 - pad, y1 + pad
    return View(x0, x1, y0, y1)


def _numeric_span(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [1, 99]) if len(finite) > 1000 else (finite.min(), finite.max())
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


#: A view whose chunks hold more than this share of the rows aggregates every row in place
#: instead of copying those rows out first.
GATHER_LIMIT = 0.5


class Renderer:
    """Renders frames of one :class:`PointStore`, caching the last aggregate per data key.

    ``sources`` (default: :func:`default_sources`) are asked first for each new aggregate;
    the first that answers wins and the rows in this process are not touched.
    """

    def __init__(
        self,
        store: PointStore,
        *,
        sources: list[AggregateSource] | None = None,
        shared_frames: bool = False,
    ):
        self.store = store
        #: frames shared by every session (:mod:`.framecache`); off so timings measure renders
        self.shared_frames = shared_frames
        self.sources = default_sources(store) if sources is None else list(sources)
        #: which source built the cached aggregate ("local" when none answered)
        self.answered_by = "local"
        self._agg_key: tuple | None = None
        self._agg = None
        self._agg_points = 0
        self._spans: dict[str, tuple[float, float]] = {}

    # -- aggregation (data parameters) ----------------------------------------------------
    def _columns(self, view: View, mask: np.ndarray | None, extra: dict[str, np.ndarray]):
        """x, y and extra columns of the rows that may lie in ``view`` (a view when all do)."""
        s = self.store
        runs = s.runs(view)
        if mask is not None:
            rows = np.concatenate(
                [np.flatnonzero(mask[a:b]) + a for a, b in runs] or [np.empty(0, np.int64)]
            )
            return s.x[rows], s.y[rows], {k: v[rows] for k, v in extra.items()}, len(rows)
        if sum(b - a for a, b in runs) > GATHER_LIMIT * s.n:
            # Most rows: Datashader skips the points outside the view about as fast as they
            # could be copied out, and the copy (9 bytes a point) would sit in every render.
            return s.x, s.y, dict(extra), s.n
        # Copied run by run: a third of the time (and half the memory) of gathering by a row
        # index, which a frame spent most of its aggregation on.
        x = s.gather(s.x, runs)
        return x, s.gather(s.y, runs), {k: s.gather(v, runs) for k, v in extra.items()}, len(x)

    def aggregate(
        self,
        view: View,
        width: int,
        height: int,
        *,
        mode: Mode = "category",
        color_by: str | None = None,
        mask: np.ndarray | None = None,
        mask_key: object = None,
        hidden_codes: tuple[int, ...] = (),
    ):
        """The aggregate of the points in ``view`` on a ``width`` x ``height`` grid (cached).

        ``mask_key`` identifies ``mask`` for the cache (e.g. the filter settings). Category
        columns with at most ``MAX_STACKED_CATEGORIES`` values give an (H, W, k) count stack;
        more give an (H, W, 2) stack of (count, top code).
        """
        s = self.store
        stacked = mode == "category" and len(s.categories(color_by)) <= MAX_STACKED_CATEGORIES
        # Hiding categories re-aggregates only in the many-category layout.
        hide = () if stacked or mode != "category" else tuple(sorted(hidden_codes))
        key = (view, width, height, mode, color_by, mask_key, hide)
        if key == self._agg_key:
            return self._agg
        self._agg_key = self._agg = None  # not kept alive beside the new one while it is built
        for source in self.sources:
            agg = source.aggregate(
                view,
                width,
                height,
                mode=mode,
                color_by=color_by,
                mask=mask,
                hidden_codes=hide,
            )
            if agg is not None:
                self._agg_key, self._agg = key, agg
                self.answered_by = type(source).__name__
                return agg
        self.answered_by = "local"
        # Imported here, not above: a frame the pyramid answers never loads Datashader (1.2-2 s
        # of a fresh server's first frame at 50M points).
        import datashader as dsh
        import pandas as pd

        extra = {}
        if mode == "category":
            extra["c"] = s.categorical[color_by][0]
        elif mode == "numeric":
            extra["v"] = s.numeric[color_by]
        x, y, cols, _ = self._columns(view, mask, extra)
        data = {"x": x, "y": y}
        canvas = dsh.Canvas(
            plot_width=width,
            plot_height=height,
            x_range=(view.x0, view.x1),
            y_range=(view.y0, view.y1),
        )
        if mode == "category" and stacked:
            names = s.categories(color_by)
            data["c"] = pd.Categorical.from_codes(cols["c"], categories=names, validate=False)
            agg = canvas.points(pd.DataFrame(data, copy=False), "x", "y", dsh.count_cat("c"))
        elif mode == "category":
            # Exact per-category counts in view (the picture keeps only each pixel's top code);
            # counted before hiding so the legend still shows what a hidden entry holds.
            codes = cols["c"]
            inside = view.contains(x, y)
            counts = np.bincount(codes[inside], minlength=len(s.categories(color_by)))
            if hide:
                keep = ~np.isin(codes, np.array(hide, dtype=codes.dtype))
                x, y, codes = x[keep], y[keep], codes[keep]
            frame = pd.DataFrame({"x": x, "y": y, "c": codes.astype(np.float32)}, copy=False)
            agg = canvas.points(frame, "x", "y", dsh.summary(n=dsh.count(), top=dsh.max("c")))
            agg.attrs["counts"] = counts
        elif mode == "numeric":
            data["v"] = cols["v"]
            frame = pd.DataFrame(data, copy=False)
            agg = canvas.points(frame, "x", "y", dsh.summary(n=dsh.count(), v=dsh.mean("v")))
        else:
            agg = canvas.points(pd.DataFrame(data, copy=False), "x", "y", dsh.count())
        self._agg_key, self._agg = key, agg
        return agg

    # -- shading (style parameters) -------------------------------------------------------
    def shade(self, agg, *, mode: Mode, color_by: str | None, style: Style):
        """An RGBA image (uint32 DataArray, datashader's layout) of ``agg`` drawn with ``style``;
        returns ``(image, counts, span)``."""
        import xarray as xr

        alpha = int(round(255 * min(max(style.opacity, 0.05), 1.0)))
        counts: dict[str, int] = {}
        span = None
        if mode == "category" and isinstance(agg, xr.DataArray):
            from .kernels import alpha_from_histogram, apply_alpha, mix_and_count

            names = [str(n) for n in agg.coords["c"].values]
            values = np.ascontiguousarray(agg.values)
            visible = np.array([n not in style.hidden for n in names], dtype=np.bool_)
            plane_shape = values.shape[:2]
            totals, mixed = np.empty(plane_shape, np.int64), np.empty(plane_shape, np.uint32)
            per, hist = np.zeros(len(names), np.int64), np.zeros((1 << 16) + 1, np.int64)
            mix_and_count(
                values,
                rgb(category_colors(len(names))).astype(np.float32),
                visible,
                totals,
                mixed,
                per,
                hist,
            )
            counts = {n: int(c) for n, c in zip(names, per, strict=True)}
            if style.difference and set(style.difference) <= set(names):
                rgba = difference_rgba(
                    values,
                    names.index(style.difference[0]),
                    names.index(style.difference[1]),
                    alpha=alpha,
                )
            else:
                lut = alpha_from_histogram(hist, min_alpha=min(60, alpha), max_alpha=alpha)
                rgba = apply_alpha(totals, mixed, lut, np.empty(plane_shape, np.uint32))
            plane = agg.isel(c=0)
            img = xr.DataArray(rgba, coords=plane.coords, dims=plane.dims)
        elif mode == "category":
            from .kernels import alpha_lut

            names = self.store.categories(color_by)
            count, top = agg["n"], agg["top"]
            code = np.nan_to_num(top.values, nan=0).astype(np.int64)
            n = count.values.astype(np.int64)
            per = agg.attrs["counts"]
            counts = {name: int(c) for name, c in zip(names, per, strict=True)}
            rgba = np.zeros((*n.shape, 4), dtype=np.uint8)
            rgba[..., :3] = rgb(category_colors(len(names)))[code]
            rgba[..., 3] = alpha_lut(n, min_alpha=min(60, alpha), max_alpha=alpha)[
                np.minimum(n, 1 << 16)
            ]
            img = xr.DataArray(rgba.view(np.uint32)[..., 0], coords=count.coords, dims=count.dims)
        elif mode == "numeric":
            import datashader.transfer_functions as tf

            span = self._spans.get(color_by)
            if span is None:
                span = self._spans[color_by] = _numeric_span(self.store.numeric[color_by])
            cmap = palette(style.cmap)
            counts = {"": int(agg["n"].values.sum())}
            img = tf.shade(
                agg["v"], cmap=cmap, how="linear", span=span, alpha=alpha, min_alpha=alpha
            )
        else:
            import colorcet
            import datashader.transfer_functions as tf

            counts = {"": int(agg.values.sum())}
            img = tf.shade(agg, cmap=colorcet.fire[40:], how="eq_hist", alpha=alpha, min_alpha=60)
        from .kernels import dynspread_image, spread_image

        if style.point_size > 0:
            img = spread_image(img, int(style.point_size))
        if style.dynspread:
            img = dynspread_image(img, threshold=0.5, max_px=3)
        return img, counts, span

    def render(
        self,
        view: View,
        width: int,
        height: int,
        *,
        mode: Mode = "category",
        color_by: str | None = None,
        style: Style = Style(),
        mask: np.ndarray | None = None,
        mask_key: object = None,
    ) -> Frame:
        """Aggregate (or reuse the cached aggregate), shade and encode one frame."""
        t0 = time.perf_counter()
        view = _nonempty(view)
        shared = (view, width, height, mode, color_by, style) if self.shared_frames else None
        if shared is not None and mask is None:
            from . import framecache

            hit = framecache.get(self.store, shared)
            if hit is not None:
                return hit
        hidden_codes: tuple[int, ...] = ()
        if mode == "category" and style.hidden:
            names = self.store.categories(color_by)
            hidden_codes = tuple(i for i, n in enumerate(names) if n in style.hidden)
        agg = self.aggregate(
            view,
            width,
            height,
            mode=mode,
            color_by=color_by,
            mask=mask,
            mask_key=mask_key,
            hidden_codes=hidden_codes,
        )
        t1 = time.perf_counter()
        img, counts, span = self.shade(agg, mode=mode, color_by=color_by, style=style)
        t2 = time.perf_counter()
        png = encode_png(img)
        t3 = time.perf_counter()
        points = sum(c for n, c in counts.items() if n not in style.hidden)
        if mode != "category":
            counts = {}
        frame = Frame(
            png=png,
            view=view,
            width=width,
            height=height,
            points=points,
            mode=mode,
            color_by=color_by,
            counts=counts,
            span=span,
            seconds={"aggregate": t1 - t0, "shade": t2 - t1, "encode": t3 - t2},
        )
        if shared is not None and mask is None:
            from . import framecache

            framecache.put(self.store, shared, frame)
        return frame
