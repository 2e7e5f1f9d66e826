"""Colours: category and numeric palettes, and the difference map of two categories."""

from __future__ import annotations

import numpy as np

__all__ = ["category_colors", "difference_rgba", "palette", "rgb"]


def category_colors(n: int) -> list[str]:
    """``n`` distinct colours: Category10 first, then Glasbey (stable for a given category order)."""
    import colorcet

    base = list(colorcet.b_glasbey_category10)
    return [base[i % len(base)] for i in range(n)]


def palette(name: str) -> list[str]:
    """A 256-colour palette by name: colorcet's (``fire``, ``bmy``...) or Bokeh's ``viridis`` family."""
    import bokeh.palettes
    import colorcet

    if name in colorcet.palette:
        return list(colorcet.palette[name])
    found = getattr(bokeh.palettes, f"{name.capitalize()}256", None)
    if found is None:
        raise ValueError(
            f"unknown colormap {name!r}; use a colorcet name or viridis/magma/inferno/plasma/cividis"
        )
    return list(found)


def rgb(colors: list[str]) -> np.ndarray:
    """``(n, 3)`` uint8 RGB of ``#rrggbb`` colour strings."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=np.uint8)


def difference_rgba(
    values: np.ndarray, a: int, b: int, *, alpha: int = 255, smooth: int = 7
) -> np.ndarray:
    """Packed RGBA (H, W) uint32 showing where category ``a`` of a count stack ``values``
    (H, W, k) is over- or under-represented against category ``b``.

    Each group's counts are divided by its total in view, so a group ten times larger does not
    win everywhere: a pixel's colour is ``(share_b - share_a) / (share_a + share_b)`` on a
    blue-grey-red scale (blue: only A, red: only B); its alpha grows with the points there.
    Shares are compared over a ``smooth`` x ``smooth`` pixel window, since single pixels hold
    too few points to compare. Pixels holding neither group are transparent.
    """
    import colorcet
    from scipy.ndimage import uniform_filter

    from .kernels import alpha_lut

    ca = uniform_filter(values[..., a].astype(np.float64), size=smooth, mode="constant")
    cb = uniform_filter(values[..., b].astype(np.float64), size=smooth, mode="constant")
    sa = ca / max(ca.sum(), 1.0)
    sb = cb / max(cb.sum(), 1.0)
    total = sa + sb
    d = np.divide(sb - sa, total, out=np.zeros_like(total), where=total > 0)
    lut = rgb(list(colorcet.coolwarm))
    idx = np.clip(np.rint((d + 1) * 0.5 * (len(lut) - 1)), 0, len(lut) - 1).astype(np.int64)
    n = (values[..., a] + values[..., b]).astype(np.int64)
    out = np.zeros((*n.shape, 4), dtype=np.uint8)
    out[..., :3] = lut[idx]
    lut_a = alpha_lut(n, min_alpha=min(90, alpha), max_alpha=alpha)
    out[..., 3] = lut_a[np.minimum(n, len(lut_a) - 1)]
    out[n == 0] = 0
    return out.view(np.uint32)[..., 0]
