"""Tests for the image map: one representative per cell, inside its cell, no overlaps, filters,
the shared thumbnail cache, broken and missing thumbnails, and the map's images mode."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from embviz.app.map_result import NO_THUMBNAILS
from embviz.app.mapview import MapView
from embviz.curve import hilbert_order
from embviz.render.cellpick import SUB, grid_for
from embviz.render.imagemap import GAP, ImageFrame, ImageMapper, cell_box
from embviz.render.overlay import IMAGE_BUDGET
from embviz.render.raster import Style, category_colors, rgb
from embviz.render.store import PointStore, View, load_store
from embviz.render.thumbcache import BROKEN, ThumbCache, dataset_thumbs

W, H = 900, 640


def make_store(xy, codes=None, names=("a", "b", "c"), numeric=None) -> PointStore:
    xy = np.asarray(xy, dtype=np.float64)
    order = hilbert_order(xy)
    codes = np.zeros(len(xy), np.int8) if codes is None else np.asarray(codes, np.int8)
    return PointStore.from_arrays(
        xy[order, 0],
        xy[order, 1],
        ids=np.arange(len(xy))[order] * 3 + 7,  # ids differ from rows
        chunk_rows=64,
        categorical={"label": (codes[order], list(names))},
        numeric={k: np.asarray(v, np.float32)[order] for k, v in (numeric or {}).items()},
    )


def _png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (shade, 255 - shade, 90)).save(buf, format="PNG")
    return buf.getvalue()


class FakeThumbs:
    """A thumbnail source whose thumb id is the sample id; ``broken`` ids give bad bytes."""

    key = "fake"

    def __init__(self, broken=(), missing=()):
        self.broken, self.missing = set(broken), set(missing)
        self.reads: list[list[int]] = []

    def thumb_ids(self, sample_ids):
        ids = np.asarray(sample_ids, dtype=np.int64)
        return np.where(np.isin(ids, list(self.missing)), -1, ids)

    def read(self, thumb_ids):
        self.reads.append(list(thumb_ids))
        return [b"\x89PNG not really" if t in self.broken else _png(t % 256) for t in thumb_ids]


def padded(store) -> View:
    e = store.extent
    px, py = (e.x1 - e.x0) * 0.03, (e.y1 - e.y0) * 0.03
    return View(e.x0 - px, e.x1 + px, e.y0 - py, e.y1 + py)


def rects_overlap(a, b) -> bool:
    (l1, t1, s1), (l2, t2, s2) = a, b
    return l1 < l2 + s2 and l2 < l1 + s1 and t1 < t2 + s2 and t2 < t1 + s1


@pytest.fixture(scope="module")
def demo(demo_dataset):
    from embviz.dataset import open_dataset

    ds = open_dataset(demo_dataset)
    projection = next(p for p in ds.projections if p.endswith("umap2d"))
    return ds, load_store(ds, projection)


# -- the demo at full view ---------------------------------------------------------------------------
def test_full_view_of_the_demo_has_one_representative_per_occupied_cell(demo):
    ds, store = demo
    mapper = ImageMapper(store, dataset_thumbs(ds), cache=ThumbCache(64 * 2**20))
    view = padded(store)
    frame = mapper.render(view, W, H, cell_px=64, mode="category", color_by="label")
    picks = frame.picks
    grid = picks.grid
    assert isinstance(frame, ImageFrame) and frame.mime == "image/webp"
    assert frame.points == store.n == picks.counts.sum()
    assert picks.how == "lowest outlier_score"
    # Occupied cells by brute force: exactly the cells holding a representative.
    cell = grid.cell_of(store.x, store.y)
    assert (cell >= 0).all()
    occupied = np.unique(cell)
    np.testing.assert_array_equal(picks.cells, occupied)
    assert 40 <= len(occupied) <= 300
    score = store.numeric["outlier_score"]
    for k in occupied:
        row = picks.rows[k]
        assert cell[row] == k  # it lies in the cell it is drawn in
        assert score[row] == np.nanmin(score[cell == k])  # the most typical by embedding
    # Every image is a square inside its cell's pixels, and no two overlap.
    boxes = [cell_box(grid, int(k), view, W, H) for k in occupied]
    ux, uy = (view.x1 - view.x0) / W, (view.y1 - view.y0) / H
    xs, ys = grid.rects(occupied)
    for (left, top, side), x0, y0 in zip(boxes, xs, ys, strict=True):
        assert 0.71 * 64 - 2 * GAP - 1 <= side <= 1.42 * 64
        assert left >= (x0 - view.x0) / ux - 1 and left + side <= (x0 + grid.cw - view.x0) / ux
        assert top >= (view.y1 - y0 - grid.ch) / uy - 1 and top + side <= (view.y1 - y0) / uy
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not rects_overlap(boxes[i], boxes[j])
    # The frame shows each image framed in its point's category colour (WebP is lossy).
    img = np.asarray(Image.open(io.BytesIO(frame.png)).convert("RGB")).astype(int)
    assert img.shape == (H, W, 3) and frame.empty == 0
    colours = rgb(category_colors(len(store.categories("label")))).astype(int)
    codes = store.categorical["label"][0]
    inside = [b for b in boxes if b[0] >= 0 and b[1] >= 0 and b[0] + b[2] < W and b[1] + b[2] < H]
    for (left, top, side), k in zip(boxes, occupied, strict=True):
        if (left, top, side) not in inside:
            continue
        edge = img[top + 1, left + side // 2]
        assert np.abs(edge - colours[codes[picks.rows[k]]]).max() < 40
    assert len(frame.png) < IMAGE_BUDGET


def test_zooming_in_keeps_every_image_and_panning_keeps_each_cells_image(demo):
    ds, store = demo
    mapper = ImageMapper(store, dataset_thumbs(ds), cache=ThumbCache(64 * 2**20))
    view = padded(store)
    full = mapper.pick(view, W, H, cell_px=64)
    # A view half as wide and high: the grid's next level, each cell split in four.
    cx, cy = (view.x0 + view.x1) / 2, (view.y0 + view.y1) / 2
    hw, hh = (view.x1 - view.x0) / 4, (view.y1 - view.y0) / 4
    zoomed = mapper.pick(View(cx - hw, cx + hw, cy - hh, cy + hh), W, H, cell_px=64)
    assert zoomed.grid.cw == full.grid.cw / 2 and zoomed.grid.ch == full.grid.ch / 2
    inner = zoomed.grid.view
    kept = {
        int(r)
        for r in full.rows[full.cells]
        if inner.x0 <= store.x[r] < inner.x1 and inner.y0 <= store.y[r] < inner.y1
    }
    assert kept and kept <= set(zoomed.rows[zoomed.cells].tolist())
    # Panning by a third of a cell keeps the grid and each cell's representative.
    dx = full.grid.cw / 3
    moved = mapper.pick(View(view.x0 + dx, view.x1 + dx, view.y0, view.y1), W, H, cell_px=64)
    g, m = full.grid, moved.grid
    assert (g.cw, g.ch) == (m.cw, m.ch)
    for k in full.cells:
        x0, y0 = g.rects(np.array([k]))
        k2 = m.cell_of(x0 + g.cw / 2, y0 + g.ch / 2)[0]
        if k2 >= 0:
            assert moved.rows[k2] == full.rows[k]


# -- picking on tiny stores ----------------------------------------------------------------------------
def test_without_a_score_the_representative_is_at_the_cells_density_peak():
    rng = np.random.default_rng(0)
    view = View(0.0, 64.0, 0.0, 64.0)
    grid = grid_for(view, 256, 256, 64)  # 16-unit cells, 4-unit sub-cells
    assert (grid.cw, grid.ch, grid.nx, grid.ny) == (16.0, 16.0, 5, 5)
    sparse = rng.uniform(0, 64, (400, 2))
    clump = rng.normal(0, 0.4, (300, 2)) + [21.0, 43.0]  # in cell (1, 2), sub-cell (1, 2)
    store = make_store(np.vstack([sparse, clump]))
    mapper = ImageMapper(store, FakeThumbs(), cache=ThumbCache(2**20))
    picks = mapper.pick(view, 256, 256, cell_px=64)
    assert picks.how == "nearest the density peak"
    cell = grid.cell_of(store.x, store.y)
    np.testing.assert_array_equal(picks.cells, np.unique(cell[cell >= 0]))
    for k in picks.cells:
        assert cell[picks.rows[k]] == k
    row = picks.rows[2 * grid.nx + 1]
    assert abs(store.x[row] - 22.0) < 2.0 and abs(store.y[row] - 42.0) < 2.0
    assert SUB == 4


@pytest.mark.parametrize("column", ["outlier_score", "other"])
@pytest.mark.parametrize("filtered", [False, True])
def test_filters_and_hidden_categories_apply(column, filtered):
    # Blobs, so many chunks lie in one cell (counted from their histograms), and a spread.
    rng = np.random.default_rng(1)
    centres = rng.uniform(10, 90, (8, 2))
    xy = np.vstack(
        [rng.normal(c, 2.5, (600, 2)) for c in centres] + [rng.uniform(0, 100, (600, 2))]
    )
    n = len(xy)
    codes = rng.integers(0, 3, n)
    store = make_store(xy, codes, numeric={column: rng.random(n)})
    mapper = ImageMapper(store, FakeThumbs(), cache=ThumbCache(2**20))
    mask = store.numeric[column] > 0.3 if filtered else None
    keep = np.ones(n, bool) if mask is None else mask
    view = View(10.0, 80.0, 5.0, 90.0)
    style = Style(hidden=frozenset({"b"}))
    frame = mapper.render(
        view, 400, 300, cell_px=40, mode="category", color_by="label", style=style, mask=mask
    )
    picks = frame.picks
    c = store.categorical["label"][0]
    shown = keep & (c != 1)
    cell = picks.grid.cell_of(store.x, store.y)
    np.testing.assert_array_equal(picks.cells, np.unique(cell[shown & (cell >= 0)]))
    np.testing.assert_array_equal(
        picks.counts[picks.cells], np.bincount(cell[shown & (cell >= 0)])[picks.cells]
    )
    reps = picks.rows[picks.cells]
    assert shown[reps].all()
    assert (cell[reps] == picks.cells).all()
    if column == "outlier_score":
        values = store.numeric[column]
        for k, r in zip(picks.cells, reps, strict=True):
            assert values[r] == values[shown & (cell == k)].min()
    in_view = view.contains(store.x, store.y)
    assert frame.points == int((in_view & shown).sum())
    # The legend still counts the hidden class (like the points frame), filters applied.
    assert frame.counts == {n: int((in_view & keep & (c == i)).sum()) for i, n in enumerate("abc")}


# -- the thumbnail cache ---------------------------------------------------------------------------
def test_the_second_frame_hits_the_cache():
    rng = np.random.default_rng(2)
    store = make_store(rng.uniform(0, 10, (2000, 2)))
    source = FakeThumbs()
    cache = ThumbCache(2**20)
    mapper = ImageMapper(store, source, cache=cache)
    first = mapper.render(store.extent, 300, 200, cell_px=32)
    n = len(first.picks.cells)
    assert n > 20 and (cache.hits, cache.misses) == (0, n) and len(source.reads) == 1
    second = mapper.render(store.extent, 300, 200, cell_px=32)
    assert second.png == first.png
    assert (cache.hits, cache.misses) == (n, n) and cache.hit_rate == 0.5
    assert len(source.reads) == 1  # nothing read or decoded again
    # Bounded in bytes: a small cache keeps the newest and drops the least recently used.
    small = ThumbCache(16 * 12 * 3 * 5)
    small.get(source, range(100, 110))
    assert len(small) == 5 and small.size_bytes <= small.max_bytes
    small.get(source, [109])
    assert small.hits == 1


def test_a_broken_thumbnail_draws_an_empty_frame_and_is_logged_once(caplog):
    rng = np.random.default_rng(3)
    store = make_store(rng.uniform(0, 10, (500, 2)))
    mapper = ImageMapper(store, FakeThumbs(), cache=ThumbCache(2**20))
    picks = mapper.pick(store.extent, 300, 200, cell_px=32)
    bad = int(store.ids[picks.rows[picks.cells[0]]])
    missing = int(store.ids[picks.rows[picks.cells[1]]])
    source = FakeThumbs(broken=[bad], missing=[missing])
    cache = ThumbCache(2**20)
    mapper = ImageMapper(store, source, cache=cache)
    with caplog.at_level(logging.WARNING, logger="embviz.render.thumbcache"):
        for _ in range(2):
            frame = mapper.render(store.extent, 300, 200, cell_px=32)
            assert frame.empty == 2  # the broken one and the one without a thumbnail
        fresh = ImageMapper(store, source, cache=cache)
        fresh.render(store.extent, 300, 200, cell_px=32)
    logged = [r for r in caplog.records if "does not decode" in r.getMessage()]
    assert len(logged) == 1 and str(bad) in logged[0].getMessage()
    assert cache.get(source, [bad]) == [BROKEN]
    # The empty frame is drawn: its border in the colour, its inside the background.
    left, top, side = cell_box(picks.grid, int(picks.cells[0]), frame.view, 300, 200)
    img = np.asarray(Image.open(io.BytesIO(frame.png)).convert("RGB")).astype(int)
    assert (img[top + side // 2, left + side // 2] > 230).all()
    assert (img[top + 1, left + side // 2] < 230).any()


def test_the_cache_size_comes_from_the_environment(monkeypatch):
    from embviz.render import thumbcache

    monkeypatch.setattr(thumbcache, "_cache", None)
    monkeypatch.setenv("EMBVIZ_THUMB_CACHE_MB", "3")
    assert thumbcache.thumb_cache().max_bytes == 3 * 2**20
    assert thumbcache.thumb_cache() is thumbcache.thumb_cache()


# -- the map's images mode -----------------------------------------------------------------------
def _thumb_urls(ids) -> list[str]:
    return [f"/thumb/{int(i)}" for i in ids]


def test_images_mode_hovers_taps_and_selects_like_points():
    from types import SimpleNamespace

    rng = np.random.default_rng(4)
    store = make_store(rng.uniform(0, 100, (5000, 2)), rng.integers(0, 3, 5000))
    taps: list = []
    mv = MapView(store, thumbs=_thumb_urls, thumb_source=FakeThumbs(), on_tap=taps.append)
    mv.images.cache = ThumbCache(2**20)
    mv.map_mode = "images"
    res = mv.refresh(padded(store), wait=True)
    frame = res.frame
    assert isinstance(frame, ImageFrame) and res.url.startswith("data:image/webp;base64,")
    assert mv.raster_src.data["url"] == [res.url]
    reps = frame.picks.rows[frame.picks.cells]
    assert res.cells["id"] == store.ids[reps].tolist() == mv.cell_src.data["id"]
    assert res.cells["thumb"] == _thumb_urls(store.ids[reps])
    assert res.images == len(reps) and res.points is None and res.sprites is None
    assert res.bytes <= IMAGE_BUDGET
    # A tap anywhere in a cell opens its representative.
    k = 3
    mv._on_tap(
        SimpleNamespace(x=res.cells["cx"][k] + res.cells["cw"][k] * 0.4, y=res.cells["cy"][k])
    )
    assert taps == [reps[k]]
    # A box selects every point under it, not only the representatives.
    geom = {"type": "rect", "x0": 20.0, "x1": 60.0, "y0": 30.0, "y1": 70.0}
    rows = mv.select(geom)
    assert (
        len(rows) == store.count_in(View(20.0, 60.0, 30.0, 70.0)) > 10 * len(set(rows) & set(reps))
    )
    # Back to points: the cells go.
    mv.map_mode = "points"
    res = mv.refresh(wait=True)
    assert not isinstance(res.frame, ImageFrame) and mv.cell_src.data["cx"] == []


def test_few_points_are_drawn_as_sprites_in_images_mode():
    rng = np.random.default_rng(5)
    store = make_store(rng.uniform(0, 100, (5000, 2)))
    mv = MapView(store, thumbs=_thumb_urls, thumb_source=FakeThumbs(), sprite_limit=400)
    mv.map_mode = "images"
    small = View(40.0, 48.0, 40.0, 48.0)
    assert 0 < store.count_in(small) <= 400
    res = mv.refresh(small, wait=True)
    assert not isinstance(res.frame, ImageFrame) and res.cells is None
    assert len(res.sprites["id"]) == store.count_in(small)


def test_overlays_are_drawn_when_annotate_gives_them():
    rng = np.random.default_rng(6)
    store = make_store(rng.uniform(0, 10, (1000, 2)))
    seen = []

    def annotate(view, width, height, frame):
        seen.append((view, width, height, frame.points))
        return {"x": [5.0], "y": [5.0], "text": ["cats"], "size": [14]}, {
            "xs": [[1.0, 2.0, 3.0]],
            "ys": [[1.0, 3.0, 1.0]],
        }

    mv = MapView(store, annotate=annotate)
    res = mv.refresh(wait=True)
    assert seen == [(res.request.view, res.request.width, res.request.height, 1000)]
    assert mv.label_src.data["text"] == ["cats"] and mv.label_src.data["font"] == ["14px"]
    assert mv.contour_src.data["xs"] == [[1.0, 2.0, 3.0]]
    plain = MapView(store)
    plain.refresh(wait=True)
    assert plain.label_src.data["text"] == [] and plain.contour_src.data["xs"] == []


def test_a_dataset_without_thumbnails_keeps_the_dots_and_says_why(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embviz.app.explorer import Explorer
    from embviz.dataset import open_dataset
    from embviz.pipeline.ingest import ingest

    rng = np.random.default_rng(7)
    n = 600
    table = pa.table(
        {
            "vector": pa.array(
                list(rng.normal(size=(n, 4)).astype(np.float32)), pa.list_(pa.float32())
            ),
            "x": rng.uniform(-1, 1, n),
            "y": rng.uniform(0, 5, n),
        }
    )
    pq.write_table(table, tmp_path / "v.parquet")
    ingest(tmp_path / "ds", source=tmp_path / "v.parquet", coord_columns=["x", "y"], progress=False)
    assert dataset_thumbs(open_dataset(tmp_path / "ds")) is None
    explorer = Explorer(tmp_path / "ds")
    explorer.session.map_mode = "images"
    res = explorer.map.last
    assert res.request.map_mode == "images" and not isinstance(res.frame, ImageFrame)
    assert res.notice == NO_THUMBNAILS and NO_THUMBNAILS in explorer.session.status
    assert res.frame.points == n
