"""Neighbour index: build time, single-query latency and recall@20 over 64-D clustered vectors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

DIM = 64
K = 20
QUERIES = 200


def _vectors(n: int, *, clusters: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(scale=3.0, size=(clusters, DIM))
    x = centres.astype(np.float32)[rng.integers(0, clusters, n)]
    return x + rng.normal(size=(n, DIM)).astype(np.float32)


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Return ``index.build_seconds``, ``index.query_ms`` and ``index.recall_at_20``.

    The index is what the ``index`` step builds by default (cosine; exact up to 200K rows,
    IVF above). ``query_ms`` is the median of 200 single-vector top-20 queries after 20 warm-up
    queries; recall is against exact brute force on the same 200 queries.
    """
    from embviz.index import NeighbourIndex, build_index

    n = 100_000 if quick else 1_000_000
    x = _vectors(n)
    ids = np.arange(n, dtype=np.int64)
    queries = _vectors(QUERIES + 20, seed=1)

    t0 = time.perf_counter()
    nidx = NeighbourIndex(build_index(x), ids)
    build = time.perf_counter() - t0

    for q in queries[QUERIES:]:
        nidx.query(q, K)
    times, found = [], []
    for q in queries[:QUERIES]:
        t0 = time.perf_counter()
        got, _ = nidx.query(q, K)
        times.append(time.perf_counter() - t0)
        found.append(got[0])

    exact = NeighbourIndex(build_index(x, kind="flat"), ids)
    truth, _ = exact.query(queries[:QUERIES], K)
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)]))

    params = {"points": n, "dim": DIM, "k": K, "metric": "cosine", "index": nidx.kind}
    return [
        {"name": "index.build_seconds", "params": params, "value": build, "unit": "s"},
        {
            "name": "index.query_ms",
            "params": params,
            "value": float(np.median(times) * 1000),
            "unit": "ms",
        },
        {"name": "index.recall_at_20", "params": params, "value": recall, "unit": "fraction"},
    ]


if __name__ == "__main__":
    import sys

    for r in run(Path("."), quick="--quick" in sys.argv):
        print(r)
