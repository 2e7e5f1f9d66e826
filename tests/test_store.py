"""Tests for the point store: exact view/polygon/nearest queries, zoom cost, joined columns, cache."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embviz.curve import hilbert_order
from embviz.dataset import Dataset, open_dataset
from embviz.pipeline.reduce import write_projection
from embviz.pipeline.synth import synth
from embviz.render import store as store_mod
from embviz.render.store import PointStore, View, _load, clear_stores, load_store

SYNTH_POINTS = 120_000


@pytest.fixture(autouse=True)
def _fresh_stores():
    """Every test starts and ends with an empty process-wide store cache."""
    clear_stores()
    yield
    clear_stores()


def make_store(seed: int, n: int = 6000, chunk_rows: int = 64) -> PointStore:
    """Blobs plus background, sorted on a Hilbert curve like a real projection."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, (6, 2))
    xy = centers[rng.integers(0, 6, n)] + rng.normal(scale=rng.uniform(0.3, 2.0), size=(n, 2))
    xy[: n // 20] = rng.uniform(-14, 14, (n // 20, 2))
    order = hilbert_order(xy)
    x, y = (np.ascontiguousarray(xy[order, i], dtype=np.float32) for i in (0, 1))
    ids = (np.arange(n, dtype=np.int64) * 3 + 7)[order]  # sparse ids: row != id
    return PointStore.from_arrays(x, y, ids=ids, chunk_rows=chunk_rows, key="mem")


def random_views(store: PointStore, rng: np.random.Generator, k: int) -> list[View]:
    """Views from tiny to larger than the extent, a few fully outside."""
    e = store.extent
    span = max(e.x1 - e.x0, e.y1 - e.y0)
    views = []
    for _ in range(k):
        w, h = span * 10 ** rng.uniform(-2.0, 0.2, 2)
        x0 = rng.uniform(e.x0 - 0.2 * span, e.x1)
        y0 = rng.uniform(e.y0 - 0.2 * span, e.y1)
        views.append(View(float(x0), float(x0 + w), float(y0), float(y0 + h)))
    views.append(View(e.x1 + 1, e.x1 + 2, e.y0, e.y1))  # right of every point
    views.append(View(e.x0 - 1, e.x1 + 1, e.y0 - 1, e.y1 + 1))  # everything
    return views


def brute_rows(store: PointStore, view: View, mask=None) -> np.ndarray:
    x, y = store.x.astype(np.float64), store.y.astype(np.float64)
    inside = (x >= view.x0) & (x <= view.x1) & (y >= view.y0) & (y <= view.y1)
    if mask is not None:
        inside &= mask
    return np.flatnonzero(inside)


# -- exact queries --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rows_in_and_count_in_equal_brute_force(seed):
    store = make_store(seed)
    rng = np.random.default_rng(100 + seed)
    mask = rng.random(store.n) < 0.6
    partial = 0
    for view in random_views(store, rng, 40):
        partial += store.runs(view) != [(0, store.n)]
        for m in (None, mask):
            expect = brute_rows(store, view, m)
            got = store.rows_in(view, m)
            np.testing.assert_array_equal(got, expect)
            assert store.count_in(view, m) == len(expect)
    # The random views must have exercised the chunk-pruning path, not only full scans.
    assert partial >= 20


def _in_triangle(px, py, tri) -> np.ndarray:
    """Barycentric test: a point is inside when all three edge cross products share a sign."""
    (ax, ay), (bx, by), (cx, cy) = tri
    d1 = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    d2 = (cx - bx) * (py - by) - (cy - by) * (px - bx)
    d3 = (ax - cx) * (py - cy) - (ay - cy) * (px - cx)
    return ((d1 >= 0) & (d2 >= 0) & (d3 >= 0)) | ((d1 <= 0) & (d2 <= 0) & (d3 <= 0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_in_polygon_equals_barycentric_brute_force(seed):
    store = make_store(seed)
    rng = np.random.default_rng(200 + seed)
    mask = rng.random(store.n) < 0.5
    px, py = store.x.astype(np.float64), store.y.astype(np.float64)
    nonempty = 0
    for _ in range(12):
        tri = rng.uniform(-12, 12, (3, 2))
        inside = _in_triangle(px, py, tri)
        for m in (None, mask):
            expect = np.flatnonzero(inside if m is None else inside & m)
            got = store.rows_in_polygon(tri[:, 0], tri[:, 1], m)
            np.testing.assert_array_equal(np.sort(got), expect)
            nonempty += len(expect) > 0
    assert nonempty >= 12
    # Fewer than three vertices is no polygon.
    assert len(store.rows_in_polygon([0.0, 1.0], [0.0, 1.0])) == 0


def test_a_hostile_lasso_is_bounded():
    """NaN vertices are dropped; 100,000 vertices (a page can send any) are thinned to
    MAX_LASSO_VERTICES, selecting what the same triangle selects."""
    from embviz.render.store import MAX_LASSO_VERTICES

    store = make_store(0)
    tri = np.array([[-10.0, -10.0], [10.0, -10.0], [0.0, 10.0], [-10.0, -10.0]])
    want = np.sort(store.rows_in_polygon(tri[:3, 0], tri[:3, 1]))
    t = np.linspace(0, 3, 100_000, endpoint=False)  # the triangle's edges, densely walked
    i, f = t.astype(int), (t % 1)[:, None]
    dense = tri[i] * (1 - f) + tri[i + 1] * f
    assert len(dense) > MAX_LASSO_VERTICES
    np.testing.assert_array_equal(np.sort(store.rows_in_polygon(dense[:, 0], dense[:, 1])), want)
    xs = np.insert(tri[:3, 0], 1, np.nan)
    ys = np.insert(tri[:3, 1], 1, np.inf)
    np.testing.assert_array_equal(np.sort(store.rows_in_polygon(xs, ys)), want)


@pytest.mark.parametrize("seed", [0, 1])
def test_nearest_is_the_true_nearest_within_radius(seed):
    store = make_store(seed)
    rng = np.random.default_rng(300 + seed)
    mask = rng.random(store.n) < 0.3
    px, py = store.x.astype(np.float64), store.y.astype(np.float64)
    radius = 0.25
    near = rng.integers(0, store.n, 40)
    queries = np.column_stack([px[near], py[near]]) + rng.normal(scale=0.15, size=(40, 2))
    queries = np.vstack([queries, rng.uniform(-14, 14, (40, 2)), [[100.0, 100.0]]])
    found = missed = 0
    for m in (None, mask):
        for qx, qy in queries:
            d = np.hypot(px - qx, py - qy)
            if m is not None:
                d = np.where(m, d, np.inf)
            row = store.nearest(float(qx), float(qy), radius, m)
            if d.min() > radius * (1 + 1e-5):
                assert row is None
                missed += 1
            elif d.min() < radius * (1 - 1e-5):
                assert row is not None and (m is None or m[row])
                assert d[row] <= d.min() + 1e-5  # the nearest (float32 ties allowed)
                found += 1
    assert found >= 30 and missed >= 30


def test_row_of_maps_ids_back_to_rows():
    store = make_store(0, n=500)
    rows = np.array([0, 17, 499, 3])
    np.testing.assert_array_equal(store.row_of(store.ids[rows]), rows)
    np.testing.assert_array_equal(store.row_of(np.array([-1, 1, 10**9])), [-1, -1, -1])


# -- a real, curve-ordered dataset ----------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "synth"
    synth(root, points=SYNTH_POINTS, partition_rows=50_000, sprites=16, dims=(2,), progress=False)
    return root


def _square_holding(store: PointStore, cx: float, cy: float, target: int) -> View:
    """The square view centred on ``(cx, cy)`` holding about ``target`` points (bisection)."""
    lo, hi = 0.0, 1000.0
    for _ in range(40):
        h = (lo + hi) / 2
        if store.count_in(View(cx - h, cx + h, cy - h, cy + h)) < target:
            lo = h
        else:
            hi = h
    return View(cx - hi, cx + hi, cy - hi, cy + hi)


def test_zoom_touches_only_what_it_shows(synth_root, monkeypatch):
    # 512-row chunks on 120k points is the ratio of the default 8192-row chunks on ~2M points.
    monkeypatch.setattr(store_mod, "CHUNK_ROWS", 512)
    store = _load(open_dataset(synth_root), "synth.2d")
    assert store.chunk_rows == 512 and len(store.bounds) == -(-SYNTH_POINTS // 512)
    rng = np.random.default_rng(7)
    for row in rng.integers(0, store.n, 8):
        view = _square_holding(store, float(store.x[row]), float(store.y[row]), store.n // 100)
        inside = store.count_in(view)
        gathered = sum(b - a for a, b in store.runs(view))
        assert 0.9 * store.n / 100 <= inside <= 1.2 * store.n / 100
        assert gathered <= 5 * inside, (view, inside, gathered)
        assert gathered < 0.05 * store.n
    # The whole extent is one run: every row, read as one slice of each column.
    assert store.runs(store.extent) == [(0, store.n)]
    np.testing.assert_array_equal(store.rows_in(store.extent), np.arange(store.n))


def test_synth_categorical_and_numeric_columns_match_samples(synth_root):
    store = load_store(synth_root, "synth.2d")
    samples = open_dataset(synth_root).read_pandas("samples").set_index("id")
    assert store.n == SYNTH_POINTS and sorted(store.ids) == list(samples.index)
    assert not np.all(np.diff(store.ids) > 0), "rows follow the curve, not the ids"
    assert set(store.categorical) == {"label", "split", "source"}
    assert set(store.numeric) == {"width", "height", "score", "confidence"}
    for name, (codes, names) in store.categorical.items():
        assert names == sorted(names) and len(set(names)) == len(names)
        assert "(none)" not in names  # synth has no nulls
        expect = samples[name].reindex(store.ids).to_numpy()
        np.testing.assert_array_equal(np.asarray(names, dtype=object)[codes], expect)
    for name, values in store.numeric.items():
        assert values.dtype == np.float32
        expect = samples[name].reindex(store.ids).to_numpy().astype(np.float32)
        np.testing.assert_array_equal(values, expect)


# -- hand-built datasets: nulls, missing samples, several partitions -------------------------------
def _write_samples(ds: Dataset, parts: list[dict]) -> None:
    w = ds.writer("samples")
    for i, cols in enumerate(parts):
        w.write_part(i, pa.table(cols))
    w.commit()


@pytest.fixture
def holey_root(tmp_path):
    """Samples in two partitions with nulls; ids 50..59 have a point but no sample row."""
    ds = Dataset.create(tmp_path / "holey")
    _write_samples(
        ds,
        [
            {
                "id": np.arange(40),
                "label": pa.array(["cat", "dog", None, "cat"] * 10),
                "n": pa.array([1, None, 3, 4] * 10, pa.int64()),
            },
            {
                "id": np.r_[40:50, 60:100],
                "label": pa.array(["ant", "dog"] * 25),
                "n": pa.array(np.arange(50), pa.int64()),
            },
        ],
    )
    rng = np.random.default_rng(0)
    write_projection(ds, "p", np.arange(100), rng.normal(size=(100, 2)), meta={})
    return ds.root


def test_nulls_and_missing_samples_become_none_and_nan(holey_root):
    store = load_store(holey_root, "p")
    samples = open_dataset(holey_root).read_pandas("samples").set_index("id")
    codes, names = store.categorical["label"]
    assert names == ["(none)", "ant", "cat", "dog"]
    labels = samples["label"].reindex(store.ids)  # missing ids -> NaN like nulls
    expect = labels.where(labels.notna(), "(none)").to_numpy()
    np.testing.assert_array_equal(np.asarray(names, dtype=object)[codes], expect)
    n = store.numeric["n"]
    expect_n = samples["n"].reindex(store.ids).to_numpy(dtype=np.float32, na_value=np.nan)
    np.testing.assert_array_equal(n, expect_n)  # NaN == NaN position-wise here
    assert np.isnan(n[(store.ids >= 50) & (store.ids < 60)]).all()
    assert np.isfinite(n).sum() == 100 - 10 - 10  # 10 missing ids, 10 null values


def test_projection_id_above_every_sample_id_is_missing(tmp_path):
    ds = Dataset.create(tmp_path / "extra")
    _write_samples(ds, [{"id": np.arange(10), "label": ["a"] * 10, "v": np.arange(10.0)}])
    write_projection(ds, "p", np.arange(11), np.random.default_rng(0).normal(size=(11, 2)), meta={})
    store = load_store(ds.root, "p")
    extra = store.row_of(np.array([10]))[0]
    assert store.categories("label")[store.categorical["label"][0][extra]] == "(none)"
    assert np.isnan(store.numeric["v"][extra])


# -- the on-disk cache ----------------------------------------------------------------------------
def _small_dataset(root: Path, seed: int = 0, n: int = 3000) -> Path:
    rng = np.random.default_rng(seed)
    ds = Dataset.create(root)
    _write_samples(
        ds,
        [
            {
                "id": np.arange(n),
                "label": [f"c{i}" for i in rng.integers(0, 5, n)],
                "score": rng.normal(size=n),
            }
        ],
    )
    write_projection(ds, "p", np.arange(n), rng.normal(size=(n, 2)), meta={})
    return ds.root


def _arrays(store: PointStore) -> dict[str, np.ndarray]:
    out = {"x": store.x, "y": store.y, "ids": store.ids, "bounds": store.bounds}
    out |= {f"cat.{k}": v[0] for k, v in store.categorical.items()}
    out |= {f"num.{k}": v for k, v in store.numeric.items()}
    return out


def _assert_same(a: PointStore, b: PointStore) -> None:
    assert a.chunk_rows == b.chunk_rows
    assert {k: v[1] for k, v in a.categorical.items()} == {
        k: v[1] for k, v in b.categorical.items()
    }
    got, expect = _arrays(a), _arrays(b)
    assert got.keys() == expect.keys()
    for k in got:
        np.testing.assert_array_equal(got[k], expect[k], err_msg=k)


def _cache_dirs(root: Path) -> list[Path]:
    base = root / "cache" / "explorer"
    return sorted(p for p in base.iterdir() if not p.name.startswith(".")) if base.exists() else []


def test_cache_is_memory_mapped_and_identical(tmp_path):
    root = _small_dataset(tmp_path / "ds")
    first = load_store(root, "p")
    assert load_store(root, "p") is first  # process-wide: loaded once
    assert not isinstance(first.x, np.memmap)  # the first load joins the tables
    (cache,) = _cache_dirs(root)
    assert (cache / "meta.json").exists()
    clear_stores()
    mapped = load_store(root, "p")
    assert mapped is not first
    for name, arr in _arrays(mapped).items():
        if name != "bounds":
            assert isinstance(arr, np.memmap), name
    _assert_same(mapped, first)
    assert mapped.count_in(View(-0.5, 0.5, -0.5, 0.5)) == first.count_in(View(-0.5, 0.5, -0.5, 0.5))


def test_rebuilt_projection_gets_a_new_cache_and_new_content(tmp_path):
    root = _small_dataset(tmp_path / "ds")
    old = load_store(root, "p")
    n = old.n
    write_projection(
        root, "p", np.arange(n), np.random.default_rng(9).normal(size=(n, 2)) + 50, meta={}
    )
    new = load_store(root, "p")  # no clear_stores: the new table version is a new key
    assert new is not old
    assert len(_cache_dirs(root)) == 2
    assert new.extent.x0 > 40 and old.extent.x1 < 10
    clear_stores()
    _assert_same(load_store(root, "p"), new)


def test_corrupt_cache_falls_back_to_the_tables(tmp_path):
    root = _small_dataset(tmp_path / "ds")
    fresh = load_store(root, "p")
    (cache,) = _cache_dirs(root)
    (cache / "x.npy").write_bytes(b"not an npy file")
    clear_stores()
    _assert_same(load_store(root, "p"), fresh)


def test_rewritten_samples_are_seen_without_restart(tmp_path):
    root = _small_dataset(tmp_path / "ds", n=200)
    assert "z" not in load_store(root, "p").categories("label")
    _write_samples(open_dataset(root), [{"id": np.arange(200), "label": ["z"] * 200}])
    assert load_store(root, "p").categories("label") == ["z"]


def test_rewritten_samples_get_a_new_disk_cache(tmp_path):
    root = _small_dataset(tmp_path / "ds", n=200)
    load_store(root, "p")
    _write_samples(open_dataset(root), [{"id": np.arange(200), "label": ["z"] * 200}])
    clear_stores()
    assert load_store(root, "p").categories("label") == ["z"]
    assert len(_cache_dirs(root)) == 2


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


def test_read_only_dataset_still_loads(tmp_path, monkeypatch):
    root = _small_dataset(tmp_path / "ds")
    expect = _load(open_dataset(root), "p")
    modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
    try:
        for p, mode in modes.items():
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        if os.geteuid() == 0:  # permissions do not bind root
            _deny_writes_under(monkeypatch, root)
        got = load_store(root, "p")
        assert not (root / "cache").exists()
        assert not isinstance(got.x, np.memmap)
        _assert_same(got, expect)
    finally:
        monkeypatch.undo()
        for p, mode in sorted(modes.items(), key=lambda kv: len(kv[0].parts)):
            p.chmod(mode)
