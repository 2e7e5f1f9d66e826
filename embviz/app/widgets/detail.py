"""The detail panel: one sample's image, a classifier's top-k, every field, its nearest neighbours."""

from __future__ import annotations

import html

import panel as pn
import param

from ._panes import PANEL_CSS, open_card
from .grid import ImageGrid
from .markup import Markup

__all__ = ["DetailPanel"]


class DetailPanel(pn.viewable.Viewer):
    """One sample in full: its image, every field as text, and its nearest neighbours.

    Clicking a neighbour sets ``opened`` to its id, with the same re-firing rule as
    :class:`SelectionGrid`. The close button sets ``visible_detail`` to False, which hides the
    panel; set it back to True to show the panel again.
    """

    sample = param.Dict(
        default={}, doc="Fields of the sample shown (id, label, split, uri, width, height, ...)."
    )
    image_src = param.String(default="", doc="URL of the full-size image.")
    neighbours = param.List(
        default=[],
        item_type=dict,
        doc='Nearest neighbours, each {"id": int, "label": str, "src": url, "distance": float}.',
    )
    overlay_src = param.String(
        default="", doc="A map to lay over the image (same aspect), e.g. a saliency map; '' none."
    )
    overlay_opacity = param.Number(
        default=0.6, bounds=(0.0, 1.0), doc="Opacity of ``overlay_src`` over the image."
    )
    overlay_caption = param.String(default="", doc="What the overlay shows (method, class).")
    predictions = param.List(
        default=[],
        item_type=dict,
        doc='A classifier\'s top-k, most probable first, each {"label": str, "p": float}; '
        "drawn as HoloViews bars, the sample's own label marked.",
    )
    picked_class = param.String(
        default="", doc="Class of the top-k bar clicked last ('' none); re-set on every click."
    )
    opened = param.Integer(
        default=-1,
        doc="Id of the neighbour clicked last; re-set on every click (via -1 on a repeat).",
    )
    visible_detail = param.Boolean(default=True, doc="Whether the panel is shown.")

    def __init__(self, **params):
        super().__init__(**params)
        self._image = Markup(stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
        self._fields = Markup(stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
        self._heading = Markup(stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
        self._top_k = pn.Column(
            Markup(
                '<div class="embviz-heading">Predictions</div><div class="embviz-muted">'
                "the sample's own label in red; click a bar to explain that class</div>",
                stylesheets=[PANEL_CSS],
            ),
            sizing_mode="stretch_width",
            css_classes=["embviz-top-k"],
        )
        self._bars = None  # the HoloViews pane, made with the first predictions shown
        self._grid = ImageGrid(columns=4, thumb_px=72)
        self._grid.param.watch(lambda _: open_card(self, self._grid), "clicks")
        self._neighbours_title = Markup(
            '<div class="embviz-heading">Nearest neighbours</div>', stylesheets=[PANEL_CSS]
        )
        close = pn.widgets.Button(label="Close", css_classes=["embviz-close"], width=80)
        close.on_click(lambda _: setattr(self, "visible_detail", False))
        self._layout = pn.Column(
            pn.Row(self._heading, close, sizing_mode="stretch_width"),
            self._image,
            self._top_k,
            self._fields,
            self._neighbours_title,
            self._grid,
            css_classes=["embviz-detail"],
            sizing_mode="stretch_width",
            visible=self.param.visible_detail,
        )
        self._show_sample()
        self._show_top_k()
        self._show_neighbours()

    @property
    def grid(self) -> ImageGrid:
        """The ImageGrid of neighbours."""
        return self._grid

    @param.depends(
        "sample", "image_src", "overlay_src", "overlay_opacity", "overlay_caption", watch=True
    )
    def _show_sample(self) -> None:
        label = str(self.sample.get("label", ""))
        sid = self.sample.get("id", "")
        self._heading.object = (
            f'<div class="embviz-heading">{html.escape(label)}'
            f' <span class="embviz-muted">#{html.escape(str(sid))}</span></div>'
        )
        image = (
            f'<img class="embviz-detail-image" src="{html.escape(self.image_src)}" alt="{html.escape(label)}">'
            if self.image_src
            else ""
        )
        if image and self.overlay_src:
            # "screen": the map's dark (unimportant) parts leave the image as it is.
            image = (
                f'<div class="embviz-detail-stack">{image}<img class="embviz-detail-image '
                f'embviz-overlay" src="{html.escape(self.overlay_src)}" alt="" '
                f'style="opacity:{float(self.overlay_opacity):.2f}"></div>'
                f'<div class="embviz-muted">{html.escape(self.overlay_caption)}</div>'
            )
        self._image.object = image
        rows = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.sample.items()
        )
        self._fields.object = f'<table class="embviz-detail-fields">{rows}</table>'

    @param.depends("predictions", "sample", watch=True)
    def _show_top_k(self) -> None:
        self._top_k.visible = bool(self.predictions)
        if not self.predictions:
            return
        import holoviews as hv

        if self._bars is None:
            self._tap = hv.streams.Tap(x=None, y=None)
            self._tap.add_subscriber(self._tapped)
            self._bars = pn.pane.HoloViews(
                hv.DynamicMap(self.top_k_bars, streams=[self._tap]).opts(framewise=True),
                backend="bokeh",
                sizing_mode="stretch_width",
            )
            self._top_k.append(self._bars)
        else:
            self._bars.object.event()  # redraw the DynamicMap with the new sample's top-k

    def top_k_bars(self, x=None, y=None):
        """The top-k as a HoloViews ``Bars`` element (class, probability; own label in red)."""
        import holoviews as hv

        own = str(self.sample.get("label", ""))
        data = [(str(p["label"]), float(p["p"]), str(p["label"]) == own) for p in self.predictions]
        return hv.Bars(data, "class", ["probability", "own"]).opts(
            color=hv.dim("own").categorize({True: "#d62728", False: "#8aa4c8"}),
            tools=["hover", "tap"],
            default_tools=[],
            toolbar=None,
            ylim=(0, 1),
            height=150,
            responsive=True,
            xlabel="",
            nonselection_alpha=1.0,
        )

    def _tapped(self, x=None, y=None) -> None:
        if x is None:
            return
        if str(x) == self.picked_class:  # a second click on the same bar fires again
            self.picked_class = ""
        self.picked_class = str(x)

    @param.depends("neighbours", watch=True)
    def _show_neighbours(self) -> None:
        self._grid.items = [
            {
                "id": int(nb["id"]),
                "label": str(nb.get("label", "")),
                "src": str(nb.get("src", "")),
                "caption": _distance_text(nb.get("distance")),
            }
            for nb in self.neighbours
        ]
        self._neighbours_title.visible = self._grid.visible = bool(self.neighbours)

    def __panel__(self):
        return self._layout


def _distance_text(distance: float | None) -> str:
    return "" if distance is None else f"d = {float(distance):.3g}"
