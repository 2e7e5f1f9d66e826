"""Compare two groups of samples (train / test / production, or two datasets merged): how far
apart their embeddings are, as one number, and where, cluster by cluster.

The shift number is the AUC of a neighbour-based domain classifier: each sample of A or B is
scored by how many of its nearest neighbours come from A (prior-corrected, so unequal group
sizes do not bias it). 0.5 means the groups are mixed everywhere; 1.0 means no sample of A
has a neighbour from B. It reads the neighbours table of ``embviz index`` when one exists (no
vectors in memory, any size); otherwise it searches a seeded sample of both groups exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ClusterCounts",
    "Shift",
    "cluster_counts",
    "neighbour_auc",
    "read_neighbours",
    "shift",
    "shift_vectors",
]


@dataclass(frozen=True)
class Shift:
    """How separable group A is from group B in embedding space."""

    auc: float  #: domain-classifier AUC: 0.5 = same distribution, 1.0 = fully apart
    n_a: int  #: samples of A scored
    n_b: int  #: samples of B scored
    k: int  #: neighbours per sample
    source: str  #: ``neighbours table`` or ``exact search on a sample``


@dataclass(frozen=True)
class ClusterCounts:
    """Per-cluster counts of two groups, most unbalanced cluster first."""

    clusters: list[str]
    n_a: np.ndarray  #: samples of A per cluster
    n_b: np.ndarray  #: samples of B per cluster
    share_a: np.ndarray  #: fraction of all A in the cluster
    share_b: np.ndarray  #: fraction of all B in the cluster

    def rows(self) -> list[dict]:
        """One dict per cluster: cluster, counts, shares and the share difference."""
        return [
            {
                "cluster": c,
                "a": int(a),
                "b": int(b),
                "share_a": float(sa),
                "share_b": float(sb),
                "difference": float(sa - sb),
            }
            for c, a, b, sa, sb in zip(
                self.clusters, self.n_a, self.n_b, self.share_a, self.share_b, strict=True
            )
        ]


def neighbour_auc(group: np.ndarray, neighbours: np.ndarray) -> float:
    """AUC of the neighbour vote for membership of A.

    Parameters
    ----------
    group : (n,) int8: 1 for A, 0 for B, -1 for rows in neither (ignored as query and as vote).
    neighbours : (n, k) int64 row numbers of each row's neighbours (-1 = none).

    Returns 0.5 when either group is empty or no row has a neighbour in A or B.
    """
    from sklearn.metrics import roc_auc_score

    group = np.asarray(group, dtype=np.int8)
    rows = np.flatnonzero(group >= 0)
    n_a, n_b = int((group == 1).sum()), int((group == 0).sum())
    if not n_a or not n_b:
        return 0.5
    nb = np.asarray(neighbours)[rows]
    g = np.where(nb >= 0, group[np.clip(nb, 0, None)], -1)
    votes_a = (g == 1).sum(axis=1) / n_a  # prior-corrected: a vote counts 1/|group|
    votes_b = (g == 0).sum(axis=1) / n_b
    total = votes_a + votes_b
    p = np.divide(votes_a, total, out=np.full(len(rows), 0.5), where=total > 0)
    return float(roc_auc_score(group[rows], p))


def read_neighbours(ds, embedding: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ids, neighbour ids (n, k))`` from the saved neighbours table of ``embedding``, or None
    when ``embviz index`` has not run for its current version."""
    import pyarrow.parquet as pq

    from .index import index_dir

    path = index_dir(ds, embedding) / "neighbours.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["id", "neighbours"])
    ids = table.column("id").to_numpy()
    flat = table.column("neighbours").combine_chunks()
    k = len(flat.values) // max(len(ids), 1)
    return ids, flat.values.to_numpy().reshape(len(ids), k)


def shift(
    ds,
    *,
    embedding: str,
    ids_a: np.ndarray,
    ids_b: np.ndarray,
    k: int = 10,
    sample: int = 20_000,
    seed: int = 0,
) -> Shift:
    """The domain-classifier AUC between the samples ``ids_a`` and ``ids_b``.

    Parameters
    ----------
    ds : an opened dataset.
    embedding : embedding name whose neighbours are used.
    ids_a, ids_b : sample ids of the two groups (disjoint).
    k : neighbours per sample when searching (the saved table's k otherwise).
    sample : without a saved neighbours table, at most this many samples of each group are
        searched exactly (seeded, :func:`shift_vectors`): the AUC of a sample estimates the
        AUC of all.
    seed : seeds that sample.
    """
    ids_a = np.asarray(ids_a, dtype=np.int64)
    ids_b = np.asarray(ids_b, dtype=np.int64)
    saved = read_neighbours(ds, embedding)
    if saved is not None:
        ids, nbr = saved
        where = _positions(ids)
        group = np.full(len(ids), -1, dtype=np.int8)
        group[_lookup(where, ids_a)] = 1
        group[_lookup(where, ids_b)] = 0
        rows = _lookup(where, nbr.reshape(-1)).reshape(nbr.shape)
        auc = neighbour_auc(group, rows)
        return Shift(auc, len(ids_a), len(ids_b), nbr.shape[1], "neighbours table")
    rng = np.random.default_rng(seed)  # sample the ids first: only their vectors are read
    if len(ids_a) > sample:
        ids_a = np.sort(rng.choice(ids_a, sample, replace=False))
    if len(ids_b) > sample:
        ids_b = np.sort(rng.choice(ids_b, sample, replace=False))
    return shift_vectors(
        _vectors(ds, embedding, ids_a),
        _vectors(ds, embedding, ids_b),
        k=k,
        sample=sample,
        seed=seed,
    )


def shift_vectors(
    a: np.ndarray,
    b: np.ndarray,
    *,
    k: int = 10,
    sample: int = 20_000,
    seed: int = 0,
    metric: str = "cosine",
) -> Shift:
    """The domain-classifier AUC between the rows of ``a`` and of ``b`` (vectors or map
    coordinates), searching at most ``sample`` seeded rows of each exactly.

    ``metric``: ``cosine`` for embeddings, ``l2`` for coordinates. Fewer than two rows in all
    give 0.5.
    """
    from .index import NeighbourIndex

    rng = np.random.default_rng(seed)
    a, b = np.asarray(a), np.asarray(b)
    if len(a) > sample:
        a = a[np.sort(rng.choice(len(a), sample, replace=False))]
    if len(b) > sample:
        b = b[np.sort(rng.choice(len(b), sample, replace=False))]
    source = "exact search on a sample"
    both = np.concatenate([a, b]).astype(np.float32, copy=False)
    k_eff = min(k, len(both) - 1)
    if k_eff < 1 or not len(a) or not len(b):
        return Shift(0.5, len(a), len(b), 0, source)
    rows = np.arange(len(both), dtype=np.int64)
    index = NeighbourIndex.build(rows, both, kind="flat", metric=metric)
    nbr, _ = index.neighbours(k_eff, progress=False)
    group = np.concatenate([np.ones(len(a), np.int8), np.zeros(len(b), np.int8)])
    return Shift(neighbour_auc(group, nbr), len(a), len(b), k_eff, source)


def cluster_counts(
    in_a: np.ndarray, in_b: np.ndarray, clusters: np.ndarray, names: list[str]
) -> ClusterCounts:
    """Counts of groups A and B per cluster, the cluster with the largest share gap first.

    Parameters
    ----------
    in_a, in_b : (n,) bool masks of the two groups.
    clusters : (n,) integer cluster codes, indexing ``names``.
    names : cluster names.
    """
    codes = np.asarray(clusters, dtype=np.int64)
    n_a = np.bincount(codes[np.asarray(in_a, bool)], minlength=len(names))
    n_b = np.bincount(codes[np.asarray(in_b, bool)], minlength=len(names))
    share_a = n_a / max(int(n_a.sum()), 1)
    share_b = n_b / max(int(n_b.sum()), 1)
    order = np.argsort(-np.abs(share_a - share_b), kind="stable")
    keep = order[(n_a[order] + n_b[order]) > 0]
    return ClusterCounts(
        [str(names[i]) for i in keep], n_a[keep], n_b[keep], share_a[keep], share_b[keep]
    )


def _positions(ids: np.ndarray) -> np.ndarray:
    """A dense id -> row table (-1 where an id is absent)."""
    where = np.full(int(ids.max(initial=-1)) + 2, -1, dtype=np.int64)
    where[ids] = np.arange(len(ids))
    return where


def _lookup(where: np.ndarray, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    ok = (ids >= 0) & (ids < len(where))
    out = np.full(len(ids), -1, dtype=np.int64)
    out[ok] = where[ids[ok]]
    return out


def _vectors(ds, embedding: str, ids: np.ndarray) -> np.ndarray:
    """The embedding vectors of ``ids``, in that order."""
    from .dataset import table_to_vectors

    key = f"embeddings/{embedding}"
    table = ds.read_arrow(key)
    have, vectors = table_to_vectors(table)
    rows = _lookup(_positions(np.asarray(have, dtype=np.int64)), ids)
    if (rows < 0).any():
        from .errors import DatasetError

        missing = int(ids[np.flatnonzero(rows < 0)[0]])
        raise DatasetError(f"{ds.root}: sample {missing} has no vector in {key}")
    return np.asarray(vectors)[rows]
