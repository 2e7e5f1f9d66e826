"""The explorer component: map, legend, filters, selection grid and detail panel of a dataset."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import panel as pn
import param

from embviz.dataset import open_dataset

from . import routes
from .mapview import MapResult, MapView
from .raster import Style
from .records import neighbours_for, sample_record
from .store import View, load_store
from .widgets import DetailPanel, Legend, SelectionGrid

__all__ = ["Explorer", "projection_choices"]

#: Neighbour-preserving maps first: they are what people open the explorer to see.
_RANK = {"umap": 0, "pacmap": 1, "tsne": 2, "pca": 3}
#: Categorical columns with more values than this get no filter widget (they still colour).
_MAX_FILTER_CHOICES = 200
#: Numeric columns that are ids, not quantities: no colour scale, no range filter (the
#: curation panel shows duplicate groups side by side instead).
_NOT_COLOURS = frozenset({"duplicate_group"})


def projection_choices(ds, dims: int = 2) -> dict[str, dict[str, str]]:
    """Projections with ``dims`` dimensions grouped by source embedding:
    ``{embedding: {label: projection}}``, neighbour-preserving methods first."""
    groups: dict[str, dict[str, str]] = {}
    flat = [p for p in ds.projections if ds.meta(f"projections/{p}").get("dims", 2) == dims]
    flat.sort(key=lambda p: (_RANK.get(ds.meta(f"projections/{p}").get("method"), 4), p))
    for p in flat:
        meta = ds.meta(f"projections/{p}")
        source = str(meta.get("source") or "").removeprefix("embeddings/") or "(given)"
        label = p.removeprefix(source + ".") if p.startswith(source + ".") else p
        groups.setdefault(source, {})[label] = p
    return groups


class Explorer(pn.viewable.Viewer):
    """A dataset's 2D maps rendered on the server, with selection, filters and details.

    Data parameters (projection, colour column, filters) re-aggregate; style parameters
    (point size, opacity, spreading, hidden legend entries) only re-shade the cached aggregate.
    """

    dataset = param.String(constant=True, doc="Path of the embviz dataset directory shown.")
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
    detail = param.Integer(default=-1, doc="Sample id shown in the detail panel (-1: none).")
    hover_limit = param.Integer(
        default=3000, bounds=(0, 20000), doc="Views holding at most this many points get tooltips."
    )
    sprite_limit = param.Integer(
        default=400, bounds=(0, 3000), doc="Views holding at most this many points draw images."
    )
    dims = param.Selector(
        default="2D", objects=["2D", "3D"], doc="Show the 2D map or the 3D cloud."
    )
    projection3d = param.Selector(objects=[], doc="The 3D projection drawn in the 3D view.")
    budget3d = param.Integer(
        default=250_000, bounds=(1_000, 2_000_000), doc="Most points the 3D view sends per update."
    )
    status = param.String(default="", doc="One line about the last frame (points, time, bytes).")

    def __init__(self, dataset: str | Path, **params):
        ds = open_dataset(dataset)
        groups = projection_choices(ds)
        if not groups:
            raise ValueError(f"{dataset}: no 2D projection yet; run 'embviz reduce {dataset}'")
        super().__init__(dataset=str(dataset), **params)
        self._ready = False  # watchers stay quiet until every part below exists
        self._ds = ds
        self._groups = groups
        self._key = routes.register(ds.root) if ds.has("thumbnails") else None
        # Behind `panel serve --prefix /team` the image routes live under the prefix too.
        self._prefix = str(getattr(pn.state, "base_url", "/") or "/").rstrip("/")
        self._thumb = (
            (lambda i: routes.thumb_url(self._key, i, prefix=self._prefix)) if self._key else None
        )
        self.legend = Legend(title="")
        self.grid = SelectionGrid(thumb_url=self._thumb or (lambda i: ""), title="Selection")
        self.details = DetailPanel(visible_detail=False)
        self.legend.param.watch(lambda e: setattr(self, "hidden", list(e.new)), "hidden")
        self.grid.param.watch(self._open_from, "opened")
        self.details.param.watch(self._open_from, "opened")
        self._filter_widgets = pn.Column(sizing_mode="stretch_width")
        self._status = pn.pane.Markdown(
            "", sizing_mode="stretch_width", css_classes=["embviz-status"]
        )
        self._map_pane = pn.pane.Bokeh(sizing_mode="stretch_width", height=640)
        self.map: MapView | None = None
        self._groups3 = projection_choices(ds, dims=3)
        self.cloud = None
        self._detach_on = None  # the session document whose end detaches the views
        self._view_area = pn.Column(self._map_pane, sizing_mode="stretch_width")
        self._hover_card = pn.pane.HTML("", width=150, css_classes=["embviz-hover-card"])
        self._select_view = pn.widgets.Button(
            label="Select the points in view", visible=False, css_classes=["embviz-select-view"]
        )
        self._select_view.on_click(lambda _: self._select_in_cloud())
        self.param.embedding.objects = list(groups)
        if self.embedding not in groups:
            self.embedding = next(iter(groups))
        self._set_projection_objects()
        self._ready = True
        self._load_projection()
        self._show_dims()
        from .compare_view import SplitCompare
        from .curate import Curator

        self.curator = Curator(self)
        self.compare = SplitCompare(self)

    # -- projection and store ------------------------------------------------------------------
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
            self.projection = next(iter(choices.values()))

    @param.depends("embedding", watch=True)
    def _on_embedding(self) -> None:
        if self._ready:
            self._set_projection_objects()

    @param.depends("projection", watch=True)
    def _load_projection(self) -> None:
        if not self._ready:
            return
        self.store = load_store(self.dataset, self.projection)
        self.map = None  # no renders while the new projection is wired up
        cats = list(self.store.categorical)
        nums = [c for c in self.store.numeric if c not in _NOT_COLOURS]
        prefer = [c for c in ("label", "split", "prediction", "tag") if c in cats]
        order = prefer + [c for c in cats if c not in prefer] + nums + ["density"]
        self.param.color_by.objects = order
        if self.color_by not in order:
            self.color_by = order[0]
        self.map = MapView(
            self.store,
            thumb_url=self._thumb,
            describe=self._describe,
            hover_limit=self.hover_limit,
            sprite_limit=self.sprite_limit,
            on_frame=self._on_frame,
            on_select=self._on_select,
            on_tap=self._on_tap,
        )
        self.map.set_style_source(self._style)
        self._build_filters()
        self._apply_filters()
        if self.view and self.view == getattr(self, "_frame_view", None):
            self.view = []  # the old map's view: its coordinates mean nothing here
        elif self.view and len(self.view) == 4:
            self.map.set_view(View(*map(float, self.view)))  # set with it, e.g. by the URL
        self._map_pane.object = self.map.figure
        self._capture_doc()
        # In a server session the first frame renders on the pool and arrives over the
        # websocket, so the page is sent at once; elsewhere (tests, scripts) it renders now.
        self.map.refresh(wait=self.map.doc is None)

    def _capture_doc(self) -> None:
        doc = pn.state.curdoc
        if doc is not None and getattr(doc, "session_context", None) is not None:
            self.map.doc = doc
            if self._detach_on is not doc:
                self._detach_on = doc
                doc.on_session_destroyed(self._detach)

    def _detach(self, session_context) -> None:
        """The session is gone: frames still rendering are dropped instead of sent to it."""
        self.map.doc = None
        if self.cloud is not None:
            self.cloud.doc = None

    # -- what the map draws ---------------------------------------------------------------------
    def _mode(self) -> tuple[str, str | None]:
        if self.color_by == "density":
            return "density", None
        if self.color_by in self.store.numeric:
            return "numeric", self.color_by
        return "category", self.color_by

    def _style(self):
        mode, col = self._mode()
        style = Style(
            point_size=self.point_size,
            dynspread=self.dynspread,
            opacity=self.opacity,
            hidden=frozenset(self.hidden) if mode == "category" else frozenset(),
            difference=(
                (str(self.difference[0]), str(self.difference[1]))
                if mode == "category" and len(self.difference) == 2
                else None
            ),
        )
        return mode, col, style

    def _describe(self, rows: np.ndarray) -> dict[str, list]:
        """Tooltip text for store rows: every categorical and numeric column, as plain text."""
        s = self.store
        lines = [[f"id {int(i)}"] for i in s.ids[rows]]
        for name, (codes, names) in s.categorical.items():
            for line, c in zip(lines, codes[rows], strict=True):
                line.append(f"{name}: {names[c]}")
        for name, values in s.numeric.items():
            for line, v in zip(lines, values[rows], strict=True):
                line.append(f"{name}: {v:.4g}")
        return {"text": ["\n".join(line) for line in lines]}

    @param.depends(
        "color_by", "point_size", "opacity", "dynspread", "hidden", "difference", watch=True
    )
    def _restyle(self) -> None:
        if self.map is None:
            return
        if self.color_by not in self.store.categorical and self.hidden:
            self.hidden = []
            return
        self.map.refresh()
        if self.cloud is not None:
            self._colour_cloud()
            self.cloud.refresh(wait=self.cloud.doc is None)

    @param.depends("view", watch=True)
    def _follow_view(self) -> None:
        # A view set from outside (the URL, Python) moves the plot; the map's own frames set
        # ``view`` to what they show, which is already where the plot is.
        if self.map is None or len(self.view) != 4:
            return
        v = View(*map(float, self.view))
        if v != self.map.view:
            self.map.set_view(v)
            self.map.refresh(v)

    # -- filters --------------------------------------------------------------------------------
    def _build_filters(self) -> None:
        widgets = []
        for name, (_, names) in self.store.categorical.items():
            if len(names) > _MAX_FILTER_CHOICES:
                continue
            w = pn.widgets.MultiChoice(
                label=f"{name} (empty = all)",
                # Bokeh's MultiChoice (Choices.js) renders option labels as HTML: escape them.
                options={html.escape(n): n for n in names},
                value=[v for v in self.filters.get(name, []) if v in names],
                sizing_mode="stretch_width",
            )
            w.param.watch(lambda e, n=name: self._set_filter(n, list(e.new)), "value")
            widgets.append(w)
        for name, values in self.store.numeric.items():
            if name in _NOT_COLOURS:
                continue
            finite = values[np.isfinite(values)] if len(values) <= 5_000_000 else values[::97]
            finite = finite[np.isfinite(finite)]
            if not len(finite) or finite.min() == finite.max():
                continue
            lo, hi = float(finite.min()), float(finite.max())
            cur = self.filters.get(name) or [lo, hi]
            w = pn.widgets.RangeSlider(
                label=name,
                start=lo,
                end=hi,
                value=(max(lo, float(cur[0])), min(hi, float(cur[1]))),
                step=(hi - lo) / 200,
                sizing_mode="stretch_width",
            )
            w.param.watch(
                lambda e, n=name, a=lo, b=hi: self._set_filter(
                    n, [] if e.new == (a, b) else [float(e.new[0]), float(e.new[1])]
                ),
                "value_throttled",
            )
            widgets.append(w)
        self._filter_widgets.objects = widgets

    def _set_filter(self, name: str, value: list) -> None:
        filters = dict(self.filters)
        if value:
            filters[name] = value
        else:
            filters.pop(name, None)
        self.filters = filters

    @param.depends("filters", watch=True)
    def _apply_filters(self) -> None:
        if self.map is None:
            return
        self.map.mask = self._mask_for(self.store)
        self.map.mask_key = repr(sorted(self.filters.items()))
        if self.map.last is not None:
            self.map.refresh()
        if self.cloud is not None:
            self.cloud.mask = self._mask_for(self.cloud.store)
            self.cloud.refresh(wait=self.cloud.doc is None)

    def _mask_for(self, s) -> np.ndarray | None:
        """The rows of store ``s`` that pass the filters (None: all)."""
        mask = None
        for name, value in sorted(self.filters.items()):
            if name in s.categorical and value:
                codes, names = s.categorical[name]
                keep = np.array(
                    [i for i, n in enumerate(names) if n in set(value)], dtype=codes.dtype
                )
                m = np.isin(codes, keep)
            elif name in s.numeric and len(value) == 2:
                v = s.numeric[name]
                m = (v >= float(value[0])) & (v <= float(value[1]))
            else:
                continue
            mask = m if mask is None else (mask & m)
        return mask

    # -- events ---------------------------------------------------------------------------------
    def _on_frame(self, result: MapResult) -> None:
        f = result.frame
        v = f.view
        self.view = [float(v.x0), float(v.x1), float(v.y0), float(v.y1)]
        self._frame_view = list(self.view)
        mode, col = self._mode()
        if mode == "category":
            self.legend.param.update(
                items=self.map.legend_items(self.store, col, f.counts),
                hidden=[h for h in self.hidden if h in f.counts],
                title=col,
            )
            self.legend.visible = True
        else:
            self.legend.visible = False
        shown = len(result.points["id"]) if result.points else 0
        extra = f" · {shown:,} with tooltips" if shown else ""
        self.status = (
            f"{f.points:,} of {self.store.n:,} points in view{extra} · "
            f"frame {1000 * result.seconds:.0f} ms · {len(f.png) / 1024:.0f} KB"
        )
        self._status.object = html.escape(self.status)

    def _on_select(self, rows: np.ndarray, store=None) -> None:
        s = store if store is not None else self.store
        self.show(np.asarray(s.ids[rows]))

    def show(
        self,
        ids,
        *,
        title: str = "Selection",
        captions=None,
        noun: str = "selected",
    ) -> None:
        """Fill the grid with samples ``ids`` in this order and outline them on the map.

        Selections, similarity results and top-N views all arrive here; ``captions`` (aligned
        with ``ids``) are shown under the cards, e.g. a distance or a score.
        """
        import pandas as pd

        ids = np.asarray(ids, dtype=np.int64)
        s = self.store
        rows = s.row_of(ids)
        col = "label" if "label" in s.categorical else next(iter(s.categorical), None)
        labels = None
        if col is not None:
            codes, names = s.categorical[col]
            names = list(names)
            none = names.index("(none)") if "(none)" in names else len(names)
            code = np.where(rows >= 0, codes[np.clip(rows, 0, None)], none)
            if none == len(names) and (rows < 0).any():
                names.append("(none)")
            labels = pd.Categorical.from_codes(code.astype(np.int64), categories=names)
        self.grid.param.update(
            ids=ids,
            labels=labels,
            captions=None if captions is None else list(captions),
            title=title,
            noun=noun,
        )
        if self.map is not None:
            self.map.highlight_rows = rows[rows >= 0]
            self.map.refresh(wait=self.map.doc is None)

    def _on_tap(self, row: int | None, store=None) -> None:
        if row is not None:
            self.detail = int((store if store is not None else self.store).ids[row])

    def _open_from(self, event) -> None:
        if event.new is not None and event.new >= 0:
            self.detail = int(event.new)

    @param.depends("detail", watch=True)
    def _show_detail(self) -> None:
        sid = self.detail
        if sid < 0:
            self.details.visible_detail = False
            return
        record = sample_record(self._ds, sid)
        meta = self._ds.meta(f"projections/{self.projection}")
        space, near = neighbours_for(self._ds, self.store, meta, sid, k=8)
        rows = self.store.row_of(np.array([i for i, _ in near], dtype=np.int64))
        label_col = self.store.categorical.get("label")
        items = []
        for (nid, dist), row in zip(near, rows, strict=True):
            label = label_col[1][label_col[0][row]] if label_col is not None and row >= 0 else ""
            src = self._thumb(nid) if self._thumb else ""
            items.append({"id": nid, "label": str(label), "src": src, "distance": dist})
        record = {"neighbours in": space, **record}
        tags = self._tags_of(sid)
        if tags:
            record["tags"] = tags
        self.details.param.update(
            sample=record,
            image_src=routes.image_url(self._key, sid, prefix=self._prefix) if self._key else "",
            neighbours=items,
            visible_detail=True,
        )

    def _tags_of(self, sid: int) -> str:
        curator = getattr(self, "curator", None)
        if curator is None:
            return ""
        try:
            tags = curator.tags().of(sid)
        except Exception:  # an unreadable tag folder must not break the detail panel
            return ""
        return "; ".join(
            f"{t['tag']}: {t['value']}" if t.get("value") else str(t["tag"]) for t in tags
        )

    # -- Python side (notebooks) -----------------------------------------------------------------
    @property
    def selected(self):
        """The selected samples (box, lasso, 3D view or :meth:`select`) as a pandas DataFrame
        of their samples-table rows, in selection order."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        ids = np.asarray(self.grid.ids if self.grid.ids is not None else [], dtype=np.int64)
        entry = self._ds.table("samples")
        wanted = np.unique(ids)
        tables = []
        for part in entry["partitions"] if len(ids) else []:
            lo, hi = part.get("id_range") or (None, None)
            if lo is not None and not ((wanted >= lo) & (wanted <= hi)).any():
                continue
            t = pq.read_table(self._ds.root / entry["dir"] / part["file"])
            tables.append(t.filter(pc.is_in(t["id"], pa.array(wanted))))
        if not tables:
            import pandas as pd

            return pd.DataFrame({c: [] for c in entry["columns"]})
        frame = pa.concat_tables(tables).to_pandas().set_index("id", drop=False)
        return frame.reindex(ids).reset_index(drop=True)

    def select(self, ids) -> None:
        """Select samples by id from Python: they fill the grid and are outlined on the map."""
        ids = np.asarray(list(ids), dtype=np.int64)
        self.show(ids[self.store.row_of(ids) >= 0])

    # -- 3D -------------------------------------------------------------------------------------
    @param.depends("dims", "projection3d", "budget3d", watch=True)
    def _show_dims(self) -> None:
        if not self._ready:
            return
        if self.dims != "3D" or not self.projection3d:
            self._view_area.objects = [self._map_pane]
            self._select_view.visible = False
            if self.map is not None and self.map.last is not None:
                self._on_frame(self.map.last)
            return
        from .cloud import load_cloud
        from .cloud_view import CloudView

        store = load_cloud(self.dataset, self.projection3d)
        if (
            self.cloud is None
            or self.cloud.store is not store
            or self.cloud.budget != self.budget3d
        ):
            self.cloud = CloudView(
                store,
                budget=self.budget3d,
                on_update=self._on_cloud_update,
                on_tap=lambda row: self._on_tap(row, store),
                on_hover=lambda row: self._on_hover(row, store),
            )
            self.cloud.mask = self._mask_for(store)
            self._colour_cloud()
        doc = pn.state.curdoc
        if doc is not None and getattr(doc, "session_context", None) is not None:
            self.cloud.doc = doc
        self._view_area.objects = [pn.Row(self.cloud.pane, self._hover_card)]
        self._select_view.visible = True
        self.cloud.refresh(wait=self.cloud.doc is None)

    def _colour_cloud(self) -> None:
        mode, col = self._mode()
        hidden = frozenset(self.hidden) if mode == "category" else frozenset()
        self.cloud.color_by(
            col if col in self.cloud.store.categorical or col in self.cloud.store.numeric else None,
            hidden=hidden,
        )

    def _on_cloud_update(self, update) -> None:
        kind = "every point in view" if update.in_view else "stratified sample"
        self.status = (
            f"3D: {len(update.rows):,} of {self.cloud.store.n:,} points sent ({kind}) · "
            f"update {1000 * update.seconds:.0f} ms · {update.nbytes / 1024:.0f} KB"
        )
        self._status.object = html.escape(self.status)

    def _on_hover(self, row: int | None, store) -> None:
        if row is None:
            self._hover_card.object = ""
            return
        sid = int(store.ids[row])
        lines = [f"id {sid}"] + [
            f"{name}: {names[codes[row]]}" for name, (codes, names) in store.categorical.items()
        ]
        img = (
            f'<img src="{html.escape(self._thumb(sid))}" style="max-width:128px">'
            if self._thumb
            else ""
        )
        text = "<br>".join(html.escape(line) for line in lines)
        self._hover_card.object = f"{img}<div style='font-size:12px'>{text}</div>"

    def _select_in_cloud(self) -> None:
        if self.cloud is not None:
            self._on_select(self.cloud.rows_in_view(), self.cloud.store)

    # -- layout ---------------------------------------------------------------------------------
    def sidebar(self) -> pn.Column:
        """Controls: data choice, colouring, style, legend and filters."""
        return pn.Column(
            pn.widgets.Select.from_param(self.param.embedding, label="Embedding"),
            pn.widgets.Select.from_param(self.param.projection, label="Projection"),
            *(
                [
                    pn.widgets.RadioButtonGroup.from_param(self.param.dims, label="View"),
                    pn.widgets.Select.from_param(self.param.projection3d, label="3D projection"),
                ]
                if self._groups3
                else []
            ),
            pn.widgets.Select.from_param(self.param.color_by, label="Colour by"),
            self.legend,
            pn.layout.Divider(),
            pn.widgets.IntSlider.from_param(self.param.point_size, label="Point size"),
            pn.widgets.FloatSlider.from_param(self.param.opacity, label="Opacity"),
            pn.widgets.Checkbox.from_param(self.param.dynspread, label="Spread sparse points"),
            pn.layout.Divider(),
            pn.pane.Markdown("**Filters**"),
            self._filter_widgets,
            sizing_mode="stretch_width",
        )

    def main(self) -> pn.Column:
        """The map with its status line, then the selection grid beside the detail panel."""
        self._capture_doc()
        explore = pn.Column(
            self._view_area,
            pn.Row(self._status, self._select_view, sizing_mode="stretch_width"),
            pn.Row(self.grid, self.details, sizing_mode="stretch_width"),
            sizing_mode="stretch_both",
        )
        return pn.Row(explore, self.tools(), sizing_mode="stretch_both")

    def tools(self) -> pn.Column:
        """The curation column: find similar, rank, tag, export, compare groups."""
        return pn.Column(
            self.curator,
            pn.Card(self.compare, title="Compare groups", sizing_mode="stretch_width"),
            width=300,
            css_classes=["embviz-tools"],
        )

    def __panel__(self):
        return pn.Row(pn.Column(self.sidebar(), width=300), self.main(), sizing_mode="stretch_both")
