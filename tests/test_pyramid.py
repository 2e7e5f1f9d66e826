"""Tests for the pyramid of cached counts: frames equal direct frames, fallbacks, rebuilds."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import wait_until
from test_raster import blobs, decode

from embviz.render import pyramid as pyramid_mod
from embviz.render.pyramid import Pyramid, PyramidSource, build_pyramid
from embviz.render.raster import Renderer
from embviz.render.store import View, clear_stores, load_store

ASK = {"mask": None, "hidden_codes": ()}


@pytest.fixture(scope="module")
def store():
    return blobs(60_000, 8, seed=3)  # 8 categories over 12 clusters


@pytest.fixture(scope="module")
def source(store, tmp_path_factory):
    # 40 MB: a 1024-cell base for the 8 categories (5 levels), finer for plain counts.
    where = tmp_path_factory.mktemp("pyr")
    src = PyramidSource(store, where, background=False, max_bytes=40 << 20)
    assert src.pyramid("label") is not None and src.pyramid(None) is not None
    return src


def direct(store, view, w, h, **kw):
    return Renderer(store, sources=[]).aggregate(view, w, h, **kw)


def aligned_views(store, base: int, seed: int, k: int = 6):
    """Views whose pixel edges lie on cell edges of every level the view may use: ``f`` base
    cells a pixel, the corner on a multiple of ``f``. Some reach past the extent's low edges;
    none past its high ones, where the last cell keeps the points on the edge (as Datashader's
    last pixel does) while a view reaching further puts them in the next pixel."""
    rng = np.random.default_rng(seed)
    e = store.extent
    cw, ch = (e.x1 - e.x0) / base, (e.y1 - e.y0) / base
    out = []
    for _ in range(k):
        f = 2 ** int(rng.integers(1, 5))
        w, h = (int(rng.integers(16, min(70, base // f - 4))) for _ in range(2))
        a = f * int(rng.integers(-4, base // f - w + 1))
        b = f * int(rng.integers(-4, base // f - h + 1))
        view = View(e.x0 + a * cw, e.x0 + (a + w * f) * cw, e.y0 + b * ch, e.y0 + (b + h * f) * ch)
        out.append((view, w, h))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_aligned_views_equal_datashader_count_cat(store, source, seed):
    base = source.pyramid("label").base
    for view, w, h in [(store.extent, 256, 128), *aligned_views(store, base, seed)]:
        got = source.aggregate(view, w, h, mode="category", color_by="label", **ASK)
        assert got is not None, view
        xr.testing.assert_identical(got, direct(store, view, w, h, color_by="label"))


@pytest.mark.parametrize("seed", [2, 3])
def test_aligned_views_equal_datashader_density(store, source, seed):
    base = source.pyramid(None).base
    for view, w, h in [(store.extent, 64, 128), *aligned_views(store, base, seed)]:
        got = source.aggregate(view, w, h, mode="density", color_by=None, **ASK)
        assert got is not None, view
        xr.testing.assert_identical(got, direct(store, view, w, h, mode="density"))


def test_every_level_holds_every_point(store, source):
    for column in ("label", None):
        pyr = source.pyramid(column)
        assert pyr.meta["points"] == store.n and len(pyr.grids) >= 4
        for index, counts in pyr.levels.values():
            assert int(np.asarray(counts, dtype=np.int64).sum()) == store.n
            assert (index >= 0).sum() == len(counts)  # only tiles holding points are stored


def _around(m: np.ndarray) -> np.ndarray:
    """Each pixel's sum over its 3 x 3 neighbourhood."""
    p, (h, w) = np.pad(m, 1), m.shape
    return sum(p[1 + i : 1 + i + h, 1 + j : 1 + j + w] for i in (-1, 0, 1) for j in (-1, 0, 1))


def _within(store, view: View) -> int:
    return int(view.contains(store.x, store.y).sum())


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_arbitrary_views_stay_within_the_bound(store, source, seed):
    """Off the cell grid each point moves at most half a cell (<= a quarter pixel): a pixel's
    count is bounded by the other's 3 x 3 neighbourhood, and the view's total differs by at
    most the points within half a cell of its border."""
    rng = np.random.default_rng(seed)
    e = store.extent
    pyr = source.pyramid("label")
    for _ in range(4):
        cx, cy = rng.uniform(e.x0, e.x1), rng.uniform(e.y0, e.y1)
        r = rng.uniform(0.25, 0.9)
        w, h = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        rx, ry = r * (e.x1 - e.x0), 0.6 * r * (e.y1 - e.y0)
        view = View(cx - rx, cx + rx, cy - ry, cy + ry)
        got = source.aggregate(view, w, h, mode="category", color_by="label", **ASK)
        assert got is not None
        ref = direct(store, view, w, h, color_by="label")
        a, b = got.values.sum(2).astype(np.int64), ref.values.sum(2).astype(np.int64)
        grid = pyr.level_for(view, w, h, 2)
        hx, hy = (e.x1 - e.x0) / grid / 2, (e.y1 - e.y0) / grid / 2
        band = _within(store, View(view.x0 - hx, view.x1 + hx, view.y0 - hy, view.y1 + hy))
        band -= _within(store, View(view.x0 + hx, view.x1 - hx, view.y0 + hy, view.y1 - hy))
        assert abs(int(a.sum()) - int(b.sum())) <= band

        inner = (slice(1, -1), slice(1, -1))  # border pixels also trade points with outside
        assert (a[inner] <= _around(b)[inner]).all() and (b[inner] <= _around(a)[inner]).all()
        # Cells of at most half a pixel: under a quarter of the points change pixel (each one
        # moved counts twice: missing here, extra there). Measured: 0.06 .. 0.24.
        assert np.abs(a - b).sum() <= 0.5 * b.sum() + band


def test_falls_back_where_the_pyramid_cannot_answer(store, source):
    e = store.extent
    full = (e, 300, 200)
    mask = np.ones(store.n, dtype=bool)
    got = source.aggregate(*full, mode="category", color_by="label", mask=mask, hidden_codes=())
    assert got is None
    assert source.aggregate(*full, mode="numeric", color_by="score", **ASK) is None
    assert source.aggregate(*full, mode="category", color_by="nope", **ASK) is None
    # A pixel narrower than two base cells: the rows answer.
    base = source.pyramid("label").base
    narrow = View(e.x0, e.x0 + (e.x1 - e.x0) * 100 / base, e.y0, e.y0 + (e.y1 - e.y0) * 100 / base)
    assert source.aggregate(narrow, 100, 100, mode="category", color_by="label", **ASK) is None
    assert source.aggregate(narrow, 40, 40, mode="category", color_by="label", **ASK) is not None


def test_many_categories_fall_back(tmp_path):
    many = blobs(5_000, 60, seed=1)
    src = PyramidSource(many, tmp_path, background=False)
    assert src.aggregate(many.extent, 50, 50, mode="category", color_by="label", **ASK) is None
    assert not (tmp_path / "by-label").exists()


def test_renderer_frames_come_from_the_pyramid(store, source):
    r = Renderer(store, sources=[source])
    frame = r.render(store.extent, 300, 200, mode="category", color_by="label")
    assert r.answered_by == "PyramidSource"
    assert frame.points == store.n and decode(frame.png).size == (300, 200)
    assert sum(frame.counts.values()) == store.n
    r.render(store.extent, 300, 200, mode="density")
    assert r.answered_by == "PyramidSource"


def test_a_new_store_key_rebuilds(tmp_path):
    s = blobs(3_000, 3, seed=2)
    where = build_pyramid(s, tmp_path, "label", key="v1")
    assert json.loads((where / "meta.json").read_text())["key"] == "v1"
    assert Pyramid.open(where, store=s, key="v2", column="label") is None
    src = PyramidSource(s, tmp_path, key="v2", background=False)
    assert src.pyramid("label").meta["key"] == "v2"
    assert json.loads((where / "meta.json").read_text())["key"] == "v2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_a_deleted_pyramid_folder_is_built_again(tmp_path):
    s = blobs(3_000, 3, seed=4)
    src = PyramidSource(s, tmp_path, background=False)
    first = src.pyramid("label")
    shutil.rmtree(first.where)
    again = src.pyramid("label")
    assert again is not None and again is not first and (again.where / "meta.json").exists()
    view = s.extent
    got = src.aggregate(view, 64, 64, mode="category", color_by="label", **ASK)
    xr.testing.assert_identical(got, direct(s, view, 64, 64, color_by="label"))


def test_background_build_then_answers(tmp_path):
    s = blobs(3_000, 3, seed=5)
    src = PyramidSource(s, tmp_path)
    ask = {"mode": "category", "color_by": "label", **ASK}
    assert src.aggregate(s.extent, 64, 64, **ask) is None  # the build has started
    wait_until(lambda: src.pyramid("label"), what="the background build")
    assert src.aggregate(s.extent, 64, 64, **ask) is not None


def _deny_writes_under(monkeypatch, root: Path) -> None:
    """Creating anything under ``root`` fails as on a read-only mount (root ignores chmod)."""
    real_mkdir, real_mkdtemp = Path.mkdir, tempfile.mkdtemp
    root = root.resolve()

    def refuse(path) -> None:
        if Path(path).resolve().is_relative_to(root):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    def mkdir(self, *args, **kwargs):
        refuse(self)
        return real_mkdir(self, *args, **kwargs)

    def mkdtemp(*args, dir=None, **kwargs):
        refuse(dir or tempfile.gettempdir())
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


def test_read_only_dataset_falls_back(tmp_path, monkeypatch):
    s = blobs(3_000, 3, seed=6)
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.geteuid() == 0:  # permissions do not bind root
            _deny_writes_under(monkeypatch, tmp_path)
        src = PyramidSource(s, tmp_path / "pyramid", background=False)
        r = Renderer(s, sources=[src])
        frame = r.render(s.extent, 64, 64, mode="category", color_by="label")
        assert r.answered_by == "local" and frame.points == s.n
        assert src.failed("label") and src.pyramid("label") is None  # not tried again
    finally:
        monkeypatch.undo()
        tmp_path.chmod(stat.S_IRWXU)
    assert not (tmp_path / "pyramid").exists()


def test_load_store_attaches_a_pyramid_beside_the_explorer_cache(tmp_path, monkeypatch):
    from embviz.dataset import open_dataset
    from embviz.pipeline.synth import synth
    from embviz.render.cache import cache_dir

    root = tmp_path / "synth"
    synth(root, points=40_000, partition_rows=20_000, sprites=4, dims=(2,), progress=False)
    monkeypatch.setattr(pyramid_mod, "MIN_POINTS", 1)
    clear_stores()
    try:
        s = load_store(root, "synth.2d")  # joined from the tables
        r = Renderer(s)
        r.render(s.extent, 64, 64, mode="category", color_by="label")
        assert r.answered_by == "local"  # the first frame does not wait for the build
        (src,) = r.sources
        wait_until(lambda: src.pyramid("label"), what="the background build")
        assert src.pyramid("label").where.is_relative_to(cache_dir(open_dataset(root), "synth.2d"))
        clear_stores()
        s2 = load_store(root, "synth.2d")  # memory-mapped from the cache: the same pyramid
        assert s2 is not s and s2.key != s.key
        r2 = Renderer(s2)
        r2.render(s2.extent, 64, 64, mode="category", color_by="label")
        assert r2.answered_by == "PyramidSource"
        monkeypatch.setattr(pyramid_mod, "MIN_POINTS", s2.n + 1)
        assert Renderer(s2).sources == []  # small maps aggregate their rows
    finally:
        clear_stores()


def test_a_frame_from_the_pyramid_does_not_load_datashader(tmp_path):
    """The first frame of a big map comes from its pyramid without importing Datashader
    (1.2-2 s of a fresh server's first frame at 50M points); a fresh interpreter checks it."""
    import subprocess
    import sys

    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_raster import blobs
from embviz.render.pyramid import PyramidSource
from embviz.render.raster import Renderer
store = blobs(60_000, 8, seed=3)
source = PyramidSource(store, {str(tmp_path)!r}, background=False, max_bytes=40 << 20)
assert source.pyramid("label") is not None
r = Renderer(store, sources=[source])
frame = r.render(store.extent, 300, 200, mode="category", color_by="label")
assert r.answered_by == "PyramidSource" and frame.points == store.n
assert "datashader" not in sys.modules, "a pyramid frame imported datashader"
r.render(store.extent, 300, 200, mode="category", color_by="label", mask=store.x > 0, mask_key=1)
assert r.answered_by == "local" and "datashader" in sys.modules  # the rows' path uses it
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_kept_pyramid_belongs_to_the_data_not_to_the_path_it_was_opened_by(
    demo_dataset, monkeypatch
):
    """``embviz serve data/x`` and ``embviz serve /abs/data/x`` find the same pyramids (a
    relative path made them stale: the first frame of a 50M map then waited for a rebuild)."""
    from pathlib import Path

    from embviz.dataset import open_dataset
    from embviz.render.pyramid import _ATTACHED
    from embviz.render.store import clear_stores, load_store

    root = Path(demo_dataset).resolve()
    projection = open_dataset(root).projections[0]
    clear_stores()
    absolute = _ATTACHED[load_store(root, projection)].key
    clear_stores()
    monkeypatch.chdir(root.parent)
    relative = _ATTACHED[load_store(Path(root.name), projection)].key
    clear_stores()
    assert absolute == relative
