"""Numba kernels of the image map's cell picking (:mod:`embviz.render.cellpick`): one pass
over a view's chunks counting and keeping each cell's most typical row, per-chunk category
counts, and the search for the rows nearest each cell's density peak."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["chunk_histograms", "peak_pick", "scan"]


@numba.njit(nogil=True, cache=True)
def scan(  # pragma: no cover - compiled
    x,
    y,
    chunks,
    chunk_rows,
    bounds,
    gx0,
    gy0,
    inv_w,
    inv_h,
    nxs,
    nys,
    shift,
    vx0,
    vx1,
    vy0,
    vy1,
    mask,
    codes,
    hidden,
    hist,
    score,
    counts,
    best,
    rows,
    per_cat,
    chunk_cell,
    chunk_shown,
):
    """Count the shown points per sub-cell (and per category in view); with ``score``, keep
    each cell's lowest-scoring row. Returns the shown points inside the view.

    A chunk inside the view without a mask takes its category counts from ``hist`` (its
    rows' counts per code); one that also lies in one cell reads neither x nor y, and its
    points count in the sub-cell of its centre (a chunk of compact points: a density
    estimate). Only chunks straddling cells or the view's edge, or under a mask, test rows.
    """
    n = len(x)
    use_mask, use_codes = len(mask) > 0, len(codes) > 0
    use_hidden, use_score, use_hist = len(hidden) > 0, len(score) > 0, hist.shape[0] > 0
    nx = nxs >> shift
    in_view = 0
    for j in range(len(chunks)):
        c = chunks[j]
        a = c * chunk_rows
        b = min(a + chunk_rows, n)
        bx0 = (bounds[c, 0] - gx0) * inv_w
        bx1 = (bounds[c, 1] - gx0) * inv_w
        by0 = (bounds[c, 2] - gy0) * inv_h
        by1 = (bounds[c, 3] - gy0) * inv_h
        all_in = bounds[c, 0] >= vx0 and bounds[c, 1] <= vx1
        all_in = all_in and bounds[c, 2] >= vy0 and bounds[c, 3] <= vy1
        one = bx0 >= 0 and by0 >= 0 and bx1 < nxs and by1 < nys
        one = one and int(bx0) >> shift == int(bx1) >> shift
        one = all_in and one and int(by0) >> shift == int(by1) >> shift
        cell = (int(by0) >> shift) * nx + (int(bx0) >> shift) if one else -1
        s = int((by0 + by1) * 0.5) * nxs + int((bx0 + bx1) * 0.5) if one else -1
        if all_in and not use_mask and (use_hist or not use_codes):
            shown = b - a
            if use_codes:
                shown = 0
                for k in range(len(per_cat)):
                    per_cat[k] += hist[c, k]
                    if not (use_hidden and hidden[k]):
                        shown += hist[c, k]
            in_view += shown
            if one:
                counts[s] += shown
                chunk_cell[j], chunk_shown[j] = cell, shown
                if use_score and shown > 0:
                    if use_hidden:
                        _, low, low_row = _shown_chunk(a, b, mask, codes, hidden, score)
                    else:
                        low, low_row = _lowest(score, a, b)
                    if rows[cell] < 0 or low < best[cell]:
                        best[cell], rows[cell] = low, low_row
                continue
            for i in range(a, b):  # in view, so in the grid: only the cell is computed
                if use_hidden and hidden[codes[i]]:
                    continue
                ix = int((x[i] - gx0) * inv_w)
                iy = int((y[i] - gy0) * inv_h)
                counts[iy * nxs + ix] += 1
                if use_score:
                    k = (iy >> shift) * nx + (ix >> shift)
                    v = score[i]
                    if rows[k] < 0 or v < best[k]:
                        best[k] = v if v == v else np.inf
                        rows[k] = i
            continue
        if one:  # under a mask, or with too many categories for histograms
            for i in range(a, b):
                if use_codes and (not use_mask or mask[i]):
                    per_cat[codes[i]] += 1
            shown, low, low_row = _shown_chunk(a, b, mask, codes, hidden, score)
            counts[s] += shown
            in_view += shown
            chunk_cell[j], chunk_shown[j] = cell, shown
            if low_row >= 0 and (rows[cell] < 0 or low < best[cell]):
                best[cell], rows[cell] = low, low_row
            continue
        for i in range(a, b):
            if use_mask and not mask[i]:
                continue
            fx = (x[i] - gx0) * inv_w
            fy = (y[i] - gy0) * inv_h
            if not (fx >= 0 and fx < nxs and fy >= 0 and fy < nys):
                continue
            ix, iy = int(fx), int(fy)
            inside = all_in or (x[i] >= vx0 and x[i] <= vx1 and y[i] >= vy0 and y[i] <= vy1)
            if use_codes:
                code = codes[i]
                if inside:
                    per_cat[code] += 1
                if use_hidden and hidden[code]:
                    continue
            if inside:
                in_view += 1
            counts[iy * nxs + ix] += 1
            if use_score:
                k = (iy >> shift) * nx + (ix >> shift)
                v = score[i]
                if rows[k] < 0 or v < best[k]:
                    best[k] = v if v == v else np.inf
                    rows[k] = i
    return in_view


@numba.njit(nogil=True, cache=True)
def chunk_histograms(codes, chunk_rows, k):  # pragma: no cover - compiled
    """``(chunks, k)`` counts of each code per chunk of ``chunk_rows`` rows. Four counters
    per code are bumped in turn: neighbouring rows often share a code, and one counter
    bumped per row would wait on the last bump."""
    n = len(codes)
    m = (n + chunk_rows - 1) // chunk_rows
    out = np.zeros((m, k), np.int32)
    four = np.zeros((4, k), np.int32)
    for c in range(m):
        a = c * chunk_rows
        b = min(a + chunk_rows, n)
        four[:] = 0
        i = a
        while i + 4 <= b:
            four[0, codes[i]] += 1
            four[1, codes[i + 1]] += 1
            four[2, codes[i + 2]] += 1
            four[3, codes[i + 3]] += 1
            i += 4
        while i < b:
            four[0, codes[i]] += 1
            i += 1
        for q in range(k):
            out[c, q] = four[0, q] + four[1, q] + four[2, q] + four[3, q]
    return out


@numba.njit(nogil=True, cache=True)
def _lowest(score, a, b):  # pragma: no cover - compiled
    """``(value, row)`` of the lowest score in rows ``a:b`` (NaN last, ties to the first)."""
    low, low_row = np.inf, -1
    for i in range(a, b):
        if score[i] < low:
            low, low_row = score[i], i
    return low, (low_row if low_row >= 0 else a)


@numba.njit(nogil=True, cache=True)
def _shown_chunk(a, b, mask, codes, hidden, score):  # pragma: no cover - compiled
    """``(shown rows, lowest score, its row)`` of rows ``a:b`` under a mask or hidden codes."""
    use_mask, use_hidden, use_score = len(mask) > 0, len(hidden) > 0, len(score) > 0
    count, low, low_row = 0, np.inf, -1
    for i in range(a, b):
        if use_mask and not mask[i]:
            continue
        if use_hidden and hidden[codes[i]]:
            continue
        count += 1
        if use_score:
            v = score[i]
            if v != v:
                v = np.inf
            if low_row < 0 or v < low:
                low, low_row = v, i
    return count, low, low_row


@numba.njit(nogil=True, cache=True)
def peak_pick(  # pragma: no cover - compiled
    x,
    y,
    chunks,
    chunk_rows,
    bounds,
    gx0,
    gy0,
    inv_w,
    inv_h,
    nxs,
    nys,
    shift,
    peak,
    peaks,
    chunk_cell,
    chunk_shown,
    mask,
    hidden,
    codes,
    best,
    rows,
):
    """Each cell's shown row nearest the centre of its peak sub-cell (distances in sub-cell
    units, about square on screen), searched in the cell's compact chunk (one that lies in
    the cell) whose centre is nearest the peak; a cell without one searches every chunk that
    reaches its peak sub-cell. Work: one pass over the chunk bounds and a few chunks' rows."""
    n = len(x)
    use_mask, use_hidden = len(mask) > 0, len(hidden) > 0
    nx = nxs >> shift
    pick_chunk = np.full(len(peaks), -1, np.int64)
    near = np.full(len(peaks), np.inf)
    for j in range(len(chunks)):
        cell = chunk_cell[j]
        if cell < 0 or chunk_shown[j] == 0:
            continue
        c = chunks[j]
        p = peaks[cell]
        dx = ((bounds[c, 0] + bounds[c, 1]) * 0.5 - gx0) * inv_w - (p % nxs) - 0.5
        dy = ((bounds[c, 2] + bounds[c, 3]) * 0.5 - gy0) * inv_h - (p // nxs) - 0.5
        d = dx * dx + dy * dy
        if d < near[cell]:
            near[cell] = d
            pick_chunk[cell] = j
    for j in range(len(chunks)):
        c = chunks[j]
        cell = chunk_cell[j]
        if cell >= 0:
            if pick_chunk[cell] != j:
                continue
        else:  # spread over cells: read it if it reaches the peak of a cell left to search
            i0 = max(int(max((bounds[c, 0] - gx0) * inv_w, 0.0)), 0)
            i1 = min(int(min((bounds[c, 1] - gx0) * inv_w, nxs - 1.0)), nxs - 1)
            j0 = max(int(max((bounds[c, 2] - gy0) * inv_h, 0.0)), 0)
            j1 = min(int(min((bounds[c, 3] - gy0) * inv_h, nys - 1.0)), nys - 1)
            touches = False
            for sj in range(j0, j1 + 1):
                for si in range(i0, i1 + 1):
                    k = (sj >> shift) * nx + (si >> shift)
                    if peak[sj * nxs + si] and pick_chunk[k] < 0:
                        touches = True
                        break
                if touches:
                    break
            if not touches:
                continue
        a = c * chunk_rows
        b = min(a + chunk_rows, n)
        for r in range(a, b):
            if use_mask and not mask[r]:
                continue
            if use_hidden and hidden[codes[r]]:
                continue
            fx = (x[r] - gx0) * inv_w
            fy = (y[r] - gy0) * inv_h
            if not (fx >= 0 and fx < nxs and fy >= 0 and fy < nys):
                continue
            k = (int(fy) >> shift) * nx + (int(fx) >> shift)
            p = peaks[k]
            if p < 0 or (cell < 0 and pick_chunk[k] >= 0):
                continue
            dx = fx - (p % nxs) - 0.5
            dy = fy - (p // nxs) - 0.5
            d = dx * dx + dy * dy
            if rows[k] < 0 or d < best[k]:
                best[k] = d
                rows[k] = r
