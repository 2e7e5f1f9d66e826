"""Numba kernels for the frame's hot loops: mixing category colours and alpha by count."""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "alpha_lut",
    "alpha_lut_from_hist",
    "apply_alpha",
    "mix_stack",
    "rgba_densities",
]


def alpha_lut(totals: np.ndarray, *, min_alpha: int, max_alpha: int, cap: int = 1 << 16):
    """Alpha per point count, histogram-equalised over the non-empty pixels (index 0 -> 0).

    Counts are integers, so equalisation is the empirical CDF of the counts: cheap and exact.
    """
    hit = totals[totals > 0]
    hist = np.bincount(np.minimum(hit, cap), minlength=2) if len(hit) else np.zeros(2, np.int64)
    return alpha_lut_from_hist(hist, min_alpha=min_alpha, max_alpha=max_alpha)


def alpha_lut_from_hist(hist: np.ndarray, *, min_alpha: int, max_alpha: int) -> np.ndarray:
    """:func:`alpha_lut` from ``hist``, the number of pixels per count (``hist[0]`` ignored);
    the lookup table ends at the highest count present."""
    hit = np.flatnonzero(hist[1:])
    lut = np.zeros(int(hit[-1]) + 2 if len(hit) else 2, dtype=np.uint8)
    if len(hit):
        cdf = np.cumsum(hist[: len(lut)])
        cdf[:] -= hist[0]
        cdf = cdf / cdf[-1]
        lut[:] = (min_alpha + (max_alpha - min_alpha) * cdf).astype(np.uint8)
        lut[0] = 0
    return lut


@numba.njit(nogil=True, cache=True)
def mix_stack(counts, colors, visible, per_category, totals, rgb, hist):  # pragma: no cover
    """One pass over an (H, W, k) count stack: all points per category, visible points per
    pixel (capped at ``len(hist) - 1``), the count-weighted mix of ``colors`` (alpha 0) and ``hist``, the pixels per capped count, from
    which :func:`alpha_lut_from_hist` builds the alpha table that :func:`apply_alpha` applies.
    Reading the stack once instead of twice (and no mask and bincount over H x W) is most of
    what a category frame's shading costs."""
    h, w, k = counts.shape
    flat = counts.reshape(h * w, k)
    out = rgb.reshape(h * w)
    capped = totals.reshape(h * w)
    cap = len(hist) - 1
    per = np.zeros(k, np.int64)
    for p in range(h * w):
        total = 0
        r = 0.0
        g = 0.0
        b = 0.0
        for c in range(k):
            n = flat[p, c]
            # Most pixels of a stack are empty and most of the rest hold one category: the
            # branch skips the zeros cheaper than arithmetic on them (measured).
            if n:
                per[c] += n
                if visible[c]:
                    total += n
                    r += n * colors[c, 0]
                    g += n * colors[c, 1]
                    b += n * colors[c, 2]
        if total == 0:
            out[p] = 0
            capped[p] = 0
        else:
            out[p] = (
                (np.uint32(b / total) << 16) | (np.uint32(g / total) << 8) | np.uint32(r / total)
            )
            t = min(total, cap)
            capped[p] = t
            hist[t] += 1
    per_category += per
    return rgb


@numba.njit(nogil=True, cache=True)
def apply_alpha(rgb, totals, lut):  # pragma: no cover - compiled
    """Set the alpha of ``rgb`` (in place) to ``lut`` of each pixel's capped count."""
    h, w = rgb.shape
    for i in range(h):
        for j in range(w):
            t = totals[i, j]
            if t:
                rgb[i, j] |= np.uint32(lut[t]) << 24
    return rgb


@numba.njit(nogil=True, cache=True)
def rgba_densities(rgba, max_r, row_step):  # pragma: no cover - compiled
    """Datashader's dynspread density (share of drawn pixels with another drawn pixel within
    Chebyshev distance ``r``) for every ``r`` up to ``max_r`` in one pass, estimated on every
    ``row_step``-th row (the decision needs two digits, not six); ``out[r]`` is for ``r``.

    Each pixel's neighbourhood is searched ring by ring outwards and the search stops at the
    first neighbour, so a dense frame looks at a few pixels each and every radius is answered.
    """
    h, w = rgba.shape
    count = 0
    nearest = np.zeros(max_r + 2, np.int64)
    for y in range(0, h, row_step):
        for x in range(w):
            if not (rgba[y, x] >> 24) & 255:
                continue
            count += 1
            found = max_r + 1
            for r in range(1, max_r + 1):
                for i in range(max(0, y - r), min(y + r + 1, h)):
                    edge = i == y - r or i == y + r
                    step = 1 if edge else 2 * r
                    for j in range(x - r, x + r + 1, step):
                        if 0 <= j < w and (rgba[i, j] >> 24) & 255:
                            found = r
                            break
                    if found == r:
                        break
                if found == r:
                    break
            nearest[found] += 1
    out = np.ones(max_r + 1)
    if count:
        out[:] = np.cumsum(nearest[: max_r + 1]) / count
    return out
