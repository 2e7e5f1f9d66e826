"""What one map frame is asked for (:class:`MapRequest`) and what it sends (:class:`MapResult`)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

from embviz.render.imagemap import ImageFrame
from embviz.render.raster import Frame, Style
from embviz.render.store import View

__all__ = ["DEFAULT_SIZE", "NO_THUMBNAILS", "Annotate", "MapRequest", "MapResult"]

#: The map's inner size in pixels before the browser reports it (a new page's first frame).
DEFAULT_SIZE = (900, 640)
#: Why an ``images`` map shows points when the dataset has no thumbnails.
NO_THUMBNAILS = "images off: this dataset has no thumbnails (vectors only)"
#: ``annotate(view, width, height, frame) -> (labels, contours)``: overlays drawn over a frame.
Annotate = Callable[[View, int, int, Frame], tuple[dict | None, dict | None]]


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
    map_mode: str = "points"  #: "points", or "images" (the image map)
    cell_px: int = 64  #: side in screen pixels of an image-map cell


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
    #: images sent with the frame (sprites and tooltip images; in an image map, the
    #: thumbnails drawn in it)
    images: int = 0
    #: about how many bytes the frame sends: PNG (as a data URI), points, inline images
    bytes: int = 0
    #: the image map's cells (hover columns of each representative plus ``cx``, ``cy``,
    #: ``cw``, ``ch``: its cell's centre and size in data units)
    cells: dict[str, list] | None = None
    #: cluster names to draw: columns ``x``, ``y``, ``text``, ``size`` (font pixels)
    labels: dict[str, list] | None = None
    #: lines to draw (density contours): columns ``xs``, ``ys`` (a list of coordinates each)
    contours: dict[str, list] | None = None
    #: why the frame is not what was asked for (e.g. images off), for the status line
    notice: str = ""

    @property
    def url(self) -> str:
        """The frame as a data URI (WebP for image maps, PNG otherwise)."""
        f = self.frame
        mime = f.mime if isinstance(f, ImageFrame) else "image/png"
        return f"data:{mime};base64," + base64.b64encode(f.png).decode("ascii")
