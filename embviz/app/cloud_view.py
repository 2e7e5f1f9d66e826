"""The 3D view: a deck.gl PointCloudLayer in an OrbitView fed with a sample the server picks per view.

The browser never holds more than ``budget`` points. Each view change (debounced by the pane,
coalesced here) selects what the new view needs: the voxel-stratified overview, or every point
inside the view once they fit. The previous points stay on screen until the new sample arrives,
so the picture never flickers to empty.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from embviz.render.raster import category_colors, palette, rgb
from embviz.render.sample3d import DEFAULT_BUDGET, box_from_view_state, sample
from embviz.render.store import PointStore

from .jupyter import offline_page
from .work import Coalescer

__all__ = ["CloudUpdate", "CloudView", "cloud_deck", "fit_view", "pane_spec"]


@dataclass
class CloudUpdate:
    """One sample sent to the browser."""

    rows: np.ndarray
    frame: object  #: the pandas DataFrame sent (x, y, z, r, g, b)
    in_view: bool  #: True when the view box held few enough points to send them all
    seconds: float
    nbytes: int
    store: PointStore | None = None  #: the map sampled (a sample of a map left since is dropped)


def fit_view(extent, width: int, height: int) -> dict:
    """An ``OrbitView`` state showing all of ``extent`` (a 3D :class:`~embviz.render.store.Box`)
    on a ``width`` x ``height`` canvas, tilted so depth shows, with zoom limits around it."""
    lo, hi = np.asarray(extent.lo, dtype=float), np.asarray(extent.hi, dtype=float)
    span = float(max(hi - lo)) or 1.0
    zoom = math.log2(min(width, height) / (span * 1.3))
    return {
        "target": [float(v) for v in (lo + hi) / 2],
        "zoom": zoom,
        "rotationX": 25,
        "rotationOrbit": 30,
        "minZoom": zoom - 3,
        "maxZoom": zoom + 14,
    }


def cloud_deck(frame, view_state: dict, *, point_px: float = 3.0, tooltip=False, height=500):
    """The 3D view as a :class:`pydeck.Deck`: one ``PointCloudLayer`` in an ``OrbitView``.

    Parameters
    ----------
    frame : pandas DataFrame of the points: ``x, y, z`` and uint8 ``r, g, b`` (other columns
        may feed ``tooltip``); None leaves the layer without data (see :func:`pane_spec`).
    view_state : the initial ``OrbitView`` state (``target``, ``zoom``, ``rotationX`` ...).
    point_px : point size in pixels.
    tooltip : pydeck's tooltip: False, True (every field) or ``{"text": "id {id}"}``.
    height : height in pixels of the notebook output.

    Positions are data units in cartesian coordinates and there is no base map (an embedding
    is not a place): ``map_style=""``, which Panel's pane also needs: without it the pane
    throws in the browser ("Cannot read properties of undefined (reading 'includes')").
    """
    import pydeck as pdk

    layer = pdk.Layer(
        "PointCloudLayer",
        data=frame,
        id="points",
        get_position=["x", "y", "z"],
        get_color=["r", "g", "b"],
        point_size=point_px,
        pickable=True,
        # A pydeck String is sent as it is; a plain string would become an accessor function.
        coordinate_system=pdk.types.String("@@#COORDINATE_SYSTEM.CARTESIAN"),
    )
    return _compact_deck()(
        layers=[layer],
        views=[pdk.View(type="OrbitView", controller=True)],
        initial_view_state=pdk.ViewState(**view_state),
        map_provider=None,
        map_style="",
        tooltip=tooltip,
        height=height,
    )


@functools.cache
def _compact_deck() -> type:
    """``pydeck.Deck`` writing compact JSON (defined on first use: pydeck loads lazily)."""
    import json

    import pydeck as pdk
    from pydeck.bindings.json_tools import default_serialize

    class Deck(pdk.Deck):
        """A pydeck Deck whose JSON (what ``to_html`` and the notebook output hold) has no
        indentation: 98 bytes a point instead of 212, written in a fifth of the time."""

        def to_json(self) -> str:
            return json.dumps(
                self, sort_keys=True, default=default_serialize, separators=(",", ":")
            )

        def __repr__(self) -> str:
            # pydeck's repr is the whole JSON: megabytes of text/plain in a notebook's output.
            layers = ", ".join(
                f"{layer.type} of {len(layer.data or [])} points" for layer in self.layers
            )
            return f"<pydeck.Deck: {layers}>"

        def to_html(
            self,
            filename=None,
            open_browser=False,
            notebook_display=None,
            iframe_width="100%",
            iframe_height=500,
            as_string=False,
            offline=False,
            **kwargs,
        ):
            """pydeck's ``to_html``; with ``offline=True`` the page also links nothing on
            another host (pydeck's keeps Mapbox GL and four stylesheets on CDNs)."""
            if not offline:
                return super().to_html(
                    filename,
                    open_browser,
                    notebook_display,
                    iframe_width,
                    iframe_height,
                    as_string,
                    **kwargs,
                )
            page = super().to_html(as_string=True, notebook_display=False, offline=True, **kwargs)
            page = offline_page(page)
            if filename:
                with open(filename, "w", encoding="utf-8") as f:
                    f.write(page)
            if notebook_display:
                from pydeck.io.html import iframe_with_srcdoc

                return iframe_with_srcdoc(page, iframe_width, iframe_height)
            return page if as_string and not filename else filename

        def _repr_html_(self) -> str:
            # pydeck's loads deck.gl from jsDelivr: nothing draws in an offline notebook.
            return self.to_html(offline=True, notebook_display=True).data

    return Deck


def pane_spec(
    frame, view_state: dict, *, point_px: float = 3.0, transitions: dict | None = None
) -> dict:
    """The spec Panel's DeckGL pane gets: :func:`cloud_deck` as a dict holding ``frame`` itself,
    and ``transitions`` (deck.gl's layer transitions, see :mod:`embviz.app.cloud_motion`) if any.

    Handed a pydeck Deck, the pane would receive the points as pydeck's list of records and
    rebuild float64 / int64 columns from them in Python on the document's thread: 9.0 MB and
    about 1 s of CPU per 250K-point update. A DataFrame in a dict spec goes out as one binary
    ColumnDataSource of the frame's own dtypes (float32 x, y, z, uint8 r, g, b): 3.75 MB.
    The pane sends the frame's index as a column too, so it is made uint8 zeros (1 byte a
    point, where an int64 index costs 4 whenever the number of points changes).
    """
    import json

    import pandas as pd

    spec = json.loads(_empty_deck_json(json.dumps(view_state, sort_keys=True), point_px))
    spec["layers"][0]["data"] = frame.set_axis(pd.Index(np.zeros(len(frame), dtype=np.uint8)))
    if transitions:
        spec["layers"][0]["transitions"] = transitions
    return spec


@functools.lru_cache(maxsize=64)
def _empty_deck_json(view_state_json: str, point_px: float) -> str:
    # One Deck per view's initial state, not per update: with ipywidgets installed, pydeck's
    # constructor makes (and registers for good) a handful of Jupyter widgets each time.
    import json

    return cloud_deck(None, json.loads(view_state_json), point_px=point_px).to_json()


class CloudView:
    """Owns one session's DeckGL pane and keeps its sample in step with the view."""

    def __init__(
        self,
        store: PointStore,
        *,
        budget: int = DEFAULT_BUDGET,
        point_px: float = 3.0,
        on_update: Callable[[CloudUpdate], None] | None = None,
        on_tap: Callable[[int | None], None] | None = None,
        on_hover: Callable[[int | None], None] | None = None,
        height: int = 640,
    ):
        import panel as pn

        self.store = store
        self.budget = budget
        self.point_px = point_px
        self.on_update = on_update
        self.on_tap = on_tap
        self.on_hover = on_hover
        self.mask: np.ndarray | None = None
        self.colors: Callable[[np.ndarray], np.ndarray] = self._default_colors
        self.hidden: frozenset[str] = frozenset()
        self._hidden_codes = np.empty(0)
        self._hidden_col: str | None = None
        #: samples on the render pool, one in flight, the newest view wins
        self.updates = Coalescer(self.compute, self.show, name="3D sample")
        self.rows = np.empty(0, dtype=np.int64)
        self.last: CloudUpdate | None = None
        #: the :class:`~embviz.app.cloud_motion.CloudMotion` moving the points now, or None
        self.motion = None
        self.view_state: dict = {}
        self._size = (900, height)
        self._initial = self._fit_view()
        self.pane = pn.pane.DeckGL(
            self.spec(self.frame_of(np.empty(0, dtype=np.int64))),
            sizing_mode="stretch_width",
            height=height,
            tooltips=False,  # hover shows a card beside the view: no HTML built from data here
            throttle={"view": 250, "hover": 150},
        )
        self.pane.param.watch(self._on_view, "view_state")
        self.pane.param.watch(self._on_click, "click_state")
        self.pane.param.watch(self._on_hover_event, "hover_state")

    @property
    def doc(self):
        """The session's Bokeh document: samples are picked in the pool and come back on its
        thread; None (notebooks, tests) samples synchronously."""
        return self.updates.doc

    @doc.setter
    def doc(self, doc) -> None:
        self.updates.doc = doc

    # -- spec -----------------------------------------------------------------------------------
    def _fit_view(self) -> dict:
        return fit_view(self.store.extent, *self._size)

    def spec(self, frame, transitions: dict | None = None) -> dict:
        """The pane's spec showing ``frame`` (:func:`pane_spec` at this view's initial state)."""
        return pane_spec(frame, self._initial, point_px=self.point_px, transitions=transitions)

    def refit(self, **camera) -> None:
        """Aim the camera at the whole of :attr:`store` (the pane's initial view state, with
        ``camera``'s deck.gl keys, e.g. a transition); samples are of the overview until the
        browser reports its view."""
        self._initial = {**self._fit_view(), **camera}
        self.view_state = {}

    def _default_colors(self, rows: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[31, 119, 180]], dtype=np.uint8), (len(rows), 1))

    def color_by(self, column: str | None, *, hidden: frozenset[str] = frozenset(), cmap="viridis"):
        """Colour points by a categorical or numeric column (None: one colour); hidden
        categories are left out of the samples."""
        s = self.store
        self.hidden = hidden
        if column in s.categorical:
            codes, names = s.categorical[column]
            lut = rgb(category_colors(len(names)))
            self.colors = lambda rows: lut[codes[rows]]
            self._hidden_codes = np.array([i for i, n in enumerate(names) if n in hidden])
            self._hidden_col = column
        elif column in s.numeric:
            values = s.numeric[column]
            finite = values[np.isfinite(values)][:: max(1, s.n // 1_000_000)]
            lo, hi = np.percentile(finite, [1, 99]) if len(finite) else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1.0
            lut = rgb(palette(cmap))

            def colors(rows, values=values, lo=lo, hi=hi, lut=lut):
                v = np.nan_to_num((values[rows] - lo) / (hi - lo), nan=0.0)
                return lut[np.clip((v * (len(lut) - 1)).astype(np.int64), 0, len(lut) - 1)]

            self.colors = colors
            self._hidden_codes = np.empty(0)
        else:
            self.colors = self._default_colors
            self._hidden_codes = np.empty(0)

    def frame_of(self, rows: np.ndarray):
        """The frame sent for ``rows`` of :attr:`store`: float32 ``x, y, z``, uint8 ``r, g, b``."""
        import pandas as pd

        s = self.store
        rgb = self.colors(rows) if len(rows) else np.empty((0, 3), dtype=np.uint8)
        return pd.DataFrame(
            {
                "x": np.asarray(s.x[rows], dtype=np.float32),
                "y": np.asarray(s.y[rows], dtype=np.float32),
                "z": np.asarray(s.z[rows], dtype=np.float32),
                "r": rgb[:, 0],
                "g": rgb[:, 1],
                "b": rgb[:, 2],
            }
        )

    # -- updates --------------------------------------------------------------------------------
    def compute(self, view_state: dict | None) -> CloudUpdate:
        """The sample for ``view_state`` (None or {}: the overview) and the frame to send."""
        t0, store = time.perf_counter(), self.store
        box = box_from_view_state(view_state, *self._size, store.extent) if view_state else None
        rows = sample(store, box, self.budget, self.visible_mask())
        frame = self.frame_of(rows)
        nbytes = int(sum(frame[c].to_numpy().nbytes for c in frame.columns))
        in_view = box is not None and len(rows) < self.budget
        return CloudUpdate(rows, frame, in_view, time.perf_counter() - t0, nbytes, store)

    def visible_mask(self) -> np.ndarray | None:
        """The rows of :attr:`store` a sample may hold: :attr:`mask` without hidden classes."""
        if not len(self._hidden_codes):
            return self.mask
        codes = self.store.categorical[self._hidden_col][0]
        keep = ~np.isin(codes, self._hidden_codes)
        return keep if self.mask is None else (self.mask & keep)

    def refresh(self, *, wait: bool = False) -> CloudUpdate | None:
        """Sample the current view again (after a colour or filter change).

        With ``wait`` (or no document) the sample is sent before returning, and returned;
        else it is picked in the pool and None is returned.
        """
        state = dict(self.view_state)
        return self.updates.run(state) if wait else self.updates.submit(state)

    def show(self, update: CloudUpdate, *, transitions: dict | None = None) -> None:
        """Send an update to the pane, on the document's thread (:attr:`updates` drops one older
        than the one on screen); ``transitions``: deck.gl's, while :attr:`motion` moves points."""
        if update.store is not None and update.store is not self.store:
            return  # sampled from the map shown before a motion
        if self.motion is not None and transitions is None:
            # A new sample is no motion: deck.gl's transitions go off before it comes.
            self.motion = None
            self.pane.object = self.spec(self.last.frame)
        self.rows = update.rows
        self.pane.object = self.spec(update.frame, transitions)
        self.last = update
        if self.on_update:
            self.on_update(update)

    # -- events ---------------------------------------------------------------------------------
    def _on_view(self, event) -> None:
        state = dict(event.new or {})
        if "target" not in state:
            return
        self.view_state = {
            k: state[k] for k in ("target", "zoom", "rotationX", "rotationOrbit") if k in state
        }
        if self.motion is None or not self.motion.running:  # else its end samples this view
            self.refresh()

    def _row_at(self, state: dict) -> int | None:
        index = (state or {}).get("index")
        if index is None or not 0 <= int(index) < len(self.rows):
            return None
        return int(self.rows[int(index)])

    def _on_click(self, event) -> None:
        if self.on_tap is not None:
            self.on_tap(self._row_at(event.new))

    def _on_hover_event(self, event) -> None:
        if self.on_hover is not None:
            self.on_hover(self._row_at(event.new))

    def rows_in_view(self) -> np.ndarray:
        """Every visible row inside the current view box (not only the sample): a 3D selection."""
        box = (
            box_from_view_state(self.view_state, *self._size, self.store.extent)
            if self.view_state
            else None
        )
        box = box or self.store.extent
        return self.store.rows_in(box, self.visible_mask())
