"""Points moving from one 2D map to another map of the same samples: the frames of the motion.

A :class:`Transition` morphs projection ``a`` into projection ``b`` (two checkpoints or layers
of a series, UMAP and t-SNE of one embedding ...). It moves a stratified sample of ``b``'s
points (:func:`motion_rows`: the 3D cloud's rare-structure-keeping rank on the plane, so lone
outliers and small clusters move too, at most ``budget`` points) and renders each frame with
the map's own :class:`~embviz.render.raster.Renderer`, so colours, filters and hidden
categories look as they do on the still map. The motion is drawn in screen space: a point
starts where ``a`` shows it in ``src_view`` and ends where ``b`` will show it in ``dst_view``,
both drawn in ``src_view``'s coordinates, so the plot's ranges stay put while points move and
the last frame shows ``b`` as it will look once the ranges change to ``dst_view`` (where the
full map takes over).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from .raster import Frame, Renderer, Style
from .store import PointStore, View

__all__ = ["DEFAULT_BUDGET", "Transition", "ease", "motion_rows", "trail_paths"]

#: Most points drawn while a map moves (the last frame is the full map, drawn as usual).
DEFAULT_BUDGET = 200_000

_ROWS: weakref.WeakKeyDictionary[PointStore, dict] = weakref.WeakKeyDictionary()
_ROWS_LOCK = threading.Lock()


def ease(t: float) -> float:
    """Smoothstep easing of ``t`` clipped to [0, 1]: slow start, slow stop."""
    t = min(max(float(t), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def motion_rows(store: PointStore, budget: int = DEFAULT_BUDGET) -> np.ndarray:
    """At most ``budget`` rows of a 2D ``store`` to move, ascending: every occupied cell of a
    coarse grid keeps a row and the rarest cells all of theirs (the rank of
    :func:`embviz.render.sample3d.rank`, on the plane), the rest in proportion to the density.
    Kept per store and budget, so the next transition to the same map starts at once."""
    from .sample3d import _lowest, rank

    if store.n <= budget:
        return np.arange(store.n, dtype=np.int64)
    with _ROWS_LOCK:
        memo = _ROWS.setdefault(store, {})
        rows = memo.get(budget)
    if rows is None:
        ranks = rank(store.x, store.y, np.zeros(store.n, dtype=np.float32))
        rows = np.sort(_lowest(ranks, budget)).astype(np.int64)
        with _ROWS_LOCK:
            memo[budget] = rows
    return rows


def _to_view(x: np.ndarray, y: np.ndarray, src: View, dst: View) -> tuple[np.ndarray, ...]:
    """Coordinates in ``dst`` moved to the same screen place in ``src``."""
    sx = (src.x1 - src.x0) / max(dst.x1 - dst.x0, 1e-300)
    sy = (src.y1 - src.y0) / max(dst.y1 - dst.y0, 1e-300)
    return (
        (src.x0 + (x - dst.x0) * sx).astype(np.float32),
        (src.y0 + (y - dst.y0) * sy).astype(np.float32),
    )


class Transition:
    """The frames of ``a``'s points moving to their places in ``b``.

    Parameters
    ----------
    a, b : 2D point stores of (mostly) the same samples; ``b``'s columns colour the frames.
    src_view : where the plot shows ``a`` now (its ranges during the motion).
    dst_view : where ``b`` will be shown once the motion ends.
    budget : most points moved (a stratified sample of ``b``, :func:`motion_rows`).

    Samples ``a`` lacks start at their place in ``b``. :attr:`matched` is the share of moved
    points found in ``a`` (a low share means the maps hold different samples).
    """

    def __init__(
        self,
        a: PointStore,
        b: PointStore,
        *,
        src_view: View,
        dst_view: View,
        budget: int = DEFAULT_BUDGET,
    ):
        if a.dims != 2 or b.dims != 2:
            raise ValueError("a transition moves points between two 2D maps")
        self.a, self.b = a, b
        self.src_view, self.dst_view = src_view, dst_view
        self.rows = motion_rows(b, budget)
        self.ids = b.ids[self.rows]
        rows_a = a.row_of(self.ids)
        found = rows_a >= 0
        self.matched = float(found.mean()) if len(found) else 0.0
        self.x1, self.y1 = _to_view(b.x[self.rows], b.y[self.rows], src_view, dst_view)
        self.x0 = np.where(found, a.x[np.maximum(rows_a, 0)], self.x1).astype(np.float32)
        self.y0 = np.where(found, a.y[np.maximum(rows_a, 0)], self.y1).astype(np.float32)
        self.categorical = {
            k: (codes[self.rows], names) for k, (codes, names) in b.categorical.items()
        }
        self.numeric = {k: v[self.rows] for k, v in b.numeric.items()}

    @property
    def n(self) -> int:
        """Points moved."""
        return len(self.rows)

    def positions(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The moving points' coordinates at time ``t`` in [0, 1] (eased), in ``src_view``'s
        coordinates."""
        e = np.float32(ease(t))
        return self.x0 + (self.x1 - self.x0) * e, self.y0 + (self.y1 - self.y0) * e

    def follow(self, ids: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Where samples ``ids`` (any of ``b``'s, e.g. the selection) are at time ``t``; ids
        ``b`` lacks are left out."""
        ids = np.asarray(ids, dtype=np.int64)
        rb = self.b.row_of(ids)
        ids, rb = ids[rb >= 0], rb[rb >= 0]
        x1, y1 = _to_view(self.b.x[rb], self.b.y[rb], self.src_view, self.dst_view)
        ra = self.a.row_of(ids)
        x0 = np.where(ra >= 0, self.a.x[np.maximum(ra, 0)], x1)
        y0 = np.where(ra >= 0, self.a.y[np.maximum(ra, 0)], y1)
        e = ease(t)
        return x0 + (x1 - x0) * e, y0 + (y1 - y0) * e

    def frame(
        self,
        t: float,
        width: int,
        height: int,
        *,
        mode: str = "category",
        color_by: str | None = None,
        style: Style | None = None,
        mask: np.ndarray | None = None,
    ) -> Frame:
        """The picture at time ``t`` of ``src_view`` at ``width`` x ``height``; ``mask`` (over
        ``b``'s rows: the filters) leaves points out as on the still map."""
        x, y = self.positions(t)
        store = PointStore.from_arrays(
            x,
            y,
            ids=self.ids,
            categorical=self.categorical,
            numeric=self.numeric,
            key=f"motion:{self.a.key}->{self.b.key}",
            rank=False,
        )
        renderer = Renderer(store, sources=[])
        return renderer.render(
            self.src_view,
            width,
            height,
            mode=mode,
            color_by=color_by,
            style=style or Style(),
            mask=None if mask is None else mask[self.rows],
            mask_key=None,
        )


def trail_paths(stores: list[PointStore], ids: np.ndarray) -> dict[str, list]:
    """The paths of samples ``ids`` across a series of 2D maps (aligned, so their coordinates
    compare): ``{"xs": [[x per member]], "ys": [...], "id": [...]}``, one path per sample, the
    members where a sample is missing skipped."""
    ids = np.asarray(ids, dtype=np.int64)
    rows = [s.row_of(ids) for s in stores]
    xs, ys, kept = [], [], []
    for k, sid in enumerate(ids):
        px = [float(s.x[r[k]]) for s, r in zip(stores, rows, strict=True) if r[k] >= 0]
        py = [float(s.y[r[k]]) for s, r in zip(stores, rows, strict=True) if r[k] >= 0]
        if len(px) >= 2:
            xs.append(px)
            ys.append(py)
            kept.append(int(sid))
    return {"xs": xs, "ys": ys, "id": kept}
