"""One person's explorer state and the actions on it: the single owner every panel works through.

A :class:`Session` holds what one page (or notebook cell) has chosen: the dataset, the map drawn
and how it is coloured, the filters and the mask they give, the grid of samples, the sample open
in the detail panel, and the session document that background work reports back to. Panels
(map, 3D cloud, filters, curation, group comparison) take a ``Session`` and use only its public
API; none of them reads another panel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import param

from embviz.dataset import Dataset, open_dataset
from embviz.projections import projection_choices

from .session_series import SeriesActions
from .session_tags import TagActions
from .tagcolumn import TAG_COLUMN, tag_column
from .work import in_background, task_pool

__all__ = ["NOT_COLOURS", "Session", "projection_choices"]

#: Numeric columns that are ids, not quantities: no colour scale, no range filter.
NOT_COLOURS = frozenset({"duplicate_group"})


class Session(TagActions, SeriesActions):
    """The state of one person's view of a dataset, and the actions that change it.

    Data parameters (projection, colour column, filters) make the map re-aggregate; style
    parameters (point size, opacity, spreading, hidden legend entries) only re-shade. The grid
    parameters describe the samples listed under the map; ``detail`` is the open sample.
    """

    embedding = param.Selector(objects=[], doc="Embedding (model and layer) whose maps are listed.")
    projection = param.Selector(objects=[], doc="The 2D projection drawn.")
    color_by = param.Selector(objects=[], doc="Column that colours the points, or 'density'.")
    point_size = param.Integer(default=0, bounds=(0, 6), doc="Extra pixels each point spreads by.")
    opacity = param.Number(default=1.0, bounds=(0.1, 1.0), step=0.05, doc="Opacity of the points.")
    dynspread = param.Boolean(default=True, doc="Enlarge isolated points so sparse areas show.")
    hidden = param.List(default=[], doc="Categories of the colour column left out of the map.")
    filters = param.Dict(
        default={},
        doc="Filters: {column: [values]} for categories, {column: [lo, hi]} for numbers.",
    )
    difference = param.List(
        default=[],
        doc="[A, B]: with color_by the column holding groups A and B, colour where each is "
        "over-represented against the other (a style: nothing is re-aggregated); [] = off.",
    )
    view = param.List(default=[], doc="Visible rectangle [x0, x1, y0, y1]; empty = everything.")
    map_mode = param.Selector(
        default="points",
        objects=["points", "images"],
        doc="Draw the map as coloured points, or as images: one representative thumbnail per "
        "cell of ``cell_px`` pixels at any zoom (a dataset without thumbnails keeps points).",
    )
    cell_px = param.Integer(
        default=64, bounds=(24, 160), doc="Side in screen pixels of an image-map cell."
    )
    cluster_labels = param.Boolean(
        default=True, doc="Name the clusters on the map (finer ones as the view zooms in)."
    )
    contours = param.Boolean(default=False, doc="Draw density contours over the map.")
    detail = param.Integer(default=-1, doc="Sample id shown in the detail panel (-1: none).")
    dims = param.Selector(default="2D", objects=["2D", "3D"], doc="Show the 2D map or 3D cloud.")
    projection3d = param.Selector(objects=[], doc="The 3D projection drawn in the 3D view.")
    budget3d = param.Integer(
        default=250_000, bounds=(1_000, 2_000_000), doc="Most points the 3D view sends per update."
    )
    grid_ids = param.Array(default=None, allow_None=True, doc="Sample ids listed in the grid.")
    grid_captions = param.List(
        default=None, allow_None=True, doc="Caption under each grid card (aligned with grid_ids)."
    )
    grid_title = param.String(default="Selection", doc="Heading of the grid.")
    grid_noun = param.String(default="selected", doc="Word after the grid's count.")
    marked = param.List(default=[], doc="Grid cards marked with ctrl/shift-click (sample ids).")
    tags_version = param.String(default="", doc="Version of the tag store last seen (polled).")
    status = param.String(default="", doc="One line about the last frame (points, time, bytes).")
    images = param.Selector(
        default="routes",
        objects=["routes", "inline"],
        constant=True,
        doc="How images reach the page: URLs of the server's image routes, or data URIs inside "
        "the data (notebooks: Jupyter has no such routes); inline bytes count in frame budgets.",
    )

    def __init__(self, dataset: Dataset | str, **params):
        ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
        groups = projection_choices(ds)
        if not groups:
            raise ValueError(f"{ds.root}: no 2D projection yet; run 'embviz reduce {ds.root}'")
        self._ds = ds
        self._groups = groups
        self._groups3 = projection_choices(ds, dims=3)
        self._stores: dict[tuple[str, int], Any] = {}
        self._doc = None
        self._on_detach: list = []
        self._tags = None
        self._frame_view: list = []
        super().__init__(**params)
        import panel as pn  # the prefix behind `panel serve --prefix /team`

        from .image_links import ImageLinks

        self._images = ImageLinks(ds, self.images, str(pn.state.base_url or "/").rstrip("/"))
        self.param.embedding.objects = list(groups)
        if self.embedding not in groups:  # the embedding of the map asked for, else the first
            wanted = params.get("projection")
            found = (e for e, c in groups.items() if wanted in c.values())
            self.embedding = next(found, next(iter(groups)))
        self._set_projection_objects()
        self.poll_tags()
        self._set_colours()

    # -- what is shown --------------------------------------------------------------------------
    @property
    def dataset(self) -> Dataset:
        """The open dataset (opened once; every panel uses this object)."""
        return self._ds

    def refresh_tables(self) -> None:
        """Re-read the dataset's tables (a job or another process added some); list their maps."""
        self._ds.reload()
        self._groups = projection_choices(self._ds)
        self._groups3 = projection_choices(self._ds, dims=3)
        self.param.embedding.objects = list(self._groups)
        self._set_projection_objects()

    def projections(self, dims: int = 2) -> dict[str, dict[str, str]]:
        """``{embedding: {label: projection}}`` of the dataset's ``dims``-D maps."""
        return self._groups if dims == 2 else self._groups3

    def base_store(self, projection: str, dims: int = 2):
        """The shared point store of ``projection`` as read from the dataset (no tag column)."""
        from embviz.render.store import load_store

        return load_store(self._ds, projection, dims=dims)

    def store_for(self, projection: str, dims: int = 2):
        """The shared point store of ``projection`` with this session's tag column added."""
        return tag_column(self.base_store(projection, dims), self.tags(), self.tags_version)

    @property
    def store(self):
        """The point store of the current 2D projection."""
        return self.store_for(self.projection)

    @property
    def store3d(self):
        """The point store of the current 3D projection, or None when the dataset has none."""
        return self.store_for(self.projection3d, dims=3) if self.projection3d else None

    def _set_projection_objects(self) -> None:
        choices3 = self._groups3.get(self.embedding) or {}
        self.param.projection3d.objects = list(choices3.values())
        self.param.projection3d.names = choices3
        if choices3 and self.projection3d not in choices3.values():
            self.projection3d = next(iter(choices3.values()))
        choices = self._groups[self.embedding]
        self.param.projection.objects = list(choices.values())
        self.param.projection.names = choices
        if self.projection not in choices.values():
            wanted = self._wanted_projection  # a map of this embedding asked for by name
            self.projection = wanted if wanted in choices.values() else next(iter(choices.values()))

    @param.depends("embedding", watch=True)
    def _on_embedding(self) -> None:
        self._set_projection_objects()

    @param.depends("projection", watch=True)
    def _new_map(self) -> None:
        if self.view and self.view == self._frame_view:
            self.view = []  # the old map's view: its coordinates mean nothing on the new one
        self._set_colours()

    @param.depends("tags_version", watch=True)
    def _set_colours(self) -> None:
        s = self.store
        cats = list(s.categorical)
        nums = [c for c in s.numeric if c not in NOT_COLOURS]
        prefer = [c for c in ("label", "split", "prediction", TAG_COLUMN) if c in cats]
        order = prefer + [c for c in cats if c not in prefer] + nums + ["density"]
        self.param.color_by.objects = order
        if self.color_by not in order:
            self.color_by = order[0]

    def color_mode(self) -> tuple[str, str | None]:
        """``(mode, column)``: ``("category", col)``, ``("numeric", col)`` or ``("density", None)``."""
        if self.color_by == "density":
            return "density", None
        if self.color_by in self.store.numeric:
            return "numeric", self.color_by
        return "category", self.color_by

    def style(self):
        """``(mode, column, Style)`` of the next frame."""
        from embviz.render.raster import Style

        mode, col = self.color_mode()
        diff = self.difference
        return (
            mode,
            col,
            Style(
                point_size=self.point_size,
                dynspread=self.dynspread,
                opacity=self.opacity,
                hidden=frozenset(self.hidden) if mode == "category" else frozenset(),
                difference=(str(diff[0]), str(diff[1]))
                if mode == "category" and len(diff) == 2
                else None,
            ),
        )

    @param.depends("color_by", watch=True)
    def _clear_hidden(self) -> None:
        if self.hidden and self.color_by not in self.store.categorical:
            self.hidden = []

    def frame_shown(self, view, status: str) -> None:
        """A map frame reached the page: remember its view (the URL follows) and its status."""
        self._frame_view = [float(view.x0), float(view.x1), float(view.y0), float(view.y1)]
        self.param.update(view=list(self._frame_view), status=status)

    # -- filters --------------------------------------------------------------------------------
    def set_filter(self, column: str, value: list) -> None:
        """Filter ``column`` to categories ``value`` or a numeric ``[lo, hi]``; [] removes it."""
        filters = dict(self.filters)
        if value:
            filters[column] = list(value)
        else:
            filters.pop(column, None)
        self.filters = filters

    @property
    def filter_key(self) -> str:
        """A key that changes whenever the rows passing the filters may change."""
        tagged = TAG_COLUMN in self.filters
        return repr(sorted(self.filters.items())) + (self.tags_version if tagged else "")

    def mask_for(self, store) -> np.ndarray | None:
        """The rows of ``store`` that pass the filters (None: all)."""
        mask = None
        for name, value in sorted(self.filters.items()):
            if name in store.categorical and value:
                codes, names = store.categorical[name]
                wanted = set(value)
                keep = np.array([i for i, n in enumerate(names) if n in wanted], dtype=codes.dtype)
                m = np.isin(codes, keep)
            elif name in store.numeric and len(value) == 2:
                v = store.numeric[name]
                m = (v >= float(value[0])) & (v <= float(value[1]))
            else:
                continue
            mask = m if mask is None else (mask & m)
        return mask

    # -- the grid -------------------------------------------------------------------------------
    def show(self, ids, *, title: str = "Selection", captions=None, noun: str = "selected") -> None:
        """List samples ``ids`` in the grid in this order (the map outlines them).

        Selections, similarity results and top-N views all arrive here; ``captions`` (aligned
        with ``ids``) are shown under the cards, e.g. a distance or a score.
        """
        ids = np.asarray(ids, dtype=np.int64)
        self.param.update(
            grid_ids=ids,
            grid_captions=None if captions is None else [str(c) for c in captions],
            grid_title=str(title),
            grid_noun=str(noun),
            marked=[],
        )

    def select(self, ids) -> None:
        """Select samples by id (from Python or a panel): those on the map fill the grid."""
        ids = np.asarray(list(ids), dtype=np.int64)
        self.show(ids[self.store.row_of(ids) >= 0])

    @property
    def shown_ids(self) -> np.ndarray:
        """The grid's sample ids (empty when nothing is listed)."""
        return np.asarray(self.grid_ids if self.grid_ids is not None else [], dtype=np.int64)

    @property
    def selected(self):
        """The grid's samples as a pandas DataFrame of their samples-table rows, in grid order."""
        ids = self.shown_ids
        table = self._ds.read_ids("samples", ids)
        frame = table.to_pandas()
        return frame.drop(columns=["thumb_id"], errors="ignore").reset_index(drop=True)

    def toggle_mark(self, sample_id: int) -> None:
        """Mark or unmark one grid card (the target of "apply to marked")."""
        sid = int(sample_id)
        self.marked = (
            [m for m in self.marked if m != sid] if sid in self.marked else [*self.marked, sid]
        )

    # -- the open sample ------------------------------------------------------------------------
    def open(self, sample_id: int | None) -> None:
        """Open ``sample_id`` in the detail panel (None or -1 closes it)."""
        self.detail = -1 if sample_id is None else int(sample_id)

    def refresh_detail(self) -> None:
        """Show the open sample again (its tags changed)."""
        self.param.trigger("detail")

    def describe(self, sample_id: int) -> dict[str, Any]:
        """What the detail panel shows of ``sample_id``: its fields, tags and neighbours.

        Returns ``{"record": {...}, "image": url, "neighbours": [{id, label, src, distance}],
        "predictions": [{label, p}, ...]}`` (the top-k of the ``predict`` step, most probable
        first; [] without predictions).
        """
        from .records import neighbour_cards, sample_record

        record = sample_record(self._ds, sample_id)
        meta = self._ds.meta(f"projections/{self.projection}")
        space, items = neighbour_cards(self._ds, self.store, meta, sample_id, self.thumb_url)
        record = {"neighbours in": space, **record}
        tags = self.tags_of(sample_id)
        if tags:
            record["tags"] = tags
        from embviz.predictions import read_top_k

        top_k = [{"label": c, "p": p} for c, p in read_top_k(self._ds, sample_id)]
        return {
            "record": record,
            "image": self.image_url(sample_id),
            "neighbours": items,
            "predictions": top_k,
        }

    # -- images: route URLs keyed by id (never a path), or data URIs (``images="inline"``) ------
    @property
    def has_images(self) -> bool:
        """Whether the dataset has thumbnails to show."""
        return self._images.key is not None

    def thumb_urls(self, ids) -> list[str]:
        """The thumbnail sources of samples ``ids`` ("" where none), read together."""
        return self._images.thumbs(ids)

    def thumb_url(self, sample_id: int) -> str:
        """The source of a sample's thumbnail ("" without thumbnails)."""
        return self._images.thumb(sample_id)

    def image_url(self, sample_id: int) -> str:
        """The source of a sample's large image ("" without thumbnails)."""
        return self._images.image(sample_id)

    # -- the page and background work -----------------------------------------------------------
    @property
    def doc(self):
        """The session's Bokeh document in a server, else None (notebooks, tests, scripts)."""
        return self._doc

    def attach(self, doc) -> None:
        """Bind to a server session's document (frames and results are sent to it)."""
        if doc is None or getattr(doc, "session_context", None) is None or doc is self._doc:
            return
        self._doc = doc
        doc.on_session_destroyed(self._detach)

    def on_detach(self, fn) -> None:
        """Call ``fn()`` when the session's page closes (views stop sending frames)."""
        self._on_detach.append(fn)

    def _detach(self, _session_context) -> None:
        self._doc = None  # the page is gone: work still running finds no document to update
        for fn in self._on_detach:
            fn()

    def in_background(self, work, done, fail) -> None:
        """Run ``work`` on the task pool (never the event loop), then ``done(result)`` or
        ``fail(exc)`` on the session's thread; runs at once outside a server."""
        in_background(self._doc, work, done, fail, pool=task_pool)
