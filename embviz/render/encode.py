"""A frame's picture as a small PNG: 8-bit palette, flattened onto the page colour.

The fixed cost of every frame, whatever the view holds (``make bench``: ``raster.frame_fixed_ms``,
shade + encode). Only drawn pixels are looked at twice: empty ones get the transparent index.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["encode_png"]


def encode_png(img, *, background: str = "#ffffff") -> bytes:
    """An 8-bit palette PNG of a datashader Image (RGBA uint32), composited over ``background``.

    Empty pixels stay transparent (index 255). A frame of up to 255 colours after flattening
    (most frames of a few categories: one colour per category and alpha level) gets its exact
    colours from a hash of the pixels; more colours are reduced by Pillow's fast octree
    quantizer (255 colours, no dithering), fed the drawn pixels only. Flattening and the palette
    keep a dense 900x640 frame near 100-200 KB, where a 32-bit RGBA PNG of it is 3-5x larger;
    zlib level 1: level 3 saved 5% of the bytes for twice the time.
    """
    from PIL import Image

    from .colors import rgb
    from .kernels import exact_palette, flatten_drawn, scatter_index

    rgba = np.ascontiguousarray(img.values, dtype=np.uint32)
    bg = rgb([background])[0].astype(np.float64)
    index = np.empty(rgba.shape, dtype=np.uint8)
    colours = np.zeros((256, 3), dtype=np.uint8)
    if exact_palette(rgba, bg, index, colours) < 0:
        drawn = np.empty((rgba.size, 3), dtype=np.uint8)
        m = flatten_drawn(rgba, bg, drawn)
        pal = Image.fromarray(drawn[:m].reshape(m, 1, 3), "RGB").quantize(
            255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
        scatter_index(rgba, np.asarray(pal).reshape(-1), 255, index)
        found = np.asarray(pal.getpalette()[: 255 * 3], dtype=np.uint8).reshape(-1, 3)
        colours[: len(found)] = found
    colours[255] = bg.astype(np.uint8)
    out = Image.fromarray(index, "P")
    out.putpalette(colours.reshape(-1).tolist())
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=1, transparency=255)
    return buf.getvalue()
