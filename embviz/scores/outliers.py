"""How unusual each row is among its neighbours: k-NN distance and local outlier factor ranks, uniqueness."""

from __future__ import annotations

import numpy as np

from .neighbours import mean_valid, rank01, valid_neighbours

__all__ = ["OUTLIER_METHODS", "outlier_scores", "uniqueness"]

#: Outlier scores: ``knn`` (mean distance to the k neighbours), ``lof`` (local outlier factor:
#: density relative to the neighbours' densities) and ``blend`` (mean of their ranks).
OUTLIER_METHODS = ("knn", "lof", "blend")


def outlier_scores(nbr: np.ndarray, dist: np.ndarray, *, method: str = "knn") -> np.ndarray:
    """How unusual each row is, as a percentile rank in [0, 1] (1 = the most unusual).

    Parameters
    ----------
    nbr, dist : neighbour rows and distances (see :mod:`embviz.scores`).
    method : ``knn`` (default) ranks the mean distance to the k neighbours: it finds points
        far from everything, even a loose group of outliers that are each other's
        neighbours, but ranks every member of a sparse class above a dense one. ``lof`` is the
        local outlier factor (reachability distances, Breunig et al. 2000): density relative to
        the neighbours' densities, fair to sparse classes but blind to outliers whose
        neighbours are outliers too. ``blend`` averages the two ranks. On 50 photo crops
        planted among 5,000 MNIST digits (``benchmarks/bench_curate.py``), k = 10: ``knn``
        put all 50 in its top 50, ``lof`` 33 and ``blend`` 33.

    Returns float32 ``(n,)``; NaN for rows with no neighbour.
    """
    if method not in OUTLIER_METHODS:
        raise ValueError(f"unknown outlier method {method!r}; valid: {list(OUTLIER_METHODS)}")
    valid = valid_neighbours(nbr, dist)
    kdist = mean_valid(dist, valid)
    if method == "knn":
        return rank01(kdist)
    lof = _lof(nbr, dist, valid)
    if method == "lof":
        return rank01(lof)
    both = (rank01(kdist).astype(np.float64) + rank01(lof)) / 2
    return rank01(both)


def _lof(nbr: np.ndarray, dist: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Local outlier factor with k = each row's valid neighbour count."""
    safe = np.where(valid, nbr, 0)
    # k-distance: distance to the farthest valid neighbour.
    kth = np.where(valid, dist, -np.inf).max(axis=1)
    kth = np.where(np.isfinite(kth), kth, np.nan)
    reach = np.maximum(dist, kth[safe])
    mean_reach = mean_valid(reach, valid & np.isfinite(reach))
    # Exact duplicates make reachability 0; a floor keeps densities finite.
    floor = (
        max(float(np.nanmedian(mean_reach)) * 1e-3, 1e-9) if np.isfinite(mean_reach).any() else 1
    )
    lrd = 1.0 / np.maximum(mean_reach, floor)
    nb_lrd = lrd[safe]
    return mean_valid(nb_lrd, valid & np.isfinite(nb_lrd)) / lrd


def uniqueness(dist: np.ndarray, *, weights: tuple[float, ...] = (0.6, 0.3, 0.1)) -> np.ndarray:
    """How far each row lies from its nearest neighbours, in [0, 1] (FiftyOne's definition).

    The weighted distance to the first ``len(weights)`` neighbours (nearest weighted most),
    divided by its maximum over the rows: 1 is the loneliest row, 0 an exact duplicate. Unlike
    :func:`outlier_scores` (a rank) it keeps the distances' proportions, so a few far rows
    squeeze the rest towards 0.

    Returns float32 ``(n,)``; NaN for rows with no neighbour.
    """
    m = min(len(weights), dist.shape[1])
    d = dist[:, :m].astype(np.float64)
    w = np.asarray(weights[:m], dtype=np.float64)
    ok = np.isfinite(d)
    wsum = (ok * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(wsum > 0, np.where(ok, d, 0.0) @ w / wsum, np.nan)
    raw = np.maximum(raw, 0.0)  # float32 cosine can dip below 0 for identical vectors
    top = np.nanmax(raw) if np.isfinite(raw).any() else np.nan
    if not top > 0:
        return np.where(np.isfinite(raw), 0.0, np.nan).astype(np.float32)
    return (raw / top).astype(np.float32)
