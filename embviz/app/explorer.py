"""The explorer: a session with its map, 3D cloud, filters, sample panels and curation, laid out.

The :class:`~embviz.app.session.Session` owns the state; every panel takes the session and
uses its public API; the explorer only composes them and lays them out.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import cached_property

import panel as pn

from embviz.dataset import Dataset

from .session import Session, projection_choices
from .widgets.markup import Markup

__all__ = ["POLL_MS", "SIDE_HEIGHT", "Explorer", "projection_choices"]

#: Height in pixels of the side column when the explorer is shown by itself (a notebook).
SIDE_HEIGHT = 860
#: How often a session looks for tags written by other sessions or processes (milliseconds).
POLL_MS = 3000


class Explorer(pn.viewable.Viewer):
    """A dataset's maps rendered on the server, with selection, filters, details and curation.

    ``Explorer(ds)`` takes an open :class:`~embviz.dataset.Dataset` (or its folder); keyword
    arguments set the session's parameters (``projection``, ``color_by``, ``filters`` ...).
    """

    def __init__(self, dataset: Dataset | str, **params):
        from .annotations import MapAnnotations
        from .map_panel import MapPanel

        super().__init__()
        self.session = Session(dataset, **params)
        self.session.attach(_server_doc())
        annotate = MapAnnotations(self.session, lambda: self.map_panel.map)
        self.map_panel = MapPanel(self.session, annotate=annotate)
        self._cloud = None  # the 3D panel, built when 3D is first shown (deck.gl loads then)
        self._status = Markup(
            html.escape(self.session.status),
            sizing_mode="stretch_width",
            # Its line's height from the start: a map laid out before the first status arrives
            # would otherwise keep a canvas 20 px taller than its pane, under the status line.
            min_height=24,
            css_classes=["embviz-status"],
        )
        self.session.param.watch(
            lambda e: setattr(self._status, "object", html.escape(e.new)), "status"
        )
        self._select_view = pn.widgets.Button(
            label="Select the points in view", visible=False, css_classes=["embviz-select-view"]
        )
        self._select_view.on_click(lambda _: self.cloud_panel.select_in_view())
        # Samples the map leaves out (non-finite coordinates, no vector): counted, listable.
        self._unplaced = pn.widgets.Button(label="", visible=False, css_classes=["embviz-unplaced"])
        self._unplaced.on_click(lambda _: self.list_unplaced())
        self.session.param.watch(self._count_unplaced, "projection")
        self._count_unplaced()
        self._view_area = pn.Column(self.map_panel, sizing_mode="stretch_both", min_height=640)
        self.session.param.watch(self._show_dims, ["dims", "projection3d", "budget3d"])
        self._show_dims()
        if self.session.doc is not None:  # tags from other sessions or `embviz tag` show up
            from panel.io.callbacks import PeriodicCallback

            # ``background``: a foreground callback counts as "busy" for Panel, process-wide.
            PeriodicCallback(
                callback=self.session.poll_tags, period=POLL_MS, background=True
            ).start()

    # -- panels, each built on first use --------------------------------------------------------
    # A page opens with the map only; the side column and the sample panels follow once it has
    # loaded (:func:`~embviz.app.server.explorer_page`), so a crowd opening at once waits for
    # maps, not for widgets (a session's build was the opening bottleneck at 25 people).
    @cached_property
    def samples(self):
        """The grid of listed samples beside the open sample's details."""
        from .samples_panel import SamplePanels

        return SamplePanels(self.session)

    @cached_property
    def filters(self):
        """A filter widget per column of the map."""
        from .filters import FilterPanel

        return FilterPanel(self.session)

    @cached_property
    def search(self):
        """Find similar samples (by a sample, a selection, an upload or text)."""
        from .search_panel import SearchPanel

        return SearchPanel(self.session)

    @cached_property
    def curator(self):
        """Ranked issues, tags and export."""
        from .curate import Curator

        return Curator(self.session)

    @cached_property
    def compare(self):
        """Two groups side by side."""
        from .compare_view import SplitCompare

        return SplitCompare(self.session)

    @cached_property
    def series(self):
        """The player over the current map's series (checkpoints, layers) and the motion
        switches."""
        from .series_panel import SeriesPanel

        return SeriesPanel(self.session)

    @cached_property
    def model(self):
        """The model's predictions (a classifier's)."""
        from .model_panel import ModelPanel

        return ModelPanel(self.session)

    @cached_property
    def layers(self):
        """The network's layers; the one picked is what the open sample's activations show."""
        from .layer_panel import LayerPanel

        layers = LayerPanel(self.session)
        # The sample panels are built when a layer is first picked (not with the side column).
        layers.param.watch(
            lambda e: e.new and setattr(self.samples.activations, "layer", e.new), "layer"
        )
        return layers

    # -- parts, for notebooks and tests ---------------------------------------------------------
    @property
    def map(self):
        """The 2D map view (its figure, last frame, highlighted rows)."""
        return self.map_panel.map

    @property
    def legend(self):
        """The legend of the colour column."""
        return self.map_panel.legend

    @property
    def grid(self):
        """The grid of listed samples."""
        return self.samples.grid

    @property
    def details(self):
        """The detail panel of the open sample."""
        return self.samples.details

    @property
    def cloud_panel(self):
        """The 3D panel (built on first use)."""
        if self._cloud is None:
            from .cloud_panel import CloudPanel

            self._cloud = CloudPanel(self.session)
        return self._cloud

    @property
    def cloud(self):
        """The 3D view, or None before 3D is shown."""
        return self._cloud.cloud if self._cloud is not None else None

    @property
    def selected(self):
        """The selected samples (box, lasso, 3D view or :meth:`select`) as a DataFrame of their
        samples-table rows, in selection order."""
        return self.session.selected

    def select(self, ids) -> None:
        """Select samples by id from Python: they fill the grid and are outlined on the map."""
        self.session.select(ids)

    # -- samples not on the map ----------------------------------------------------------------
    @property
    def unplaced(self) -> int:
        """How many samples the current map leaves out (non-finite coordinates)."""
        ds = self.session.dataset
        key = f"projections/{self.session.projection}"
        return int(ds.meta(key).get("unplaced", 0)) if ds.has(key) else 0

    def _count_unplaced(self, *_events) -> None:
        n = self.unplaced
        self._unplaced.param.update(
            label=f"{n:,} samples have no coordinates here: list them", visible=n > 0
        )

    def list_unplaced(self) -> None:
        """List in the grid the samples the current map leaves out (their coordinates were not
        finite, or they have no vector in its embedding), to look at, tag or export."""
        from embviz.projections import unplaced_ids

        ids = unplaced_ids(self.session.dataset, self.session.projection)
        self.session.show(ids, title="Not on this map", noun="samples without coordinates")

    # -- 2D / 3D --------------------------------------------------------------------------------
    def _show_dims(self, *_events) -> None:
        s = self.session
        if s.dims != "3D" or not s.projection3d:
            self._view_area.objects = [self.map_panel]
            self._select_view.visible = False
            self.map_panel.show_last()
            return
        self.cloud_panel.show()
        self._view_area.objects = [self.cloud_panel]
        self._select_view.visible = True

    # -- layout ---------------------------------------------------------------------------------
    def controls(self) -> pn.Column:
        """Data choice, colouring, legend, style and filters."""
        s = self.session
        three_d = (
            [
                pn.widgets.RadioButtonGroup.from_param(s.param.dims, label="View"),
                pn.widgets.Select.from_param(s.param.projection3d, label="3D projection"),
            ]
            if s.projections(3)
            else []
        )
        return pn.Column(
            pn.widgets.Select.from_param(s.param.embedding, label="Embedding"),
            pn.widgets.Select.from_param(s.param.projection, label="Projection"),
            self.series,
            *three_d,
            pn.widgets.Select.from_param(s.param.color_by, label="Colour by"),
            self.legend,
            _rule(),
            pn.widgets.IntSlider.from_param(s.param.point_size, label="Point size"),
            pn.widgets.FloatSlider.from_param(s.param.opacity, label="Opacity"),
            pn.widgets.Checkbox.from_param(s.param.dynspread, label="Spread sparse points"),
            pn.widgets.RadioButtonGroup.from_param(
                s.param.map_mode, label="Map", css_classes=["embviz-map-mode"]
            ),
            pn.widgets.IntSlider.from_param(s.param.cell_px, label="Image cell (px)"),
            pn.widgets.Checkbox.from_param(s.param.cluster_labels, label="Cluster labels"),
            pn.widgets.Checkbox.from_param(s.param.contours, label="Density contours"),
            _rule(),
            pn.pane.Markdown("**Filters**"),
            self.filters,
            sizing_mode="stretch_width",
        )

    def tools(self) -> pn.Column:
        """Curation: find similar, rank, tag, export, and compare groups (collapsible cards)."""
        search = [pn.Card(self.search, title="Find similar", sizing_mode="stretch_width")]
        return pn.Column(
            *(search if self.search.available else []),
            self.curator,
            pn.Card(
                self.compare, title="Compare groups", collapsed=True, sizing_mode="stretch_width"
            ),
            sizing_mode="stretch_width",
            css_classes=["embviz-tools"],
        )

    def sidebar(self) -> pn.Tabs:
        """The side column: the view's controls, curation, and the model's predictions."""
        curate = pn.Column(sizing_mode="stretch_width")
        tabs = pn.Tabs(
            ("View", self.controls()),
            ("Curate", curate),
            # Only the open tab becomes Bokeh models, and the curation panels are made when
            # their tab first opens: a session that never curates never builds them (a side
            # column's build holds the event loop that every session of the process shares).
            dynamic=True,
            sizing_mode="stretch_width",
            css_classes=["embviz-sidebar-tabs"],
        )
        tabs.param.watch(
            lambda e: e.new == 1 and not curate.objects and curate.append(self.tools()), "active"
        )
        if self.model.available or self.layers.available:  # built when first opened
            parts = [self.model] if self.model.available else []  # a classifier's predictions
            tabs.append(("Model", pn.Column(*parts, self.layers, sizing_mode="stretch_width")))
            tabs.param.watch(
                lambda e: e.new == 2 and (self.model.show(), self.layers.show()), "active"
            )
        return tabs

    def main(self, below=None) -> pn.Column:
        """The map (taking the space the window gives it), its status line, then ``below``
        (default: the grid beside the detail panel)."""
        return pn.Column(
            self._view_area,
            pn.Row(self._status, self._select_view, self._unplaced, sizing_mode="stretch_width"),
            self.samples if below is None else below,
            sizing_mode="stretch_both",
        )

    def deferred(self) -> tuple[pn.Column, pn.Column, Callable[[], None]]:
        """``(side, below, fill)``: empty columns for the side and the sample panels, and the
        call that builds them into those columns (a page sends the map first, then fills)."""
        side = pn.Column(sizing_mode="stretch_width", css_classes=["embviz-side"])
        below = pn.Column(sizing_mode="stretch_width", css_classes=["embviz-below"])

        def samples(*_events) -> None:
            if not below.objects:
                below.objects = [self.samples]

        def fill() -> None:
            side.objects = [self.sidebar()]
            s = self.session
            if s.grid_ids is not None or s.detail >= 0:
                samples()
            else:  # built with the first listed or opened sample: most visits start on the map
                s.param.watch(samples, ["grid_ids", "detail"])

        return side, below, fill

    def __panel__(self):
        # Outside the server's template (notebooks, pn.serve(explorer)) the side column
        # scrolls within a fixed height: grown to its own length, it would stretch the map
        # past the window (with many filters, over 1,500 px).
        side = pn.Column(self.sidebar(), width=320, height=SIDE_HEIGHT, scroll=True)
        return pn.Row(side, self.main(), sizing_mode="stretch_width")


def _rule() -> Markup:
    # Not pn.layout.Divider: built after the page loaded (the side column is), its stylesheet
    # stays a link to Panel's CDN, and the page must fetch nothing from another host.
    return Markup('<hr style="border:0;border-top:1px solid #ddd;margin:6px 0">', margin=(0, 10))


def _server_doc():
    doc = pn.state.curdoc
    return doc if doc is not None and getattr(doc, "session_context", None) is not None else None
