"""Tests for server-side frames: valid PNGs, exact point counts, aggregate reuse, bounded payload."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from embviz.curve import hilbert_order
from embviz.render.raster import (
    MAX_STACKED_CATEGORIES,
    Renderer,
    Style,
    category_colors,
    palette,
)
from embviz.render.store import PointStore, View


def make_store(
    xy: np.ndarray, categorical: dict | None = None, numeric: dict | None = None
) -> PointStore:
    """A store of ``xy`` in Hilbert order; columns are given in ``xy``'s order and reordered."""
    order = hilbert_order(xy)
    x, y = (np.ascontiguousarray(xy[order, i], dtype=np.float32) for i in (0, 1))
    cats = {k: (codes[order], names) for k, (codes, names) in (categorical or {}).items()}
    nums = {k: v[order].astype(np.float32) for k, v in (numeric or {}).items()}
    return PointStore.from_arrays(
        x, y, ids=np.arange(len(x))[order], chunk_rows=256, categorical=cats, numeric=nums
    )


def blobs(n: int, k: int, seed: int = 0, clusters: int = 12) -> PointStore:
    """``n`` points in Gaussian clusters, ``label`` with ``k`` values, ``split`` and ``score``."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, (clusters, 2))
    cl = rng.integers(0, clusters, n)
    xy = centers[cl] + rng.normal(size=(n, 2))
    score = xy[:, 0] + rng.normal(scale=0.1, size=n)
    score[rng.random(n) < 0.05] = np.nan
    return make_store(
        xy,
        categorical={
            "label": ((cl % k).astype(np.int16), [f"c{i:03d}" for i in range(k)]),
            "split": (rng.integers(0, 3, n).astype(np.int16), ["prod", "test", "train"]),
        },
        numeric={"score": score},
    )


def decode(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.format == "PNG"
    return img


def alpha(png: bytes) -> np.ndarray:
    """Alpha channel of a frame, top row first."""
    return np.asarray(decode(png).convert("RGBA"))[..., 3]


@pytest.fixture(scope="module")
def store():
    return blobs(20_000, 6)


def sub_views(store: PointStore, seed: int) -> list[View]:
    rng = np.random.default_rng(seed)
    e = store.extent
    out = [e]
    for _ in range(3):
        cx, cy = rng.uniform(e.x0, e.x1), rng.uniform(e.y0, e.y1)
        h = rng.uniform(1, 6)
        out.append(View(float(cx - h), float(cx + h), float(cy - 0.7 * h), float(cy + 0.7 * h)))
    return out


# -- frames ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mode, color_by", [("category", "label"), ("numeric", "score"), ("density", None)]
)
def test_frame_is_png_of_requested_size_counting_points_in_view(store, mode, color_by):
    r = Renderer(store)
    for view in sub_views(store, 1):
        frame = r.render(view, 173, 91, mode=mode, color_by=color_by)
        img = decode(frame.png)
        assert img.size == (173, 91) and img.mode == "P"
        inside = store.rows_in(view)
        assert frame.points == len(inside) > 0
        drawn = (alpha(frame.png) > 0).sum()
        assert 0 < drawn <= 173 * 91
        if mode == "category":
            codes, names = store.categorical["label"]
            per = np.bincount(codes[inside], minlength=len(names))
            assert frame.counts == {n: int(c) for n, c in zip(names, per, strict=True)}
        else:
            assert frame.counts == {}
        assert set(frame.seconds) == {"aggregate", "shade", "encode"}


@pytest.mark.parametrize(
    "mode, color_by", [("category", "label"), ("numeric", "score"), ("density", None)]
)
def test_empty_view_gives_no_points_and_a_small_transparent_png(store, mode, color_by):
    r = Renderer(store)
    full = r.render(store.extent, 400, 300, mode=mode, color_by=color_by)
    e = store.extent
    frame = r.render(View(e.x1 + 1, e.x1 + 5, e.y0, e.y1), 400, 300, mode=mode, color_by=color_by)
    assert frame.points == 0
    assert decode(frame.png).size == (400, 300)
    assert (alpha(frame.png) == 0).all()
    assert len(frame.png) < 3000 and len(frame.png) < len(full.png) / 5


# -- aggregation is cached on data parameters only -------------------------------------------------
@pytest.fixture
def aggregations(monkeypatch):
    """Counts the calls to ``datashader.Canvas.points`` (one per aggregation)."""
    import datashader

    calls: list[int] = []
    real = datashader.Canvas.points

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(datashader.Canvas, "points", counting)
    return calls


def test_style_changes_reuse_the_aggregate_data_changes_do_not(store, aggregations):
    r = Renderer(store)
    e = store.extent
    mask = np.random.default_rng(0).random(store.n) < 0.5

    def frames(**kw) -> tuple[int, bytes]:
        before = len(aggregations)
        args = {"mode": "category", "color_by": "label", "style": Style()} | kw
        png = r.render(args.pop("view", e), 240, 160, **args).png
        return len(aggregations) - before, png

    calls, base = frames()
    assert calls == 1
    assert frames()[0] == 0
    for style in [
        Style(hidden=frozenset({"c001"})),
        Style(opacity=0.4),
        Style(point_size=2),
        Style(dynspread=False),
        Style(hidden=frozenset({"c000", "c003"}), opacity=0.7, point_size=1, dynspread=False),
    ]:
        calls, png = frames(style=style)
        assert calls == 0, style
        # The style did change the picture (dynspread alone is a no-op on this dense frame).
        assert png != base or style == Style(dynspread=False), style
    assert frames(view=View(e.x0, 0.0, e.y0, 0.0))[0] == 1
    assert frames(color_by="split")[0] == 1
    assert frames(color_by="split", mask=mask, mask_key="half")[0] == 1
    assert frames(color_by="split", mask=mask, mask_key="half", style=Style(opacity=0.3))[0] == 0
    assert frames(color_by="split", mask=~mask, mask_key="other half")[0] == 1
    assert frames(mode="numeric", color_by="score")[0] == 1
    assert frames(mode="density", color_by=None)[0] == 1


def test_hidden_category_pixels_vanish():
    rng = np.random.default_rng(3)
    n = 4000
    side = np.repeat([0, 1], n // 2)  # a on the left, b on the right
    xy = np.column_stack([rng.uniform(1, 3, n) + 6 * side, rng.uniform(1, 9, n)])
    s = make_store(xy, categorical={"label": (side.astype(np.int16), ["a", "b"])})
    r = Renderer(s)
    view = View(0.0, 10.0, 0.0, 10.0)
    left, right = slice(0, 50), slice(50, 100)
    for style in (Style(), Style(point_size=2, dynspread=False)):
        shown = alpha(r.render(view, 100, 80, color_by="label", style=style).png)
        hide_a = replace(style, hidden=frozenset({"a"}))
        frame = r.render(view, 100, 80, color_by="label", style=hide_a)
        assert (shown[:, left] > 0).sum() > 500 and (shown[:, right] > 0).sum() > 500
        drawn = alpha(frame.png) > 0
        assert drawn[:, left].sum() == 0
        if not style.dynspread:  # without density-dependent spreading b is drawn the same
            np.testing.assert_array_equal(drawn[:, right], shown[:, right] > 0)
        assert frame.points == n // 2 and frame.counts == {"a": n // 2, "b": n // 2}


# -- many categories ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def twins():
    """The same 60k points labelled with 10 and with 200 categories (mixed within clusters)."""
    rng = np.random.default_rng(5)
    n = 60_000
    centers = rng.uniform(-10, 10, (30, 2))
    xy = centers[rng.integers(0, 30, n)] + rng.normal(size=(n, 2))
    labels = rng.integers(0, 200, n)

    def labelled(k: int) -> PointStore:
        codes = (labels % k).astype(np.int16)
        return make_store(xy, categorical={"label": (codes, [f"c{i:03d}" for i in range(k)])})

    return labelled(10), labelled(200)


def test_payload_does_not_grow_with_category_count(twins):
    few, many = twins
    assert len(many.categories("label")) > MAX_STACKED_CATEGORIES >= len(few.categories("label"))
    f10 = Renderer(few).render(few.extent, 800, 600, color_by="label")
    f200 = Renderer(many).render(many.extent, 800, 600, color_by="label")
    assert decode(f200.png).size == (800, 600)
    assert f10.points == f200.points == many.n
    assert sum(f200.counts.values()) == f200.points
    assert 0.5 < len(f200.png) / len(f10.png) < 2.0
    assert len(f200.png) < 400_000  # bounded by the plot size, not by points or categories


def test_hiding_among_many_categories_drops_exactly_their_points(twins, aggregations):
    _, many = twins
    codes, names = many.categorical["label"]
    r = Renderer(many)
    view = View(-5.0, 5.0, -5.0, 5.0)
    inside = many.rows_in(view)
    full = r.render(view, 300, 200, color_by="label")
    hide = frozenset(names[:50])
    part = r.render(view, 300, 200, color_by="label", style=Style(hidden=hide))
    # The many-category layout re-aggregates without the hidden codes (documented).
    assert len(aggregations) == 2
    assert full.points == len(inside)
    assert part.points == int((codes[inside] >= 50).sum())
    # The legend still counts what each hidden entry holds in view.
    assert part.counts == full.counts


def test_many_category_counts_are_per_category_points(twins):
    _, many = twins
    codes, names = many.categorical["label"]
    frame = Renderer(many).render(many.extent, 400, 300, color_by="label")
    per = np.bincount(codes, minlength=len(names))
    assert frame.counts == {n: int(c) for n, c in zip(names, per, strict=True)}


# -- numeric and density --------------------------------------------------------------------------
def test_numeric_span_and_colours(store):
    r = Renderer(store)
    frame = r.render(store.extent, 300, 200, mode="numeric", color_by="score")
    lo, hi = frame.span
    score = store.numeric["score"]
    finite = score[np.isfinite(score)]
    assert lo < hi
    assert lo == pytest.approx(np.percentile(finite, 1)) and hi == pytest.approx(
        np.percentile(finite, 99)
    )
    assert frame.points == store.n  # NaN scores are still points in view
    # Score follows x: the left of the frame is drawn in viridis' dark end, the right in its light end.
    rgba = np.asarray(decode(frame.png).convert("RGBA")).astype(int)
    lit = rgba[..., 3] > 0
    brightness = rgba[..., :3].sum(axis=2)
    cols = np.nonzero(lit.any(axis=0))[0]
    left = brightness[:, cols[: len(cols) // 5]][lit[:, cols[: len(cols) // 5]]].mean()
    right = brightness[:, cols[-len(cols) // 5 :]][lit[:, cols[-len(cols) // 5 :]]].mean()
    assert right > left + 100
    # A constant column still gets a usable span.
    flat = make_store(np.random.default_rng(0).normal(size=(50, 2)), numeric={"v": np.ones(50)})
    lo, hi = Renderer(flat).render(flat.extent, 64, 64, mode="numeric", color_by="v").span
    assert lo < hi


def test_density_mode(store):
    frame = Renderer(store).render(store.extent, 320, 240, mode="density")
    assert frame.points == store.n and frame.span is None and frame.counts == {}
    assert (alpha(frame.png) > 0).sum() > 1000


def test_a_million_points_full_view_renders():
    rng = np.random.default_rng(11)
    n = 1_000_000
    x = rng.normal(size=n).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    codes = rng.integers(0, 10, n).astype(np.int16)
    cats = {"label": (codes, [f"c{i}" for i in range(10)])}
    s = PointStore.from_arrays(x, y, ids=np.arange(n), categorical=cats)
    frame = Renderer(s).render(s.extent, 640, 480, color_by="label")
    assert frame.points == n and sum(frame.counts.values()) == n
    assert decode(frame.png).size == (640, 480)
    assert len(frame.png) < 500_000


def test_points_at_one_place_render():
    s = make_store(np.ones((3, 2)), categorical={"label": (np.zeros(3, np.int16), ["a"])})
    frame = Renderer(s).render(s.extent, 64, 64, color_by="label")
    assert frame.points == 3


# -- colours --------------------------------------------------------------------------------------
def test_palettes_and_category_colours():
    assert len(palette("fire")) == 256 and len(palette("viridis")) == 256
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        palette("nope")
    colors = category_colors(200)
    assert len(set(colors)) == 200 and category_colors(10) == colors[:10]


def test_difference_view_colours_where_each_group_dominates(aggregations):
    # Group "a" fills the left and the middle, "b" the right and the middle, with 10x more
    # points than "a": shares, not counts, decide, so the middle is balanced (grey), the left
    # blue (only a), the right red (only b); a third group never shows.
    rng = np.random.default_rng(5)
    xa = np.concatenate([rng.uniform(0.5, 3, 500), rng.uniform(3.5, 6.5, 500)])
    xb = np.concatenate([rng.uniform(7, 9.5, 5000), rng.uniform(3.5, 6.5, 5000)])
    xc = rng.uniform(0.5, 9.5, 300)
    x = np.concatenate([xa, xb, xc])
    xy = np.column_stack([x, rng.uniform(1, 9, len(x))])
    codes = np.repeat([0, 1, 2], [len(xa), len(xb), len(xc)]).astype(np.int16)
    s = make_store(xy, categorical={"split": (codes, ["a", "b", "c"])})
    r = Renderer(s)
    view = View(0.0, 10.0, 0.0, 10.0)
    style = Style(dynspread=False, difference=("a", "b"))
    plain = r.render(view, 100, 80, color_by="split", style=Style(dynspread=False))
    before = len(aggregations)
    frame = r.render(view, 100, 80, color_by="split", style=style)
    assert len(aggregations) == before  # a style: the aggregate is reused
    assert frame.counts == plain.counts == {"a": 1000, "b": 10000, "c": 300}
    rgba = np.asarray(decode(frame.png).convert("RGBA")).astype(int)
    drawn = rgba[..., 3] > 0

    def mean_rgb(cols):
        region = rgba[:, cols][drawn[:, cols]]
        return region[:, :3].mean(axis=0)

    left, mid, right = mean_rgb(slice(8, 28)), mean_rgb(slice(40, 60)), mean_rgb(slice(72, 92))
    assert left[2] > left[0] + 60  # blue: only a
    assert right[0] > right[2] + 60  # red: only b
    assert abs(mid[0] - mid[2]) < 60  # balanced shares: neither
    # Where only the third group lies (no a, no b) nothing is drawn.
    only_c = np.asarray(decode(plain.png).convert("RGBA"))[..., 3] > 0
    assert drawn.sum() < only_c.sum()


@pytest.mark.parametrize("px", [1, 2, 3, 5])
def test_our_spread_draws_what_datashaders_draws(px):
    """Spreading runs on our kernel (compiled once per machine, where Datashader's first spread
    costs a fresh server 3.5-5 s): pixel for pixel what ``tf.spread`` draws, on sparse and
    crowded images with semi-transparent colours and edge pixels."""
    import datashader.transfer_functions as tf

    from embviz.render.kernels import spread_over

    rng = np.random.default_rng(px)
    for density in (0.002, 0.05, 0.4):
        rgba = rng.integers(0, 2**32, size=(61, 83), dtype=np.uint32)
        rgba[rng.random(rgba.shape) > density] = 0
        rgba[0, 0] = rgba[-1, -1] = 0xFF0000FF  # corners: the padding must hold their spread
        rgba[5, 7] = 0x00FFFFFF  # colour with no alpha: not drawn
        img = tf.Image(rgba, dims=["y", "x"], coords={"y": np.arange(61), "x": np.arange(83)})
        expected = tf.spread(img, px=px).data
        got = spread_over(rgba, px)
        assert got.dtype == np.uint32 and got.shape == rgba.shape
        assert np.array_equal(got, expected), (density, int((got != expected).sum()))
    assert np.array_equal(spread_over(rgba, 0), rgba)


def _reference_mix(values: np.ndarray, visible: np.ndarray, opacity: int = 255) -> np.ndarray:
    """The category picture in plain numpy: each pixel the count-weighted mix of its visible
    categories' colours, alpha the histogram-equalised rank of its count (60..opacity)."""
    from embviz.render.raster import rgb

    k = values.shape[-1]
    counts = values.astype(np.int64) * visible
    total = counts.sum(-1)
    colours = rgb(category_colors(k)).astype(np.float32)
    mix = (counts[..., None] * colours).sum(-2) / np.maximum(total, 1)[..., None]
    hit = total[total > 0]
    cdf = np.cumsum(np.bincount(hit, minlength=int(hit.max()) + 1)) / len(hit)
    a = (min(60, opacity) + (opacity - min(60, opacity)) * cdf).astype(np.uint8)[total]
    out = (a.astype(np.uint32) << 24) | (mix[..., 2].astype(np.uint32) << 16)
    out |= (mix[..., 1].astype(np.uint32) << 8) | mix[..., 0].astype(np.uint32)
    return np.where(total > 0, out, 0).astype(np.uint32)


@pytest.mark.parametrize("hidden", [(), ("c001", "c004")])
def test_category_shading_reads_the_stack_once_and_draws_the_reference(hidden):
    """The fused kernel (one pass over the H x W x k stack: totals, mix, counts, histogram)
    draws what the two-pass numpy reference draws, hidden categories left out of the picture
    but counted in the legend."""
    import xarray as xr

    rng = np.random.default_rng(3)
    values = rng.poisson(0.3, size=(37, 53, 6)).astype(np.uint32)
    values[rng.random(values.shape[:2]) < 0.5] = 0
    values[0, 0] = [900, 0, 0, 0, 0, 1]  # a crowded pixel: the top of the alpha scale
    names = [f"c{i:03d}" for i in range(6)]
    agg = xr.DataArray(
        values,
        dims=("y", "x", "c"),
        coords={"y": np.arange(37.0), "x": np.arange(53.0), "c": names},
    )
    img, counts, _ = Renderer(blobs(100, 6)).shade(
        agg,
        mode="category",
        color_by="label",
        style=Style(dynspread=False, hidden=frozenset(hidden)),
    )
    visible = np.array([n not in hidden for n in names])
    assert np.array_equal(img.values, _reference_mix(values, visible))
    assert counts == {n: int(values[..., i].sum()) for i, n in enumerate(names)}


@pytest.mark.parametrize("colours", [12, 5000])
def test_png_has_the_exact_colours_when_few_and_close_ones_when_many(colours):
    """A frame of at most 255 colours (after flattening over the page) is encoded with exactly
    its colours; more are quantized to 255 close ones. Empty pixels stay transparent, rows go
    top first, and either way the PNG is an 8-bit palette image."""
    import xarray as xr

    from embviz.render.encode import encode_png

    rng = np.random.default_rng(colours)
    h, w = 48, 160
    choice = rng.integers(0, 2**24, colours, dtype=np.uint32) | np.uint32(0xFF000000)
    rgba = choice[rng.integers(0, colours, (h, w))]
    rgba[rng.random((h, w)) < 0.3] = 0
    rgba[0, :] = 0  # the bottom row (datashader's y grows upward) is empty
    png = encode_png(xr.DataArray(rgba, dims=("y", "x")), background="#ffffff")
    img = decode(png)
    assert img.mode == "P" and img.size == (w, h)
    got = np.asarray(img.convert("RGBA")).astype(int)
    want = np.stack([(rgba >> (8 * c)) & 255 for c in range(4)], -1)[::-1].astype(int)
    drawn = want[..., 3] > 0
    assert np.array_equal(got[..., 3] > 0, drawn) and not got[-1, :, 3].any()
    err = np.abs(got[drawn][:, :3] - want[drawn][:, :3]).max()
    assert err == 0 if colours <= 255 else 0 < err <= 64
