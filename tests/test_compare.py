"""Split comparison: the domain-classifier AUC separates shifted groups from mixed ones, with and
without a saved neighbours table, and per-cluster counts put the most unbalanced cluster first."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from embviz.compare import cluster_counts, neighbour_auc, shift
from embviz.dataset import Dataset, vectors_to_table


def _two_groups(tmp_path, offset: float, *, n: int = 600, seed: int = 0):
    """``n`` samples, the first half group A, the second B; B's vectors moved by ``offset``."""
    rng = np.random.default_rng(seed)
    ds = Dataset.create(tmp_path / f"ds{offset}", name="groups")
    ids = np.arange(n, dtype=np.int64) + 10
    split = np.where(np.arange(n) < n // 2, "train", "prod")
    w = ds.writer("samples")
    w.write_part(0, pa.table({"id": ids, "split": split}))
    w.commit()
    x = rng.normal(size=(n, 16)).astype(np.float32) + 4.0  # away from 0 so cosine is meaningful
    x[n // 2 :, 0] += offset
    w = ds.writer("embeddings/toy.pooled")
    w.write_part(0, vectors_to_table(ids, x))
    w.commit(meta={"model": "toy", "layer": "pooled"})
    return ds, ids[: n // 2], ids[n // 2 :]


@pytest.mark.parametrize("saved", [False, True])
def test_shift_auc_high_for_moved_groups_and_near_half_for_mixed(tmp_path, saved):
    results = {}
    for offset in (0.0, 8.0):
        ds, a, b = _two_groups(tmp_path, offset)
        if saved:
            from embviz.pipeline.index import index

            index(ds, embedding="toy.pooled", k=10, progress=False)
        results[offset] = shift(ds, embedding="toy.pooled", ids_a=a, ids_b=b)
    assert results[8.0].auc > 0.95
    assert abs(results[0.0].auc - 0.5) < 0.1
    expected = "neighbours table" if saved else "exact search on a sample"
    assert results[0.0].source == expected and results[0.0].n_a == 300


def test_shift_on_a_sample_estimates_the_whole(tmp_path):
    ds, a, b = _two_groups(tmp_path, 8.0)
    small = shift(ds, embedding="toy.pooled", ids_a=a, ids_b=b, sample=100)
    assert small.n_a == 100 and small.n_b == 100
    assert small.auc > 0.9


def test_neighbour_auc_ignores_rows_in_neither_group_and_corrects_for_size():
    # 10 rows of A whose neighbours are all A, 90 rows of B whose neighbours are A and B in
    # proportion to the group sizes: with the prior correction B scores ~0.5, A 1.0.
    group = np.array([1] * 10 + [0] * 90 + [-1] * 5, dtype=np.int8)
    nbr = np.zeros((105, 10), dtype=np.int64)
    nbr[10:100] = np.r_[0, np.arange(11, 20)]  # one A neighbour, nine B neighbours
    nbr[100:] = 0
    assert neighbour_auc(group, nbr) == pytest.approx(1.0)
    assert neighbour_auc(np.array([1, 1, -1], np.int8), np.zeros((3, 1), np.int64)) == 0.5


def test_cluster_counts_order_by_share_gap():
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    in_a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    in_b = ~in_a
    counts = cluster_counts(in_a, in_b, clusters, ["c0", "c1", "c2", "empty"])
    assert counts.clusters[0] in ("c0", "c2")  # c0: 3/4 of A vs 0 of B; c2: 0 vs 5/6
    assert "empty" not in counts.clusters
    rows = {r["cluster"]: r for r in counts.rows()}
    assert rows["c0"]["a"] == 3 and rows["c0"]["b"] == 0
    assert rows["c2"]["difference"] == pytest.approx(0 - 5 / 6)
    assert sum(r["a"] for r in rows.values()) == 4
