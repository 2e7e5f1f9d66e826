"""The ``predict`` step's ``head`` source: a classifier's own logits over the dataset's images.

For models trained on the dataset's labels (a user's fine-tuned classifier) or on ImageNet
(the default model, timm and torchvision ImageNet weights). Partitions are predicted like
``embed`` embeds them (decode threads ahead of the model, on a Dask cluster with a scheduler),
and each is staged as it finishes, so a killed run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embviz.errors import ModelError

__all__ = [
    "class_names_for",
    "head_fingerprint",
    "head_partition",
    "publish_head",
    "softmax",
]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities of ``logits`` (n, classes)."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def head_fingerprint(ds, emb, *, model: str, image_size: int | None, k: int, names) -> dict:
    """What identifies the head's predictions: its model, weights, class names, the samples."""
    import hashlib

    return {
        "params": {"source": "head", "model": model, "image_size": image_size, "k": k},
        "weights_sha256": emb.weights_sha256,
        "class_names": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "samples_dir": ds.table("samples")["dir"],
    }


def publish_head(ds, writer, *, model, names, k, fingerprint, failed, started) -> dict[str, Any]:
    """Commit the head's staged predictions and record the step; returns its summary (the
    accuracy over labelled rows whose label is one of the head's classes, NaN when none is)."""
    import time

    import pyarrow.compute as pc

    from embviz.samples import PREDICTIONS

    parts = ds.table("samples")["partitions"]
    summary = {
        "table": PREDICTIONS,
        "source": "head",
        "embedding": model,
        "rows": sum(p["rows"] for p in parts),
        "classes": len(names),
        "accuracy": float("nan"),
        "folds": 0,
        "seconds": round(time.time() - started, 3),
        "failed": len(failed),
    }
    meta = {
        "source": "head",
        "model": model,
        "classes": list(names),
        "k": k,
        "fingerprint": fingerprint,
        "result": summary,
        "failed": failed[:100],
    }
    writer.commit(meta)
    ds.reload()
    correct = ds.read_arrow(PREDICTIONS, columns=["correct"]).column("correct")
    known = pc.drop_null(correct)
    if len(known):
        summary["accuracy"] = round(float(pc.mean(known.cast("float64")).as_py()), 4)
    ds.record_step("predict", fingerprint["params"], started=started, result=summary)
    return summary


def class_names_for(emb, path: str | Path | None) -> list[str]:
    """The names of ``emb``'s logits: from ``path`` (one per line, or a JSON list) when given,
    else the model's own (ImageNet's for ImageNet classifiers). Checks their number against
    the logits of one blank image; raises :class:`ModelError` naming the file or the model."""
    import json

    width = emb.logits(emb.dummy_batch(1)).shape[1]
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"{p}: cannot read the class-names file ({exc})") from exc
        names = (
            json.loads(text) if p.suffix == ".json" else [ln.strip() for ln in text.splitlines()]
        )
        names = [str(n) for n in names if str(n).strip()]
        if len(names) != width:
            raise ModelError(
                f"{p}: {len(names)} class names, but model {emb.name!r} gives {width} logits"
            )
        return names
    if emb.class_names is None:
        raise ModelError(
            f"model {emb.name!r} does not name its {width} classes; pass a class-names file "
            "(--class-names FILE: one name per line, in logit order)"
        )
    if len(emb.class_names) != width:
        raise ModelError(
            f"model {emb.name!r} names {len(emb.class_names)} classes but gives {width} logits"
        )
    return list(emb.class_names)


def head_partition(
    index: int,
    *,
    root: str,
    writer: Any,
    model: str,
    image_size: int | None,
    device: str,
    batch_size: int,
    threads: int,
    names: list[str],
    k: int,
) -> list[dict[str, Any]]:
    """Predict samples partition ``index`` and stage it in ``writer`` (a Dask task); returns
    the images that did not decode (their predictions are null). A partition already staged
    (a resumed run, a retried task) is skipped."""
    import torch

    from embviz.dataset import open_dataset
    from embviz.predictions import summarize

    from .batches import prepared_batches
    from .embed_parts import embedder_for, set_torch_threads

    if writer.has_part(index):
        return []
    set_torch_threads()
    ds = open_dataset(root, check_files=False)
    emb = embedder_for(model, image_size, device)
    columns = ["id", "uri"] + (["label"] if "label" in ds.table("samples")["columns"] else [])
    table = ds.read_arrow("samples", columns=columns, partitions=[index])
    ids = table.column("id").to_numpy()
    uris = table.column("uri").to_pylist()
    labels = table.column("label").cast("string").to_pylist() if "label" in columns else None
    proba = np.full((len(ids), len(names)), np.nan, dtype=np.float32)
    failed: list[dict[str, Any]] = []
    for start, batch in prepared_batches(emb, uris, ds.root, batch_size, threads):
        good = [j for j, (tensor, _) in enumerate(batch) if tensor is not None]
        for j, (_, error) in enumerate(batch):
            if error is not None:
                failed.append({"id": int(ids[start + j]), "uri": uris[start + j], "error": error})
        if good:
            logits = emb.logits(torch.stack([batch[j][0] for j in good]))
            proba[[start + j for j in good]] = softmax(logits)
    writer.write_part(index, summarize(ids, proba, names, labels, k=k))
    return failed


class HeadStage:
    """One partition's head predictions, filled batch by batch from ``embed``'s forward passes
    (``embed --predict``: the head rides the embedding's pass instead of a second one)."""

    def __init__(self, head: dict[str, Any], ds, index: int, ids: np.ndarray):
        columns = ["label"] if "label" in ds.table("samples")["columns"] else []
        table = ds.read_arrow("samples", columns=["id", *columns], partitions=[index])
        self.labels = table.column("label").cast("string").to_pylist() if columns else None
        self.head, self.index, self.ids = head, index, ids
        self.proba = np.full((len(ids), len(head["names"])), np.nan, dtype=np.float32)

    def add(self, rows: list[int], logits: np.ndarray) -> None:
        """The logits of rows ``rows`` of the partition (images that decoded)."""
        self.proba[rows] = softmax(logits)

    def write(self) -> None:
        """Stage the partition's predictions (rows that never got logits stay null)."""
        from embviz.predictions import summarize

        table = summarize(self.ids, self.proba, self.head["names"], self.labels, k=self.head["k"])
        self.head["writer"].write_part(self.index, table)
