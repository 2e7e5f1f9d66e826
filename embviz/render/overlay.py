"""What a map draws over its frame once a view holds few points: hover points and image sprites."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .store import PointStore, View

__all__ = [
    "HOVER_LIMIT",
    "IMAGE_BUDGET",
    "SPRITE_LIMIT",
    "fit_images",
    "hover_points",
    "payload_bytes",
    "sprites",
]

#: A map sends its points (for tooltips) once a view holds at most this many.
HOVER_LIMIT = 3000
#: A map draws its points as their images (sprites) once a view holds at most this many.
SPRITE_LIMIT = 400
#: Most bytes one frame sends when its images travel inside it (data URIs): frame, points and
#: images together. A 64-px WebP thumbnail is about 570 bytes as a data URI, a 96-px photo 3-5 KB.
IMAGE_BUDGET = 500_000
#: Bytes a point's x, y and id take in a frame's JSON, besides its text and image.
_POINT_BYTES = 48
_NOT_TEXT = frozenset({"x", "y", "id", "thumb"})


def hover_points(
    store: PointStore,
    rows: np.ndarray,
    *,
    thumbs: Callable[[np.ndarray], list[str]] | None = None,
    describe: Callable[[np.ndarray], dict[str, list]] | None = None,
    image_bytes: int | None = None,
) -> dict[str, list]:
    """Columns of the points at ``rows`` for tooltips: ``x``, ``y``, ``id``, ``thumb`` and text.

    Parameters
    ----------
    store : the points.
    rows : store rows to send (keep them few: every one crosses the wire).
    thumbs : sample ids -> their image sources (URLs or data URIs); without it ``thumb`` is
        empty strings.
    describe : rows -> extra tooltip columns (name -> list of str); default one empty ``text``.
    image_bytes : most bytes the ``thumb`` column may hold (None: no limit). Images go to the
        points in a fixed pseudo-random order of their ids until the next would pass it, so a
        cut keeps images spread over the view and the same points keep theirs while panning;
        the others get "" (their tooltip shows text only).
    """
    ids = store.ids[rows]
    srcs = fit_images(ids, thumbs(ids), image_bytes) if thumbs else [""] * len(ids)
    text = describe(rows) if describe else {"text": [""] * len(rows)}
    return {
        "x": store.x[rows].astype(float).tolist(),
        "y": store.y[rows].astype(float).tolist(),
        "id": ids.astype(int).tolist(),
        "thumb": srcs,
        **text,
    }


def fit_images(ids: np.ndarray, srcs: list[str], budget: int | None) -> list[str]:
    """``srcs`` (image sources of samples ``ids``) with those past ``budget`` bytes set to "".

    Images are kept in a fixed pseudo-random order of the ids (a multiplicative hash), so a
    cut keeps them spread over the view and a point keeps its image while the view pans.
    """
    srcs = list(srcs)
    if budget is None or sum(map(len, srcs)) <= budget:
        return srcs
    ids = np.asarray(ids).astype(np.uint64)
    spread = (ids * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    left = budget
    for i in np.argsort(spread, kind="stable").tolist():
        n = len(srcs[i])
        if n > left:
            srcs[i] = ""
        else:
            left -= n
    return srcs


def payload_bytes(points: dict[str, list] | None, *, images: bool = True) -> int:
    """About how many bytes ``points`` (:func:`hover_points` columns) add to a frame's message:
    their coordinates, ids and text, and their ``thumb`` strings when ``images``."""
    if not points:
        return 0
    n = len(points["x"])
    text = sum(len(v) for k, col in points.items() if k not in _NOT_TEXT for v in col)
    return n * _POINT_BYTES + text + (sum(map(len, points["thumb"])) if images else 0)


def sprites(
    points: dict[str, list], view: View, width: int, height: int, *, sprite_px: int = 40
) -> tuple[dict[str, list], dict[str, list]]:
    """Split :func:`hover_points` columns into ``(sprites, rest)``: the points with an image
    (their columns plus ``w`` and ``h``: each drawn as its image) and those without.

    Every point is in exactly one of the two, so an image crosses the wire once: the sprite
    draws it and the tooltip of the sprite's point reads it from the same column. A sprite
    covers about the area each point has on screen (0.7 of the side of a
    ``width * height / points`` square, 14 to 160 pixels, at most ``4 * sprite_px``), sized in
    data units of ``view`` so it grows as the user zooms in.
    """
    n = len(points["x"])
    px = float(np.clip(np.sqrt(width * height / max(n, 1)) * 0.7, 14, 160))
    px = min(px, float(sprite_px) * 4)
    w = px * (view.x1 - view.x0) / width
    h = px * (view.y1 - view.y0) / height
    has = [bool(t) for t in points["thumb"]]
    drawn = {k: [v for v, keep in zip(col, has, strict=True) if keep] for k, col in points.items()}
    rest = {
        k: [v for v, keep in zip(col, has, strict=True) if not keep] for k, col in points.items()
    }
    m = len(drawn["x"])
    return {**drawn, "w": [w] * m, "h": [h] * m}, rest
