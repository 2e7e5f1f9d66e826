"""Tests for the 3D cloud: exact box queries, budgeted samples that keep density and rare points, views, loading."""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pyarrow as pa
import pytest

from embviz import dataset as dataset_mod
from embviz.curve import hilbert_order
from embviz.dataset import Dataset, open_dataset
from embviz.errors import DatasetError
from embviz.pipeline.reduce import write_projection
from embviz.pipeline.synth import synth
from embviz.render.sample3d import DEFAULT_BUDGET, box_from_view_state, sample
from embviz.render.store import Box, PointStore, View, clear_stores, load_store

SYNTH_POINTS = 200_000
WIDTH, HEIGHT = 900, 640


@pytest.fixture(autouse=True)
def _fresh_stores():
    """Every test starts and ends with an empty process-wide store cache."""
    clear_stores()
    yield
    clear_stores()


def make_cloud(seed: int, n: int = 20_000, chunk_rows: int = 256) -> PointStore:
    """Blobs plus background, sorted on a Hilbert curve like a real projection; sparse ids."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, (6, 3))
    xyz = centers[rng.integers(0, 6, n)] + rng.normal(scale=rng.uniform(0.3, 2.0), size=(n, 3))
    xyz[: n // 20] = rng.uniform(-14, 14, (n // 20, 3))
    xyz = xyz[hilbert_order(xyz)]
    ids = rng.permutation(n).astype(np.int64) * 3 + 7  # row != id
    return PointStore.from_arrays(xyz[:, 0], xyz[:, 1], xyz[:, 2], ids=ids, chunk_rows=chunk_rows)


def random_boxes(store: PointStore, rng: np.random.Generator, k: int) -> list[Box]:
    """Boxes from tiny to larger than the extent, one outside every point."""
    lo, hi = np.asarray(store.extent.lo), np.asarray(store.extent.hi)
    span = float(max(hi - lo))
    boxes = []
    for _ in range(k):
        edge = span * 10 ** rng.uniform(-1.5, 0.1, 3)
        start = rng.uniform(lo - 0.2 * span, hi)
        boxes.append(Box(tuple(start.tolist()), tuple((start + edge).tolist())))
    boxes.append(Box(tuple((hi + 1).tolist()), tuple((hi + 2).tolist())))
    boxes.append(Box(tuple((lo - 1).tolist()), tuple((hi + 1).tolist())))
    return boxes


def brute_rows(store: PointStore, box: Box, mask=None) -> np.ndarray:
    inside = np.ones(store.n, dtype=bool)
    for a, lo, hi in zip((store.x, store.y, store.z), box.lo, box.hi, strict=True):
        inside &= (a >= np.float32(lo)) & (a <= np.float32(hi))
    if mask is not None:
        inside &= mask
    return np.flatnonzero(inside)


# -- exact queries ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_in_equals_brute_force(seed):
    store = make_cloud(seed)
    rng = np.random.default_rng(100 + seed)
    mask = rng.random(store.n) < 0.6
    pruned = 0
    for box in random_boxes(store, rng, 30):
        pruned += len(store.chunks_in(box)) < len(store.bounds)
        for m in (None, mask):
            np.testing.assert_array_equal(store.rows_in(box, m), brute_rows(store, box, m))
    assert pruned >= 20, "small boxes should skip most chunks"


def test_row_of_maps_ids_back_to_rows():
    store = make_cloud(3)
    rows = np.random.default_rng(0).integers(0, store.n, 50)
    np.testing.assert_array_equal(store.row_of(store.ids[rows]), rows)
    np.testing.assert_array_equal(store.row_of(np.array([-1, 0, 8, 10**9])), [-1, -1, -1, -1])


# -- sampling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_sample_keeps_to_the_budget_and_sends_everything_that_fits(seed):
    store = make_cloud(seed)
    rng = np.random.default_rng(seed)
    mask = rng.random(store.n) < 0.7
    budget = 1500
    full = 0
    for box in [None, *random_boxes(store, rng, 25)]:
        for m in (None, mask):
            rows = sample(store, box, budget, m)
            if box is None:
                inside = np.arange(store.n) if m is None else np.flatnonzero(m)
            else:
                inside = store.rows_in(box, m)
            assert len(rows) == min(budget, len(inside))
            assert len(np.unique(rows)) == len(rows) and np.all(np.diff(rows) > 0)
            assert np.isin(rows, inside).all()
            if len(inside) <= budget:
                np.testing.assert_array_equal(rows, inside)  # full density
                full += 1
            else:  # the lowest ranks, however the candidates were narrowed down
                lowest = inside[np.argsort(store.rank[inside], kind="stable")[:budget]]
                np.testing.assert_array_equal(rows, np.sort(lowest))
    assert full >= 10
    assert len(sample(store, None, store.n + 1)) == store.n
    assert len(sample(store, None, 0)) == 0


def test_sample_of_a_sparse_mask_is_its_lowest_ranks():
    store = make_cloud(7)
    rng = np.random.default_rng(7)
    for share, budget in [(0.02, 300), (0.02, 100), (0.3, 500)]:
        mask = rng.random(store.n) < share
        for box in (None, Box((-14.0, -14.0, -14.0), (5.0, 14.0, 14.0))):
            inside = np.flatnonzero(mask) if box is None else store.rows_in(box, mask)
            lowest = inside[np.argsort(store.rank[inside], kind="stable")[:budget]]
            np.testing.assert_array_equal(sample(store, box, budget, mask), np.sort(lowest))


def test_zooming_in_ends_at_full_density():
    store = make_cloud(4)
    row = int(np.argmin(store.rank))  # any point: the rarest voxel's first
    centre = np.array([store.x[row], store.y[row], store.z[row]], dtype=float)
    sizes = []
    for half in [20.0, 8.0, 3.0, 1.0, 0.3]:
        box = Box(tuple(centre - half), tuple(centre + half))
        got = sample(store, box, 2000)
        inside = store.rows_in(box)
        sizes.append(len(inside))
        if len(inside) <= 2000:
            np.testing.assert_array_equal(got, inside)
        assert row in got  # the lowest rank is in every sample that holds its point
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 2000 >= sizes[-1]


def test_rank_is_deterministic_and_distinct():
    a, b = make_cloud(5), make_cloud(5)
    np.testing.assert_array_equal(a.rank, b.rank)
    assert len(np.unique(a.rank)) == a.n
    other = PointStore.from_arrays(a.x, a.y, a.z, ids=a.ids, seed=1)
    assert not np.array_equal(other.rank, a.rank)


def test_overview_keeps_the_density():
    rng = np.random.default_rng(11)
    big = rng.normal(0.0, 1.0, (900_000, 3))
    small = rng.normal(6.0, 1.0, (100_000, 3))
    xyz = np.concatenate([big, small]).astype(np.float32)
    order = hilbert_order(xyz)
    is_big = (np.arange(len(xyz)) < len(big))[order]
    xyz = xyz[order]
    store = PointStore.from_arrays(xyz[:, 0], xyz[:, 1], xyz[:, 2], ids=np.arange(len(xyz)))
    rows = sample(store, None)
    assert len(rows) == DEFAULT_BUDGET
    share = is_big[rows].mean()
    assert 0.8 <= share <= 0.95, share
    # Within the big blob the sample keeps its shape: the same share inside one sigma.
    core = np.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2 + xyz[:, 2] ** 2) < 1.0
    expect = core[is_big].mean()
    got = core[rows][is_big[rows]].mean()
    assert abs(got - expect) < 0.05 * expect, (got, expect)


def test_planted_cluster_and_lone_outliers_survive_the_overview():
    """10M points: the 50 points of a small far cluster and 8 lone outliers are all sent."""
    rng = np.random.default_rng(42)
    n = 10_000_000
    background = n // 100
    planted, lone = 50, 8
    bulk = n - background - planted - lone
    sizes = (np.array([0.4, 0.3, 0.2, 0.1]) * bulk).astype(int)
    sizes[0] += bulk - sizes.sum()
    centers = rng.uniform(-10, 10, (4, 3))
    parts = [
        (rng.normal(size=(s, 3)) * rng.uniform(0.5, 2.0) + c).astype(np.float32)
        for s, c in zip(sizes, centers, strict=True)
    ]
    parts.append(rng.uniform(-15, 15, (background, 3)).astype(np.float32))
    parts.append((rng.normal(scale=0.05, size=(planted, 3)) + [28, -26, 30]).astype(np.float32))
    direction = rng.normal(size=(lone, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    parts.append((direction * rng.uniform(30, 45, (lone, 1))).astype(np.float32))
    xyz = np.concatenate(parts)
    del parts
    group = np.repeat(np.arange(7), [*sizes, background, planted, lone])
    shuffle = rng.permutation(n)  # the planted rows are not at the end of the row order
    xyz, group = xyz[shuffle], group[shuffle]
    store = PointStore.from_arrays(xyz[:, 0], xyz[:, 1], xyz[:, 2], ids=np.arange(n))
    del xyz
    rows = sample(store, None)
    assert len(rows) == DEFAULT_BUDGET
    kept = np.bincount(group[rows], minlength=7)
    assert kept[5] == planted, kept  # the whole planted cluster
    assert kept[6] == lone, kept  # every lone outlier
    # The big clusters keep their proportions. Sparse regions gain (a row from every voxel,
    # rare voxels whole), within bounds: the 1 % background stays under a tenth of the sample.
    shares = kept[:4] / kept[:4].sum()
    np.testing.assert_allclose(shares, sizes / sizes.sum(), rtol=0.05)
    assert kept[4] / len(rows) < 0.1


# -- the view --------------------------------------------------------------------------------------
def test_box_from_view_state_follows_zoom():
    extent = Box((-1.0, -2.0, -1.0), (1.0, 2.0, 1.0))
    fit = math.log2(min(WIDTH, HEIGHT) / (4.0 * 1.3))  # as the 3D view frames a cloud
    assert box_from_view_state({"target": [0, 0, 0], "zoom": fit}, WIDTH, HEIGHT, extent) is None
    assert box_from_view_state({}, WIDTH, HEIGHT, extent) is None
    edges = []
    for k in (3, 4, 5):
        box = box_from_view_state(
            {"target": [0.1, 0.2, -0.1], "zoom": fit + k, "rotationOrbit": 40},
            WIDTH,
            HEIGHT,
            extent,
        )
        edge = np.asarray(box.hi) - np.asarray(box.lo)
        assert np.allclose(edge, edge[0]) and np.allclose(
            (np.asarray(box.hi) + box.lo) / 2, [0.1, 0.2, -0.1]
        )
        edges.append(edge[0])
    assert edges[1] == pytest.approx(edges[0] / 2) and edges[2] == pytest.approx(edges[1] / 2)
    # Rotation does not move the box; near an edge the box is clipped to the extent.
    state = {"target": [0.9, 0, 0], "zoom": fit + 3}
    a = box_from_view_state({**state, "rotationOrbit": 10}, WIDTH, HEIGHT, extent)
    b = box_from_view_state({**state, "rotationOrbit": 170, "rotationX": 60}, WIDTH, HEIGHT, extent)
    assert a == b and a.hi[0] == 1.0 and a.lo[0] < 0.9
    far = box_from_view_state({"target": [50, 50, 50], "zoom": fit + 6}, WIDTH, HEIGHT, extent)
    assert far is not None and far.lo[0] > 1.0  # looking at empty space: nothing to send


def test_zoomed_view_sends_full_density_once_it_fits():
    store = make_cloud(6, n=40_000, chunk_rows=512)
    e = store.extent
    span = max(np.asarray(e.hi) - np.asarray(e.lo))
    fit = math.log2(min(WIDTH, HEIGHT) / (span * 1.3))
    row = int(np.random.default_rng(0).integers(store.n))
    target = [float(store.x[row]), float(store.y[row]), float(store.z[row])]
    budget, full = 3000, None
    for k in range(12):
        box = box_from_view_state({"target": target, "zoom": fit + k}, WIDTH, HEIGHT, e)
        rows = sample(store, box, budget)
        if box is None:
            assert len(rows) == budget
            continue
        inside = store.rows_in(box)
        if len(inside) <= budget:
            np.testing.assert_array_equal(rows, inside)
            full = k if full is None else full
    assert full is not None and full > 1


# -- loading a dataset ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cloud") / "s"
    synth(root, points=SYNTH_POINTS, dims=(3,), progress=False)
    return root


def test_load_store_3d_joins_samples_and_maps_its_cache(synth_root):
    store = load_store(synth_root, "synth.3d", dims=3)
    assert load_store(synth_root, "synth.3d", dims=3) is store  # process-wide: loaded once
    assert not isinstance(store.x, np.memmap)
    ds = open_dataset(synth_root)
    table = ds.read_pandas("projections/synth.3d")
    samples = ds.read_pandas("samples").set_index("id")
    assert store.n == SYNTH_POINTS
    for axis in "xyz":
        np.testing.assert_array_equal(getattr(store, axis), table[axis].to_numpy(np.float32))
    np.testing.assert_array_equal(store.ids, table["id"].to_numpy())
    codes, names = store.categorical["label"]
    rows = np.random.default_rng(1).integers(0, store.n, 2000)
    expect = samples["label"].reindex(store.ids[rows]).to_numpy()
    np.testing.assert_array_equal(np.asarray(names, dtype=object)[codes[rows]], expect)
    np.testing.assert_array_equal(store.row_of(store.ids[rows]), rows)
    np.testing.assert_array_equal(sample(store, None), np.arange(store.n))  # fits the budget

    clear_stores()
    mapped = load_store(synth_root, "synth.3d", dims=3)
    assert mapped is not store
    for name in ("x", "y", "z", "ids", "rank"):
        assert isinstance(getattr(mapped, name), np.memmap), name
        np.testing.assert_array_equal(getattr(mapped, name), getattr(store, name))
    np.testing.assert_array_equal(mapped.bounds, store.bounds)
    assert mapped.categorical.keys() == store.categorical.keys()
    for k, (c, names) in store.categorical.items():
        assert isinstance(mapped.categorical[k][0], np.memmap)
        np.testing.assert_array_equal(mapped.categorical[k][0], c)
        assert mapped.categorical[k][1] == names
    for k, v in store.numeric.items():
        np.testing.assert_array_equal(mapped.numeric[k], v)
    box = Box((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(sample(mapped, box, 500), sample(store, box, 500))


@pytest.fixture
def small_root(tmp_path):
    """A dataset with a 3D projection ``cube`` and a 2D one ``flat``."""
    ds = Dataset.create(tmp_path / "small")
    w = ds.writer("samples")
    w.write_part(0, pa.table({"id": np.arange(300), "label": ["a", "b", "c"] * 100}))
    w.commit()
    rng = np.random.default_rng(0)
    write_projection(ds, "cube", np.arange(300), rng.normal(size=(300, 3)), meta={})
    write_projection(ds, "flat", np.arange(300), rng.normal(size=(300, 2)), meta={})
    return ds.root


def test_2d_or_missing_projection_is_refused_with_the_choices(small_root):
    with pytest.raises(DatasetError, match=r"'flat' has no z column.*\['cube'\]"):
        load_store(small_root, "flat", dims=3)
    with pytest.raises(DatasetError, match="no projection 'nope'"):
        load_store(small_root, "nope", dims=3)


def test_read_only_dataset_loads_without_a_cache(small_root, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    store = load_store(small_root, "cube", dims=3)
    assert store.n == 300 and not isinstance(store.x, np.memmap)
    assert not any((small_root / "cache" / "explorer").glob("cube*"))
    assert store.categories("label") == ["a", "b", "c"]


def test_one_loader_and_one_disk_cache_serve_2d_and_3d(small_root, monkeypatch):
    reads: list = []
    real = dataset_mod.read_manifest
    monkeypatch.setattr(dataset_mod, "read_manifest", lambda root: reads.append(root) or real(root))
    ds = open_dataset(small_root)
    flat, cube = load_store(ds, "cube"), load_store(ds, "cube", dims=3)
    assert len(reads) == 1  # the caller's open Dataset is used as it is
    load_store(small_root, "flat")
    assert len(reads) == 2  # a path is opened once
    assert (flat.dims, flat.z, flat.rank, cube.dims) == (2, None, None, 3)
    for name in ("x", "y", "ids"):
        np.testing.assert_array_equal(getattr(flat, name), getattr(cube, name))
    assert flat.categorical.keys() == cube.categorical.keys()
    assert isinstance(flat.extent, View) and isinstance(cube.extent, Box)
    # One runs() shape; a View on the 3D store is the column above the rectangle.
    e = flat.extent
    view = View(e.x0, (e.x0 + e.x1) / 2, e.y0, e.y1)
    assert flat.runs(view) == cube.runs(view) == [(0, flat.n)]
    np.testing.assert_array_equal(cube.rows_in(view), flat.rows_in(view))
    assert 0 < flat.count_in(view) < flat.n
    with pytest.raises(ValueError, match="no sampling rank"):
        sample(flat, None)
    # One disk cache: both stores under cache/explorer; the 3D one adds z and rank, no more.
    dirs = sorted((small_root / "cache" / "explorer").glob("cube--*"))
    assert len(dirs) == 2
    files = [{f.name for f in d.iterdir()} for d in dirs]
    assert files[0] ^ files[1] == {"z.npy", "rank.npy"}
