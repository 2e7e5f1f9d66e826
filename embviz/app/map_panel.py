"""The 2D map panel: a session's server-rendered map and its legend.

It keeps one :class:`~embviz.app.mapview.MapView` in step with the :class:`Session`: a new
projection (or a new tag column) builds a new map, colour and style changes re-shade, filters
re-aggregate, the map mode (points or images) and cell size redraw, the grid's samples are
outlined, and frames, selections and taps go back to the session. In images mode the status
line gives the cells drawn and the thumbnail cache's hit rate, or why images are off.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param

from embviz.render.overlay import IMAGE_BUDGET
from embviz.render.thumbcache import dataset_thumbs, thumb_cache

from .mapview import HIGHLIGHT_LIMIT, MapResult, MapView
from .session import Session
from .widgets import Legend

__all__ = ["MapPanel"]

#: Most listed samples whose paths across a series are drawn.
TRAIL_LIMIT = 200
_STYLE = ["color_by", "point_size", "opacity", "dynspread", "hidden", "difference"]
#: Session parameters that change what an image map or its overlays draw.
_MAP = ["map_mode", "cell_px", "cluster_labels", "contours"]


class MapPanel(pn.viewable.Viewer):
    """The session's 2D map with tooltips and images once zoomed in.

    Tooltips appear once the view holds at most ``hover_limit`` points, images at the points
    once it holds at most ``sprite_limit``. ``annotate`` (a
    :data:`~embviz.app.map_result.Annotate`) adds labels and contours to every frame.
    """

    hover_limit = param.Integer(
        default=3000, bounds=(0, 20000), doc="Views holding at most this many points get tooltips."
    )
    sprite_limit = param.Integer(
        default=400, bounds=(0, 3000), doc="Views holding at most this many points draw images."
    )

    def __init__(self, session: Session, *, annotate=None, **params):
        super().__init__(**params)
        self.session = session
        #: overlays for every frame (:data:`~embviz.app.map_result.Annotate`), or None
        self.annotate = annotate
        self.legend = Legend(title="")
        self.legend.param.watch(lambda e: setattr(session, "hidden", list(e.new)), "hidden")
        self.pane = pn.pane.Bokeh(
            sizing_mode="stretch_both", min_height=640, css_classes=["embviz-map"]
        )
        self.map: MapView | None = None
        session.on_detach(self._detach)
        self._build()
        session.param.watch(self._build, ["projection", "tags_version"])
        session.param.watch(self._restyle, _STYLE)
        session.param.watch(self._remap, _MAP)
        session.param.watch(self._filter, ["filters"])
        session.param.watch(self._follow_view, ["view"])
        session.param.watch(self._outline, ["grid_ids"])
        session.param.watch(self._draw_trails, ["trails", "grid_ids", "projection"])
        #: the last :class:`~embviz.app.motion.Motion` (frames, fps, bytes), or None
        self.motion = None

    # -- building -------------------------------------------------------------------------------
    def _build(self, *_events) -> None:
        s = self.session
        store = s.store
        if self.map is not None and self.map.store is store:
            return
        if self.map is not None and self.map.store.key == store.key:
            # The same points with a new tag column: keep the figure (a new one would make the
            # page drop models that its pending events still name).
            self.map.set_store(store)
            self._filter()
            return
        if self.map is not None and self._moves_to(store):
            self._move_to(store)
            return
        self._drawn = s.projection
        self.map = MapView(
            store,
            thumbs=s.thumb_urls if s.has_images else None,
            image_budget=IMAGE_BUDGET if s.images == "inline" else None,
            describe=self._describe,
            hover_limit=self.hover_limit,
            sprite_limit=self.sprite_limit,
            on_frame=self._on_frame,
            on_select=lambda rows: s.show(np.asarray(self.map.store.ids[rows])),
            on_tap=lambda row: row is not None and s.open(int(self.map.store.ids[row])),
            thumb_source=dataset_thumbs(s.dataset),
            annotate=self.annotate,
        )
        self.map.map_mode, self.map.cell_px = s.map_mode, s.cell_px
        self.map.set_style_source(s.style)
        self.map.mask = s.mask_for(store)
        self.map.mask_key = s.filter_key
        self.map.highlight_rows = self._rows(store)
        if s.view and len(s.view) == 4:  # e.g. set by the URL
            from embviz.render.store import View

            self.map.set_view(View(*map(float, s.view)))
        self.pane.object = self.map.figure
        self.map.doc = s.doc
        # In a server session the first frame renders on the pool and arrives over the
        # websocket, so the page is sent at once; elsewhere (tests, scripts) it renders now. A
        # frame another session already rendered (the same first view) goes out with the page.
        self.map.refresh(wait=self.map.doc is None or self._frame_ready())

    # -- moving to another map of the same samples -------------------------------------------------
    def _moves_to(self, store) -> bool:
        old = self.map.store
        return (
            self.session.animate
            and self.map.doc is not None
            and old.dims == store.dims == 2
            and abs(old.n - store.n) <= 0.01 * max(old.n, store.n)
        )

    def _move_to(self, store) -> None:
        from .map_figure import home_view
        from .motion import Motion

        s = self.session
        old, target = self.map.store, home_view(store.extent)
        names = {m.key.split("/", 1)[1] for m in s.series()}
        if s.view and len(s.view) == 4:  # set from outside (the URL): the old map's is cleared
            from embviz.render.store import View

            target = View(*map(float, s.view))
        elif self._drawn in names and self.map.view != home_view(old.extent):
            target = self.map.view  # an aligned series: the same place on the next member
        member = next((m for m in s.series() if m.key == f"projections/{s.projection}"), None)
        label = f"{member.member} ({member.index + 1} of {member.size})" if member else s.projection
        self.motion = Motion(
            self.map,
            store,
            target,
            mask=s.mask_for(store),
            follow=s.shown_ids[:HIGHLIGHT_LIMIT] if s.grid_ids is not None else None,
            on_frame=lambda result, p: setattr(
                s,
                "status",
                f"moving to {label}: {result.frame.points:,} of {store.n:,} points · {p:.0%} · "
                f"frame {1000 * result.seconds:.0f} ms · {result.bytes / 1000:.0f} KB",
            ),
            on_done=self._moved,
        )
        self._drawn = s.projection
        self.motion.start()

    def _moved(self, motion) -> None:
        s = self.session
        self.map.mask_key = (s.filter_key, id(motion.store))
        self.map.highlight_rows = self._rows(motion.store)
        self._draw_trails()

    def _draw_trails(self, *_events) -> None:
        s = self.session
        if self.map is None:
            return
        data = {"xs": [], "ys": [], "id": []}
        members = s.series() if s.trails and s.grid_ids is not None else []
        if members:
            from embviz.render.transition import trail_paths

            stores = [s.store_for(m.key.split("/", 1)[1]) for m in members]
            data = trail_paths(stores, s.shown_ids[:TRAIL_LIMIT])
        if data["xs"] or len(self.map.trail_src.data["xs"]):
            self.map.trail_src.data = data

    def _frame_ready(self) -> bool:
        """Whether the map's current frame is rendered already (frames are shared per process)."""
        from embviz.render import framecache

        req = self.map.request()
        key = (req.view, req.width, req.height, req.mode, req.color_by, req.style)
        plain = req.map_mode == "points" and self.map.mask is None
        return plain and framecache.has(self.map.store, key)

    def _detach(self) -> None:
        if self.map is not None:
            self.map.doc = None  # frames still rendering are dropped, not sent to a closed page

    def attach(self, doc) -> None:
        """Send frames to ``doc`` (the session's document) from now on."""
        if self.map is not None:
            self.map.doc = doc

    # -- keeping in step --------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.map.refresh(wait=self.map.doc is None)

    def _restyle(self, *_events) -> None:
        if self.map is not None:
            self._refresh()

    def _remap(self, *_events) -> None:
        if self.map is not None:
            self.map.map_mode, self.map.cell_px = self.session.map_mode, self.session.cell_px
            self._refresh()

    def _filter(self, *_events) -> None:
        if self.map is None:
            return
        self.map.mask = self.session.mask_for(self.map.store)
        self.map.mask_key = (self.session.filter_key, id(self.map.store))
        if self.map.last is not None:
            self._refresh()

    def _follow_view(self, event) -> None:
        # A view set from outside (the URL, Python) moves the plot; the map's own frames set
        # ``view`` to what they show, which is already where the plot is.
        from embviz.render.store import View

        if self.map is None or len(event.new) != 4:
            return
        v = View(*map(float, event.new))
        if v != self.map.view:
            self.map.set_view(v)
            self.map.refresh(v)

    def _rows(self, store) -> np.ndarray | None:
        if self.session.grid_ids is None:
            return None
        rows = store.row_of(self.session.shown_ids)
        return rows[rows >= 0]

    def _outline(self, *_events) -> None:
        if self.map is not None:
            self.map.highlight_rows = self._rows(self.map.store)
            self._refresh()

    # -- what the map reports ---------------------------------------------------------------------
    def _describe(self, rows: np.ndarray) -> dict[str, list]:
        """Tooltip text for store rows: every categorical and numeric column, as plain text."""
        s = self.map.store
        lines = [[f"id {int(i)}"] for i in s.ids[rows]]
        for name, (codes, names) in s.categorical.items():
            for line, c in zip(lines, codes[rows], strict=True):
                line.append(f"{name}: {names[c]}")
        for name, values in s.numeric.items():
            for line, v in zip(lines, values[rows], strict=True):
                line.append(f"{name}: {v:.4g}")
        if self.session.dataset.has("predictions"):  # the classifier's top 3 as text bars
            from embviz.predictions import top_k_lines

            for line, top in zip(
                lines, top_k_lines(self.session.dataset, s.ids[rows]), strict=True
            ):
                if top:
                    line.insert(1, f"predicted:\n{top}")
        return {"text": ["\n".join(line) for line in lines]}

    def _on_frame(self, result: MapResult) -> None:
        s = self.session
        f = result.frame
        mode, col = s.color_mode()
        if mode == "category" and col in self.map.store.categorical:
            self.legend.param.update(
                items=legend_items(self.map.store, col, f.counts),
                hidden=[h for h in s.hidden if h in f.counts],
                title=col,
            )
            self.legend.visible = True
        else:
            self.legend.visible = False
        shown = sum(len(p["id"]) for p in (result.points, result.sprites) if p)
        extra = f" · {shown:,} with tooltips" if shown else ""
        if result.cells is not None:
            cache = thumb_cache()
            extra += (
                f" · {len(result.cells['id']):,} cells, {result.images:,} images"
                f" · thumbnail cache {100 * cache.hit_rate:.0f}% hits"
            )
        else:
            extra += f" · {result.images:,} images" if result.images else ""
        extra += f" · {result.notice}" if result.notice else ""
        status = (
            f"{f.points:,} of {self.map.store.n:,} points in view{extra} · "
            f"frame {1000 * result.seconds:.0f} ms · {result.bytes / 1000:.0f} KB"
        )
        if result.request.view is self.map.view:
            s.frame_shown(f.view, status)
        else:
            # A frame for a view the plot has left (a newer one is rendering): only its status.
            # Writing its view back would move the plot to it, and the next frame back again:
            # two views ping-ponged at ~50 frames/s (tests/test_hostile_session.py).
            s.status = status
        if s.doc is None:
            # A notebook: Bokeh models changed outside Panel's own updates (a filter or a
            # selection set from a cell) reach the page only when pushed.
            pn.io.push_notebook(self.pane)

    def show_last(self) -> None:
        """Report the last frame again (the 3D view wrote the status line meanwhile)."""
        if self.map is not None and self.map.last is not None:
            self._on_frame(self.map.last)

    def __panel__(self):
        return self.pane


def legend_items(store, color_by: str, counts: dict[str, int]) -> list[dict]:
    """Legend entries for a categorical column: name, colour, points in view."""
    from embviz.render.raster import category_colors

    names = store.categories(color_by)
    pairs = zip(names, category_colors(len(names)), strict=True)
    return [{"name": n, "color": c, "count": int(counts.get(n, 0))} for n, c in pairs]
