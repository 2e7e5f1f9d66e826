"""Numba kernels for the frame's hot loops: mixing category colours, spreading sparse points and
flattening to 8 bits. Each is compiled once per machine (``cache=True``), not once per process."""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "alpha_from_histogram",
    "alpha_lut",
    "apply_alpha",
    "dynspread_image",
    "exact_palette",
    "flatten_drawn",
    "mix_and_count",
    "scatter_index",
    "rgba_density",
    "spread_image",
    "spread_over",
]


def alpha_lut(totals: np.ndarray, *, min_alpha: int, max_alpha: int, cap: int = 1 << 16):
    """Alpha per point count, histogram-equalised over the non-empty pixels (index 0 -> 0).

    Counts are integers, so equalisation is the empirical CDF of the counts: cheap and exact.
    """
    hit = totals[totals > 0]
    top = min(int(hit.max()) if len(hit) else 1, cap)
    return alpha_from_histogram(
        np.bincount(np.minimum(hit, top), minlength=top + 1),
        min_alpha=min_alpha,
        max_alpha=max_alpha,
    )


def alpha_from_histogram(hist: np.ndarray, *, min_alpha: int, max_alpha: int) -> np.ndarray:
    """:func:`alpha_lut` from ``hist``, the number of pixels per point count (index 0 ignored,
    the last index holding the counts at or over the cap); trailing empty counts are dropped."""
    hist = np.asarray(hist).copy()
    hist[0] = 0
    nonzero = np.flatnonzero(hist)
    lut = np.zeros((int(nonzero[-1]) if len(nonzero) else 1) + 1, dtype=np.uint8)
    if len(nonzero):
        cdf = np.cumsum(hist[: len(lut)])
        lut[:] = (min_alpha + (max_alpha - min_alpha) * (cdf / cdf[-1])).astype(np.uint8)
        lut[0] = 0
    return lut


@numba.njit(nogil=True, cache=True)
def mix_and_count(counts, colors, visible, totals, mixed, per_category, hist):  # pragma: no cover
    """One pass over an (H, W, k) count stack: the visible points per pixel (``totals``), their
    count-weighted colour mix (``mixed``, 0x00BBGGRR), all points per category, and the number
    of pixels per visible count (``hist``, counts at or over its last index counted there).

    What :func:`category_totals` then :func:`mix_categories` compute, reading the stack once
    (the stack is 23 MB for 10 categories at 900x640: each pass over it cost 5-9 ms a frame).
    """
    h, w, k = counts.shape
    cap = len(hist) - 1
    for i in range(h):
        for j in range(w):
            t = 0
            r = 0.0
            g = 0.0
            b = 0.0
            for c in range(k):
                n = counts[i, j, c]
                if n:
                    per_category[c] += n
                    if visible[c]:
                        t += n
                        r += n * colors[c, 0]
                        g += n * colors[c, 1]
                        b += n * colors[c, 2]
            totals[i, j] = t
            if t == 0:
                mixed[i, j] = 0
            else:
                hist[min(t, cap)] += 1
                mixed[i, j] = (np.uint32(b / t) << 16) | (np.uint32(g / t) << 8) | np.uint32(r / t)
    return totals


@numba.njit(nogil=True, cache=True)
def apply_alpha(totals, mixed, lut, out):  # pragma: no cover - compiled
    """RGBA (uint32, datashader layout): ``mixed`` colours with the alpha ``lut`` gives each
    pixel's count (empty pixels transparent)."""
    h, w = totals.shape
    cap = len(lut) - 1
    for i in range(h):
        for j in range(w):
            t = totals[i, j]
            out[i, j] = (np.uint32(lut[min(t, cap)]) << 24) | mixed[i, j] if t else np.uint32(0)
    return out


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


def spread_over(rgba: np.ndarray, px: int) -> np.ndarray:
    """Datashader's ``tf.spread(img, px)`` of an RGBA image (uint32, datashader's layout): each
    drawn pixel composited ``over`` its neighbours within a circle of radius ``px``.

    The same arithmetic as Datashader's kernel (tests compare them pixel for pixel), compiled
    once per machine: Datashader's is built per process, and its first use imports
    ``datashader.composite``, which compiles 20 ufuncs (measured 3.5-5 s of a fresh server's
    first frame, holding the GIL).
    """
    data = np.ascontiguousarray(rgba, dtype=np.uint32)
    if px <= 0 or data.ndim != 2:
        return data.copy()
    r = np.arange(-px, px + 1)
    mask = np.sqrt(r**2 + r[:, None] ** 2) <= px + 0.5
    h, w = data.shape
    out = np.zeros((h + 2 * px, w + 2 * px), dtype=np.uint32)
    _spread_over(data, mask, out)
    return out[px : px + h, px : px + w].copy()


@numba.njit(nogil=True, cache=True)
def _over(src, dst):  # pragma: no cover - compiled
    """``datashader.composite.over`` of two uint32 RGBA pixels."""
    sr, sg, sb, sa = (
        (src & 255) / 255,
        ((src >> 8) & 255) / 255,
        ((src >> 16) & 255) / 255,
        ((src >> 24) & 255) / 255,
    )
    dr, dg, db, da = (
        (dst & 255) / 255,
        ((dst >> 8) & 255) / 255,
        ((dst >> 16) & 255) / 255,
        ((dst >> 24) & 255) / 255,
    )
    factor = 1 - sa
    a = sa + da * factor
    if a == 0:
        return np.uint32(0)
    r = (sr * sa + dr * da * factor) / a
    g = (sg * sa + dg * da * factor) / a
    b = (sb * sa + db * da * factor) / a
    r2 = min(255, np.uint32(r * 255))
    g2 = min(255, np.uint32(g * 255))
    b2 = min(255, np.uint32(b * 255))
    a2 = min(255, np.uint32(a * 255))
    return np.uint32((a2 << 24) | (b2 << 16) | (g2 << 8) | r2)


@numba.njit(nogil=True, cache=True)
def _spread_over(arr, mask, out):  # pragma: no cover - compiled
    # ``out`` is ``arr``'s shape padded by the mask's radius on every side (spread_over makes it).
    m, n = arr.shape
    k = mask.shape[0]
    if out.shape[0] != m + k - 1 or out.shape[1] != n + k - 1:
        raise ValueError("out must be arr padded by the mask's radius")
    for y in range(m):
        for x in range(n):
            el = arr[y, x]
            if (el >> 24) & 255:
                for i in range(k):
                    for j in range(k):
                        if mask[i, j]:
                            dst = out[i + y, j + x]
                            out[i + y, j + x] = el if dst == 0 else _over(el, dst)


def dynspread_image(img, *, threshold: float, max_px: int):
    """Datashader's ``dynspread`` rule (spread by the largest px, up to ``max_px``, that keeps
    the density under ``threshold``) with the density estimated on every other row."""
    data = np.ascontiguousarray(img.data, dtype=np.uint32)
    chosen = 0
    for px in range(1, max_px + 1):
        if rgba_density(data, px * 2, 2) > threshold:
            break
        chosen = px
    return spread_image(img, chosen) if chosen else img


def spread_image(img, px: int):
    """``tf.spread(img, px)``, by :func:`spread_over` (compiled once per
    machine, where Datashader's spread costs a fresh process 3.5-5 s of compilation)."""
    return img.__class__(spread_over(img.data, px), dims=img.dims, coords=img.coords, name=img.name)


@numba.njit(nogil=True, cache=True)
def exact_palette(rgba, background, index, palette):  # pragma: no cover - compiled
    """Palette indices (rows flipped to image order) of RGBA ``rgba`` composited over
    ``background``, with the colours in ``palette`` (256 x 3 uint8); empty pixels get 255.

    Returns the number of colours, or -1 as soon as a 256th colour appears (then use
    :func:`flatten_drawn` and a quantizer). Exact, and far cheaper than quantizing: a frame of a
    few categories holds tens to a few hundred colours.
    """
    h, w = rgba.shape
    size = 1024
    keys = np.full(size, -1, dtype=np.int64)
    slots = np.zeros(size, dtype=np.uint8)
    found = 0
    for i in range(h):
        for j in range(w):
            v = rgba[h - 1 - i, j]
            a8 = (v >> 24) & 255
            if a8 == 0:
                index[i, j] = 255
                continue
            a = a8 / 255.0
            r = np.int64((v & 255) * a + background[0] * (1.0 - a))
            g = np.int64(((v >> 8) & 255) * a + background[1] * (1.0 - a))
            b = np.int64(((v >> 16) & 255) * a + background[2] * (1.0 - a))
            key = (r << 16) | (g << 8) | b
            s = ((key * 40503) >> 4) & (size - 1)
            while keys[s] != key and keys[s] != -1:
                s = (s + 1) & (size - 1)
            if keys[s] == -1:
                if found == 255:
                    return -1
                keys[s] = key
                slots[s] = found
                palette[found, 0] = r
                palette[found, 1] = g
                palette[found, 2] = b
                found += 1
            index[i, j] = slots[s]
    return found


@numba.njit(nogil=True, cache=True)
def flatten_drawn(rgba, background, out):  # pragma: no cover - compiled
    """RGB rows (``out``, N x 3) of the drawn pixels of ``rgba`` composited over
    ``background``, in image order (rows flipped); returns how many."""
    h, w = rgba.shape
    m = 0
    for i in range(h):
        for j in range(w):
            v = rgba[h - 1 - i, j]
            if (v >> 24) & 255:
                a = ((v >> 24) & 255) / 255.0
                for ch in range(3):
                    out[m, ch] = np.uint8(((v >> (8 * ch)) & 255) * a + background[ch] * (1.0 - a))
                m += 1
    return m


@numba.njit(nogil=True, cache=True)
def scatter_index(rgba, drawn, empty, out):  # pragma: no cover - compiled
    """Palette indices in image order: ``drawn`` (one per drawn pixel, as
    :func:`flatten_drawn` listed them) where ``rgba`` is drawn, ``empty`` elsewhere."""
    h, w = rgba.shape
    m = 0
    for i in range(h):
        for j in range(w):
            if (rgba[h - 1 - i, j] >> 24) & 255:
                out[i, j] = drawn[m]
                m += 1
            else:
                out[i, j] = empty
    return out
