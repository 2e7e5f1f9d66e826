"""The 2D map's Bokeh figure: the frame image, the sprites, the outlined selection, hover points,
the image map's cells, and the overlays (contours, cluster labels).

:class:`~embviz.app.mapview.MapView` fills its sources; this module only builds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embviz.render.store import View

__all__ = ["MapFigure", "home_view", "map_figure"]


@dataclass
class MapFigure:
    """A map's Bokeh figure and the models a frame updates."""

    figure: Any
    #: the frame: one data-URI PNG covering the view
    raster_src: Any
    #: points drawn as their images (``thumb``), with the hover columns of ``point_src``
    sprite_src: Any
    #: the selected points in view, outlined
    highlight_src: Any
    #: the points in view without an image, for tooltips
    point_src: Any
    color_mapper: Any
    color_bar: Any
    #: the image map's cells (``cx``, ``cy``, ``cw``, ``ch``) with their representatives'
    #: hover columns: an image is hovered anywhere in its cell
    cell_src: Any
    #: text drawn over the map (``x``, ``y``, ``text``, ``font``: a CSS size)
    label_src: Any
    #: lines drawn over the map (``xs``, ``ys``)
    contour_src: Any
    #: the listed samples' paths across a series of maps (``xs``, ``ys``, ``id``)
    trail_src: Any = None


def home_view(extent: View) -> View:
    """What a new map shows of ``extent``: all of it plus a 3% margin on each side."""
    e = extent
    pad_x, pad_y = (e.x1 - e.x0) * 0.03 or 1.0, (e.y1 - e.y0) * 0.03 or 1.0
    return View(e.x0 - pad_x, e.x1 + pad_x, e.y0 - pad_y, e.y1 + pad_y)


def map_figure(extent: View) -> MapFigure:
    """A figure spanning ``extent`` (plus a 3% margin) with empty sources, stretched to fill
    its container; pan, wheel zoom (active), box and lasso select, reset."""
    from bokeh.models import (
        BoxSelectTool,
        ColorBar,
        ColumnDataSource,
        HoverTool,
        LassoSelectTool,
        LinearColorMapper,
        PanTool,
        ResetTool,
        WheelZoomTool,
    )
    from bokeh.plotting import figure

    home = home_view(extent)
    wheel = WheelZoomTool()
    box, lasso = BoxSelectTool(), LassoSelectTool()
    fig = figure(
        x_range=(home.x0, home.x1),
        y_range=(home.y0, home.y1),
        tools=[PanTool(), wheel, box, lasso, ResetTool()],
        active_scroll=wheel,
        sizing_mode="stretch_both",
        min_height=420,
        output_backend="canvas",
        match_aspect=False,
        toolbar_location="above",
    )
    fig.xgrid.visible = fig.ygrid.visible = False
    fig.axis.visible = False
    fig.outline_line_color = None
    fig.background_fill_color = "#ffffff"
    raster_src = ColumnDataSource({"url": [], "x": [], "y": [], "w": [], "h": []})
    fig.image_url(url="url", x="x", y="y", w="w", h="h", anchor="bottom_left", source=raster_src)
    # Points drawn as their images: each point is either here or in point_src, never both,
    # so an inline image crosses the wire once (the tooltip reads the same column).
    sprite_src = ColumnDataSource(
        {"x": [], "y": [], "id": [], "thumb": [], "text": [], "w": [], "h": []}
    )
    fig.image_url(
        url="thumb",
        x="x",
        y="y",
        w="w",
        h="h",
        anchor="center",
        source=sprite_src,
        global_alpha=0.95,
    )
    # The current selection, outlined (at most HIGHLIGHT_LIMIT of the selected points in view).
    highlight_src = ColumnDataSource({"x": [], "y": []})
    fig.scatter(
        "x",
        "y",
        source=highlight_src,
        size=7,
        fill_alpha=0.0,
        line_color="#111111",
        line_width=1.2,
    )
    point_src = ColumnDataSource({"x": [], "y": [], "id": [], "thumb": [], "text": []})
    points = fig.scatter(
        "x",
        "y",
        source=point_src,
        size=9,
        fill_alpha=0.0,
        line_alpha=0.0,
        hover_fill_alpha=0.35,
        hover_line_alpha=0.9,
        hover_line_color="#000000",
    )
    sprite_points = fig.scatter(
        "x",
        "y",
        source=sprite_src,
        size=9,
        fill_alpha=0.0,
        line_alpha=0.0,
        hover_line_alpha=0.9,
        hover_line_color="#000000",
    )
    # The image map's cells, the series trails, the contours and the cluster labels are
    # drawn only by some maps: their sources exist from the start, their renderers are added
    # when a source first gets data (every model costs each new page's build, and a crowd
    # opening the page waits for those builds one after another on the event loop).
    cell_src = ColumnDataSource(
        {
            "cx": [],
            "cy": [],
            "cw": [],
            "ch": [],
            "x": [],
            "y": [],
            "id": [],
            "thumb": [],
            "text": [],
        }
    )
    trail_src = ColumnDataSource({"xs": [], "ys": [], "id": []})
    contour_src = ColumnDataSource({"xs": [], "ys": []})
    label_src = ColumnDataSource({"x": [], "y": [], "text": [], "size": [], "font": []})
    # The server selects from the tools' geometry. Selecting in the browser too, in a source an
    # image_url glyph draws from, would break the page: BokehJS paints a selection with a
    # second ImageURL view that never loaded its images ("reading '10'" on every paint).
    box.renderers = lasso.renderers = [points]
    # Fields are HTML-escaped by Bokeh (no {safe}): labels and metadata show as text.
    hover = HoverTool(
        renderers=[points, sprite_points],
        tooltips="""
        <div class="embviz-tip" style="max-width:220px">
          <img src="@thumb" style="max-width:96px;max-height:96px;display:block"/>
          <div style="font-size:12px;white-space:pre-line">@text</div>
        </div>""",
    )
    fig.add_tools(hover)

    def cells():
        hover.renderers = [*hover.renderers, _cells(fig, cell_src)]

    _when_filled(cell_src, cells)
    _when_filled(trail_src, lambda: _lines(fig, trail_src, "#555555", 0.5))
    _when_filled(contour_src, lambda: _lines(fig, contour_src, "#333333", 0.6))
    _when_filled(label_src, lambda: _labels(fig, label_src))
    color_mapper = LinearColorMapper(palette="Viridis256", low=0, high=1)
    color_bar = ColorBar(color_mapper=color_mapper, visible=False, width=12)
    fig.add_layout(color_bar, "right")
    return MapFigure(
        fig,
        raster_src,
        sprite_src,
        highlight_src,
        point_src,
        color_mapper,
        color_bar,
        cell_src,
        label_src,
        contour_src,
        trail_src,
    )


def _when_filled(src, build) -> None:
    """Call ``build`` (once) when ``src`` first holds data, before the data is sent."""
    built = []

    def first(attr, old, new) -> None:
        if not built and any(len(v) for v in new.values()):
            built.append(build())

    src.on_change("data", first)


def _cells(fig, src):
    """Invisible rectangles outlining the hovered image's cell of the image map."""
    return fig.rect(
        "cx",
        "cy",
        width="cw",
        height="ch",
        source=src,
        fill_alpha=0.0,
        line_alpha=0.0,
        hover_fill_alpha=0.0,
        hover_line_alpha=0.9,
        hover_line_color="#000000",
        hover_line_width=2,
    )


def _lines(fig, src, color: str, alpha: float):
    return fig.multi_line("xs", "ys", source=src, line_color=color, line_alpha=alpha)


def _labels(fig, src):
    return fig.text(
        "x",
        "y",
        text="text",
        source=src,
        text_font_size="font",
        text_align="center",
        text_baseline="middle",
        text_font_style="bold",
        text_color="#222222",
        background_fill_color="#ffffff",
        background_fill_alpha=0.7,
        level="overlay",  # over the lines, whichever was added first
    )
