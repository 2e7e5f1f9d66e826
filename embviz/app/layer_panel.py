"""The layer picker: the model's blocks as a diagram; one with a map switches to it, one without
is embedded and mapped from the app (a background job) or by the CLI commands it shows.

The diagram (HoloViews rectangles and labels with a ``Tap`` stream) is built when the panel is
first shown: the session's model (with its image size) is loaded and one blank forward pass
lists its layers with their output shapes, so a new layer's table is comparable with the others.
"""

from __future__ import annotations

import difflib
import html
import importlib.util
from functools import partial

import panel as pn
import param

from . import layer_job as jobs
from .notice import Notice
from .session import Session
from .widgets import PANEL_CSS
from .widgets.markup import Markup

__all__ = ["APP_JOB_ROWS", "COLOURS", "LayerPanel"]

#: Most samples the app embeds and maps itself (about 10 minutes on this machine's CPU for a
#: mid-size model); above it the panel shows the CLI commands to run instead.
APP_JOB_ROWS = 100_000
#: Block colours: a layer with a 2D map, one embedded but not mapped, one not embedded.
COLOURS = {"mapped": "#9ecae1", "embedded": "#c7e9c0", "none": "#eeeeee"}
#: Pixels of one block in the diagram.
ROW_PX = 22
STRETCH = {"sizing_mode": "stretch_width"}


class LayerPanel(pn.viewable.Viewer):
    """The model's layers as a diagram of blocks: pick one to see its map, or to embed and map it.

    A layer with a 2D map switches the session to it; one without offers a background job
    (``embviz embed`` then ``embviz reduce``) on datasets up to :data:`APP_JOB_ROWS` samples,
    and shows those commands to copy for larger ones.
    """

    layer = param.String(
        default="",
        doc="The picked layer's name (a block of the diagram or any layer of the list); a name "
        "the model does not have gets a message saying so.",
    )
    reducer = param.Selector(
        default="umap",
        objects=["umap", "pca"],
        doc="How a newly embedded layer is mapped: UMAP after PCA to 50 dimensions (the demo "
        "recipe's; keeps neighbours, ~20 s more) or PCA (seconds; used when umap is missing).",
    )
    progress = param.String(
        default="", doc="What the running job is doing ('embedding 48/120 images'); '' if none."
    )

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.spec = jobs.model_spec(session.dataset, session.embedding)
        self.available = self.spec is not None
        self.job = None  #: the last job this panel started (a :class:`LayerJob`), or None
        self.notice = Notice("embviz-layer-notice")
        self._shapes: dict[str, tuple[int, ...]] | None = None  # every layer, once loaded
        self._blocks: list[tuple[str, tuple[int, ...]]] = []
        self._loading: jobs.ModelSpec | None = None
        self._dmaps: list = []  # the diagram's boxes and labels, once drawn
        self.tap = None  #: the diagram's ``hv.streams.Tap`` (clicks on blocks), once drawn
        self._syncing = False  # the list is being set from code, not by the person
        self._select = pn.widgets.Select(label="Layer", options=[], **STRETCH)
        self._select.param.watch(self._picked_in_list, "value")
        self._button = pn.widgets.Button(
            label="Embed and map this layer", color="primary", visible=False
        )
        self._button.on_click(lambda _: self.embed_layer())
        self._stop = pn.widgets.Button(label="Stop", visible=False)
        self._stop.on_click(lambda _: self.stop())
        self._bar = pn.indicators.Progress(value=-1, max=100, visible=False, **STRETCH)
        self._commands = Markup("", stylesheets=[PANEL_CSS], **STRETCH)
        self._plot = pn.Column(**STRETCH)
        self._heading = Markup("", stylesheets=[PANEL_CSS], **STRETCH)
        parts = [self._heading, self._plot, self._select, self.notice]
        parts += [pn.Row(self._button, self._stop), self._bar, self._commands]
        self._layout = pn.Column(*parts, css_classes=["embviz-layers"], **STRETCH)
        self._say_model()
        session.param.watch(self._on_embedding, "embedding")

    # -- the model and its layers ---------------------------------------------------------------
    @property
    def blocks(self) -> list[tuple[str, str, str]]:
        """The diagram's blocks in model order: ``(layer, shape text, state)``; the state is
        ``mapped``, ``embedded`` or ``none``."""
        return [(name, jobs.shape_text(shape), self.state_of(name)) for name, shape in self._blocks]

    def show(self) -> None:
        """Load the model and draw its diagram (the first time the panel is shown)."""
        spec = self.spec
        if spec is None or self._shapes is not None or self._loading == spec:
            return
        self._loading = spec
        self.notice.say(f"Loading {spec.model} to list its layers…")

        def work():
            from embviz.models import cached_embedder

            return cached_embedder(spec.model, image_size=spec.image_size).layers()

        self.session.in_background(
            work, partial(self._loaded, spec), partial(self._load_failed, spec)
        )

    def _loaded(self, spec: jobs.ModelSpec, layers) -> None:
        if spec.key != self.spec.key:
            return  # the session moved to another model meanwhile; its load is under way
        self._loading = None
        self._shapes = {name: tuple(shape) for name, shape in layers}
        self._blocks = jobs.layer_blocks(layers)
        self._sync_list(self.layer or spec.layer)
        self.notice.say("")
        self._draw()
        if self.layer:
            self._apply()
        else:
            self.layer = spec.layer

    def _sync_list(self, layer: str) -> None:
        self._syncing = True
        try:
            names = list(self._shapes or {})
            if self._select.options != names:
                self._select.options = names
            self._select.value = layer if layer in names else None
        finally:
            self._syncing = False

    def _picked_in_list(self, event) -> None:
        if not self._syncing and event.new:
            self.layer = event.new

    def _load_failed(self, spec: jobs.ModelSpec, exc: Exception) -> None:
        if spec.key != self.spec.key:
            return
        self._loading = None
        what = f"model {spec.model!r} cannot be loaded to list its layers"
        self.notice.say(f"{what}: {type(exc).__name__}: {exc}", error=True)

    def _on_embedding(self, event) -> None:
        spec = jobs.model_spec(self.session.dataset, event.new)
        if spec is not None and spec.key != self.spec.key:  # another model: its own diagram
            shown = self._shapes is not None or self._loading is not None
            self.spec, self._shapes, self._blocks, self._loading = spec, None, [], None
            self._say_model()
            if shown:
                self.layer = ""
                self.show()
            return
        self.spec = spec or self.spec  # a job copies this embedding's reshape and name prefix
        key, ds = f"embeddings/{event.new}", self.session.dataset
        if self._shapes is not None and ds.has(key) and ds.meta(key).get("model") == spec.model:
            self.layer = spec.layer  # the View tab's choice shows here too

    def _say_model(self) -> None:
        spec = self.spec
        if spec is None:
            text = "No model: this dataset's embeddings were given, not made by a model."
        else:
            size = f" at {spec.image_size} px" if spec.image_size else ""
            key = " ".join(
                f'<span style="background:{c}">&nbsp;{w}&nbsp;</span>'
                for w, c in zip(("mapped", "embedded", "not yet"), COLOURS.values(), strict=True)
            )
            text = (
                f'<div class="embviz-heading">Layers of {html.escape(spec.model)}{size}</div>'
                f'<div class="embviz-muted">Click a block (or pick any layer below): {key}</div>'
            )
        self._heading.object = text

    # -- which layers have embeddings and maps --------------------------------------------------
    def embedding_of(self, layer: str) -> str | None:
        """The dataset's embedding of ``layer`` made like the session's (same model, image size),
        one with a 2D map first; None when there is none."""
        if self.spec is None:
            return None
        prefer = [self.session.embedding, *self.session.projections(2)]
        return jobs.layer_embedding(self.session.dataset, self.spec, layer, prefer=prefer)

    def state_of(self, layer: str) -> str:
        """``mapped`` (an embedding with a 2D map), ``embedded`` (no map yet) or ``none``."""
        name = self.embedding_of(layer)
        if name is None:
            return "none"
        return "mapped" if name in self.session.projections(2) else "embedded"

    # -- the diagram ----------------------------------------------------------------------------
    def _draw(self) -> None:
        import holoviews as hv

        for dmap in self._dmaps:
            dmap.event()
        if self._dmaps:
            return
        # Boxes and labels apart: a Tap whose source is an overlay's DynamicMap never fires.
        self._dmaps = [
            hv.DynamicMap(lambda layer="": self.diagram(layer).get(0), streams=[self.param.layer]),
            hv.DynamicMap(
                lambda layer="": hv.Overlay(self.diagram().values()[1:]), streams=[self.param.layer]
            ),
        ]
        self.tap = hv.streams.Tap(x=None, y=None, source=self._dmaps[0])  #: clicks on blocks
        self.tap.add_subscriber(self._tapped)
        both = self._dmaps[0] * self._dmaps[1]
        self._plot.objects = [pn.pane.HoloViews(both, backend="bokeh", **STRETCH)]

    def diagram(self, layer: str = ""):
        """The diagram as a HoloViews overlay: a box per block, ``layer``'s outlined."""
        import holoviews as hv

        n = max(len(self._blocks), 1)
        blocks = self.blocks
        boxes = [(0.0, i + 0.06, 1.0, i + 0.94, *b, b[0] == layer) for i, b in enumerate(blocks)]
        rects = hv.Rectangles(
            boxes, ["x0", "y0", "x1", "y1"], ["layer", "shape", "state", "picked"]
        ).opts(
            color=hv.dim("state").categorize(COLOURS, default=COLOURS["none"]),
            line_color=hv.dim("picked").categorize({True: "#08306b"}, default="#ffffff"),
            line_width=hv.dim("picked").categorize({True: 2.5}, default=1.0),
            tools=["hover", "tap"],
            hover_tooltips=[("layer", "@layer"), ("output", "@shape"), ("", "@state")],
            selection_alpha=1.0,
            nonselection_alpha=1.0,  # a clicked block must not grey out the others
            xaxis=None,
            yaxis=None,
            xlim=(0, 1),
            ylim=(0, n),
            invert_yaxis=True,
            padding=0,
            border=0,
            show_frame=False,
            height=n * ROW_PX,
            responsive=True,
            toolbar=None,
            default_tools=[],
        )
        text = {"text_font_size": "9pt", "text_baseline": "middle", "text_color": "#222"}
        text["default_tools"] = []
        names, shapes = (
            hv.Labels(
                [(x, i + 0.5, b[col]) for i, b in enumerate(blocks)], ["x", "y"], "text"
            ).opts(text_align=align, **text)
            for x, col, align in ((0.03, 0, "left"), (0.97, 1, "right"))
        )
        return rects * names * shapes

    def _tapped(self, x=None, y=None) -> None:
        if y is not None and 0 <= y < len(self._blocks):
            self.layer = self._blocks[int(y)][0]

    # -- picking a layer ------------------------------------------------------------------------
    @param.depends("layer", watch=True)
    def _apply(self) -> None:
        if self._shapes is None:
            if self.layer:
                self.show()  # picked from code before the tab was opened: _loaded applies it
            return
        self._button.visible = False
        self._commands.object = ""
        layer = self.layer
        if not layer or not self._can_embed(layer, switch=True):
            return
        rows = self.rows
        name = self.embedding_of(layer)
        running = jobs.running_job(self.session.dataset.root)
        self._button.visible = running is None
        what = "is embedded but has no map yet" if name else "has no embedding yet"
        self.notice.say(
            f"{layer} {what}: embed and map its {rows:,} samples in the background."
            if running is None
            else f"{layer} {what}; a job is running on this dataset: {running.title}."
        )

    def _can_embed(self, layer: str, *, switch: bool) -> bool:
        """Whether ``layer`` may be embedded here; if not, say why (or, with ``switch``, show
        its map when it has one)."""
        if self._shapes is None or layer not in self._shapes:
            near = difflib.get_close_matches(layer, list(self._shapes or {}), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; pick one from the list"
            self.notice.say(
                f"model {self.spec.model!r} has no layer {layer!r}{hint} ('embviz layers "
                f"{self.spec.model}' lists all of them with their shapes)"
                if self._shapes is not None
                else f"The layers of {self.spec.model} are not loaded yet.",
                error=True,
            )
            return False
        self._sync_list(layer)
        name = self.embedding_of(layer)
        if name is not None and name in self.session.projections(2):
            if switch and self.session.embedding != name:
                self.session.embedding = name  # the session picks its best 2D map
            self.notice.say(f"Showing the map of {name}." if switch else f"{name} has a map.")
            return False
        if self.rows > APP_JOB_ROWS:
            self._show_commands(layer, self.rows)
            return False
        return True

    @property
    def rows(self) -> int:
        """Samples in the dataset (what a job would embed)."""
        return int(self.session.dataset.table("samples")["rows"])

    def commands(self, layer: str | None = None) -> list[list[str]]:
        """The ``embviz`` arguments (embed, then reduce) that embed and map ``layer`` (default
        the picked one) like the session's embedding; the app's job runs exactly these."""
        return jobs.job_commands(
            self.session.dataset.root, self.spec, layer or self.layer, method=self.method
        )

    @property
    def method(self) -> str:
        """The reducer a job uses: :attr:`reducer`, or ``pca`` when umap is not installed."""
        return self.reducer if importlib.util.find_spec("umap") is not None else "pca"

    def _show_commands(self, layer: str, rows: int) -> None:
        lines = "\n".join(jobs.command_line(args) for args in self.commands(layer))
        self.notice.say(
            f"{layer} has no map, and this dataset's {rows:,} samples are more than the app "
            f"embeds ({APP_JOB_ROWS:,}): run these commands, then reload the page."
        )
        self._commands.object = (
            '<pre class="embviz-layer-commands" style="white-space:pre-wrap;font-size:11px;'
            f'user-select:all">{html.escape(lines)}</pre>'
        )

    # -- the job --------------------------------------------------------------------------------
    def embed_layer(self):
        """Embed and map the picked layer in the background (as its :meth:`commands` do);
        returns the :class:`~embviz.app.layer_job.LayerJob`, or None when none started (the
        panel says why: a map exists, too many rows, a job is already running)."""
        layer = self.layer
        if self.spec is None or not self._can_embed(layer, switch=False):
            return None
        try:
            job = jobs.start_job(
                self.session.dataset.root,
                self.commands(layer),
                title=f"embedding {layer} of {self.spec.model}",
                listener=partial(self._heard, layer),
            )
        except jobs.JobRunning as exc:
            self.notice.say(str(exc), error=True)
            return None
        self.job = job
        self._button.visible, self._stop.visible, self._bar.visible = False, True, True
        self.notice.say(f"Embedding and mapping {layer} in the background…")
        return job

    def stop(self) -> None:
        """Stop this panel's running job (the embed step resumes when started again)."""
        if self.job is not None:
            self.job.stop()

    def _heard(self, layer: str, state: jobs.JobState) -> None:
        doc = self.session.doc  # called on the job's thread: the page is updated on its own
        if doc is None:
            self._update(layer, state)
        else:
            doc.add_next_tick_callback(partial(self._update, layer, state))

    def _update(self, layer: str, state: jobs.JobState) -> None:
        self.progress = state.describe(layer, self.method)
        if state.status == "running":
            self._bar.value = int(100 * state.done / state.total) if state.total else -1
            self.notice.say(self.progress)
            return
        self._stop.visible = self._bar.visible = False
        if state.status == "done":
            self.session.refresh_tables()
            self._draw()
            if self.layer == layer:
                self._apply()  # switches the map to the new layer's
            else:
                self.notice.say(f"{layer} is mapped: pick it to see its map.")
        elif state.status == "stopped":
            self.notice.say(f"Stopped {layer}; embed it again to resume where it stopped.")
            self._button.visible = self.layer == layer
        else:
            self.notice.say(f"Embedding {layer} failed: {state.last_line}", error=True)
            self._button.visible = self.layer == layer

    def __panel__(self):
        return self._layout
