"""k-means clusters of the embedding vectors, numbered largest first."""

from __future__ import annotations

import numpy as np

__all__ = ["assign_clusters", "cluster_names", "default_clusters", "fit_centroids"]


def default_clusters(n: int) -> int:
    """The default cluster count for ``n`` rows: 20, fewer below 1,000 rows (one per 50)."""
    return int(min(20, max(1, n // 50)))


def fit_centroids(
    vectors: np.ndarray, *, k: int, metric: str = "cosine", seed: int = 0, niter: int = 20
) -> np.ndarray:
    """k-means centroids of ``vectors`` (faiss; spherical for ``cosine``). ``k`` is capped at n.

    Fit on a sample (a few hundred rows per centroid is plenty) and label every row with
    :func:`assign_clusters`.
    """
    from ..index import _faiss, _prepare

    faiss = _faiss()
    x = _prepare(vectors, metric)
    k = int(max(1, min(k, len(x))))
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=metric == "cosine",
        min_points_per_centroid=1,  # no faiss warning on small data sets
        max_points_per_centroid=512,
    )
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32)


def assign_clusters(vectors: np.ndarray, centroids: np.ndarray, *, metric: str = "cosine"):
    """The nearest centroid's number for each row, int64 ``(n,)``."""
    from ..index import _faiss, _prepare

    faiss = _faiss()
    x = _prepare(vectors, metric)
    index = faiss.IndexFlatIP(x.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = index.search(x, 1)
    return nearest[:, 0].astype(np.int64)


def cluster_names(codes: np.ndarray, k: int) -> tuple[np.ndarray, list[str]]:
    """Renumber clusters largest first and name them with zero-padded numbers.

    Returns ``(codes, names)``: codes ``(n,)`` with 0 the largest cluster (-1 stays -1) and
    names ``["00", "01", ...]`` (strings, so they sort and read as categories).
    """
    codes = np.asarray(codes, dtype=np.int64)
    size = np.bincount(codes[codes >= 0], minlength=k)
    order = np.argsort(-size, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    width = len(str(max(k - 1, 0)))
    renumbered = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
    return renumbered, [f"{i:0{width}d}" for i in range(k)]
