"""The ``predict`` step: what a classifier makes of every sample, as the ``predictions`` table.

Source ``probe``: a logistic-regression probe on an embedding, for labels the model was never
trained on (the MNIST demo on ImageNet features). Every labelled sample is predicted by the
fold model that did not see it (``probe_fold`` says which), so the probabilities are
out-of-sample, as confident learning needs; unlabelled samples by a probe fitted on all labels.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embviz.dataset import Dataset
from embviz.errors import DatasetError
from embviz.predictions import TOP_K, summarize
from embviz.samples import PREDICTIONS

from .choose import as_dataset, pick_table

__all__ = ["SOURCES", "PredictResult", "predict"]

#: Where predictions come from (``head``, the model's own classifier, is not built yet).
SOURCES = ("probe",)


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` wrote.

    Attributes
    ----------
    table : the table key written, ``predictions``.
    source : ``probe``.
    embedding : the embedding the probe read.
    rows : rows of the table (= rows of ``samples``).
    classes : classes the probe predicts.
    accuracy : out-of-fold accuracy on the labelled rows (the probe's honest accuracy).
    folds : cross-validation folds.
    seconds : wall time.
    reused : True when an identical earlier run's table was kept.
    """

    table: str
    source: str
    embedding: str
    rows: int
    classes: int
    accuracy: float
    folds: int
    seconds: float
    reused: bool = False


def predict(
    dataset: str | Path | Dataset,
    *,
    source: str = "probe",
    embedding: str | None = None,
    k: int = TOP_K,
    folds: int = 5,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> PredictResult:
    """Predict every sample's class and write the ``predictions`` table (see
    :func:`embviz.predictions.summarize` for its columns, plus ``probe_fold`` int8).

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`.
    source : ``probe`` (see the module docstring).
    embedding : the embedding the probe reads (``<model>.<layer>``); default the dataset's
        first (:func:`~embviz.pipeline.choose.pick_table`).
    k : classes kept per sample (top-k).
    folds : stratified folds of the probe (>= 2); a class with fewer labelled samples is
        not predicted.
    seed : seeds the folds.
    force : recompute even when the table matches the inputs and options.
    progress : unused (the probe fits in one go); kept for a uniform step signature.

    The table is published atomically and reused while the samples, the embedding and the
    options are unchanged. Raises :class:`DatasetError` for a dataset without labels.
    """
    from embviz.scores.probe import probe_proba

    del progress
    started = time.time()
    if source not in SOURCES:
        raise ValueError(f"unknown prediction source {source!r}; valid: {', '.join(SOURCES)}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ds = as_dataset(dataset)
    emb = pick_table(ds, "embeddings", embedding, step="predict")
    if not ds.has("samples") or "label" not in ds.table("samples")["columns"]:
        raise DatasetError(
            f"{ds.root}: the samples table has no 'label' column: a probe needs labels to learn"
        )
    key = f"embeddings/{emb}"
    params = {"source": source, "embedding": emb, "k": k, "folds": folds, "seed": seed}
    fingerprint = json.loads(
        json.dumps(
            {
                "params": params,
                "samples_dir": ds.table("samples")["dir"],
                "source_dir": ds.table(key)["dir"],
            }
        )
    )
    if not force and ds.has(PREDICTIONS) and ds.meta(PREDICTIONS).get("fingerprint") == fingerprint:
        done = ds.meta(PREDICTIONS).get("result") or {}
        try:
            return PredictResult(
                **{**done, "seconds": round(time.time() - started, 3), "reused": True}
            )
        except TypeError:
            pass  # written by another version of this step: recompute

    samples = ds.read_arrow("samples", columns=["id", "label"])
    ids = samples.column("id").to_numpy()
    labels = samples.column("label").cast("string").to_pylist()
    names = sorted({v for v in labels if v is not None})
    code = {v: i for i, v in enumerate(names)}
    codes = np.array([code.get(v, -1) if v is not None else -1 for v in labels], dtype=np.int64)
    vid, vecs = ds.read_vectors(key)
    where = {int(v): i for i, v in enumerate(vid)}
    rows = np.array([where.get(int(i), -1) for i in ids], dtype=np.int64)
    valid = rows >= 0
    vectors = np.zeros((len(ids), vecs.shape[1]), dtype=np.float32)
    vectors[valid] = vecs[rows[valid]]
    del vecs
    found = probe_proba(vectors, codes, folds=folds, seed=seed, valid=valid)
    if found is None:
        raise DatasetError(
            f"{ds.root}: fewer than two labels have {folds} labelled samples with a vector in "
            f"{key}; a probe needs at least two classes (pass a smaller --folds)"
        )
    classes = [names[c] for c in found.classes]
    table = summarize(ids, found.proba, classes, labels, k=k)
    import pyarrow as pa

    table = table.append_column("probe_fold", pa.array(found.fold, pa.int8()))
    summary = {
        "table": PREDICTIONS,
        "source": source,
        "embedding": emb,
        "rows": len(ids),
        "classes": len(classes),
        "accuracy": round(found.accuracy, 4),
        "folds": folds,
        "seconds": 0.0,
    }
    writer = ds.writer(PREDICTIONS)
    try:
        start = 0  # the samples table's partitions, so readers pair them part by part
        for i, part in enumerate(ds.table("samples")["partitions"]):
            writer.write_part(i, table.slice(start, part["rows"]))
            start += part["rows"]
        if start == 0:
            writer.write_part(0, table)
        summary["seconds"] = round(time.time() - started, 3)
        meta = {
            "source": source,
            "embedding": key,
            "classes": classes,
            "k": k,
            "folds": folds,
            "fingerprint": fingerprint,
            "result": summary,
        }
        writer.commit(meta)
    except BaseException:
        writer.abort()
        raise
    ds.reload()
    ds.record_step("predict", params, started=started, result=summary)
    return PredictResult(**summary)
