"""A map moving to another map of the same samples: frames rendered on the server while it moves.

:class:`Motion` drives one :class:`~embviz.app.mapview.MapView` from the map it shows to a new
store (the next member of a series, t-SNE after UMAP ...). Frames of a stratified sample of the
points (:class:`~embviz.render.transition.Transition`) are rendered on the render pool one at a
time, each for the time it is asked at, so a slow machine shows fewer frames, never a slower
motion; the plot's ranges stay put meanwhile. After the last frame the view takes the new store
and the target view, and renders the full map as usual: the motion ends on the static map.
Any other refresh of the view (a pan, a new colour) ends the motion at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from embviz.render.store import PointStore, View
from embviz.render.transition import DEFAULT_BUDGET, Transition

from .map_result import MapResult
from .work import Coalescer

__all__ = ["DURATION", "Motion"]

#: Seconds a map takes to move to the next one.
DURATION = 1.2


class Motion:
    """Move ``view``'s points to their places in ``store``, then show ``store`` at ``target``.

    Parameters
    ----------
    view : the map view (its figure, sources and render pool); it shows ``view.store`` now.
    store : the map to move to (the same samples).
    target : the view of ``store`` shown once the motion ends.
    mask : ``store``'s rows passing the filters (None: all), applied while moving.
    follow : sample ids drawn outlined as they move (the selection), or None.
    duration : seconds the motion takes.
    budget : most points moved.
    on_frame : ``(result, progress)`` after each frame reached the page.
    on_done : ``(motion)`` once the full map of ``store`` was asked for.
    """

    def __init__(
        self,
        view,
        store: PointStore,
        target: View,
        *,
        mask: np.ndarray | None = None,
        follow: np.ndarray | None = None,
        duration: float = DURATION,
        budget: int = DEFAULT_BUDGET,
        on_frame: Callable[[MapResult, float], None] | None = None,
        on_done: Callable[[Motion], None] | None = None,
    ):
        self.view = view
        self.store = store
        self.source = view.store
        self.start_view = view.view
        self.target = target
        self.mask = mask
        self.follow_ids = follow
        self.duration = float(duration)
        self.budget = int(budget)
        self.on_frame = on_frame
        self.on_done = on_done
        self.transition: Transition | None = None
        #: frames shown, bytes they sent, seconds from the first frame shown to the last
        self.frames = 0
        self.bytes = 0
        self.seconds = 0.0
        self.done = False
        self._started: float | None = None
        self._frames = Coalescer(self._compute, self._apply, name="motion")

    @property
    def fps(self) -> float:
        """Frames shown per second of motion so far."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def start(self) -> None:
        """Begin moving (the view's document receives the frames); without a document
        (notebooks, tests) the view takes the new map at once."""
        self._frames.doc = self.view.doc
        if self._frames.doc is None:
            self.finish()
            return
        self.view.motion = self
        self._frames.submit(0.0)

    def _compute(self, t: float) -> MapResult:
        if self.transition is None:  # built on the pool: sampling a large map takes a while
            self.transition = Transition(
                self.source,
                self.store,
                src_view=self.start_view,
                dst_view=self.target,
                budget=self.budget,
            )
        t0 = time.perf_counter()
        req = self.view.request(self.start_view)
        frame = self.transition.frame(
            t,
            req.width,
            req.height,
            mode=req.mode,
            color_by=req.color_by,
            style=req.style,
            mask=self.mask,
        )
        result = MapResult(req, frame)
        result.bytes = 22 + (len(frame.png) + 2) // 3 * 4
        if self.follow_ids is not None and len(self.follow_ids):
            x, y = self.transition.follow(self.follow_ids, t)
            result.highlight = {"x": x.astype(float).tolist(), "y": y.astype(float).tolist()}
        result.extra["t"] = float(t)
        result.seconds = time.perf_counter() - t0
        return result

    def _apply(self, result: MapResult) -> None:
        if self.done:
            return
        self.view.show_picture(result)
        if result.highlight is not None:
            self.view.highlight_src.data = result.highlight
        if not self.frames:  # what belongs to the still map (names, tooltips) goes
            mv = self.view
            for src in (mv.point_src, mv.sprite_src, mv.cell_src, mv.label_src, mv.contour_src):
                if any(len(v) for v in src.data.values()):
                    src.data = {k: [] for k in src.data}
        now = time.monotonic()
        if self._started is None:
            self._started = now  # the clock starts with the first frame on the page
        self.frames += 1
        self.bytes += result.bytes
        self.seconds = now - self._started
        progress = min(self.seconds / self.duration, 1.0)
        if self.on_frame is not None:
            self.on_frame(result, progress)
        if result.extra["t"] >= 1.0:
            self.finish()
        else:
            self._frames.submit(progress)

    def finish(self) -> None:
        """End the motion now: the view takes the new store and target view and renders it."""
        if self.done:
            return
        self.done = True
        view = self.view
        view.motion = None
        view.set_store(self.store)
        view.mask = self.mask
        view.set_view(self.target)
        x_range, y_range = view.figure.x_range, view.figure.y_range
        x_range.reset_start, x_range.reset_end = self.target.x0, self.target.x1
        y_range.reset_start, y_range.reset_end = self.target.y0, self.target.y1
        if self.on_done is not None:
            self.on_done(self)
        view.refresh(wait=view.doc is None)
