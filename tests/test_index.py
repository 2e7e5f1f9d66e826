"""Neighbour index: exact answers match sklearn, HNSW recall, persistence and the ``index`` step."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embviz.dataset import Dataset, vectors_to_table
from embviz.index import NeighbourIndex, build_index


def _clustered(n: int, dim: int, *, clusters: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(clusters, dim)).astype(np.float32)
    return centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim)).astype(np.float32)


def test_exact_matches_sklearn_cosine():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    ids = np.arange(2000, dtype=np.int64) * 7 + 3  # ids are not row numbers
    nidx = NeighbourIndex.build(ids, x, metric="cosine")
    assert nidx.kind == "IndexFlatIP"
    q = x[:200]
    got_ids, got_dist = nidx.query(q, 10)
    ref_dist, ref_rows = (
        NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(x).kneighbors(q)
    )
    np.testing.assert_allclose(got_dist, ref_dist, atol=1e-5)
    # Rows can swap only where distances tie (to float32 precision).
    same = got_ids == ids[ref_rows]
    assert same.mean() > 0.99
    assert np.allclose(got_dist[~same], ref_dist[~same], atol=1e-5)
    assert got_ids.dtype == np.int64 and got_dist.dtype == np.float32


def test_l2_distances_are_euclidean():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 8)).astype(np.float32)
    nidx = NeighbourIndex.build(np.arange(500), x, metric="l2")
    ids, dist = nidx.query(x[:5], 3)
    expected = np.linalg.norm(x[ids] - x[:5, None, :], axis=2)
    np.testing.assert_allclose(dist, expected, rtol=1e-4, atol=1e-4)
    assert (ids[:, 0] == np.arange(5)).all()


def test_approximate_recall_at_10_against_exact():
    x = _clustered(50_000, 32)
    ids = np.arange(len(x))
    approx = NeighbourIndex.build(ids, x, exact_below=10_000)
    assert approx.kind == "IndexIVFFlat"
    exact = NeighbourIndex(build_index(x, kind="flat"), ids)
    q = _clustered(500, 32, seed=9)
    a, _ = approx.query(q, 10)
    e, _ = exact.query(q, 10)
    recall = np.mean([len(set(r) & set(s)) / 10 for r, s in zip(a, e, strict=True)])
    assert recall >= 0.9


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(tmp_path, kind):
    x = _clustered(3000, 16)
    ids = np.arange(3000) + 100
    nidx = NeighbourIndex.build(ids, x, kind=kind, nlist=32)
    nidx.save(tmp_path / "idx")
    back = NeighbourIndex.load(tmp_path / "idx")
    assert back.kind == nidx.kind and back.metric == nidx.metric
    q = x[::50]
    for got, want in zip(back.query(q, 7), nidx.query(q, 7), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(back.query_id(150, 5)[0], nidx.query_id(150, 5)[0])
    assert not any(p.suffix == ".pkl" for p in (tmp_path / "idx").iterdir())


def test_query_id_excludes_itself_even_with_duplicates():
    x = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    nidx = NeighbourIndex.build(np.array([10, 11, 12, 13]), x)
    for sid in (10, 11):
        got, dist = nidx.query_id(sid, 2)
        assert sid not in got and len(got) == 2
        assert got[0] == ({10, 11} - {sid}).pop() and dist[0] == pytest.approx(0, abs=1e-6)
    with pytest.raises(KeyError, match="99"):
        nidx.query_id(99, 2)


def test_unknown_metric_and_kind_list_the_valid_ones():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="cosine"):
        build_index(x, metric="hamming")
    with pytest.raises(ValueError, match="hnsw"):
        build_index(x, kind="annoy")


@pytest.fixture
def toy_dataset(tmp_path):
    """300 samples in 3 clusters with an 8-D embedding ``toy.pooled``; ids 1000..1299."""
    n = 300
    ds = Dataset.create(tmp_path / "toy", name="toy")
    ids = np.arange(n) + 1000
    w = ds.writer("samples")
    w.write_part(0, pa.table({"id": ids, "label": [f"c{i % 3}" for i in range(n)]}))
    w.commit()
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=3.0, size=(3, 8)).astype(np.float32)
    x = centres[np.arange(n) % 3] + rng.normal(size=(n, 8)).astype(np.float32)
    w = ds.writer("embeddings/toy.pooled")
    w.write_part(0, vectors_to_table(ids[:150], x[:150]))
    w.write_part(1, vectors_to_table(ids[150:], x[150:]))
    w.commit(meta={"model": "toy", "layer": "pooled"})
    return ds


def test_index_step_writes_neighbours_and_reuses(toy_dataset):
    from embviz.pipeline.index import NEIGHBOURS_FILE, index

    ds = toy_dataset
    r = index(ds, embedding="toy.pooled", k=5, progress=False)
    assert not r.reused and r.rows == 300 and r.k == 5 and r.kind == "IndexFlatIP"
    table_dir = ds.table("embeddings/toy.pooled")["dir"].split("/")[-1]
    assert r.directory == ds.root / "index" / table_dir
    assert r.directory.name.startswith("toy.pooled--")

    t = pq.read_table(r.directory / NEIGHBOURS_FILE)
    assert t.num_rows == 300
    for name, value_type in [("neighbours", pa.int64()), ("distances", pa.float32())]:
        assert pa.types.is_list(t.schema.field(name).type)
        assert t.schema.field(name).type.value_type == value_type
    ids = t.column("id").to_numpy()
    nbrs = np.array(t.column("neighbours").to_pylist())
    dist = np.array(t.column("distances").to_pylist())
    assert nbrs.shape == (300, 5) and dist.shape == (300, 5)
    assert not (nbrs == ids[:, None]).any()
    assert np.isin(nbrs, ids).all()
    assert (np.diff(dist, axis=1) >= -1e-6).all()  # nearest first

    # The stored index answers like the table, and neighbours share a cluster.
    nidx = NeighbourIndex.load(r.directory)
    got, _ = nidx.query_id(int(ids[0]), 5)
    np.testing.assert_array_equal(got, nbrs[0])
    label = dict(zip(ids, ds.read_pandas("samples")["label"], strict=True))
    same = np.mean([label[a] == label[b] for a, row in zip(ids, nbrs, strict=True) for b in row])
    assert same > 0.95

    again = index(ds, embedding="toy.pooled", k=5, progress=False)
    assert again.reused and again.directory == r.directory and again.rows == 300
    stamp = (r.directory / NEIGHBOURS_FILE).stat().st_mtime_ns

    other = index(ds, embedding="toy.pooled", k=3, progress=False)
    assert not other.reused and other.k == 3
    assert pq.read_table(other.directory / NEIGHBOURS_FILE).column("neighbours")[0].as_py()
    forced = index(ds, embedding="toy.pooled", k=3, force=True, progress=False)
    assert not forced.reused
    assert (forced.directory / NEIGHBOURS_FILE).stat().st_mtime_ns >= stamp
    # Only the current folder is left: no temp or old copies.
    assert [p.name for p in (ds.root / "index").iterdir()] == [r.directory.name]
    assert ds.reload().manifest["steps"][-1]["step"] == "index"


def test_index_step_rebuilds_for_a_new_embedding_version(toy_dataset):
    from embviz.pipeline.index import index

    ds = toy_dataset
    first = index(ds, embedding="toy.pooled", k=4, progress=False)
    ids, x = ds.read_vectors("toy.pooled")
    w = ds.writer("embeddings/toy.pooled")
    w.write_part(0, vectors_to_table(ids, x[::-1]))
    w.commit()
    second = index(ds, embedding="embeddings/toy.pooled", k=4, progress=False)
    assert not second.reused and second.directory != first.directory
    assert not first.directory.exists()


def test_index_step_names_the_missing_embedding(toy_dataset):
    from embviz.errors import DatasetError
    from embviz.pipeline.index import index

    with pytest.raises(DatasetError, match="toy.pooled"):
        index(toy_dataset, embedding="nope.pooled", progress=False)
