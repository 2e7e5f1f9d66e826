"""Exact and near-duplicate groups from content hashes, embedding neighbours and thumbnail pixels.

Takes the neighbour lists in the form :mod:`embviz.scores` does (row positions ``nbr``, -1 where
missing, and distances ``dist``, inf where missing, nearest first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scores.neighbours import valid_neighbours

__all__ = [
    "NEAR_FRACTION",
    "PIXEL_NEIGHBOURS",
    "PIXEL_THRESHOLD",
    "SIGNATURE_SIZE",
    "Duplicates",
    "duplicate_groups",
    "near_threshold",
    "pixel_duplicate_pairs",
    "pixel_signatures",
    "pixel_similarity",
]

#: Default near-duplicate threshold, as a fraction of the median (non-zero) nearest-neighbour
#: distance. Pairs this close are near duplicates without looking at pixels.
NEAR_FRACTION = 0.1
#: Side of the grayscale pixel signatures :func:`pixel_similarity` compares, and the
#: similarity above which a neighbour pair counts as a near duplicate. On the planted MNIST
#: copies (1 px shift, noise, 80% brightness, JPEG) every copy scored >= 0.994 and one of
#: ~48,000 natural neighbour pairs passed 0.99.
SIGNATURE_SIZE = 32
PIXEL_THRESHOLD = 0.99


@dataclass(frozen=True)
class Duplicates:
    """What :func:`duplicate_groups` found.

    Attributes
    ----------
    group:
        int64 ``(n,)``: duplicate group number (0, 1, ... in order of each group's first
        row), -1 for rows with no duplicate.
    exact:
        bool ``(n,)``: the row shares its content hash with another row (a byte-identical
        file); the other members of its group are near duplicates.
    threshold:
        The embedding distance at or below which a neighbour pair was a near duplicate.
    exact_groups:
        Groups holding at least one exact pair.
    near_groups:
        Groups of near duplicates only.
    """

    group: np.ndarray
    exact: np.ndarray
    threshold: float
    exact_groups: int
    near_groups: int


def near_threshold(dist: np.ndarray, *, fraction: float = NEAR_FRACTION) -> float:
    """``fraction`` of the median non-zero nearest-neighbour distance (0.0 when there is none).

    Adapts to the embedding's scale: cosine distances of one model can be 10x another's.
    """
    d1 = dist[:, 0] if dist.ndim == 2 and dist.shape[1] else np.zeros(0, np.float32)
    d1 = d1[np.isfinite(d1) & (d1 > 0)]
    return float(fraction * np.median(d1)) if d1.size else 0.0


def duplicate_groups(
    nbr: np.ndarray,
    dist: np.ndarray,
    *,
    content_hash: np.ndarray | None = None,
    threshold: float | None = None,
    fraction: float = NEAR_FRACTION,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> Duplicates:
    """Group exact and near duplicates: the connected components of the duplicate pairs.

    Pairs are: rows with the same ``content_hash`` (exact copies), neighbour pairs at
    embedding distance <= ``threshold`` and any extra ``pairs`` (e.g. neighbour pairs whose
    pixels :func:`pixel_similarity` found alike). Connected components join chains, so
    a ~ b and b ~ c put a, b and c in one group even when a and c are far apart.

    Parameters
    ----------
    nbr, dist : neighbour rows and distances (see the module docstring).
    content_hash : int codes ``(n,)`` of the rows' content hashes, -1 for none.
    threshold : near-duplicate embedding distance; None: :func:`near_threshold` with
        ``fraction``. A pair at distance 0 is always a near duplicate.
    pairs : extra duplicate pairs as two row arrays.

    Returns a :class:`Duplicates`.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = nbr.shape[0]
    if threshold is None:
        threshold = near_threshold(dist, fraction=fraction)
    threshold = max(float(threshold), 0.0)
    close = valid_neighbours(nbr, dist) & (dist <= threshold)
    a = [np.repeat(np.arange(n), close.sum(axis=1))]
    b = [nbr[close]]
    exact = np.zeros(n, dtype=bool)
    if content_hash is not None:
        codes = np.asarray(content_hash, dtype=np.int64)
        has = codes >= 0
        counts = np.bincount(codes[has]) if has.any() else np.zeros(0, np.int64)
        exact = has & (counts[np.where(has, codes, 0)] >= 2) if counts.size else exact
        rows = np.flatnonzero(exact)
        # Link every copy to the first row with its hash.
        first = np.full(counts.size, -1, dtype=np.int64)
        hashes, at = np.unique(codes[rows], return_index=True)
        first[hashes] = rows[at]
        a.append(rows)
        b.append(first[codes[rows]])
    if pairs is not None:
        a.append(np.asarray(pairs[0], dtype=np.int64))
        b.append(np.asarray(pairs[1], dtype=np.int64))
    a_all, b_all = np.concatenate(a), np.concatenate(b)
    graph = coo_matrix((np.ones(len(a_all), np.int8), (a_all, b_all)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    size = np.bincount(comp, minlength=1)
    in_group = size[comp] >= 2
    # Number the groups by their first row, so the numbering follows the table's order.
    firsts = np.unique(comp[in_group], return_index=True)
    order = np.argsort(np.flatnonzero(in_group)[firsts[1]], kind="stable")
    number = np.full(len(size), -1, dtype=np.int64)
    number[firsts[0][order]] = np.arange(len(order))
    group = np.where(in_group, number[comp], -1)
    n_groups = len(order)
    exact_groups = len(np.unique(group[exact & in_group]))
    return Duplicates(
        group=group.astype(np.int64),
        exact=exact & in_group,
        threshold=threshold,
        exact_groups=int(exact_groups),
        near_groups=int(n_groups - exact_groups),
    )


def pixel_signatures(images, *, size: int = SIGNATURE_SIZE) -> np.ndarray:
    """Grayscale ``size`` x ``size`` uint8 signatures of encoded images (thumbnails).

    ``images`` is an iterable of encoded image bytes (None or undecodable: all zeros, which
    :func:`pixel_similarity` treats as flat, never similar).
    """
    import io

    from PIL import Image, UnidentifiedImageError

    out = []
    for data in images:
        try:
            with Image.open(io.BytesIO(data)) as img:
                gray = img.convert("L").resize((size, size), Image.Resampling.BILINEAR)
                out.append(np.asarray(gray, dtype=np.uint8))
        except (TypeError, OSError, UnidentifiedImageError, ValueError):
            out.append(np.zeros((size, size), np.uint8))
    return np.stack(out) if out else np.zeros((0, size, size), np.uint8)


def pixel_similarity(
    a: np.ndarray, b: np.ndarray, *, shift: int = 1, chunk: int = 16_384
) -> np.ndarray:
    """Shift-tolerant normalised cross-correlation of paired signatures, in [-1, 1].

    The centre of ``a[i]`` is correlated with ``b[i]`` moved by up to ``shift`` pixels each
    way, and the best is kept: 1 for the same picture (also brightened, re-encoded or moved by
    a pixel), lower for different ones. A flat signature (no contrast) scores 0.

    Returns float32 ``(m,)``.
    """
    m, size = a.shape[0], a.shape[-1]
    inner = size - 2 * shift
    count = inner * inner
    out = np.empty(m, dtype=np.float32)
    for s in range(0, m, chunk):
        ca = a[s : s + chunk, shift : shift + inner, shift : shift + inner]
        ca = ca.reshape(len(ca), -1).astype(np.float32)
        ca -= ca.mean(axis=1, keepdims=True)
        norm_a = np.linalg.norm(ca, axis=1)
        ca /= np.maximum(norm_a, 1e-6)[:, None]
        bb = b[s : s + chunk].astype(np.float32)
        b64 = bb.astype(np.float64)
        best = np.full(len(bb), -1.0, dtype=np.float32)
        flat = norm_a <= 1e-3 * count
        for dx in range(2 * shift + 1):
            # Row sums of the shifted columns, then each shifted window's sum and sum of
            # squares; with ``ca`` zero-mean only the window's spread is needed besides the dot.
            rows1 = b64[:, :, dx : dx + inner].sum(axis=2)
            rows2 = (b64[:, :, dx : dx + inner] ** 2).sum(axis=2)
            for dy in range(2 * shift + 1):
                total = rows1[:, dy : dy + inner].sum(axis=1)
                total2 = rows2[:, dy : dy + inner].sum(axis=1)
                spread = np.sqrt(np.maximum(total2 - total * total / count, 0.0))
                window = bb[:, dy : dy + inner, dx : dx + inner].reshape(len(bb), -1)
                dot = np.einsum("ij,ij->i", ca, window)
                with np.errstate(invalid="ignore", divide="ignore"):
                    ncc = np.where(spread > 1e-3 * count, dot / spread, 0.0)
                best = np.maximum(best, ncc.astype(np.float32))
                flat |= spread <= 1e-3 * count
        out[s : s + chunk] = np.where(flat, 0.0, np.clip(best, -1.0, 1.0))
    return out


#: Pixel-space neighbours searched per row by :func:`pixel_duplicate_pairs`, on 8 x 8
#: zero-mean signatures: they find copies whose embedding moved (an 80% brightness copy of
#: an MNIST digit was not among its original's 30 embedding neighbours in 3 of 12 cases).
PIXEL_NEIGHBOURS = 5


_COARSE_MIN = 0.8


def pixel_duplicate_pairs(
    signatures: np.ndarray,
    nbr: np.ndarray,
    *,
    k: int = PIXEL_NEIGHBOURS,
    threshold: float = PIXEL_THRESHOLD,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Near-duplicate pairs confirmed by their pixels.

    Candidates are every embedding neighbour pair (``nbr``) plus each row's ``k`` nearest
    rows by coarse pixels (8 x 8, zero-mean, cosine: brightness-proof); a candidate whose
    coarse pixels correlate at least 0.8 is kept when :func:`pixel_similarity` of the two
    signatures is at least ``threshold``.

    Parameters
    ----------
    signatures : uint8 ``(n, s, s)`` from :func:`pixel_signatures`, rows aligned with ``nbr``
        (all zeros for a row with no image: never paired).
    nbr : embedding neighbour rows (see the module docstring).
    k : pixel-space neighbours per row (0: embedding candidates only).
    threshold : similarity a pair needs.
    seed : seeds the approximate pixel index used above 200,000 rows.

    Returns ``(rows_a, rows_b, pairs_compared)``.
    """
    from .index import NeighbourIndex

    n = nbr.shape[0]
    valid = nbr >= 0
    a = [np.repeat(np.arange(n), valid.sum(axis=1))]
    b = [nbr[valid]]
    size = signatures.shape[-1]
    step = max(1, size // 8)
    side = size // step
    coarse = signatures[:, : side * step, : side * step].reshape(n, side, step, side, step)
    coarse = coarse.astype(np.float32).mean(axis=(2, 4)).reshape(n, side * side)
    coarse -= coarse.mean(axis=1, keepdims=True)
    coarse /= np.maximum(np.linalg.norm(coarse, axis=1, keepdims=True), 1e-6)
    if k > 0 and n > 1:
        pix = NeighbourIndex.build(np.arange(n), coarse, metric="cosine", seed=seed)
        pn, _ = pix.neighbours(min(k, n - 1))
        ok = pn >= 0
        a.append(np.repeat(np.arange(n), ok.sum(axis=1)))
        b.append(pn[ok])
    a_all, b_all = np.concatenate(a), np.concatenate(b)
    lo, hi = np.minimum(a_all, b_all), np.maximum(a_all, b_all)
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    # The coarse signatures' correlation is a cheap first filter (every planted copy had >= 0.87).
    coarse_sim = np.einsum("ij,ij->i", coarse[pairs[:, 0]], coarse[pairs[:, 1]])
    pairs = pairs[coarse_sim >= _COARSE_MIN]
    sim = pixel_similarity(signatures[pairs[:, 0]], signatures[pairs[:, 1]])
    keep = sim >= threshold
    return pairs[keep, 0], pairs[keep, 1], len(pairs)
