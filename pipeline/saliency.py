"""The ``saliency`` step: compute chosen samples' saliency maps ahead of time, into the explain cache.

The maps land where the app's Explain button and the report look for them
(:class:`~embviz.explain.Explainer`: ``cache/saliency/`` beside the dataset, by sample, model,
layer, method and class; derived data, safe to delete), so the manifest is left alone. With no
ids given the step takes the samples the report's label-issue gallery shows, so a plain
``embviz saliency DATASET`` fills exactly that gallery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embviz.dataset import Dataset
from embviz.errors import DatasetError

from .choose import as_dataset

__all__ = ["SaliencyResult", "saliency"]

log = logging.getLogger(__name__)

#: Unknown ids named in an error, at most.
_NAMED = 5


@dataclass(frozen=True)
class SaliencyResult:
    """What :func:`saliency` did.

    Attributes
    ----------
    samples : samples asked for (each explained once per method).
    methods : the saliency methods (:data:`embviz.saliency.METHODS`).
    target : ``top`` (the top prediction) or ``label`` (the sample's own label).
    computed : maps computed now.
    cached : maps that were cached already.
    failed : sample id -> why its map could not be made (a missing image, a label the
        classifier lacks); those samples were skipped.
    seconds : wall time.
    """

    samples: int
    methods: tuple[str, ...]
    target: str
    computed: int
    cached: int
    seconds: float
    failed: dict[int, str] = field(default_factory=dict)


def saliency(
    dataset: str | Path | Dataset,
    *,
    ids: Sequence[int] | np.ndarray | None = None,
    ids_from: str | Path | None = None,
    top_label_issues: int | None = None,
    methods: Sequence[str] = ("gradcam",),
    target: str = "top",
    progress: bool = True,
) -> SaliencyResult:
    """Compute (or find cached) the saliency maps of some samples of ``dataset``.

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`; it needs a ``predictions``
        table (the maps explain that classifier).
    ids : the samples, by id.
    ids_from : a file of ids instead: a text file of integers (one a line; blank lines and
        ``#`` comments are skipped) or a CSV/Parquet file with an ``id`` column
        (:func:`embviz.pipeline.export.read_ids`).
    top_label_issues : instead, the samples with the N highest ``label_issue_score``. With
        none of the three, the N the report's label-issue gallery shows
        (:data:`embviz.report.sections.GALLERY_SIZE`), the same samples in the same order.
    methods : saliency methods, each a name of :data:`embviz.saliency.METHODS`.
    target : the class explained: ``top`` (the top prediction) or ``label`` (the sample's own
        label, which the report shows beside a likely label issue).
    progress : show a progress bar.

    Raises :class:`~embviz.errors.DatasetError` for a dataset without predictions (or, with
    no ids, without label-issue scores) and for ids the dataset lacks (naming the first few),
    :class:`~embviz.errors.ExportError` for a bad ids file (naming the line), ``ValueError``
    for an unknown method or target. A sample whose map cannot be made (its image is gone)
    is logged and skipped: see :attr:`SaliencyResult.failed`.
    """
    from tqdm.auto import tqdm

    from embviz.explain import explainer_for
    from embviz.report.saliency import TARGETS, target_label
    from embviz.saliency import METHODS

    started = time.time()
    methods = tuple(dict.fromkeys(methods))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown saliency method {bad or methods!r}; valid: {', '.join(METHODS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown saliency class {target!r}; valid: {', '.join(TARGETS)}")
    if sum(x is not None for x in (ids, ids_from, top_label_issues)) > 1:
        raise ValueError("give one of ids, ids_from and top_label_issues")
    where = "the ids"
    if ids_from is not None:
        from .export import read_ids

        ids, where = read_ids(ids_from), str(ids_from)
    ds = as_dataset(dataset)
    if not ds.has("predictions"):
        raise DatasetError(
            f"{ds.root}: no predictions to explain; run 'embviz predict {ds.root}' first"
        )
    if ids is None:
        ids = _top_label_issues(ds, top_label_issues)
    ids = np.array(list(dict.fromkeys(int(i) for i in np.asarray(ids).ravel())), dtype=np.int64)
    labels = _labels(ds, ids, where) if len(ids) else {}
    explainer = explainer_for(ds)
    computed = cached = 0
    failed: dict[int, str] = {}
    bar = tqdm(total=len(ids) * len(methods), desc="saliency", unit="map", disable=not progress)
    with bar:
        for sid in ids.tolist():
            for method in methods:
                bar.update()
                if sid in failed:
                    continue
                try:
                    label = target_label(target, labels[sid])
                    found = explainer.explain(sid, method=method, label=label)
                except DatasetError as exc:  # this sample only: its image, its label
                    failed[sid] = str(exc)
                    log.warning("saliency: sample %d skipped: %s", sid, exc)
                    continue
                cached += found.cached
                computed += not found.cached
    return SaliencyResult(
        samples=len(ids),
        methods=methods,
        target=target,
        computed=computed,
        cached=cached,
        seconds=round(time.time() - started, 3),
        failed=failed,
    )


def _top_label_issues(ds: Dataset, n: int | None) -> np.ndarray:
    """Ids of the ``n`` highest label-issue scores, as the report's gallery picks them."""
    from embviz.report.data import load_samples, top_rows
    from embviz.report.sections import GALLERY_SIZE

    n = GALLERY_SIZE if n is None else n
    if n < 1:
        raise ValueError(f"top_label_issues must be >= 1, got {n}")
    samples = load_samples(ds)
    if "label_issue_score" not in samples.scores:
        raise DatasetError(
            f"{ds.root}: no 'label_issue_score' to pick samples by; run 'embviz score' first "
            "or give the ids (--ids-from FILE)"
        )
    return samples.ids[top_rows(samples.scores["label_issue_score"], n)]


def _labels(ds: Dataset, ids: np.ndarray, where: str) -> dict[int, str | None]:
    """Sample id -> its label as a string (None when unlabelled); an unknown id raises."""
    has_label = "label" in ds.table("samples")["columns"]
    found = ds.read_ids("samples", ids, ["label"] if has_label else [])
    known = found.column("id").to_pylist()
    seen = set(known)
    missing = [i for i in ids.tolist() if i not in seen]
    if missing:
        shown = ", ".join(map(str, missing[:_NAMED])) + (" ..." if len(missing) > _NAMED else "")
        raise DatasetError(
            f"{where}: {len(missing):,} of {len(ids):,} ids are not samples of {ds.root}: {shown}"
        )
    if not has_label:
        return dict.fromkeys(known)
    values = found.column("label").to_pylist()
    return {i: None if v is None else str(v) for i, v in zip(known, values, strict=True)}
