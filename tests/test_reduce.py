"""Tests for the reducers and the reduce step: quality thresholds, seeds, samples, splits, layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits, make_blobs
from sklearn.manifold import trustworthiness
from sklearn.neighbors import KNeighborsClassifier

from embviz.curve import hilbert_distances
from embviz.dataset import Dataset, open_dataset, vectors_to_table
from embviz.errors import ConfigError, DatasetError
from embviz.pipeline.reduce import reduce, write_projection
from embviz.reducers import available_reducers, get_reducer


def make_dataset(root, X, y, *, parts=3, name="x.pooled", test_every=4):
    """A dataset with a samples table (every ``test_every``-th row is test) and one embedding."""
    ds = Dataset.create(root)
    n = len(X)
    ids = np.arange(n, dtype=np.int64) * 10 + 7  # ids are not row positions
    split = np.where(np.arange(n) % test_every == 0, "test", "train")
    samples = pa.table(
        {
            "id": ids,
            "uri": pa.nulls(n, pa.string()),
            "label": [f"class_{int(v):02d}" for v in y],
            "split": split,
            "width": np.full(n, 8, np.int32),
            "height": np.full(n, 8, np.int32),
            "content_hash": pa.nulls(n, pa.string()),
            "thumb_id": np.arange(n, dtype=np.int64),
        }
    )
    w = ds.writer("samples")
    w.write_part(0, samples)
    w.commit({})
    add_embedding(ds, name, ids, X, parts=parts)
    return ds.reload()


def add_embedding(ds, name, ids, X, *, parts):
    w = ds.writer(f"embeddings/{name}")
    for i, chunk in enumerate(np.array_split(np.arange(len(X)), parts)):
        w.write_part(i, vectors_to_table(ids[chunk], X[chunk]))
    w.commit({"model": "test"})


def read_projection(ds, name):
    """``{id: coords}`` ordered by id, from the stored projection."""
    t = open_dataset(ds.root).read_arrow(f"projections/{name}")
    ids = t.column("id").to_numpy()
    cols = [c for c in ("x", "y", "z") if c in t.column_names]
    coords = np.stack([t.column(c).to_numpy() for c in cols], axis=1)
    order = np.argsort(ids)
    return ids[order], coords[order]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=600, n_features=20, centers=6, cluster_std=2.0, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("method", ["pca", "umap", "tsne", "pacmap"])
def test_reducer_quality_and_seed(method, blobs):
    X, _ = blobs
    params = {"n_iter": 250} if method == "tsne" else {}
    a = get_reducer(method, dims=2, seed=3, **params).fit_transform(X)
    b = get_reducer(method, dims=2, seed=3, **params).fit_transform(X)
    assert a.shape == (len(X), 2) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert trustworthiness(X, a, n_neighbors=10) >= 0.85


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_reducer_3d_and_params(method, blobs):
    X, _ = blobs
    r = get_reducer(method, dims=3, seed=0, pca=10, **({"n_iter": 250} if method == "tsne" else {}))
    Y = r.fit_transform(X)
    assert Y.shape == (len(X), 3) and np.isfinite(Y).all()
    assert r.transform(X[:5]).shape == (5, 3)
    assert r.params["method"] == method and r.params["pca_components"] == 10


def test_pca_variance_fraction(digits):
    X, _ = digits
    from sklearn.decomposition import PCA

    want = int(np.searchsorted(np.cumsum(PCA().fit(X).explained_variance_ratio_), 0.9) + 1)
    r = get_reducer("pca", dims=2, pca=0.9).fit(X)
    assert r.pca_components_ == want
    assert 10 < want < 64


def test_unknown_names_are_listed():
    with pytest.raises(ConfigError, match=r"'nope'.*pacmap.*pca.*tsne.*umap"):
        get_reducer("nope", dims=2)
    with pytest.raises(ConfigError, match=r"'perplexty'.*perplexity"):
        get_reducer("tsne", dims=2, perplexty=5)
    with pytest.raises(ConfigError, match="dims"):
        get_reducer("pca", dims=4)
    with pytest.raises(ConfigError, match="pca"):
        get_reducer("pca", dims=2, pca=1.5)
    with pytest.raises(ConfigError, match=r"'init'.*'pca', 'spectral' or 'random'"):
        get_reducer("umap", dims=2, init="tsvd")
    assert available_reducers() == ["pacmap", "pca", "tsne", "umap"]


def _knn_accuracy(train_xy, train_y, test_xy, test_y, k=10):
    return KNeighborsClassifier(k).fit(train_xy, train_y).score(test_xy, test_y)


def test_fit_sample_then_transform_keeps_classes(tmp_path, digits):
    X, y = digits
    ds = make_dataset(tmp_path / "ds", X, y)
    r = reduce(ds, method="umap", sample=600, seed=1, progress=False)
    assert r.table == "projections/x.pooled.umap2d"
    assert (r.rows, r.sample_rows) == (len(X), 600)
    ids, xy = read_projection(ds, "x.pooled.umap2d")
    np.testing.assert_array_equal(ids, np.arange(len(X)) * 10 + 7)
    # which rows were fitted: read back from the seeded sample
    rng = np.random.default_rng(1)
    fitted = np.zeros(len(X), bool)
    fitted[rng.choice(len(X), size=600, replace=False)] = True
    assert _knn_accuracy(xy[fitted], y[fitted], xy[~fitted], y[~fitted]) >= 0.8
    # the fitted rows keep exactly their fit_transform coordinates
    direct = get_reducer("umap", dims=2, seed=1).fit_transform(X[np.flatnonzero(fitted)])
    np.testing.assert_allclose(xy[fitted], direct, atol=1e-5)
    steps = open_dataset(ds.root).manifest["steps"]
    assert steps[-1]["step"] == "reduce" and steps[-1]["params"]["sample"] == 600


def test_fit_on_train_projects_test_near_its_class(tmp_path, digits):
    X, y = digits
    ds = make_dataset(tmp_path / "ds", X, y)
    r = reduce(ds, method="pacmap", fit_split="train", name="tr", progress=False)
    test = np.arange(len(X)) % 4 == 0
    assert r.sample_rows == int((~test).sum())
    _, xy = read_projection(ds, "tr")
    assert _knn_accuracy(xy[~test], y[~test], xy[test], y[test]) >= 0.8
    assert open_dataset(ds.root).meta("projections/tr")["fit_split"] == "train"
    with pytest.raises(DatasetError, match=r"'val'.*splits present.*test.*train"):
        reduce(ds, method="pca", fit_split="val", progress=False)


def test_fit_embedding_and_fit_dataset(tmp_path, digits):
    X, y = digits
    ds = make_dataset(tmp_path / "ds", X, y)
    ids = np.arange(len(X), dtype=np.int64) * 10 + 7
    Xb = X + np.random.default_rng(0).normal(scale=0.5, size=X.shape).astype(np.float32)
    add_embedding(ds, "y.pooled", ids, Xb, parts=2)
    ds.reload()
    reduce(ds, embedding="y.pooled", fit_embedding="x.pooled", method="pca", progress=False)
    _, got = read_projection(ds, "y.pooled.pca2d")
    want = get_reducer("pca", dims=2).fit(X).transform(Xb)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert open_dataset(ds.root).meta("projections/y.pooled.pca2d")["fit_table"] == (
        "embeddings/x.pooled"
    )
    other = make_dataset(tmp_path / "other", X[::2], y[::2], parts=1)
    reduce(
        ds,
        embedding="y.pooled",
        fit_dataset=other,
        fit_embedding="x.pooled",
        method="pca",
        name="f",
        progress=False,
    )
    _, got = read_projection(ds, "f")
    want = get_reducer("pca", dims=2).fit(X[::2]).transform(Xb)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    with pytest.raises(DatasetError, match=r"'embeddings/z'.*x.pooled.*y.pooled"):
        reduce(ds, embedding="z", progress=False)


def test_projection_is_hilbert_sorted_with_bounds(tmp_path, digits):
    X, y = digits
    ds = make_dataset(tmp_path / "ds", X, y)
    reduce(ds, method="pca", dims=3, partition_rows=500, progress=False)
    ds = open_dataset(ds.root)
    entry = ds.table("projections/x.pooled.pca3d")
    meta = entry["meta"]
    assert meta["curve"] == "hilbert" and meta["dims"] == 3 and meta["method"] == "pca"
    assert entry["rows"] == len(X) and [p["rows"] for p in entry["partitions"]] == [500] * 3 + [297]
    t = ds.read_arrow("projections/x.pooled.pca3d")
    assert t.schema.types == [pa.int64(), pa.float32(), pa.float32(), pa.float32()]
    coords = np.stack([t.column(c).to_numpy() for c in "xyz"], axis=1)
    for i, axis in enumerate("xyz"):
        assert meta["bounds"][axis] == [float(coords[:, i].min()), float(coords[:, i].max())]
    assert (np.diff(hilbert_distances(coords, meta["bounds"])) >= 0).all()
    start = 0
    paths = ds.part_paths("projections/x.pooled.pca3d")
    for part, path in zip(entry["partitions"], paths, strict=True):
        chunk = coords[start : start + part["rows"]]
        start += part["rows"]
        for i, axis in enumerate("xyz"):
            assert part["bounds"][axis] == [float(chunk[:, i].min()), float(chunk[:, i].max())]
        md = pq.ParquetFile(path).metadata
        assert md.row_group(0).column(1).statistics.has_min_max


def test_write_projection_empty_and_validation(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    entry = write_projection(ds, "empty", np.zeros(0), np.zeros((0, 2)), meta={})
    assert entry["rows"] == 0 and entry["meta"]["bounds"] == {}
    ids, coords = np.array([4, 5, 6]), np.array([[0, 0], [np.nan, 1], [2, np.inf]])
    with pytest.raises(ValueError, match="non-finite.*id 5"):
        write_projection(ds, "bad", ids, coords, meta={}, strict=True)
    # By default such rows are left off the map and counted.
    entry = write_projection(ds, "bad", ids, coords, meta={})
    assert entry["rows"] == 1 and entry["meta"]["unplaced"] == 2


def test_same_result_over_1_2_4_partitions(tmp_path, digits):
    X, y = digits
    results = []
    for parts in (1, 2, 4):
        ds = make_dataset(tmp_path / f"ds{parts}", X, y, parts=parts)
        reduce(ds, method="umap", sample=1000, progress=False)
        results.append(read_projection(ds, "x.pooled.umap2d"))
    for ids, xy in results[1:]:
        np.testing.assert_array_equal(ids, results[0][0])
        np.testing.assert_allclose(xy, results[0][1], atol=1e-4)


@pytest.mark.cluster
def test_local_cluster_matches_local(tmp_path, digits):
    from distributed import Client, LocalCluster

    X, y = digits
    ds = make_dataset(tmp_path / "ds", X, y, parts=4)
    reduce(ds, method="umap", sample=1000, name="local", progress=False)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        reduce(ds, method="umap", sample=1000, name="dask", scheduler=client, progress=False)
    ids_l, xy_l = read_projection(ds, "local")
    ids_d, xy_d = read_projection(ds, "dask")
    np.testing.assert_array_equal(ids_l, ids_d)
    np.testing.assert_allclose(xy_l, xy_d, atol=1e-4)
