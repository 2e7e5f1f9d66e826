"""Per-sample curation scores from an embedding's neighbours: outliers, uniqueness, label issues, clusters.

Every function takes the saved neighbour lists as *row positions* (``nbr`` int64 ``(n, k)``,
-1 where a neighbour is missing) and their distances (``dist`` float32 ``(n, k)``, ``inf``
where missing, nearest first), as :func:`neighbour_rows` turns the ``index`` step's table into.
All work is vectorised numpy (chunked where a step needs ``(n, k, k)`` temporaries), so the
functions run on tens of millions of rows; rows with no neighbour get NaN or -1. Duplicate
groups live in :mod:`embviz.duplicates`.

One module per score: :mod:`~embviz.scores.neighbours` (the shared row mapping and ranks),
:mod:`~embviz.scores.outliers`, :mod:`~embviz.scores.labels` and :mod:`~embviz.scores.clusters`;
this package is their public face.
"""

from __future__ import annotations

from .clusters import assign_clusters, cluster_names, default_clusters, fit_centroids
from .confident import class_thresholds, confident_issues
from .labels import CLASSIFIER_BELOW, LabelIssues, label_issues, wants_classifier
from .neighbours import neighbour_rows, rank01
from .outliers import OUTLIER_METHODS, outlier_scores, uniqueness

__all__ = [
    "CLASSIFIER_BELOW",
    "OUTLIER_METHODS",
    "LabelIssues",
    "assign_clusters",
    "class_thresholds",
    "confident_issues",
    "cluster_names",
    "default_clusters",
    "fit_centroids",
    "label_issues",
    "neighbour_rows",
    "outlier_scores",
    "rank01",
    "uniqueness",
    "wants_classifier",
]
