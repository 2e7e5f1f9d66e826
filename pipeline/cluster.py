"""The ``cluster`` step: clusters at several levels (coarse to fine) on each 2D map, each named.

Algorithm, per 2D projection (measured on 10M synthetic points, 2 cores; the whole step takes
7-9 s there, ``clusters.seconds`` in BENCHMARKS.md):

1. **Finest level: k-means in 2D** (faiss), fitted on a seeded sample of 256 points per
   centroid, then every point assigned to its nearest centroid (0.9 s fit + 1.1 s assignment
   for k = 128 at 10M points). HDBSCAN (``sklearn.cluster.HDBSCAN``) was measured too: 21 s on
   a 50,000-point sample alone, and it left 80 % of the points as noise, which would get no
   name; k-means gives every point a cluster and a chosen count per level, which is what a
   zoom-dependent label layer needs.
2. **Coarser levels: weighted Ward merging of the fine centroids** (each weighted by its point
   count), cut at each coarser count. Ward merges the pair that raises the within-cluster
   squared error least, so it approximates k-means at the coarse counts, needs no pass over
   the points, and the levels nest exactly: every fine cluster lies in one coarse cluster
   (its ``parent``).
3. Per cluster: **size**, **majority label** and **purity** (its share of the labelled points)
   from the samples' ``label``; **centre** = the medoid of up to 256 of its points sampled in
   proportion (a point of the cluster, never the empty middle of a ring); **typical sample** =
   of those points the one nearest the cluster's mean direction (cosine) in the embedding the
   projection came from, read by id for the sampled points only, when that embedding has at
   most :data:`TYPICAL_MAX_ROWS` rows (above, or without an embedding, the medoid: the meta
   records ``typical_space``); **name** = the best of the user's text prompts for a CLIP-like
   model (cosine of the cluster's mean image vector and each prompt's text vector), else the
   majority label with its purity (``"7 - 92%"``), else ``"cluster 3"``.

Written as ``clusters/<projection>`` (see :mod:`embviz.clusters`): per point ``id`` and
``cluster_l0`` ... (int32, numbered largest first), in the projection's row order and
partitions, with the per-cluster records in ``clusters.parquet`` beside the partitions (same
atomic publish). Reused while the projection, the samples, the embedding, the prompts and the
options are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embviz.clusters import clusters_key, level_column
from embviz.dataset import Dataset
from embviz.errors import DatasetError

from .choose import as_dataset
from .cluster_summary import label_codes, read_prompts, summaries, text_vectors, vectors

__all__ = [
    "SUMMARY_FILE",
    "TYPICAL_MAX_ROWS",
    "ClusterResult",
    "cluster",
    "level_sizes",
    "read_prompts",
]

#: The typical sample is found in the source embedding up to this many rows (reading the
#: sampled points' vectors touches every partition of the table: ~1 s per GB).
TYPICAL_MAX_ROWS = 2_000_000
#: k-means trains on at most this many points per centroid.
TRAIN_PER_CENTROID = 256
#: Clusters per level: 8 at level 0, four times more at each finer level ...
BASE_CLUSTERS, GROWTH = 8, 4
#: ... but never fewer than this many points per cluster on average.
MIN_CLUSTER_ROWS = 20
#: The per-cluster records, written beside the table's partitions.
SUMMARY_FILE = "clusters.parquet"


@dataclass(frozen=True)
class ClusterResult:
    """What :func:`cluster` wrote.

    Attributes
    ----------
    tables:
        The table keys written or reused (``clusters/<projection>``).
    rows:
        Points clustered, over all projections.
    levels:
        Clusters per level, coarse to fine, per projection.
    named_by:
        How the clusters were named per projection: ``prompts``, ``label`` or ``number``.
    typical_space:
        Per projection, where the typical sample was found: ``embedding`` or ``map``.
    seconds:
        Wall time of the whole step.
    reused:
        True when every table already matched these inputs (``force=True`` recomputes).
    """

    tables: tuple[str, ...]
    rows: int
    levels: dict[str, list[int]]
    named_by: dict[str, str]
    typical_space: dict[str, str]
    seconds: float
    reused: bool = False


def level_sizes(n: int, levels: int = 3) -> list[int]:
    """Clusters per level for ``n`` points: 8, 32, 128 ... (x4 a level), at most one per
    :data:`MIN_CLUSTER_ROWS` points; levels that would repeat a count are dropped."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    cap = max(1, n // MIN_CLUSTER_ROWS)
    return sorted({min(BASE_CLUSTERS * GROWTH**i, cap) for i in range(levels)})


def _targets(ds: Dataset, projection: str | None) -> list[str]:
    """The 2D projections to cluster; errors name the projection asked for and the 2D ones."""
    from embviz.projections import projection_dims

    flat = [p for p in ds.projections if projection_dims(ds, p) == 2]
    if projection is None:
        if not flat:
            raise DatasetError(
                f"{ds.root}: no 2D projection to cluster; run 'embviz reduce {ds.root} --dims 2'"
            )
        return flat
    name = projection.removeprefix("projections/")
    if name not in ds.projections:
        raise DatasetError(f"{ds.root}: no projection {name!r}; 2D projections: {flat or 'none'}")
    if name not in flat:
        raise DatasetError(
            f"{ds.root}: projection {name!r} is 3D; clusters are made on 2D maps: {flat or 'none'}"
        )
    return [name]


def _kmeans(xy: np.ndarray, k: int, rng: np.random.Generator, seed: int) -> np.ndarray:
    """Fine cluster of every point: faiss k-means on a sample, then nearest centroid."""
    from embviz.index import _faiss

    faiss = _faiss()
    n = len(xy)
    k = int(min(k, n))
    train = xy
    if n > TRAIN_PER_CENTROID * k:
        train = xy[np.sort(rng.choice(n, TRAIN_PER_CENTROID * k, replace=False))]
    km = faiss.Kmeans(
        2,
        k,
        niter=20,
        seed=seed,
        min_points_per_centroid=1,  # no faiss warning on small maps
        max_points_per_centroid=TRAIN_PER_CENTROID,
    )
    km.train(np.ascontiguousarray(train))
    index = faiss.IndexFlatL2(2)
    index.add(np.ascontiguousarray(km.centroids, dtype=np.float32))
    out = np.empty(n, dtype=np.int64)
    step = 1 << 20  # bounded temporaries at tens of millions of points
    for a in range(0, n, step):
        out[a : a + step] = index.search(xy[a : a + step], 1)[1][:, 0]
    return out


def _ward(centres: np.ndarray, weights: np.ndarray, counts: list[int]) -> dict[int, np.ndarray]:
    """For each of ``counts``: the merged group (0..count-1) of every centre, merging by
    weighted Ward (the pair whose union adds the least squared error) from the top down."""
    c, w = centres.astype(np.float64).copy(), weights.astype(np.float64).copy()
    m = len(c)
    root = np.arange(m)
    alive = np.ones(m, dtype=bool)

    def costs(i: int) -> np.ndarray:
        row = w[i] * w / (w[i] + w) * ((c - c[i]) ** 2).sum(axis=1)
        row[~alive] = np.inf
        row[i] = np.inf
        return row

    cost = np.full((m, m), np.inf)
    for i in range(m):
        cost[i] = costs(i)
    out, left = {}, m
    for target in sorted(set(counts), reverse=True):
        while left > target:
            i, j = np.unravel_index(np.argmin(cost), cost.shape)
            i, j = min(i, j), max(i, j)
            c[i] = (w[i] * c[i] + w[j] * c[j]) / (w[i] + w[j])
            w[i] += w[j]
            root[root == j] = i
            alive[j] = False
            cost[j, :] = cost[:, j] = np.inf
            cost[i] = costs(i)
            cost[:, i] = cost[i]
            left -= 1
        out[target] = np.unique(root, return_inverse=True)[1]
    return out


def _largest_first(groups: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``groups`` renumbered so that 0 is the heaviest group (ties: lower number first)."""
    k = int(groups.max()) + 1
    size = np.bincount(groups, weights=weights, minlength=k)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-size, kind="stable")] = np.arange(k)
    return rank[groups]


def _cluster_one(
    ds: Dataset,
    projection: str,
    *,
    levels: int,
    sizes: Sequence[int] | None,
    prompts: list[str] | None,
    seed: int,
    force: bool,
) -> dict[str, Any]:
    """Cluster one 2D projection, write ``clusters/<projection>``; its result summary."""
    import pyarrow as pa

    from embviz.storage import write_parquet_atomic

    started = time.time()
    key, pkey = clusters_key(projection), f"projections/{projection}"
    source = ds.meta(pkey).get("source")
    embedding = source if source and ds.has(str(source)) else None
    if prompts and embedding is None:
        raise DatasetError(
            f"{ds.root}: projection {projection!r} records no embedding in this dataset "
            f"(source {source!r}); naming clusters by prompts needs the image vectors"
        )
    use_vectors = embedding is not None and (
        bool(prompts) or ds.table(embedding)["rows"] <= TYPICAL_MAX_ROWS
    )
    params = {
        "projection": projection,
        "levels": levels,
        "sizes": list(sizes) if sizes else None,
        "seed": seed,
        "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()
        if prompts
        else None,
    }
    fingerprint = json.loads(
        json.dumps(
            {
                "params": params,
                "projection_dir": ds.table(pkey)["dir"],
                "samples_dir": ds.table("samples")["dir"] if ds.has("samples") else None,
                "embedding_dir": ds.table(embedding)["dir"] if use_vectors else None,
            }
        )
    )
    if not force and ds.has(key) and ds.meta(key).get("fingerprint") == fingerprint:
        return {**ds.meta(key)["result"], "reused": True}

    # The text tower first: a model that cannot embed text fails before any clustering.
    texts = text_vectors(ds, embedding, prompts, projection) if prompts else None
    table = ds.read_arrow(pkey, columns=["id", "x", "y"])
    ids = table.column("id").to_numpy().astype(np.int64, copy=False)
    xy = np.column_stack([table.column(a).to_numpy() for a in ("x", "y")]).astype(np.float32)
    del table
    n = len(ids)
    if n == 0:
        raise DatasetError(f"{ds.root}: projection {projection!r} has no points to cluster")
    finite = np.isfinite(xy).all(axis=1)
    if not finite.all():  # reduce and ingest leave such rows out: a table written otherwise
        bad = int(ids[np.flatnonzero(~finite)[0]])
        raise DatasetError(
            f"{ds.root}: projection {projection!r} has non-finite coordinates (id {bad}); "
            "rebuild it with 'embviz reduce' or 'embviz ingest --coords'"
        )
    counts = [min(int(k), n) for k in (sizes or level_sizes(n, levels))]
    counts = sorted(set(counts))
    rng = np.random.default_rng(seed)
    fine = _kmeans(xy, counts[-1], rng, seed)
    fine_size = np.bincount(fine)
    present = np.flatnonzero(fine_size)
    if len(present) < len(fine_size):  # empty clusters (duplicated points) are dropped
        remap = np.zeros(len(fine_size), dtype=np.int64)
        remap[present] = np.arange(len(present))
        fine, fine_size = remap[fine], fine_size[present]
    m = len(fine_size)
    centres = np.stack([np.bincount(fine, weights=xy[:, a]) / fine_size for a in (0, 1)], 1)
    groups = _ward(centres, fine_size, [min(k, m) for k in counts])
    # Per level: the cluster (largest first) of each fine cluster; the points follow.
    maps = [_largest_first(groups[min(k, m)], fine_size) for k in counts]
    labels = label_codes(ds, ids)
    records = summaries(
        xy,
        ids,
        fine,
        maps,
        labels,
        read_vectors=(lambda wanted: vectors(ds, embedding, wanted)) if use_vectors else None,
        texts=texts,
        prompts=prompts,
        rng=rng,
    )
    level_codes = [mp.astype(np.int32)[fine] for mp in maps]
    result = {
        "table": key,
        "rows": n,
        "levels": [int(mp.max()) + 1 for mp in maps],
        "named_by": "prompts" if prompts else "label" if labels[1] else "number",
        "typical_space": "embedding" if use_vectors else "map",
        "seconds": 0.0,
        "reused": False,
    }
    columns = {level_column(i): c for i, c in enumerate(level_codes)}
    out = pa.table({"id": pa.array(ids), **{k: pa.array(v) for k, v in columns.items()}})
    writer = ds.writer(key)
    try:
        start = 0  # same partitions as the projection: a reader pairs them part by part
        for i, part in enumerate(ds.table(pkey)["partitions"]):
            writer.write_part(i, out.slice(start, part["rows"]))
            start += part["rows"]
        write_parquet_atomic(pa.table(records), writer.staging / SUMMARY_FILE)
        result["seconds"] = round(time.time() - started, 3)
        writer.commit(
            {
                "projection": projection,
                "projection_dir": ds.table(pkey)["dir"],
                "source": source,
                "levels": len(level_codes),
                "summary": SUMMARY_FILE,
                "named_by": result["named_by"],
                "typical_space": result["typical_space"],
                "fingerprint": fingerprint,
                "result": result,
            }
        )
    except BaseException:
        writer.abort()
        raise
    ds.reload()
    return result


def cluster(
    dataset: str | Path | Dataset,
    *,
    projection: str | None = None,
    levels: int = 3,
    sizes: Sequence[int] | None = None,
    prompts: str | Path | Sequence[str] | None = None,
    seed: int = 0,
    force: bool = False,
) -> ClusterResult:
    """Cluster 2D maps at several levels, name every cluster, write ``clusters/<projection>``.

    See the module docstring for the method and :func:`embviz.clusters.read_clusters` for
    what is stored; the map colours by ``cluster_l0`` ... and draws the names.

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`.
    projection : one 2D projection's name; default every 2D projection of the dataset.
    levels : number of levels, coarse to fine: 8, 32, 128 ... clusters (:func:`level_sizes`).
    sizes : clusters per level instead (ascending, e.g. ``[5, 20]``); ``levels`` is ignored.
    prompts : name clusters by the best of these texts (a list, or a text file's path, one
        per line: class names or your own vocabulary); needs the projection's source
        embedding to be a CLIP-like model's ``pooled`` layer.
    seed : seeds the k-means sample and initialisation and the per-cluster samples.
    force : recompute even when a table matches these inputs.

    Returns a :class:`ClusterResult`. Raises :class:`~embviz.errors.DatasetError` naming the
    dataset and projection when there is no 2D projection or the one asked for is unknown or
    3D, :class:`~embviz.errors.ConfigError` for a bad prompts file, and
    :class:`~embviz.errors.ModelError` when the model cannot embed the prompts.
    """
    started = time.time()
    ds = as_dataset(dataset)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if sizes is not None:
        sizes = [int(k) for k in sizes]
        if not sizes or any(k < 1 for k in sizes) or sizes != sorted(set(sizes)):
            raise ValueError(f"sizes must be ascending positive cluster counts, got {sizes}")
    texts = read_prompts(prompts) if prompts is not None else None
    results = [
        _cluster_one(ds, p, levels=levels, sizes=sizes, prompts=texts, seed=seed, force=force)
        for p in _targets(ds, projection)
    ]
    summary = ClusterResult(
        tables=tuple(r["table"] for r in results),
        rows=sum(r["rows"] for r in results),
        levels={r["table"].split("/", 1)[1]: r["levels"] for r in results},
        named_by={r["table"].split("/", 1)[1]: r["named_by"] for r in results},
        typical_space={r["table"].split("/", 1)[1]: r["typical_space"] for r in results},
        seconds=round(time.time() - started, 3),
        reused=all(r["reused"] for r in results),
    )
    if not summary.reused:
        params = {"projection": projection, "levels": levels, "sizes": sizes, "seed": seed}
        params["prompts"] = len(texts) if texts else None
        ds.record_step("cluster", params, started=started, result=summary.__dict__)
    return summary
