"""What a classifier makes of each sample, as the ``predictions`` table: top-k, confidence, margin, entropy.

The ``predict`` step writes it (``embviz predict``); the explorer colours and filters by its
scalar columns (they read like samples columns, :mod:`embviz.samples`), the detail panel shows
the top-k, and label-issue scores use its probabilities (:mod:`embviz.scores.confident`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from .samples import PREDICTIONS

__all__ = ["PREDICTIONS", "TOP_K", "prediction_columns", "proba_matrix", "read_top_k", "summarize"]
__all__ += ["top_k_lines"]

#: Classes kept per sample, most probable first.
TOP_K = 10


def summarize(
    ids: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    labels: list[str | None] | None = None,
    *,
    k: int = TOP_K,
) -> Any:
    """The ``predictions`` table of ``proba`` (a pyarrow Table, one row per id).

    Parameters
    ----------
    ids : int64 ``(n,)`` sample ids.
    proba : float ``(n, c)`` class probabilities (rows sum to 1); a NaN row has no prediction
        (all its columns are null).
    classes : the ``c`` class names, in ``proba``'s column order.
    labels : each sample's label (None: unlabelled); ``correct`` is null without one, and
        where the label is not one of ``classes``.
    k : classes kept per row (at most ``c``).

    Columns: ``id``; ``predicted_label`` (string); ``confidence`` (top-1 probability);
    ``margin`` (top-1 minus top-2); ``entropy`` (of the whole distribution, divided by
    ``log(c)``: 0 = certain, 1 = uniform); ``correct`` (bool); ``top_labels`` (list of string)
    and ``top_probs`` (list of float32), most probable first.
    """
    import pyarrow as pa

    proba = np.asarray(proba, dtype=np.float32)
    n, c = proba.shape
    if len(classes) != c:
        raise ValueError(f"{len(classes)} class names for {c} probability columns")
    k = max(1, min(int(k), c))
    has = np.isfinite(proba).all(axis=1)
    p = np.where(has[:, None], proba, 0.0)
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(p, order, axis=1)
    second = top[:, 1] if k > 1 else np.zeros(n, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -(np.where(p > 0, p * np.log(p), 0.0)).sum(axis=1) / max(np.log(c), 1e-12)
    names = np.asarray(classes, dtype=object)
    predicted = names[order[:, 0]]
    mask = ~has
    if labels is None:
        correct = pa.nulls(n, pa.bool_())
    else:
        lab = np.asarray(labels, dtype=object)
        # Right or wrong only where the label is one of the classes (ImageNet's head on
        # digits is neither).
        names_set = set(classes)
        known = np.array([v is not None and v in names_set for v in lab], dtype=bool) & has
        correct = pa.array(predicted == lab, mask=~known)
    flat_labels = pa.array(names[order].ravel().tolist(), pa.string())
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    return pa.table(
        {
            "id": pa.array(np.asarray(ids, dtype=np.int64)),
            "predicted_label": pa.array(predicted.tolist(), pa.string(), mask=mask),
            "confidence": pa.array(top[:, 0], pa.float32(), mask=mask),
            "margin": pa.array(top[:, 0] - second, pa.float32(), mask=mask),
            "entropy": pa.array(ent.astype(np.float32), pa.float32(), mask=mask),
            "correct": correct,
            "top_labels": pa.ListArray.from_arrays(offsets, flat_labels, mask=pa.array(mask)),
            "top_probs": pa.ListArray.from_arrays(
                offsets, pa.array(top.ravel(), pa.float32()), mask=pa.array(mask)
            ),
        }
    )


def prediction_columns() -> tuple[str, ...]:
    """The scalar columns of the table (what the explorer colours and filters by)."""
    return ("predicted_label", "confidence", "margin", "entropy", "correct")


def read_top_k(ds, sample_id: int) -> list[tuple[str, float]]:
    """``[(class, probability), ...]`` of one sample, most probable first ([] without any)."""
    if not ds.has(PREDICTIONS):
        return []
    table = ds.read_ids(PREDICTIONS, [int(sample_id)], ["top_labels", "top_probs"])
    if not table.num_rows or table.column("top_labels")[0].as_py() is None:
        return []
    labels = table.column("top_labels")[0].as_py()
    probs = table.column("top_probs")[0].as_py()
    return [(str(a), float(b)) for a, b in zip(labels, probs, strict=True)]


def proba_matrix(ds, ids: np.ndarray, classes: list[str]) -> np.ndarray | None:
    """The stored top-k probabilities of samples ``ids`` as a float32 ``(n, len(classes))``
    matrix over ``classes`` (a class outside a row's top-k gets 0; a predicted class not in
    ``classes`` is dropped); NaN rows for samples without a prediction. None without a
    ``predictions`` table."""
    import pyarrow.compute as pc

    if not ds.has(PREDICTIONS):
        return None
    table = ds.read_arrow(PREDICTIONS, columns=["id", "top_labels", "top_probs"])
    col = {name: i for i, name in enumerate(classes)}
    out = np.full((len(ids), len(classes)), np.nan, dtype=np.float32)
    pid = table.column("id").to_numpy()
    top = int(max(np.max(ids, initial=-1), pid.max(initial=-1))) + 1
    where = np.full(top, -1, dtype=np.int64)
    where[np.asarray(ids, dtype=np.int64)] = np.arange(len(ids))
    target = where[pid]
    labels = table.column("top_labels").combine_chunks()
    probs = table.column("top_probs").combine_chunks()
    present = ~np.asarray(pc.is_null(labels).to_numpy(zero_copy_only=False), dtype=bool)
    rows = np.flatnonzero(present & (target >= 0))
    out[target[rows]] = 0.0
    lengths = pc.list_value_length(labels).to_numpy(zero_copy_only=False)[rows].astype(np.int64)
    flat_names = pc.list_flatten(labels.take(rows)).to_pylist()
    flat_p = pc.list_flatten(probs.take(rows)).to_numpy(zero_copy_only=False)
    row_of = np.repeat(target[rows], lengths)
    cols = np.array([col.get(n, -1) for n in flat_names], dtype=np.int64)
    keep = cols >= 0
    out[row_of[keep], cols[keep]] = flat_p[keep]
    return out


#: Samples whose top-k text :func:`top_k_lines` keeps per process (least recently used go).
LINES_CACHED = 200_000
_LINES: OrderedDict[tuple[str, int], str] = OrderedDict()
_LINES_LOCK = threading.Lock()


def top_k_lines(ds, ids, k: int = 3) -> list[str]:
    """Each sample's top ``k`` as plain-text bars (``▇▇▇▇▇▇▇▇░░ 0.81 7``), one line per class;
    "" for a sample without predictions. For tooltips: rows read once per process, then
    served from a least-recently-used cache shared by every session."""
    if not ds.has(PREDICTIONS):
        return [""] * len(ids)
    version = str(ds.table(PREDICTIONS)["dir"])
    keys = [(version, int(i)) for i in ids]
    with _LINES_LOCK:
        found = {key: _LINES[key] for key in keys if key in _LINES}
        for key in found:
            _LINES.move_to_end(key)
    missing = sorted({key[1] for key in keys if key not in found})
    if missing:
        table = ds.read_ids(PREDICTIONS, missing, ["top_labels", "top_probs"])
        got = dict.fromkeys(missing, "")
        for sid, labels, probs in zip(
            table.column("id").to_pylist(),
            table.column("top_labels").to_pylist(),
            table.column("top_probs").to_pylist(),
            strict=True,
        ):
            got[int(sid)] = "\n".join(
                f"{_bar(float(q))} {float(q):.2f} {name}"
                for name, q in list(zip(labels or [], probs or [], strict=True))[:k]
            )
        with _LINES_LOCK:
            for sid, text in got.items():
                found[(version, sid)] = _LINES[(version, sid)] = text
            while len(_LINES) > LINES_CACHED:
                _LINES.popitem(last=False)
    return [found[key] for key in keys]


def _bar(p: float, width: int = 10) -> str:
    full = int(round(max(0.0, min(1.0, p)) * width))
    return "▇" * full + "░" * (width - full)
