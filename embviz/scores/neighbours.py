"""Neighbour lists as row positions, and the helpers every score shares (validity, means, ranks)."""

from __future__ import annotations

import numpy as np

__all__ = ["mean_valid", "neighbour_rows", "rank01", "valid_neighbours"]


def neighbour_rows(ids: np.ndarray, neighbour_ids: np.ndarray) -> np.ndarray:
    """Map neighbour sample ids to row positions in ``ids``; -1 for ids not in ``ids`` (or -1).

    ``ids`` are the rows' sample ids in the order the scores are computed (the samples
    table's order); ``neighbour_ids`` any integer array of sample ids.
    """
    ids = np.asarray(ids, dtype=np.int64)
    q = np.asarray(neighbour_ids, dtype=np.int64)
    if len(ids) == 0:
        return np.full(q.shape, -1, dtype=np.int64)
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo <= 4 * len(ids) + 1024:
        # Ids are dense (ingest numbers them 0..n-1): a lookup table beats binary search ~10x.
        table = np.full(hi - lo + 1, -1, dtype=np.int64)
        table[ids - lo] = np.arange(len(ids))
        inside = (q >= lo) & (q <= hi)
        return np.where(inside, table[np.where(inside, q - lo, 0)], -1)
    sorter = np.argsort(ids, kind="stable")
    sorted_ids = ids[sorter]
    at = np.minimum(np.searchsorted(sorted_ids, q), len(ids) - 1)
    return np.where(sorted_ids[at] == q, sorter[at], -1).astype(np.int64)


def rank01(values: np.ndarray) -> np.ndarray:
    """Percentile rank of each value in [0, 1] (ties share their mean rank); NaN stays NaN.

    Spreads any score evenly over a colour scale: 0.99 means "higher than 99% of the rows".
    """
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan, dtype=np.float32)
    ok = np.isfinite(values)
    m = int(ok.sum())
    if m == 1:
        out[ok] = 1.0
    elif m > 1:
        out[ok] = ((rankdata(values[ok]) - 1.0) / (m - 1)).astype(np.float32)
    return out


def valid_neighbours(nbr: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Boolean ``(n, k)``: True where a neighbour exists (row >= 0, finite distance)."""
    return (nbr >= 0) & np.isfinite(dist)


def mean_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Row means of ``values`` ``(n, k)`` over the ``valid`` cells, float64; NaN for a row with none."""
    count = valid.sum(axis=1)
    total = np.where(valid, values, 0.0).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
