"""The 3D view moving to another map of the same samples: deck.gl moves the points already sent.

The 2D map renders the frames of a motion on the server (:mod:`embviz.app.motion`); the 3D view
leaves them to the browser. :class:`CloudMotion` sends the points on screen again, the same
sample ids in the same order, at their places in the new map, with a deck.gl attribute
transition on the ``PointCloudLayer``'s positions: deck.gl interpolates every point on the GPU
for :data:`~embviz.app.motion.DURATION` seconds (smoothstep, as in 2D) while the camera moves to
fit the new map. Colours, filters and hidden classes are the new map's from the start; points the
new map lacks or leaves out go as the motion starts. Once it ends, the view samples the new map
as usual (its own stratified sample); a colour or filter change meanwhile ends it at once.

deck.gl starts a transition from an attribute's previous values only if the transition already
exists: turned on with the new positions, it would start from nothing and the points would jump.
So the transition goes out first, with the points as they are, then the new positions. The layer
spec carries it as plain JSON; deck.gl's JSON converter (which Panel's DeckGL pane runs on every
spec) turns the ``"@@="`` easing expression into a function of ``this``, the time in [0, 1].
"""

from __future__ import annotations

import time

import numpy as np

from embviz.render.store import PointStore

from .cloud_view import CloudUpdate, CloudView
from .motion import DURATION

__all__ = ["EASE", "SHARED", "CloudMotion", "same_samples", "transitions"]

#: Smoothstep (:func:`embviz.render.transition.ease`) as a deck.gl JSON expression of the time.
EASE = "@@=this * this * (3 - 2 * this)"
#: Least share of the points on screen the new map must hold for them to move.
SHARED = 0.9


def same_samples(a: PointStore, b: PointStore, ids: np.ndarray) -> bool:
    """Whether 3D maps ``a`` and ``b`` hold the same samples: their sizes within 1 % of each
    other and at least :data:`SHARED` of ``ids`` (``a``'s points on screen) in ``b``."""
    if a.dims != 3 or b.dims != 3 or not len(ids):
        return False
    if abs(a.n - b.n) > 0.01 * max(a.n, b.n):
        return False
    return float((b.row_of(np.asarray(ids)) >= 0).mean()) >= SHARED


def transitions(duration: float = DURATION) -> dict:
    """deck.gl's layer ``transitions`` moving the points' positions over ``duration`` seconds."""
    ms = round(1000 * duration)
    return {"getPosition": {"type": "interpolation", "duration": ms, "easing": EASE}}


class CloudMotion:
    """Move ``view``'s points to their places in ``store``; :meth:`start` sends the motion.

    Parameters
    ----------
    view : the 3D view; it shows ``view.store`` now, and ``store`` from :meth:`start` on.
    store : the 3D map to move to (the same samples: :func:`same_samples`).
    mask : ``store``'s rows passing the filters (None: all).
    color_by : ``(column, hidden)``: how ``store``'s points are coloured
        (:meth:`~embviz.app.cloud_view.CloudView.color_by`).
    keep_camera : leave the camera where it is (an aligned series: the same place on the next
        member); else it moves with the points to fit ``store``.
    duration : seconds the motion takes.
    """

    def __init__(
        self,
        view: CloudView,
        store: PointStore,
        *,
        mask: np.ndarray | None = None,
        color_by: tuple[str | None, frozenset[str]] = (None, frozenset()),
        keep_camera: bool = False,
        duration: float = DURATION,
    ):
        if view.last is None:
            raise ValueError("a 3D view moves the points it sent: it has sent none yet")
        self.view = view
        self.store = store
        self.source = view.store
        self.mask = mask
        self.color_by = color_by
        self.keep_camera = keep_camera
        self.duration = float(duration)
        #: sample ids moved, in the order sent; points left out (not in ``store``, filtered out)
        self.ids = np.empty(0, dtype=np.int64)
        self.dropped = 0
        self.ends = 0.0  #: when the motion ends (``time.monotonic``)

    @property
    def running(self) -> bool:
        """Whether the points are still moving."""
        return time.monotonic() < self.ends

    def start(self) -> None:
        """Send the motion: the view takes ``store`` (its colours and mask) and its pane moves
        the points; with a document, the view samples ``store`` once the motion ends."""
        t0, view, store = time.perf_counter(), self.view, self.store
        ids, before = self.source.ids[view.rows], view.last.frame
        view.store, view.mask = store, self.mask
        view.color_by(self.color_by[0], hidden=self.color_by[1])
        rows = store.row_of(ids)
        keep = rows >= 0
        visible = view.visible_mask()
        if visible is not None:
            keep[keep] = visible[rows[keep]]
        order = np.concatenate([np.flatnonzero(keep), np.flatnonzero(~keep)])
        rows = rows[order[: int(keep.sum())]]
        self.ids, self.dropped = store.ids[rows], int((~keep).sum())
        moves = transitions(self.duration)
        view.motion = self
        self.ends = time.monotonic() + self.duration
        # The transition on, over the points as they are (those to leave out last: the motion
        # shortens the layer to the points that move, so they go as it starts) ...
        view.pane.object = view.spec(before.take(order) if self.dropped else before, moves)
        if not self.keep_camera:
            view.refit(transitionDuration=round(1000 * self.duration), transitionEasing=EASE)
        # ... then the same points at their places in the new map.
        frame = view.frame_of(rows)
        nbytes = int(sum(frame[c].to_numpy().nbytes for c in frame.columns))
        update = CloudUpdate(rows, frame, False, time.perf_counter() - t0, nbytes, store)
        view.show(update, transitions=moves)
        if view.doc is not None:
            view.doc.add_timeout_callback(self._end, round(1000 * self.duration) + 100)

    def _end(self) -> None:
        # The camera's own view events waited for this (CloudView ignores them while moving).
        if self.view.motion is self and self.view.doc is not None:
            self.view.refresh()
