"""What a map draws over its frame once a view holds few points: hover points and image sprites."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .store import PointStore, View

__all__ = ["HOVER_LIMIT", "SPRITE_LIMIT", "hover_points", "sprites"]

#: A map sends its points (for tooltips) once a view holds at most this many.
HOVER_LIMIT = 3000
#: A map draws its points as their images (sprites) once a view holds at most this many.
SPRITE_LIMIT = 400


def hover_points(
    store: PointStore,
    rows: np.ndarray,
    *,
    thumb_url: Callable[[int], str] | None = None,
    describe: Callable[[np.ndarray], dict[str, list]] | None = None,
) -> dict[str, list]:
    """Columns of the points at ``rows`` for tooltips: ``x``, ``y``, ``id``, ``thumb`` and text.

    Parameters
    ----------
    store : the points.
    rows : store rows to send (keep them few: every one crosses the wire).
    thumb_url : sample id -> thumbnail URL; without it ``thumb`` is empty strings.
    describe : rows -> extra tooltip columns (name -> list of str); default one empty ``text``.
    """
    ids = store.ids[rows]
    thumbs = [thumb_url(int(i)) for i in ids] if thumb_url else [""] * len(ids)
    text = describe(rows) if describe else {"text": [""] * len(rows)}
    return {
        "x": store.x[rows].astype(float).tolist(),
        "y": store.y[rows].astype(float).tolist(),
        "id": ids.astype(int).tolist(),
        "thumb": thumbs,
        **text,
    }


def sprites(
    points: dict[str, list], view: View, width: int, height: int, *, sprite_px: int = 40
) -> dict[str, list]:
    """Image sprites of :func:`hover_points` columns: ``url``, ``x``, ``y``, ``w``, ``h``.

    A sprite covers about the area each point has on screen (0.7 of the side of a
    ``width * height / points`` square, 14 to 160 pixels, at most ``4 * sprite_px``), sized
    in data units of ``view`` so it grows as the user zooms in.
    """
    n = len(points["x"])
    px = float(np.clip(np.sqrt(width * height / max(n, 1)) * 0.7, 14, 160))
    px = min(px, float(sprite_px) * 4)
    w = px * (view.x1 - view.x0) / width
    h = px * (view.y1 - view.y0) / height
    return {"url": points["thumb"], "x": points["x"], "y": points["y"], "w": [w] * n, "h": [h] * n}
