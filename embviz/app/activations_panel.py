"""The activations row under the detail panel: one layer's channel maps of the open sample, on demand.

Pick a layer (default: the last map layer, the one saliency explains) and press "Show
activations": the layer's output is computed on the task pool (never the event loop;
:class:`~embviz.activations.ActivationCache` keeps it beside the dataset) and drawn as a
HoloViews ``RGB`` mosaic of the top channels by :func:`~embviz.activations.peak_focus`, with a
``Tap`` stream: a click lays that channel over the detail image. A pooled or linear layer shows
its top neurons as one ``HeatMap`` strip. HoloViews is loaded with the first result.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, NamedTuple

import panel as pn
import param

from .session import Session
from .widgets import PANEL_CSS, DetailPanel
from .widgets.markup import Markup

__all__ = ["COLUMNS", "ActivationsPanel"]

#: Cells per row of the mosaic (48 px each: 400 px, a detail panel's width).
COLUMNS = 8


class _Shown(NamedTuple):
    """What the panel shows: for which sample, the activations, the image they were computed
    for, and the mosaic's channels in cell order with its number of columns ([] and 0: a strip)."""

    sample: int
    acts: Any
    image: Any
    channels: list[int]
    cols: int


class ActivationsPanel(pn.viewable.Viewer):
    """Per-channel activations of the session's open sample; a tapped channel goes over
    ``details``' image."""

    layer = param.String(
        default="",
        doc="The layer shown (a module name or 'pooled'); '' = the model's last map layer. "
        "The explorer's layer picker sets it; once a grid is shown, changing it recomputes.",
    )
    top = param.Integer(
        default=64, bounds=(1, 512), doc="How many channels (or neurons) are shown, best first."
    )

    def __init__(self, session: Session, details: DetailPanel, **params):
        super().__init__(**params)
        self.session = session
        self.details = details
        self.picker = pn.widgets.Select(label="Layer", options=[], width=170)
        self.button = pn.widgets.Button(
            label="Show activations", css_classes=["embviz-activations-run"], width=140
        )
        self.message = Markup("", stylesheets=[PANEL_CSS], css_classes=["embviz-muted"])
        self.plot = None  # a pn.pane.HoloViews, made with the first result
        self._result: _Shown | None = None
        self._layers_of = None  # the (model, image_size) whose layers the picker lists
        self.button.on_click(lambda _: self.run())
        self.picker.param.watch(lambda e: setattr(self, "layer", e.new or ""), "value")
        session.param.watch(self._opened, "detail")
        self._layout = pn.Column(
            pn.Row(self.picker, self.button),
            self.message,
            visible=False,
            sizing_mode="stretch_width",
            css_classes=["embviz-activations"],
        )
        self._opened()

    # -- which model ----------------------------------------------------------------------------
    def source(self) -> tuple[str, int | None]:
        """``(model, image_size)`` shown: the predictions' model, else the current embedding's
        (:func:`embviz.activations.dataset_model`); DatasetError when none is recorded."""
        from embviz.activations import dataset_model

        return dataset_model(self.session.dataset, self.session.embedding)

    def _cache(self):
        from embviz.activations import ActivationCache

        model, image_size = self.source()
        return ActivationCache(self.session.dataset, model, image_size=image_size)

    # -- the open sample ------------------------------------------------------------------------
    def _opened(self, *_events) -> None:
        from embviz.errors import DatasetError

        self._result = None
        self.message.object = ""
        if self.plot is not None:
            self.plot.visible = False
        try:
            source = self.source()
        except DatasetError:
            source = None
        self._layout.visible = source is not None and self.session.detail >= 0

    def _fail(self, exc: Exception) -> None:
        self.button.disabled = False
        self.message.object = f'<span style="color:#b00020">{html.escape(str(exc))}</span>'

    @param.depends("layer", watch=True)
    def _layer_changed(self) -> None:
        if self.layer in self.picker.options and self.picker.value != self.layer:
            self.picker.value = self.layer
        shown = self._result
        if shown and shown.sample == self.session.detail and shown.acts.layer != self.layer:
            self.run()

    def run(self) -> None:
        """Compute (or read from the cache) the chosen layer's activations of the open sample and
        show them; errors (an unknown layer, a missing image, a model that cannot load) are
        shown in the panel."""
        sid, wanted, top = self.session.detail, self.layer, self.top
        if sid < 0:
            return
        self.button.disabled = True
        self.message.object = "computing the activations…"

        def work():
            from embviz.activations import layer_kind, mosaic
            from embviz.saliency import default_target_layer

            from .work import one_torch_thread

            one_torch_thread()
            cache = self._cache()
            source = (cache.model, cache.image_size)
            image = cache.image(sid)  # first: a missing file is named even when cached
            embedder = cache.embedder()
            layer = wanted or default_target_layer(embedder)
            # The picker's choices, once per model: only when asked (loading one takes seconds).
            names = None
            if source != self._layers_of:
                names = [n for n, shape in embedder.layers() if layer_kind(shape)]
            acts = cache.get(sid, layer, image=image)
            cells = mosaic(acts, top=top, cols=COLUMNS) if acts.kind == "maps" else None
            return source, names, (acts, image, cells)

        def done(found) -> None:
            source, names, result = found
            self.button.disabled = False
            if self.session.detail != sid or self.layer != wanted:
                return  # another sample or layer was asked for meanwhile
            self._show(sid, *result)
            if names is not None:
                self._layers_of = source
                self.picker.param.update(options=names, value=result[0].layer)

        self.session.in_background(work, done, self._fail)

    def _show(self, sid: int, acts, image, cells) -> None:
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (the backend .opts below are checked against)
        import numpy as np

        if cells is not None:
            picture, channels = cells
            cols = min(COLUMNS, len(channels))  # as mosaic lays them out
            rows = -(-len(channels) // cols)
            element = hv.RGB(np.asarray(picture), bounds=(0, 0, cols, rows)).opts(
                frame_width=picture.width,
                frame_height=picture.height,
                xaxis=None,
                yaxis=None,
                toolbar=None,
                default_tools=[],
                tools=["tap"],
            )
            tap = hv.streams.Tap(source=element, x=None, y=None)
            tap.add_subscriber(self._tapped)
            self._result = _Shown(sid, acts, image, channels, cols)
            what = f"{len(acts.values):,} channels of {acts.values.shape[1]}x{acts.values.shape[2]}"
            rule = "by peak × focus; click one to lay it over the image"
        else:
            top = acts.order[: self.top]
            data = [(r + 1, acts.layer, float(acts.values[i]), int(i)) for r, i in enumerate(top)]
            element = hv.HeatMap(data, ["rank", "layer"], ["activation", "neuron"]).opts(
                cmap="fire",
                tools=["hover"],
                hover_tooltips=[("neuron", "@neuron"), ("activation", "@activation{0.000}")],
                default_tools=[],
                toolbar=None,
                height=80,
                responsive=True,
                xaxis=None,
                yaxis=None,
            )
            self._result = _Shown(sid, acts, image, [], 0)
            what, rule = f"{len(acts.values):,} neurons", "by activation (hover for each)"
        shown = min(len(acts.order), self.top)
        self.message.object = html.escape(
            f"layer {acts.layer}: top {shown} of {what}, {rule} · {acts.seconds:.2f} s"
        )
        if self.plot is None:
            self.plot = pn.pane.HoloViews(element, backend="bokeh", sizing_mode="stretch_width")
            self._layout.append(self.plot)
        else:
            self.plot.object = element
        self.plot.visible = True

    def _tapped(self, x=None, y=None) -> None:
        shown = self._result
        if x is None or y is None or shown is None or not shown.channels:
            return
        rows = -(-len(shown.channels) // shown.cols)
        col, row = math.floor(x), math.floor(rows - y)
        index = row * shown.cols + col
        if 0 <= col < shown.cols and 0 <= row < rows and index < len(shown.channels):
            self.select_channel(shown.channels[index])

    @property
    def shown(self):
        """The :class:`~embviz.activations.Activations` shown (None before the first result or
        after another sample opened)."""
        return self._result.acts if self._result is not None else None

    def select_channel(self, channel: int) -> None:
        """Lay channel ``channel`` of the shown maps over the detail image (as a click on its
        cell does), captioned with its layer, rank and score."""
        shown = self._result
        if shown is None or shown.acts.kind != "maps":
            self.message.object = "show a layer with maps first"
            return
        sid, acts, image = shown.sample, shown.acts, shown.image

        def work():
            from embviz.activations import channel_overlay

            buf = io.BytesIO()
            channel_overlay(image, acts, int(channel)).save(buf, format="PNG")
            return buf.getvalue()

        def done(png: bytes) -> None:
            if self.session.detail != sid:
                return
            rank = int((acts.order == int(channel)).nonzero()[0][0]) + 1
            caption = (
                f"layer {acts.layer}, channel {int(channel)} "
                f"(rank {rank}, score {float(acts.scores[int(channel)]):.3g})"
            )
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            self.details.param.update(overlay_src=uri, overlay_caption=caption)

        self.session.in_background(work, done, self._fail)

    def __panel__(self):
        return self._layout
