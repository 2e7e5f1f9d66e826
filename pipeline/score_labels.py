"""The score step's label-issue scores: confident learning on the ``predict`` step's
probabilities where there are some, else the neighbour vote, a probe and a model's column."""

from __future__ import annotations

import numpy as np

from embviz import scores as sc
from embviz.errors import DatasetError
from embviz.predictions import proba_matrix

__all__ = ["CONFIDENCE_COLUMN", "LABEL_METHODS", "PREDICTION_COLUMNS", "codes", "label_scores"]

#: Samples columns read as a model's predicted label (the first present wins), and its
#: confidence in [0, 1]; label issues blend them in.
PREDICTION_COLUMNS = ("prediction", "predicted_label")
CONFIDENCE_COLUMN = "confidence"
#: Label-issue methods: ``auto`` (confident learning on the ``predictions`` table when there
#: is one, else the neighbour vote and a cross-validated probe), ``confident``, ``knn``,
#: ``classifier``.
LABEL_METHODS = ("auto", "confident", "knn", "classifier")


def codes(*columns) -> tuple[list[np.ndarray], list[str]]:
    """Integer codes of string columns over one shared sorted vocabulary (-1 for nulls)."""
    import pyarrow as pa

    lengths = [len(c) for c in columns]
    chunks = [ch for c in columns for ch in c.cast(pa.string()).chunks]
    joined = pa.chunked_array(chunks, type=pa.string()).combine_chunks().dictionary_encode()
    coded = joined.indices.to_numpy(zero_copy_only=False)
    coded = np.where(joined.indices.is_null().to_numpy(zero_copy_only=False), -1, coded)
    coded = np.asarray(coded, dtype=np.int64)
    out, start = [], 0
    for length in lengths:
        out.append(coded[start : start + length])
        start += length
    return out, joined.dictionary.to_pylist()


def label_scores(
    ds, samples, key: str, nbr, dist, has_vector, *, method: str = "auto", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str | None, list[str]]:
    """``(score, suggested codes, method used, label values)`` of every samples row.

    ``samples`` holds ``id`` and, when the dataset has them, ``label`` and a model's
    :data:`PREDICTION_COLUMNS` / :data:`CONFIDENCE_COLUMN`; ``key`` is the embedding table
    (for the probe's vectors); ``nbr``/``dist`` the rows' neighbours. Rows the ``predict``
    step predicted are scored by confident learning (``auto``, ``confident``), the others by
    :func:`embviz.scores.label_issues`.
    """
    import pyarrow as pa

    columns = samples.column_names
    ids = samples.column("id").to_numpy()
    n = len(ids)
    pred_col = next((c for c in PREDICTION_COLUMNS if c in columns), None)
    label_values: list[str] = []
    labels = np.full(n, -1, dtype=np.int64)
    prediction = confidence = None
    if "label" in columns:  # labels and a model's predictions share one code space
        label_cols = [samples.column("label")]
        if pred_col is not None:
            label_cols.append(samples.column(pred_col))
        coded, label_values = codes(*label_cols)
        labels = np.where(has_vector, coded[0], -1)
        if pred_col is not None:
            prediction = coded[1]
            if CONFIDENCE_COLUMN in columns:
                confidence = samples.column(CONFIDENCE_COLUMN).cast(pa.float64())
                confidence = confidence.to_numpy(zero_copy_only=False)
    score = np.full(n, np.nan, dtype=np.float32)
    suggested = np.full(n, -1, dtype=np.int64)
    if not (labels >= 0).any():
        if method == "confident":
            raise DatasetError(f"{ds.root}: label_method 'confident' needs labelled samples")
        return score, suggested, None, label_values
    proba = proba_matrix(ds, ids, label_values) if method in ("auto", "confident") else None
    if proba is not None and not np.isfinite(proba).all(axis=1).any():
        proba = None
    if method == "confident" and proba is None:
        raise DatasetError(f"{ds.root}: label_method 'confident' needs 'embviz predict' first")
    vectors = None
    if proba is None and sc.wants_classifier(labels, method=method):
        vid, vecs = ds.read_vectors(key)
        vectors = np.zeros((n, vecs.shape[1]), dtype=np.float32)
        rows = sc.neighbour_rows(ids, vid)
        vectors[rows[rows >= 0]] = vecs[rows >= 0]
        del vecs
    issues = sc.label_issues(
        labels,
        nbr,
        dist,
        vectors=vectors,
        prediction=prediction,
        confidence=confidence,
        method="knn" if proba is not None else method,
        seed=seed,
    )
    score, suggested, used = issues.score, issues.suggested, issues.method
    if proba is not None:  # the predict step's out-of-fold probabilities
        cl = sc.confident_issues(labels, proba)
        has = np.isfinite(proba).all(axis=1)
        score = np.where(has, cl.score, score)
        suggested = np.where(has, cl.suggested, suggested)
        used = "confident" if has.all() else f"confident ({has.sum():,} rows), {used} (rest)"
    return score, suggested, used, label_values
