"""Tests for frame encoding and shading kernels: palette accuracy, transparency, size, exactness."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embviz.render.colors import category_colors, rgb
from embviz.render.encode import TRANSPARENT, encode_rgba_png
from embviz.render.kernels import (
    alpha_lut,
    alpha_lut_from_hist,
    apply_alpha,
    mix_stack,
    rgba_densities,
)

WHITE = np.array([255, 255, 255], np.uint8)


def pack(r, g, b, a) -> np.ndarray:
    """Datashader's uint32 RGBA layout (red in the low byte)."""
    u = lambda v: np.asarray(v).astype(np.uint32)  # noqa: E731
    return u(r) | u(g) << 8 | u(b) << 16 | u(a) << 24


def flatten(rgba: np.ndarray, bg=WHITE) -> np.ndarray:
    """Exact RGB of ``rgba`` over ``bg``, top row first (what the page shows before encoding)."""
    v = rgba[::-1]
    a = ((v >> 24) & 255) / 255.0
    ch = [((v >> (8 * i)) & 255) * a + bg[i] * (1.0 - a) for i in range(3)]
    return np.stack(ch, -1).astype(np.uint8)


def decode(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.format == "PNG" and img.mode == "P"
    return np.asarray(img.convert("RGBA")).astype(int)


def octree_png(rgba: np.ndarray, bg=WHITE) -> bytes:
    """The previous encoder (PIL's fast octree, 255 colours, level-1 PNG): the reference."""
    pal = Image.fromarray(flatten(rgba, bg), "RGB").quantize(
        255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    index = np.asarray(pal).copy()
    index[(rgba[::-1] >> 24) == 0] = 255
    out = Image.fromarray(index, "P")
    colours = pal.getpalette()[: 255 * 3]
    out.putpalette(colours + [0] * (255 * 3 - len(colours)) + [255, 255, 255])
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=1, transparency=255)
    return buf.getvalue()


def category_frame(seed: int, h: int = 160, w: int = 200, k: int = 10, empty: float = 0.6):
    """A category frame like the renderer's: count stacks mixed and alpha-equalised; most
    pixels empty, many holding one category, the rest mixing two to four."""
    rng = np.random.default_rng(seed)
    stack = np.zeros((h, w, k), np.uint32)
    kinds = rng.random((h, w))
    for n_cats, lo, hi in ((1, empty, 0.85), (2, 0.85, 0.95), (4, 0.95, 1.0)):
        where = (kinds >= lo) & (kinds < hi)
        for _ in range(n_cats):
            c = rng.integers(0, k, where.sum())
            stack[where, c] += rng.geometric(0.2, where.sum()).astype(np.uint32)
    colors = rgb(category_colors(k)).astype(np.float32)
    hist = np.zeros((1 << 16) + 1, np.int64)
    totals = np.empty((h, w), np.uint32)
    out = mix_stack(
        stack, colors, np.ones(k, bool), np.zeros(k, np.int64), totals, np.empty_like(totals), hist
    )
    return stack, apply_alpha(out, totals, alpha_lut_from_hist(hist, min_alpha=60, max_alpha=255))


def test_few_colours_are_kept_and_transparency_is_exact():
    """With at most 255 colour bins (5 bits a channel) every bin is its own palette entry
    holding its pixels' mean: a colour alone in its bin is exact, others stay within the bin
    (7 a channel); empty pixels are transparent exactly where the frame has alpha 0."""
    rng = np.random.default_rng(1)
    colours = pack(*rng.integers(0, 256, (3, 40)), rng.integers(1, 256, 40))
    rgba = colours[rng.integers(0, 40, (50, 70))]
    rgba[rng.random((50, 70)) < 0.5] = 0
    png = encode_rgba_png(rgba, background=WHITE)
    out = decode(png)
    drawn = (rgba[::-1] >> 24) != 0
    err = np.abs(out[..., :3] - flatten(rgba))[drawn].max(1)
    assert err.max() <= 7 and (err == 0).mean() > 0.9
    np.testing.assert_array_equal(out[..., 3] == 0, ~drawn)
    index = np.asarray(Image.open(io.BytesIO(png)))
    np.testing.assert_array_equal(index == TRANSPARENT, ~drawn)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_colours_stay_close_and_no_worse_than_the_octree(seed):
    """A mixed category frame has thousands of colours: every drawn pixel stays within 32 of
    its exact colour on every channel (mean under 8), no worse than the octree before, and the
    PNG is no more than 1.2x the octree's."""
    _, rgba = category_frame(seed)
    exact = flatten(rgba).astype(int)
    drawn = (rgba[::-1] >> 24) != 0
    assert len(np.unique(exact[drawn] @ [65536, 256, 1])) > 1000
    png, before = encode_rgba_png(rgba, background=WHITE), octree_png(rgba)
    err = np.abs(decode(png)[..., :3] - exact)[drawn].max(1)
    old = np.abs(decode(before)[..., :3] - exact)[drawn].max(1)
    assert err.max() <= 32 and err.mean() < 8
    assert err.max() <= old.max() and err.mean() <= old.mean() * 1.1
    assert (decode(png)[..., 3] == 0).sum() == (~drawn).sum()
    assert len(png) <= 1.2 * len(before)


def test_single_category_pixels_keep_their_hue():
    """Pixels of one category keep the category's hue (the direction in which they darken
    white, which the browser tests match against the legend) even in a many-colour frame."""
    stack, rgba = category_frame(3)
    colours = rgb(category_colors(10)).astype(float)
    out = decode(encode_rgba_png(rgba, background=WHITE))[..., :3][::-1].astype(float)
    single = (stack > 0).sum(2) == 1
    ink = lambda px: (255 - px) / np.linalg.norm(255 - px, axis=-1, keepdims=True).clip(1)  # noqa: E731
    cos = (ink(out[single]) * ink(colours[stack[single].argmax(1)])).sum(1)
    assert np.percentile(cos, 1) > 0.99


def test_mix_stack_matches_a_float_mix_and_alpha_lut():
    """The fused pass gives the per-category totals, the count-weighted colours and the same
    alpha table as :func:`alpha_lut` over the per-pixel totals, with hidden categories out."""
    rng = np.random.default_rng(4)
    stack = (rng.random((30, 40, 5)) < 0.3) * rng.integers(1, 50, (30, 40, 5))
    stack = stack.astype(np.uint32)
    visible = np.array([True, False, True, True, True])
    colors = rgb(category_colors(5)).astype(np.float32)
    hist = np.zeros((1 << 16) + 1, np.int64)
    per = np.zeros(5, np.int64)
    totals = np.empty((30, 40), np.uint32)
    out = mix_stack(stack, colors, visible, per, totals, np.empty_like(totals), hist)
    np.testing.assert_array_equal(per, stack.sum((0, 1)))
    vis = stack * visible
    n = vis.sum(2)
    np.testing.assert_array_equal(totals, n)
    mix = (vis[..., None] * colors.astype(np.float64)).sum(2) / np.maximum(n, 1)[..., None]
    expected = pack(*mix.astype(np.uint32).transpose(2, 0, 1), 0) * (n > 0)
    np.testing.assert_array_equal(out, expected)
    lut = alpha_lut_from_hist(hist, min_alpha=60, max_alpha=255)
    np.testing.assert_array_equal(lut, alpha_lut(n, min_alpha=60, max_alpha=255))
    np.testing.assert_array_equal(apply_alpha(out.copy(), totals, lut) >> 24, lut[n])


def test_densities_match_a_brute_force_count():
    """Dynspread's density for every radius in one pass equals counting each radius alone."""
    rng = np.random.default_rng(5)
    rgba = np.where(rng.random((60, 80)) < 0.03, np.uint32(255 << 24), np.uint32(0))
    got = rgba_densities(rgba, 6, 2)
    drawn = (rgba >> 24) > 0
    ys, xs = np.nonzero(drawn[::2])
    ys = ys * 2
    for r in range(1, 7):
        near = [
            drawn[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].sum() > 1
            for y, x in zip(ys, xs, strict=True)
        ]
        assert got[r] == pytest.approx(np.mean(near))
