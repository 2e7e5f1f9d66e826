"""Numba kernels for the frame's hot loops: mixing category colours and flattening to 8 bits."""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "alpha_lut",
    "category_totals",
    "flatten_over",
    "mix_categories",
    "rgba_density",
]


def alpha_lut(totals: np.ndarray, *, min_alpha: int, max_alpha: int, cap: int = 1 << 16):
    """Alpha per point count, histogram-equalised over the non-empty pixels (index 0 -> 0).

    Counts are integers, so equalisation is the empirical CDF of the counts: cheap and exact.
    """
    hit = totals[totals > 0]
    lut = np.zeros(min(int(hit.max()) if len(hit) else 1, cap) + 1, dtype=np.uint8)
    if len(hit):
        cdf = np.cumsum(np.bincount(np.minimum(hit, len(lut) - 1), minlength=len(lut)))
        cdf = cdf / cdf[-1]
        lut[:] = (min_alpha + (max_alpha - min_alpha) * cdf).astype(np.uint8)
        lut[0] = 0
    return lut


@numba.njit(nogil=True, cache=True)
def mix_categories(counts, colors, visible, lut, out):  # pragma: no cover - compiled
    """RGBA (uint32, datashader layout) of an (H, W, k) count stack: count-weighted colour mix."""
    h, w, k = counts.shape
    cap = len(lut) - 1
    for i in range(h):
        for j in range(w):
            total = 0
            r = 0.0
            g = 0.0
            b = 0.0
            for c in range(k):
                n = counts[i, j, c]
                if n and visible[c]:
                    total += n
                    r += n * colors[c, 0]
                    g += n * colors[c, 1]
                    b += n * colors[c, 2]
            if total == 0:
                out[i, j] = 0
            else:
                a = np.uint32(lut[min(total, cap)])
                out[i, j] = (
                    (a << 24)
                    | (np.uint32(b / total) << 16)
                    | (np.uint32(g / total) << 8)
                    | np.uint32(r / total)
                )
    return out


@numba.njit(nogil=True, cache=True)
def flatten_over(rgba, background, out):  # pragma: no cover - compiled
    """RGB of RGBA ``rgba`` composited over ``background``, rows flipped to image order (top first)."""
    h, w = rgba.shape
    for i in range(h):
        for j in range(w):
            v = rgba[h - 1 - i, j]
            a = ((v >> 24) & 255) / 255.0
            for ch in range(3):
                out[i, j, ch] = np.uint8(((v >> (8 * ch)) & 255) * a + background[ch] * (1.0 - a))
    return out


@numba.njit(nogil=True, cache=True)
def category_totals(counts, visible, totals, per_category):  # pragma: no cover - compiled
    """One pass over an (H, W, k) stack: visible points per pixel and all points per category."""
    h, w, k = counts.shape
    for i in range(h):
        for j in range(w):
            t = 0
            for c in range(k):
                n = counts[i, j, c]
                if n:
                    per_category[c] += n
                    if visible[c]:
                        t += n
            totals[i, j] = t
    return totals, per_category


@numba.njit(nogil=True, cache=True)
def rgba_density(rgba, px, row_step):  # pragma: no cover - compiled
    """Datashader's dynspread density (share of drawn pixels with a drawn neighbour within
    ``px``), estimated on every ``row_step``-th row: the decision needs two digits, not six."""
    h, w = rgba.shape
    count = 0
    with_neighbours = 0
    for y in range(0, h, row_step):
        for x in range(w):
            if (rgba[y, x] >> 24) & 255:
                count += 1
                found = 0
                for i in range(max(0, y - px), min(y + px + 1, h)):
                    for j in range(max(0, x - px), min(x + px + 1, w)):
                        if (rgba[i, j] >> 24) & 255:
                            found += 1
                            if found > 1:
                                break
                    if found > 1:
                        break
                if found > 1:
                    with_neighbours += 1
    return with_neighbours / count if count else 1.0
