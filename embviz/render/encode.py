"""Frame encoding: an RGBA frame flattened onto the page colour as an 8-bit palette PNG."""

from __future__ import annotations

import struct
import zlib

import numba
import numpy as np

__all__ = ["TRANSPARENT", "encode_rgba_png", "quantize"]

#: Palette index of transparent (empty) pixels; the other 255 entries hold drawn colours.
TRANSPARENT = 255
#: Colours are binned by their top 5 bits per channel (32768 bins) before a palette is chosen.
_BITS = 5
_EMPTY_BIN = 0xFFFF
#: The most frequent bins that keep their own palette entry before median cut shares out the
#: rest: in a category frame they are mostly single-category shades, which then keep their
#: category's hue exactly (mixed colours take the error); 128 minimised the mean error.
KEEP = 128


@numba.njit(nogil=True, cache=True)
def _flatten_bins(rgba, background, bins, hist, sums):  # pragma: no cover - compiled
    """Bin of each pixel of ``rgba`` composited over ``background`` (rows flipped, top first;
    ``_EMPTY_BIN`` where transparent), with each bin's pixel count and channel sums."""
    h, w = rgba.shape
    shift = 8 - _BITS
    for i in range(h):
        for j in range(w):
            v = rgba[h - 1 - i, j]
            alpha = (v >> 24) & 255
            if alpha == 0:
                bins[i, j] = _EMPTY_BIN
                continue
            a = alpha / 255.0
            # Same arithmetic as kernels.flatten_over, so colours match the unquantized frame.
            r = np.uint8((v & 255) * a + background[0] * (1.0 - a))
            g = np.uint8(((v >> 8) & 255) * a + background[1] * (1.0 - a))
            b = np.uint8(((v >> 16) & 255) * a + background[2] * (1.0 - a))
            k = ((r >> shift) << (2 * _BITS)) | ((g >> shift) << _BITS) | (b >> shift)
            bins[i, j] = k
            hist[k] += 1
            sums[k, 0] += r
            sums[k, 1] += g
            sums[k, 2] += b


@numba.njit(nogil=True, cache=True)
def _widest(colours, order, a, z):  # pragma: no cover - compiled
    """Widest channel range of ``colours[order[a:z]]`` and its channel."""
    best, best_ch = 0.0, 0
    for ch in range(3):
        mn, mx = 1e9, -1e9
        for t in range(a, z):
            c = colours[order[t], ch]
            mn = min(mn, c)
            mx = max(mx, c)
        if mx - mn > best:
            best, best_ch = mx - mn, ch
    return best, best_ch


@numba.njit(nogil=True, cache=True)
def _sort_run(colours, order, a, z, ch):  # pragma: no cover - compiled
    """Sort ``order[a:z]`` by channel ``ch`` of ``colours`` (0..255) to a unit: a counting
    sort, ten times faster than numba's argsort on the few thousand bins of a frame."""
    start = np.zeros(257, np.int64)
    for t in range(a, z):
        start[int(colours[order[t], ch]) + 1] += 1
    for v in range(256):
        start[v + 1] += start[v]
    run = order[a:z].copy()
    for t in range(len(run)):
        v = int(colours[run[t], ch])
        order[a + start[v]] = run[t]
        start[v] += 1


@numba.njit(nogil=True, cache=True)
def _median_cut(colours, weights, n_out):  # pragma: no cover - compiled
    """Up to ``n_out`` palette colours for weighted ``colours``: the box (of colours) with the
    widest channel range is split at its weighted median until there are ``n_out`` boxes."""
    n = len(colours)
    order = np.arange(n)
    lo = np.zeros(n_out, np.int64)
    hi = np.zeros(n_out, np.int64)
    spread = np.zeros(n_out)  # widest channel range of each box (0: cannot split)
    axis = np.zeros(n_out, np.int64)
    # Channel each box's run of ``order`` is sorted on: weighted medians often peel a few
    # colours off a large box, which then splits again on the same channel without a re-sort.
    sorted_on = np.full(n_out, -1, np.int64)
    hi[0] = n
    spread[0], axis[0] = _widest(colours, order, 0, n)
    boxes = 1
    while boxes < n_out:
        best = np.argmax(spread[:boxes])
        if spread[best] <= 0:
            break
        a, z = lo[best], hi[best]
        if sorted_on[best] != axis[best]:
            _sort_run(colours, order, a, z, axis[best])
        half = weights[order[a:z]].sum() / 2.0
        acc = 0.0
        cut = a + 1
        for t in range(a, z - 1):
            acc += weights[order[t]]
            cut = t + 1
            if acc >= half:
                break
        lo[boxes], hi[boxes] = cut, z
        hi[best] = cut
        sorted_on[boxes] = sorted_on[best] = axis[best]
        spread[best], axis[best] = _widest(colours, order, a, cut)
        spread[boxes], axis[boxes] = _widest(colours, order, cut, z)
        boxes += 1
    palette = np.zeros((boxes, 3))
    for b in range(boxes):
        total = 0.0
        for t in range(lo[b], hi[b]):
            wt = weights[order[t]]
            total += wt
            for ch in range(3):
                palette[b, ch] += wt * colours[order[t], ch]
        for ch in range(3):
            palette[b, ch] = palette[b, ch] / total
    return palette


@numba.njit(nogil=True, cache=True)
def _nearest(colours, palette):  # pragma: no cover - compiled
    """Index of the nearest (squared RGB distance) ``palette`` entry of each colour."""
    out = np.empty(len(colours), np.uint8)
    for i in range(len(colours)):
        best, best_d = 0, 1e18
        for p in range(len(palette)):
            d = 0.0
            for ch in range(3):
                e = colours[i, ch] - palette[p, ch]
                d += e * e
            if d < best_d:
                best, best_d = p, d
        out[i] = best
    return out


@numba.njit(nogil=True, cache=True)
def _index_rows(bins, table, out):  # pragma: no cover - compiled
    """PNG scanlines (filter byte 0, then palette indices) of binned pixels."""
    h, w = bins.shape
    for i in range(h):
        out[i, 0] = 0
        for j in range(w):
            k = bins[i, j]
            out[i, j + 1] = TRANSPARENT if k == _EMPTY_BIN else table[k]
    return out


def quantize(rgba: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PNG scanlines of palette indices and the palette of a datashader RGBA frame.

    Pixels are composited over ``background`` (RGB) and binned by 5 bits a channel; a bin's
    colour is the mean of its pixels, so a bin holding one colour keeps it exactly. With at most
    255 bins (sparse views, density and numeric frames) every bin is an entry; otherwise the
    :data:`KEEP` most frequent bins are entries, median cut over the other (weighted) bins
    picks the rest, and each bin takes the nearest entry. A 900x640 frame costs 2-4 ms, where
    PIL's octree took ~10 ms with a larger worst error (53 against 35 on a full 10M view).

    Returns ``(rows, palette)``: ``(H, W + 1)`` uint8 scanlines, top row first, index
    :data:`TRANSPARENT` where alpha is 0, and a ``(256, 3)`` uint8 palette.
    """
    h, w = rgba.shape
    bins = np.empty((h, w), np.uint16)
    hist = np.zeros(1 << (3 * _BITS), np.int64)
    sums = np.zeros((1 << (3 * _BITS), 3), np.int64)
    _flatten_bins(rgba, background.astype(np.float64), bins, hist, sums)
    used = np.flatnonzero(hist)
    colours = sums[used] / hist[used, None]
    if len(used) <= TRANSPARENT:
        palette, nearest = colours, np.arange(len(used), dtype=np.uint8)
    else:
        weights = hist[used].astype(np.float64)
        top = np.argsort(weights)[::-1][:KEEP]
        rest = np.ones(len(used), bool)
        rest[top] = False
        palette = np.concatenate(
            [colours[top], _median_cut(colours[rest], weights[rest], TRANSPARENT - len(top))]
        )
        nearest = _nearest(colours, palette)
    table = np.zeros(len(hist), np.uint8)
    table[used] = nearest
    entries = np.zeros((256, 3), np.uint8)
    entries[: len(palette)] = np.rint(palette)
    entries[TRANSPARENT] = background
    return _index_rows(bins, table, np.empty((h, w + 1), np.uint8)), entries


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_rgba_png(rgba: np.ndarray, *, background: np.ndarray) -> bytes:
    """An 8-bit palette PNG of a datashader RGBA frame (uint32, bottom row first) over
    ``background`` (RGB); transparent pixels stay transparent (index :data:`TRANSPARENT`).

    The scanlines are deflated at level 1 with run-length matches only (``Z_RLE``): as fast as
    level 1, and smaller on sparse frames, whose empty runs are all it finds.
    """
    h, w = rgba.shape
    rows, entries = quantize(rgba, background)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = deflate.compress(rows) + deflate.flush()
    alpha = np.full(256, 255, np.uint8)
    alpha[TRANSPARENT] = 0
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)),
            _chunk(b"PLTE", entries.tobytes()),
            _chunk(b"tRNS", alpha.tobytes()),
            _chunk(b"IDAT", idat),
            _chunk(b"IEND", b""),
        ]
    )
