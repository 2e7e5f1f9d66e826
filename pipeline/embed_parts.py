"""The per-partition work of ``embed``: one task per samples partition (here or on Dask)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from embviz.dataset import Dataset, TableWriter, open_dataset, vectors_to_table
from embviz.errors import ModelError
from embviz.models import cached_embedder

from .batches import prepared_batches
from .predict_head import HeadStage

__all__ = [
    "earlier_failures",
    "embed_partition",
    "embedder_for",
    "set_torch_threads",
    "staged_dim",
    "stagers",
]

_torch_threads_set = False


def embedder_for(model: str, image_size: int | None, device: str):
    """The process's loaded ``model`` (Dask workers reuse it for every partition)."""
    # Loaded once per process: Dask workers reuse it for every partition they are given.
    return cached_embedder(model, image_size=image_size, device=device)


def set_torch_threads() -> None:
    """Give torch every core this process may use (once), unless OMP_NUM_THREADS says otherwise.

    torch defaults to the number of *physical* cores, which on small VMs is half the vCPUs; Dask
    nannies set OMP_NUM_THREADS=1 in each worker so that workers do not oversubscribe a host.
    """
    global _torch_threads_set
    if _torch_threads_set:
        return
    import torch

    env = os.environ.get("OMP_NUM_THREADS", "")
    n = int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, n))
    _torch_threads_set = True


def embed_partition(
    index: int,
    *,
    root: str,
    writers: dict[str, TableWriter],
    model: str,
    layers: list[str],
    reshape: str | Callable[[Any], Any],
    batch_size: int,
    image_size: int | None,
    device: str,
    threads: int,
    weights_sha256: str,
    head: dict[str, Any] | None = None,
    on_batch: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Embed samples partition ``index`` and stage it in every layer's writer (a Dask task).

    Returns ``{"index", "rows", "failed", "skipped"}``; a partition staged for every layer
    already (a retried task) is skipped. ``head`` (``writer``, ``names``, ``k``): also stage the
    model's top-k predictions from the same forward passes.
    """
    import numpy as np
    import torch

    if all(w.has_part(index) for w in stagers(writers, head)):
        return {"index": index, "rows": 0, "failed": [], "skipped": True}
    set_torch_threads()
    ds = open_dataset(root, check_files=False)
    emb = embedder_for(model, image_size, device)
    if emb.weights_sha256 != weights_sha256:
        raise ModelError(
            f"model {model!r} loads different weights here (sha256 {emb.weights_sha256[:12]}) "
            f"than on the driver ({weights_sha256[:12]}); install the same versions everywhere"
        )
    table = ds.read_arrow("samples", columns=["id", "uri"], partitions=[index])
    ids = table.column("id").to_numpy()
    uris = table.column("uri").to_pylist()
    stage = None if head is None else HeadStage(head, ds, index, ids)
    kept: list[int] = []
    chunks: dict[str, list[Any]] = {layer: [] for layer in layers}
    failed: list[dict[str, Any]] = []
    for start, batch in prepared_batches(emb, uris, ds.root, batch_size, threads):
        good = [j for j, (tensor, _) in enumerate(batch) if tensor is not None]
        for j, (_, error) in enumerate(batch):
            if error is not None:
                failed.append({"id": int(ids[start + j]), "uri": uris[start + j], "error": error})
        if good:
            out = emb.embed_batch(
                torch.stack([batch[j][0] for j in good]), layers, reshape, logits=stage is not None
            )
            if stage is not None:
                out, logits = out
                stage.add([start + j for j in good], logits)
            for layer in layers:
                chunks[layer].append(out[layer])
            kept.extend(int(ids[start + j]) for j in good)
        if on_batch is not None:
            on_batch(len(batch))
    if not kept:  # keep partition i of every table aligned with samples: write it empty
        out = emb.embed_batch(emb.dummy_batch(1), layers, reshape)
        chunks = {layer: [out[layer][:0]] for layer in layers}
    for layer, writer in writers.items():
        vectors = np.concatenate(chunks[layer]).astype(np.float32, copy=False)
        writer.write_part(index, vectors_to_table(np.asarray(kept, dtype=np.int64), vectors))
    if stage is not None:
        stage.write()
    return {"index": index, "rows": len(kept), "failed": failed, "skipped": False}


def stagers(writers: dict[str, TableWriter], head: dict[str, Any] | None) -> list[TableWriter]:
    """Every writer a partition is staged in: the layers' and the head's predictions."""
    return [*writers.values(), *([head["writer"]] if head else [])]


def staged_dim(writer: TableWriter) -> int:
    """The vector dimension of a writer's staged table (from its first partition's schema)."""
    import pyarrow.parquet as pq

    part = writer.staged_parts()[0]["file"]
    return int(pq.read_schema(writer.staging / part).field("vector").type.list_size)


def earlier_failures(ds: Dataset, writer: TableWriter, index: int) -> list[dict[str, Any]]:
    """Samples of a partition staged by an earlier run that have no vector there."""
    import pyarrow.parquet as pq

    samples = ds.read_arrow("samples", columns=["id", "uri"], partitions=[index])
    path = writer.staging / writer.part_name(index)
    staged = set(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return [
        {"id": int(i), "uri": u, "error": "image did not decode in an earlier run"}
        for i, u in zip(samples["id"].to_pylist(), samples["uri"].to_pylist(), strict=True)
        if int(i) not in staged
    ]
