"""The ``score`` step: per-sample curation scores from an embedding's neighbours, as the ``scores`` table."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embviz import duplicates
from embviz import scores as sc
from embviz.dataset import Dataset, table_to_vectors
from embviz.errors import DatasetError
from embviz.samples import PREDICTIONS, SCORES

from .choose import as_dataset, pick_table
from .index import ensure_neighbours, neighbour_matrix
from .reduce import _read_sample
from .score_labels import (
    CONFIDENCE_COLUMN,
    LABEL_METHODS,
    PREDICTION_COLUMNS,
    codes,
    label_scores,
)

__all__ = ["LABEL_METHODS", "PREDICTION_COLUMNS", "ScoreResult", "score"]

#: With ``pixel_check=None``, thumbnails confirm near duplicates up to this many rows. At
#: ~0.3 ms per thumbnail decoded and ~50 us per pair compared (measured on the 5,150-image
#: planted benchmark, ~7 pairs per row) 1M rows take roughly 10-15 minutes on 2 cores.
PIXEL_CHECK_BELOW = 1_000_000
#: k-means is fitted on at most this many rows per cluster.
_KMEANS_ROWS_PER_CLUSTER = 512


@dataclass(frozen=True)
class ScoreResult:
    """What :func:`score` wrote.

    Attributes
    ----------
    table:
        The table key written, ``scores``.
    embedding:
        The embedding the scores come from (``<model>.<layer>``).
    rows:
        Rows of the scores table (= rows of ``samples``).
    seconds:
        Wall time of the whole step (including an ``index`` run it needed).
    k:
        Neighbours per row the scores used.
    clusters:
        k-means clusters (``cluster`` takes values ``"00"`` ...).
    near_threshold:
        Embedding distance at or below which neighbours were near duplicates.
    pixel_check:
        Whether thumbnails confirmed further near duplicates (see :func:`score`).
    exact_groups:
        Duplicate groups holding byte-identical files.
    near_groups:
        Duplicate groups of near duplicates only.
    duplicates:
        Rows in a duplicate group.
    label_method:
        The label-issue evidence (``knn``, ``knn+classifier``, ``+prediction``); None when
        no sample has a label.
    reused:
        True when the scores table already matched these inputs and options (``force=True``
        recomputes).
    """

    table: str
    embedding: str
    rows: int
    seconds: float
    k: int
    clusters: int
    near_threshold: float
    pixel_check: bool
    exact_groups: int
    near_groups: int
    duplicates: int
    label_method: str | None
    reused: bool = False


def _strings(codes: np.ndarray, values: list[str]):
    """A pyarrow string array from codes (-1 -> null) into ``values``."""
    import pyarrow as pa

    idx = pa.array(np.where(codes >= 0, codes, 0).astype(np.int32), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(idx, pa.array(values, pa.string())).cast(pa.string())


def _floats(values: np.ndarray):
    import pyarrow as pa

    return pa.array(values.astype(np.float32), mask=~np.isfinite(values), type=pa.float32())


def _signatures(ds: Dataset, thumb_ids: np.ndarray) -> np.ndarray:
    """Pixel signatures of the rows' thumbnails (zeros where a row has none)."""
    import pyarrow.parquet as pq

    size = duplicates.SIGNATURE_SIZE
    out = np.zeros((len(thumb_ids), size, size), np.uint8)
    for path in ds.part_paths("thumbnails"):
        tids = pq.read_table(path, columns=["thumb_id"]).column("thumb_id").to_numpy()
        rows = sc.neighbour_rows(tids, thumb_ids)  # thumb row of each sample row, -1 if elsewhere
        here = np.flatnonzero(rows >= 0)
        if here.size:
            images = pq.read_table(path, columns=["image"]).column("image")
            picked = images.take(rows[here]).to_pylist()
            out[here] = duplicates.pixel_signatures(picked, size=size)
    return out


def _clusters(
    ds: Dataset, key: str, ids: np.ndarray, *, k: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """k-means cluster codes (largest first) of every sample row, fitted on a sample."""
    import pyarrow.parquet as pq

    _, sample = _read_sample(ds, key, sample=_KMEANS_ROWS_PER_CLUSTER * k, seed=seed, only_ids=None)
    centroids = sc.fit_centroids(sample, k=k, seed=seed)
    k = len(centroids)
    codes = np.full(len(ids), -1, dtype=np.int64)
    for path in ds.part_paths(key):
        vid, vecs = table_to_vectors(pq.read_table(path, columns=["id", "vector"]))
        rows = sc.neighbour_rows(ids, vid)
        ok = rows >= 0
        codes[rows[ok]] = sc.assign_clusters(vecs[ok], centroids)
    return sc.cluster_names(codes, k)


def score(
    dataset: str | Path | Dataset,
    *,
    embedding: str | None = None,
    k: int = 10,
    clusters: int | None = None,
    near_threshold: float | None = None,
    near_fraction: float = duplicates.NEAR_FRACTION,
    pixel_check: bool | None = None,
    label_method: str = "auto",
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> ScoreResult:
    """Score every sample from an embedding's neighbours and write the ``scores`` table.

    Columns, in the samples table's row order (the explorer and reports read them as if they
    were samples columns, see :mod:`embviz.samples`):

    - ``id`` int64;
    - ``outlier_score`` float32 in [0, 1]: percentile rank of the mean distance to the k
      neighbours (1 = the most unusual; :func:`embviz.scores.outlier_scores`);
    - ``uniqueness`` float32 in [0, 1]: weighted distance to the 3 nearest neighbours over
      its maximum (FiftyOne's; :func:`embviz.scores.uniqueness`);
    - ``label_issue_score`` float32 in [0, 1], null without a label: 1 minus the probability
      the neighbours' vote, a cross-validated classifier (up to 200,000 rows) and a model's
      ``prediction``/``predicted_label`` column (with ``confidence``) give the label;
    - ``suggested_label`` string: the label that evidence favours (null if none);
    - ``duplicate_group`` int64 (-1 = none) and ``duplicate_kind`` (``exact`` for rows
      sharing their ``content_hash`` with another, ``near`` for the other members, null);
    - ``cluster`` string (``"00"``, ``"01"``, ... largest first): k-means on the embedding.

    When the embedding has no index with at least ``k`` neighbours per row, the ``index``
    step runs first. The table is published atomically (a killed run leaves the previous one
    readable) and reused when the samples, the embedding, its neighbours and the options are
    unchanged.

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`.
    embedding : embedding name (``<model>.<layer>``); default the dataset's first
        (:func:`~embviz.pipeline.choose.pick_table`).
    k : neighbours per row used by the scores (more: smoother scores, slower).
    clusters : k-means cluster count; default 20 (fewer below 1,000 rows).
    near_threshold : embedding distance at or below which two neighbours are near
        duplicates; default ``near_fraction`` x the median nearest-neighbour distance.
    near_fraction : see ``near_threshold``.
    pixel_check : also confirm near duplicates by their thumbnails' pixels (candidate pairs:
        embedding neighbours and coarse-pixel neighbours; see
        :func:`embviz.duplicates.pixel_duplicate_pairs`). It finds re-encoded, brightened or
        shifted copies the embedding moved too far for ``near_threshold``. None: on when the
        dataset has thumbnails and at most 1,000,000 rows.
    label_method : one of :data:`LABEL_METHODS`: ``confident`` scores the rows the ``predict``
        step predicted by confident learning (:func:`embviz.scores.confident_issues`), ``knn``
        and ``classifier`` as :func:`embviz.scores.label_issues`; ``auto`` takes ``confident``
        when a ``predictions`` table exists.
    seed : seeds k-means, the classifier's folds and the sampling.
    force : recompute even when the scores table matches.
    progress : show progress bars (of an ``index`` run).

    Returns a :class:`ScoreResult`.
    """
    import pyarrow as pa

    started = time.time()
    ds = as_dataset(dataset)
    emb = pick_table(ds, "embeddings", embedding, step="score")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if clusters is not None and clusters < 1:
        raise ValueError(f"clusters must be >= 1, got {clusters}")
    if label_method not in LABEL_METHODS:
        raise ValueError(
            f"unknown label_method {label_method!r}; valid: {', '.join(LABEL_METHODS)}"
        )
    if not ds.has("samples"):
        raise DatasetError(f"{ds.root}: no 'samples' table; run 'embviz ingest' first")
    key = f"embeddings/{emb}"
    step = ensure_neighbours(ds, emb, k, progress=progress)
    params = {
        "embedding": emb,
        "k": k,
        "clusters": clusters,
        "near_threshold": near_threshold,
        "near_fraction": near_fraction,
        "pixel_check": pixel_check,
        "label_method": label_method,
        "seed": seed,
    }
    fingerprint = json.loads(
        json.dumps(
            {
                "params": params,
                "samples_dir": ds.table("samples")["dir"],
                "source_dir": ds.table(key)["dir"],
                "thumbnails_dir": ds.table("thumbnails")["dir"] if ds.has("thumbnails") else None,
                "predictions_dir": ds.table(PREDICTIONS)["dir"] if ds.has(PREDICTIONS) else None,
                "neighbours": {
                    "fingerprint": step.get("fingerprint"),
                    "written": step.get("written"),
                },
            },
            default=str,
        )
    )
    if not force and ds.has(SCORES) and ds.meta(SCORES).get("fingerprint") == fingerprint:
        done = ds.meta(SCORES).get("result") or {}
        try:
            return ScoreResult(
                **{**done, "seconds": round(time.time() - started, 3), "reused": True}
            )
        except TypeError:
            pass  # written by another version of this step: recompute

    columns = ds.table("samples")["columns"]
    pred_col = next((c for c in PREDICTION_COLUMNS if c in columns), None)
    wanted = ["id"] + [
        c
        for c in ("label", "content_hash", "thumb_id", pred_col, CONFIDENCE_COLUMN)
        if c in columns
    ]
    samples = ds.read_arrow("samples", columns=wanted)
    ids = samples.column("id").to_numpy()
    n = len(ids)

    nbr, dist = neighbour_matrix(ds, emb, ids, k=k)
    k_used = nbr.shape[1]
    has_vector = np.isfinite(dist).any(axis=1)

    outlier = sc.outlier_scores(nbr, dist)
    unique = sc.uniqueness(dist)

    issue_score, suggested, label_used, label_values = label_scores(
        ds, samples, key, nbr, dist, has_vector, method=label_method, seed=seed
    )

    hashes = None
    if "content_hash" in columns:
        hashes = codes(samples.column("content_hash"))[0][0]
    use_pixels = pixel_check
    if use_pixels is None:
        use_pixels = ds.has("thumbnails") and "thumb_id" in columns and n <= PIXEL_CHECK_BELOW
    pairs = None
    if use_pixels:
        if not ds.has("thumbnails") or "thumb_id" not in columns:
            raise DatasetError(
                f"{ds.root}: pixel_check needs a 'thumbnails' table and a 'thumb_id' samples "
                "column (image datasets have them); pass pixel_check=False"
            )
        signatures = _signatures(ds, samples.column("thumb_id").to_numpy(zero_copy_only=False))
        a, b, _ = duplicates.pixel_duplicate_pairs(signatures, nbr, seed=seed)
        pairs = (a, b)
        del signatures
    dups = duplicates.duplicate_groups(
        nbr,
        dist,
        content_hash=hashes,
        threshold=near_threshold,
        fraction=near_fraction,
        pairs=pairs,
    )
    kind = np.where(dups.group < 0, -1, np.where(dups.exact, 0, 1))

    n_clusters = clusters if clusters is not None else sc.default_clusters(int(has_vector.sum()))
    cluster_codes, cluster_values = _clusters(ds, key, ids, k=n_clusters, seed=seed)

    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "outlier_score": _floats(outlier),
            "uniqueness": _floats(unique),
            "label_issue_score": _floats(issue_score),
            "suggested_label": _strings(suggested, label_values),
            "duplicate_group": pa.array(dups.group, pa.int64()),
            "duplicate_kind": _strings(kind, ["exact", "near"]),
            "cluster": _strings(cluster_codes, cluster_values),
        }
    )
    summary = {
        "table": SCORES,
        "embedding": emb,
        "rows": n,
        "seconds": 0.0,
        "k": int(k_used),
        "clusters": len(cluster_values),
        "near_threshold": round(float(dups.threshold), 6),
        "pixel_check": bool(use_pixels),
        "exact_groups": dups.exact_groups,
        "near_groups": dups.near_groups,
        "duplicates": int((dups.group >= 0).sum()),
        "label_method": label_used,
    }
    writer = ds.writer(SCORES)
    try:
        # Same partitions as the samples table, so a reader can pair them part by part.
        start = 0
        for i, part in enumerate(ds.table("samples")["partitions"]):
            writer.write_part(i, table.slice(start, part["rows"]))
            start += part["rows"]
        if start == 0:
            writer.write_part(0, table)
        summary["seconds"] = round(time.time() - started, 3)
        writer.commit({"source": key, "fingerprint": fingerprint, "result": summary})
    except BaseException:
        writer.abort()
        raise
    ds.reload()
    result = ScoreResult(**summary)
    ds.record_step("score", params, started=started, result=summary)
    return result
