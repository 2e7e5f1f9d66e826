"""Space-filling-curve layout: sort 2-D/3-D points along a Hilbert curve and cut compact partitions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["AXES", "bounds_of", "hilbert_distances", "hilbert_order", "layout_partitions"]

#: Axis names of coordinate columns, in order.
AXES = ("x", "y", "z")


def bounds_of(coords: np.ndarray) -> dict[str, list[float]]:
    """Per-axis ``[min, max]`` of ``coords`` (n, 2|3), as ``{"x": [..], "y": [..](, "z": [..])}``.

    Non-finite values are ignored; an axis with no finite value (e.g. an empty array) is left
    out, so an empty input gives ``{}`` (kept out of the JSON manifest, which has no NaN).
    """
    coords = _as_coords(coords)
    out: dict[str, list[float]] = {}
    for i in range(coords.shape[1]):
        col = coords[:, i]
        finite = col[np.isfinite(col)]
        if finite.size:
            out[AXES[i]] = [float(finite.min()), float(finite.max())]
    return out


def _as_coords(coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(f"coords must have shape (n, 2) or (n, 3), got {coords.shape}")
    return coords


def _bounds_array(coords: np.ndarray, bounds: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` arrays from ``bounds`` (a dict like :func:`bounds_of`, or a (dims, 2) array)."""
    dims = coords.shape[1]
    if bounds is None:
        bounds = bounds_of(coords)
    if isinstance(bounds, Mapping):
        arr = np.array([bounds.get(a, (0.0, 0.0)) for a in AXES[:dims]], dtype=np.float64)
    else:
        arr = np.asarray(bounds, dtype=np.float64).reshape(dims, 2)
    lo, hi = arr[:, 0].copy(), arr[:, 1].copy()
    lo[~np.isfinite(lo)] = 0.0
    hi[~np.isfinite(hi)] = 0.0
    return lo, hi


def hilbert_distances(coords: np.ndarray, bounds: Any = None, bits: int = 16) -> np.ndarray:
    """Hilbert-curve distance (int64) of each point after quantising it into ``bounds``.

    Parameters
    ----------
    coords : (n, 2) or (n, 3) array of coordinates.
    bounds : dict ``{"x": [lo, hi], ...}`` or (dims, 2) array; default the data's own bounds.
        Pass the global bounds when sorting chunks of a larger set, so distances are comparable.
    bits : curve order per axis (cells per axis = 2**bits); ``bits * dims`` must be <= 62.
        Points outside ``bounds`` are clamped to the border cells; NaNs go to cell 0.
    """
    coords = _as_coords(coords)
    dims = coords.shape[1]
    if bits < 1 or bits * dims > 62:
        raise ValueError(f"bits must be in 1..{62 // dims} for {dims}-D points, got {bits}")
    if coords.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = _bounds_array(coords, bounds)
    span = hi - lo
    span[span <= 0] = 1.0
    cells = (1 << bits) - 1
    scaled = (np.asarray(coords, dtype=np.float64) - lo) * (cells / span)
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=cells, neginf=0.0)
    np.clip(scaled, 0, cells, out=scaled)
    return _distances_kernel()(bits, scaled.astype(np.int64))


_KERNEL: Any = None
# Bound by _distances_kernel() on first use (numba and spatialpandas are slow to import); numba
# reads these globals when it compiles or loads the cached kernel.
prange = range
distance_from_coordinate: Any = None


def _distances_py(p, coords):  # pragma: no cover - compiled by numba
    out = np.empty(coords.shape[0], np.int64)
    for i in prange(coords.shape[0]):
        out[i] = distance_from_coordinate(p, coords[i])
    return out


def _distances_kernel():
    """spatialpandas' per-point Hilbert distance in a parallel numba loop, cached on disk.

    spatialpandas' own ``distances_from_coordinates`` runs on one core and is compiled anew in
    every process (~5 s). numba and spatialpandas (slow to import) load here, on first use.
    """
    global _KERNEL, prange, distance_from_coordinate
    if _KERNEL is None:
        import numba
        from spatialpandas.spatialindex import hilbert_curve

        prange = numba.prange
        distance_from_coordinate = hilbert_curve.distance_from_coordinate
        _KERNEL = numba.njit(parallel=True, nogil=True, cache=True)(_distances_py)
    return _KERNEL


def hilbert_order(coords: np.ndarray, bounds: Any = None, bits: int = 16) -> np.ndarray:
    """Permutation (int64 indices) that sorts ``coords`` along a Hilbert curve.

    Consecutive points in this order are close in space, so a contiguous slice of the sorted
    points (a partition or a Parquet row group) covers a compact region. The sort is stable, so
    ties (points in the same cell) keep their input order and the result is deterministic.
    See :func:`hilbert_distances` for ``bounds`` and ``bits``.
    """
    return np.argsort(hilbert_distances(coords, bounds, bits), kind="stable")


def layout_partitions(
    ids: np.ndarray,
    coords: np.ndarray,
    *,
    partition_rows: int,
    bounds: Any = None,
    bits: int = 16,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[str, list[float]]]]:
    """Hilbert-sort the points and yield ``(index, ids_chunk, coords_chunk, chunk_bounds)``.

    Each chunk holds up to ``partition_rows`` consecutive points along the curve, so it covers a
    compact region of the space and a zoomed-in view needs to read only a few chunks.
    An empty input yields nothing.
    """
    if partition_rows < 1:
        raise ValueError(f"partition_rows must be >= 1, got {partition_rows}")
    coords = _as_coords(coords)
    ids = np.asarray(ids)
    if ids.shape[0] != coords.shape[0]:
        raise ValueError(f"ids has {ids.shape[0]} rows but coords has {coords.shape[0]}")
    order = hilbert_order(coords, bounds, bits)
    for index, start in enumerate(range(0, len(order), partition_rows)):
        take = order[start : start + partition_rows]
        chunk = coords[take]
        yield index, ids[take], chunk, bounds_of(chunk)
