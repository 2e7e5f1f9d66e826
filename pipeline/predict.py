"""The ``predict`` step: what a classifier makes of every sample, as the ``predictions`` table.

Source ``head``: the model's own classifier over the images (:mod:`.predict_head`). Source
``probe``: a logistic-regression probe on an embedding, for labels the model was never
trained on (the MNIST demo on ImageNet features). Every labelled sample is predicted by the
fold model that did not see it (``probe_fold`` says which), so the probabilities are
out-of-sample, as confident learning needs; unlabelled samples by a probe fitted on all labels.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embviz.dataset import Dataset
from embviz.errors import DatasetError
from embviz.predictions import TOP_K, summarize
from embviz.samples import PREDICTIONS

from .choose import as_dataset, pick_table

__all__ = ["SOURCES", "PredictResult", "predict"]

#: Where predictions come from: a probe on an embedding, or a classifier's own head.
SOURCES = ("probe", "head")


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` wrote.

    Attributes
    ----------
    table : the table key written, ``predictions``.
    source : ``probe`` or ``head``.
    embedding : the embedding the probe read, or the head's model.
    rows : rows of the table (= rows of ``samples``).
    classes : classes the probe predicts.
    accuracy : the probe's out-of-fold accuracy on the labelled rows, or the head's accuracy
        on the labelled rows whose label is one of its classes (NaN when none is).
    folds : the probe's cross-validation folds (0 for the head).
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
    failed: int = 0


def predict(
    dataset: str | Path | Dataset,
    *,
    source: str = "probe",
    embedding: str | None = None,
    model: str = "efficientnet_lite0",
    image_size: int | None = None,
    batch_size: int = 64,
    class_names: str | Path | None = None,
    device: str = "auto",
    threads: int = 2,
    k: int = TOP_K,
    folds: int = 5,
    seed: int = 0,
    scheduler: Any = None,
    force: bool = False,
    progress: bool = True,
) -> PredictResult:
    """Predict every sample's class and write the ``predictions`` table (see
    :func:`embviz.predictions.summarize` for its columns, plus ``probe_fold`` int8).

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`.
    source : ``probe`` or ``head`` (see the module docstring).
    embedding : the embedding the probe reads (``<model>.<layer>``); default the dataset's
        first (:func:`~embviz.pipeline.choose.pick_table`).
    model, image_size, batch_size, device, threads : the ``head``'s classifier and how it
        runs, as for ``embed``.
    class_names : a file naming the head's logits (one per line, or a JSON list); default the
        model's own (ImageNet's for ImageNet classifiers).
    scheduler : a Dask scheduler address (or Client) to predict the head's partitions on.
    k : classes kept per sample (top-k).
    folds : stratified folds of the probe (>= 2); a class with fewer labelled samples is
        not predicted.
    seed : seeds the folds.
    force : recompute even when the table matches the inputs and options.
    progress : show a progress bar (``head``).

    The table is published atomically and reused while the samples, the embedding and the
    options are unchanged. Raises :class:`DatasetError` for a dataset without labels.
    """
    started = time.time()
    if source not in SOURCES:
        raise ValueError(f"unknown prediction source {source!r}; valid: {', '.join(SOURCES)}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ds = as_dataset(dataset)
    if source == "head":
        return _predict_head(
            ds,
            model=model,
            image_size=image_size,
            batch_size=batch_size,
            class_names=class_names,
            device=device,
            threads=threads,
            k=k,
            scheduler=scheduler,
            force=force,
            progress=progress,
            started=started,
        )
    from embviz.scores.probe import probe_proba

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


def _predict_head(
    ds: Dataset,
    *,
    model: str,
    image_size: int | None,
    batch_size: int,
    class_names: str | Path | None,
    device: str,
    threads: int,
    k: int,
    scheduler: Any,
    force: bool,
    progress: bool,
    started: float,
) -> PredictResult:
    """The ``head`` source: partitions staged as they finish (resumable), then published."""
    from .embed_parts import embedder_for
    from .predict_head import class_names_for, head_fingerprint, head_partition, publish_head
    from .runner import run_tasks

    if not ds.has("samples") or "uri" not in ds.table("samples")["columns"]:
        raise DatasetError(f"{ds.root}: no images to predict ('samples' has no 'uri' column)")
    emb = embedder_for(model, image_size, device)
    names = class_names_for(emb, class_names)
    fingerprint = head_fingerprint(ds, emb, model=model, image_size=image_size, k=k, names=names)
    if not force and ds.has(PREDICTIONS) and ds.meta(PREDICTIONS).get("fingerprint") == fingerprint:
        done = ds.meta(PREDICTIONS).get("result") or {}
        try:
            return PredictResult(
                **{**done, "seconds": round(time.time() - started, 3), "reused": True}
            )
        except TypeError:
            pass
    parts = ds.table("samples")["partitions"]
    # Staged parts survive a killed run (no abort): the next run with the same fingerprint
    # skips them, as ``embed`` does.
    writer = ds.writer(PREDICTIONS, fingerprint=fingerprint)
    failed = run_tasks(
        head_partition,
        range(len(parts)),
        scheduler=scheduler,
        desc="predict",
        unit="img",
        progress=progress,
        weights=[p["rows"] for p in parts],
        root=str(ds.root),
        writer=writer,
        model=model,
        image_size=image_size,
        device=device,
        batch_size=batch_size,
        threads=threads,
        names=names,
        k=k,
    )
    failed = [f for part in failed for f in part]
    summary = publish_head(
        ds,
        writer,
        model=model,
        names=names,
        k=k,
        fingerprint=fingerprint,
        failed=failed,
        started=started,
    )
    return PredictResult(**summary)
