"""What the map draws over each frame: cluster names and density contours, per the session.

A :class:`MapAnnotations` is the map view's ``annotate`` hook (run in the render pool after
each frame). Cluster names come from the ``cluster`` step's table of the projection drawn
(:func:`embviz.clusters.cluster_labels`: the level by zoom, none overlapping); contours from
the density of the points the frame drew (the renderer's cached aggregate of that view).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .session import Session

__all__ = ["MapAnnotations"]

_CLUSTERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def clusters_of(ds, projection: str):
    """The named clusters of ``projection`` (a DataFrame, one process-wide copy per version),
    or None when the ``cluster`` step has not run on it."""
    from embviz.clusters import clusters_key, read_clusters

    key = clusters_key(projection)
    if not ds.has(key):
        return None
    version = f"{ds.root}|{ds.table(key)['dir']}"
    with _LOCK:
        if version not in _CLUSTERS:
            if len(_CLUSTERS) > 16:
                _CLUSTERS.clear()
            _CLUSTERS[version] = read_clusters(ds, projection)
        return _CLUSTERS[version]


class MapAnnotations:
    """Cluster names (``session.cluster_labels``) and density contours (``session.contours``)
    for a view; ``map_view()`` gives the map view whose renderer drew the frame."""

    def __init__(self, session: Session, map_view: Callable[[], Any]):
        self.session = session
        self.map_view = map_view

    def __call__(self, view, width: int, height: int, frame) -> tuple[dict | None, dict | None]:
        """``(labels {x, y, text, size} or None, contours {xs, ys} or None)`` for ``view``."""
        s = self.session
        labels = contours = None
        if s.cluster_labels:
            found = clusters_of(s.dataset, s.projection)
            if found is not None and len(found):
                from embviz.clusters import cluster_labels

                labels = cluster_labels(found, view, width, height)
        if s.contours:
            contours = self._contours(view, width, height, frame)
        return labels, contours

    def _contours(self, view, width: int, height: int, frame) -> dict | None:
        from embviz.render.contours import density_contours

        mv = self.map_view()
        if mv is None:
            return None
        mode = frame.mode if frame.mode in ("category", "numeric", "density") else "density"
        agg = mv.renderer.aggregate(
            view,
            width,
            height,
            mode=mode,
            color_by=frame.color_by,
            mask=mv.mask,
            mask_key=mv.mask_key,
        )
        # A summary (count with the top code, or with the mean value) keeps its counts as ``n``;
        # a per-category stack is summed by density_contours.
        grid = agg["n"].values if hasattr(agg, "data_vars") else np.asarray(agg)
        return density_contours(grid, view)
