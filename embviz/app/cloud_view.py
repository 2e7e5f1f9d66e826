"""The 3D view: a deck.gl PointCloudLayer in an OrbitView fed with a sample the server picks per view.

The browser never holds more than ``budget`` points. Each view change (debounced by the pane,
coalesced here) selects what the new view needs: the voxel-stratified overview, or every point
inside the view once they fit. The previous points stay on screen until the new sample arrives,
so the picture never flickers to empty.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .cloud import DEFAULT_BUDGET, CloudStore, box_from_view_state, sample
from .mapview import render_pool
from .raster import _rgb, category_colors, palette

__all__ = ["CloudUpdate", "CloudView"]


@dataclass
class CloudUpdate:
    """One sample sent to the browser."""

    rows: np.ndarray
    frame: object  #: the pandas DataFrame sent (x, y, z, r, g, b)
    in_view: bool  #: True when the view box held few enough points to send them all
    seconds: float
    nbytes: int
    seq: int = 0  #: issue order of the request: an older update never replaces a newer one


class CloudView:
    """Owns one session's DeckGL pane and keeps its sample in step with the view."""

    def __init__(
        self,
        store: CloudStore,
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
        self.doc = None
        self.rows = np.empty(0, dtype=np.int64)
        self.last: CloudUpdate | None = None
        self.view_state: dict = {}
        self._size = (900, height)
        self._lock = threading.Lock()
        self._busy = False
        self._pending: tuple[dict, int] | None = None
        self._seq = 0
        self._shown = 0
        self._initial = self._fit_view()
        self.pane = pn.pane.DeckGL(
            self._spec(self._frame(np.empty(0, dtype=np.int64))),
            sizing_mode="stretch_width",
            height=height,
            tooltips=False,  # hover shows a card beside the view: no HTML built from data here
            throttle={"view": 250, "hover": 150},
        )
        self.pane.param.watch(self._on_view, "view_state")
        self.pane.param.watch(self._on_click, "click_state")
        self.pane.param.watch(self._on_hover_event, "hover_state")

    # -- spec -----------------------------------------------------------------------------------
    def _fit_view(self) -> dict:
        e = self.store.extent
        lo, hi = np.asarray(e.lo, dtype=float), np.asarray(e.hi, dtype=float)
        span = float(max(hi - lo)) or 1.0
        zoom = math.log2(min(self._size) / (span * 1.3))
        return {
            "target": [float(v) for v in (lo + hi) / 2],
            "zoom": zoom,
            "rotationX": 25,
            "rotationOrbit": 30,
            "minZoom": zoom - 3,
            "maxZoom": zoom + 14,
        }

    def _spec(self, frame) -> dict:
        return {
            "initialViewState": self._initial,
            "views": [{"@@type": "OrbitView", "controller": True}],
            "layers": [
                {
                    "@@type": "PointCloudLayer",
                    "id": "points",
                    "data": frame,
                    "getPosition": "@@=[x, y, z]",
                    "getColor": "@@=[r, g, b]",
                    "pointSize": self.point_px,
                    "pickable": True,
                    "coordinateSystem": "@@#COORDINATE_SYSTEM.CARTESIAN",
                }
            ],
            "mapStyle": "",  # without it Panel's pane throws in the browser (see DESIGN.md)
        }

    def _default_colors(self, rows: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[31, 119, 180]], dtype=np.uint8), (len(rows), 1))

    def color_by(self, column: str | None, *, hidden: frozenset[str] = frozenset(), cmap="viridis"):
        """Colour points by a categorical or numeric column (None: one colour); hidden
        categories are left out of the samples."""
        s = self.store
        self.hidden = hidden
        if column in s.categorical:
            codes, names = s.categorical[column]
            lut = _rgb(category_colors(len(names)))
            self.colors = lambda rows: lut[codes[rows]]
            self._hidden_codes = np.array([i for i, n in enumerate(names) if n in hidden])
            self._hidden_col = column
        elif column in s.numeric:
            values = s.numeric[column]
            finite = values[np.isfinite(values)][:: max(1, s.n // 1_000_000)]
            lo, hi = np.percentile(finite, [1, 99]) if len(finite) else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1.0
            lut = _rgb(palette(cmap))

            def colors(rows, values=values, lo=lo, hi=hi, lut=lut):
                v = np.nan_to_num((values[rows] - lo) / (hi - lo), nan=0.0)
                return lut[np.clip((v * (len(lut) - 1)).astype(np.int64), 0, len(lut) - 1)]

            self.colors = colors
            self._hidden_codes = np.empty(0)
        else:
            self.colors = self._default_colors
            self._hidden_codes = np.empty(0)

    def _frame(self, rows: np.ndarray):
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
    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def compute(self, view_state: dict | None, seq: int = 0) -> CloudUpdate:
        """The sample for ``view_state`` (None or {}: the overview) and the frame to send."""
        t0 = time.perf_counter()
        box = (
            box_from_view_state(view_state, *self._size, self.store.extent) if view_state else None
        )
        rows = sample(self.store, box, self.budget, self._visible_mask())
        frame = self._frame(rows)
        nbytes = int(sum(frame[c].to_numpy().nbytes for c in frame.columns))
        in_view = box is not None and len(rows) < self.budget
        return CloudUpdate(rows, frame, in_view, time.perf_counter() - t0, nbytes, seq)

    def _visible_mask(self) -> np.ndarray | None:
        hidden = getattr(self, "_hidden_codes", np.empty(0))
        if not len(hidden):
            return self.mask
        codes = self.store.categorical[self._hidden_col][0]
        keep = ~np.isin(codes, hidden)
        return keep if self.mask is None else (self.mask & keep)

    def refresh(self, *, wait: bool = False) -> CloudUpdate | None:
        """Sample the current view again (after a colour or filter change)."""
        if wait or self.doc is None:
            update = self.compute(self.view_state, self._next_seq())
            self._apply(update)
            return update
        self._submit(dict(self.view_state))
        return None

    def _submit(self, view_state: dict) -> None:
        seq = self._next_seq()
        with self._lock:
            if self._busy:
                self._pending = (view_state, seq)
                return
            self._busy = True
        render_pool().submit(self._job, (view_state, seq))

    def _job(self, job: tuple[dict, int]) -> None:
        view_state, seq = job
        try:
            update = self.compute(view_state, seq)
            if self.doc is not None:
                self.doc.add_next_tick_callback(lambda: self._apply(update))
        except Exception as exc:  # a failed sample must not stop the session
            import logging

            logging.getLogger(__name__).exception("3D sample failed: %s", exc)
        with self._lock:
            nxt, self._pending = self._pending, None
            if nxt is None:
                self._busy = False
        if nxt is not None:
            render_pool().submit(self._job, nxt)

    def _apply(self, update: CloudUpdate) -> None:
        if update.seq < self._shown:  # queued callbacks may run out of order: newest wins
            return
        self._shown = update.seq
        self.rows = update.rows
        self.pane.object = self._spec(update.frame)
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
        if self.doc is None:
            self.refresh(wait=True)
        else:
            self._submit(dict(self.view_state))

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
        return self.store.rows_in(box, self._visible_mask())
