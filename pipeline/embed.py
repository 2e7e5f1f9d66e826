"""The resumable ``embed`` step: run a model over the samples table, one embeddings table per layer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embviz.dataset import Dataset, TableWriter, open_dataset, slugify
from embviz.errors import ConfigError, DatasetError
from embviz.models import DEFAULT_MODEL, model_slug
from embviz.reshape import reshape_label, resolve_reshape
from embviz.samples import PREDICTIONS

from .embed_parts import earlier_failures, embedder_for, staged_dim, stagers
from .embed_parts import embed_partition as _embed_partition
from .embed_series import embed_checkpoints, layer_series, series_names, update_series
from .predict_head import class_names_for, head_fingerprint, publish_head
from .runner import run_tasks

__all__ = ["EmbedResult", "embed", "embed_tables", "list_layers"]


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed` did.

    Attributes
    ----------
    tables:
        Keys of the embeddings tables written (``embeddings/<name>.<layer>``), one per layer.
    rows:
        Rows in each table (samples whose image decoded).
    seconds:
        Wall time of the whole step.
    images_per_second:
        Images embedded in this run per second of wall time (0 when everything was resumed).
    partitions_done:
        Partitions embedded in this run.
    partitions_skipped:
        Partitions already staged by an earlier, interrupted run with the same parameters.
    failed:
        Samples left out because their image did not decode: ``{"id", "uri", "error"}``.
    reused:
        True when every table was already published with the same model, weights, options and
        samples, so nothing ran (``force=True`` re-embeds).
    series:
        Series the tables form (:mod:`embviz.series`): checkpoints, or several layers.
    """

    tables: list[str]
    rows: int
    seconds: float
    images_per_second: float
    partitions_done: int
    partitions_skipped: int
    failed: list[dict[str, Any]]
    reused: bool = False
    series: list[str] = field(default_factory=list)


def list_layers(
    model: str = DEFAULT_MODEL, *, image_size: int | None = None, device: str = "auto"
) -> list[tuple[str, tuple[int, ...]]]:
    """Layers of ``model`` that can be embedded, as ``(name, output shape without batch)``.

    ``pooled`` (the pre-logits features, the default) comes first, then every named module whose
    output is a tensor, in module definition order. Shapes are for ``image_size`` inputs (default: the
    model's own size). Raises :class:`~embviz.errors.ModelError` for an unknown model.
    """
    return embedder_for(model, image_size, device).layers()


def embed(
    dataset: str | Path | Dataset,
    *,
    model: str = DEFAULT_MODEL,
    layers: Sequence[str] | None = None,
    reshape: str | Callable[[Any], Any] = "mean",
    batch_size: int = 32,
    image_size: int | None = None,
    device: str = "auto",
    threads: int = 2,
    scheduler: str | Any | None = None,
    name: str | None = None,
    progress: bool = True,
    force: bool = False,
    predict: bool = False,
    class_names: str | Path | None = None,
    top_k: int = 10,
    checkpoints: str | Path | Sequence[str | Path] | None = None,
    series: str | None = None,
) -> EmbedResult:
    """Embed every sample's image with ``model`` and write one embeddings table per layer.

    Partition ``i`` of each embeddings table holds the samples of partition ``i`` of the samples
    table (minus images that fail to decode, which are reported in ``failed``). Partitions are
    staged atomically as they finish: re-running after a crash or kill with the same parameters
    redoes only the partitions that were not finished.

    Parameters
    ----------
    dataset:
        Dataset directory or an open :class:`~embviz.dataset.Dataset` with a samples table.
    model:
        A name :func:`embviz.models.get_embedder` accepts (default: offline EfficientNet-Lite0).
    layers:
        Layer names from :func:`list_layers`; all are captured in one forward pass. Default:
        ``["pooled"]``, the pre-logits features.
    reshape:
        How multi-dimensional layer outputs become vectors: ``mean``, ``flatten``,
        ``avg_pool_NxN``, ``cls`` or a callable (see :func:`embviz.reshape.apply_reshape`);
        pooled outputs are already vectors. A callable must be importable (a module-level
        function) to run on a cluster.
    batch_size:
        Images per forward pass: larger uses more memory, is a little faster on CPU, much on GPU.
    image_size:
        Input side in pixels instead of the model's own (e.g. 112 or 128 for small images: about
        4-8x faster than 224). Part of the table's identity: changing it starts over.
    device:
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda:N"``.
    threads:
        Threads decoding and preprocessing images ahead of the model, per process.
    scheduler:
        Dask scheduler address or ``distributed.Client``: one task per partition on the cluster.
        None runs the partitions here, one after another.
    name:
        Table name prefix instead of the model's slug: tables are ``embeddings/<name>.<layer>``.
    progress:
        Show a progress bar in images per second with an ETA.
    force:
        Re-embed even when the published tables already match these options and samples.
    predict, class_names, top_k:
        Also write the ``predictions`` table of the model's own head (as ``embviz predict
        --source head`` does) from the same forward passes; ``class_names`` as for predict.
    checkpoints:
        Embed with each of several weights of ``model`` in turn, one table per checkpoint and
        layer (``embeddings/<name>-<member>.<layer>``), recorded as a ``checkpoints`` series:
        a folder of weight files or a list of them, or ``hf:`` revisions; every member is
        checked before anything is written (see :func:`.embed_series.embed_checkpoints`).
    series:
        Name of the series the run writes (default ``<name>-checkpoints``, or ``<name>-layers``
        for one run writing several layers).

    Returns
    -------
    EmbedResult
    """
    # An open Dataset is re-read: another process may have published tables since.
    ds = dataset.reload() if isinstance(dataset, Dataset) else open_dataset(dataset)
    options = dict(
        layers=layers,
        reshape=reshape,
        batch_size=batch_size,
        image_size=image_size,
        device=device,
        threads=threads,
        scheduler=scheduler,
        progress=progress,
        force=force,
    )
    if checkpoints is not None:
        if predict:
            raise ConfigError(
                "predict=True writes one predictions table, so it cannot ride an embed over "
                "checkpoints; run 'embviz predict --source head' on the checkpoint you want"
            )
        return embed_checkpoints(
            ds, model=model, checkpoints=checkpoints, name=name, series=series, **options
        )
    return embed_tables(
        ds,
        model=model,
        name=name,
        series=series,
        predict=predict,
        class_names=class_names,
        top_k=top_k,
        **options,
    )


def embed_tables(
    ds: Dataset,
    *,
    model: str,
    layers: Sequence[str] | None,
    reshape: str | Callable[[Any], Any],
    batch_size: int,
    image_size: int | None,
    device: str,
    threads: int,
    scheduler: str | Any | None,
    name: str | None,
    progress: bool,
    force: bool,
    predict: bool = False,
    class_names: str | Path | None = None,
    top_k: int = 10,
    series: str | None = None,
    series_meta: dict[str, dict[str, Any]] | None = None,
    desc: str | None = None,
    identity: str | None = None,
) -> EmbedResult:
    """One model's pass over ``ds``: the work of :func:`embed` for one set of weights.

    ``series_meta`` (``{layer: series entry}``) places each layer's table in a series (the
    checkpoints runner gives it); without it, several layers form the ``<name>-layers`` series
    (or ``series``). ``desc`` labels the progress bar. ``identity`` names the model in the
    tables' fingerprints instead of ``model`` (a checkpoint's table is then reused when its
    weights match, wherever the file lies). Other parameters as for :func:`embed`.
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    samples = ds.table("samples")
    part_rows = [int(p["rows"]) for p in samples["partitions"]]
    if not part_rows:
        raise DatasetError(f"{ds.root}: the samples table has no partitions; nothing to embed")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    resolve_reshape(reshape)
    emb = embedder_for(model, image_size, device)
    layers = list(dict.fromkeys(layers or [emb.default_layer]))
    emb.check_layers(layers)
    prefix = slugify(name) if name else model_slug(model)
    whole = series_meta is None  # this run writes its whole series (not one checkpoint's part)
    if whole:
        series_meta = layer_series(series or f"{prefix}-layers", layers)
    fingerprints = {
        layer: {
            "step": "embed",
            "model": identity or model,
            "layer": layer,
            "reshape": reshape_label(reshape),
            "image_size": image_size,
            "weights_sha256": emb.weights_sha256,
            "samples": samples["dir"],
        }
        for layer in layers
    }
    keys = {layer: f"embeddings/{prefix}.{slugify(layer)}" for layer in layers}
    head = None
    if predict:
        names = class_names_for(emb, class_names)
        fp = head_fingerprint(ds, emb, model=model, image_size=image_size, k=top_k, names=names)
        head = {"names": names, "k": top_k, "fingerprint": fp}
    published = [(keys[layer], _jsonable(fp)) for layer, fp in fingerprints.items()]
    if head is not None:
        published.append((PREDICTIONS, _jsonable(head["fingerprint"])))
    if not force and all(ds.has(k) and ds.meta(k).get("fingerprint") == fp for k, fp in published):
        # Same model, weights, options and samples: the published tables are this run's output.
        update_series(ds, {keys[k]: e for k, e in series_meta.items()}, exclusive=whole)
        return EmbedResult(
            tables=list(keys.values()),
            rows=ds.table(keys[layers[0]])["rows"],
            seconds=round(time.time() - t0, 3),
            images_per_second=0.0,
            partitions_done=0,
            partitions_skipped=len(part_rows),
            failed=[],
            reused=True,
            series=series_names(series_meta),
        )
    writers: dict[str, TableWriter] = {
        layer: ds.writer(keys[layer], fingerprint=fingerprints[layer]) for layer in layers
    }

    if head is not None:
        head["writer"] = ds.writer(PREDICTIONS, fingerprint=head["fingerprint"])
    parts = range(len(part_rows))
    pending = [i for i in parts if not all(w.has_part(i) for w in stagers(writers, head))]
    skipped = [i for i in parts if i not in set(pending)]
    task_args: dict[str, Any] = {
        "root": str(ds.root),
        "writers": writers,
        "model": model,
        "layers": layers,
        "reshape": reshape,
        "batch_size": batch_size,
        "image_size": image_size,
        "device": device,
        "threads": threads,
        "weights_sha256": emb.weights_sha256,
        "head": head,
    }
    t_run = time.time()
    todo = sum(part_rows[i] for i in pending)
    if scheduler is None or scheduler == "":
        bar = tqdm(
            total=todo,
            desc=desc or f"embed {model}",
            unit="img",
            disable=not progress,
            smoothing=0.1,
        )
        try:
            results = run_tasks(
                _embed_partition, pending, progress=False, on_batch=bar.update, **task_args
            )
        finally:
            bar.close()
    else:
        results = run_tasks(
            _embed_partition,
            pending,
            scheduler=scheduler,
            desc=desc or f"embed {model}",
            unit="img",
            progress=progress,
            weights=[part_rows[i] for i in pending],
            **task_args,
        )
    run_seconds = time.time() - t_run

    failed = [f for r in results for f in r["failed"]]
    first = writers[layers[0]]
    for i in skipped:
        failed.extend(earlier_failures(ds, first, i))
    failed.sort(key=lambda f: f["id"])
    tables, rows = [], 0
    for layer, writer in writers.items():
        entry = writer.commit(
            meta={
                "model": model,
                "layer": layer,
                "reshape": reshape_label(reshape),
                "dim": staged_dim(writer),
                "weights_sha256": emb.weights_sha256,
                "image_size": image_size,
                "device": emb.device,
                "failed": len(failed),
                "fingerprint": fingerprints[layer],
                **({"series": series_meta[layer]} if layer in series_meta else {}),
            }
        )
        tables.append(writer.key)
        rows = entry["rows"]
    if head is not None:
        publish_head(
            ds,
            head["writer"],
            model=model,
            names=head["names"],
            k=top_k,
            fingerprint=head["fingerprint"],
            failed=failed,
            started=t0,
        )
    seconds = time.time() - t0
    embedded = sum(part_rows[i] for i in pending)
    result = EmbedResult(
        tables=tables,
        rows=rows,
        seconds=round(seconds, 3),
        images_per_second=round(embedded / run_seconds, 2) if embedded and run_seconds else 0.0,
        partitions_done=len(pending),
        partitions_skipped=len(skipped),
        failed=failed,
        series=series_names(series_meta),
    )
    params = {
        "model": model,
        "layers": layers,
        "reshape": reshape_label(reshape),
        "batch_size": batch_size,
        "image_size": image_size,
        "device": device,
        "threads": threads,
        "scheduler": None if scheduler is None else str(scheduler),
        "name": name,
    }
    ds.record_step(
        "embed",
        params,
        started=t0,
        result={
            "tables": tables,
            "rows": rows,
            "failed": len(failed),
            "failed_ids": [f["id"] for f in failed[:100]],
            "partitions_done": len(pending),
            "partitions_skipped": len(skipped),
            "images_per_second": result.images_per_second,
        },
    )
    ds.reload()
    if whole:
        update_series(ds, {keys[k]: e for k, e in series_meta.items()}, exclusive=True)
    return result


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
