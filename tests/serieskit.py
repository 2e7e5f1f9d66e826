"""Series of real embeddings for the evolution tests: a checkpoint-like series made from the demo's
digits, and a layers series of two of its real tables.

Checkpoint t mixes a seeded random projection of noise with the real ``efficientnet_lite0``
vectors, ``(1 - w_t) * noise + w_t * real`` for w = 0, .25, .5, .75, 1: member 0 knows nothing
about the digits, the last is the real embedding, like an untrained and a trained checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embviz.dataset import Dataset, open_dataset, vectors_to_table
from embviz.series import series_entry

#: The mixing weights of the checkpoint-like series.
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
BLOCKS, POOLED = "efficientnet_lite0.blocks.5", "efficientnet_lite0.pooled"


def write_embedding(ds: Dataset, name: str, ids, X, *, series: dict | None = None, parts: int = 2):
    """Write ``embeddings/<name>`` in ``parts`` partitions, with ``series`` in its meta."""
    w = ds.writer(f"embeddings/{name}")
    for i, chunk in enumerate(np.array_split(np.arange(len(ids)), parts)):
        w.write_part(i, vectors_to_table(ids[chunk], X[chunk]))
    meta = {"model": "test", "dim": int(X.shape[1])}
    if series is not None:
        meta["series"] = series
    w.commit(meta)


def checkpoint_vectors(X: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The checkpoint-like members made from real vectors ``X`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((X.shape[0], 64)).astype(np.float32)
    noise = noise @ rng.standard_normal((64, X.shape[1])).astype(np.float32)
    noise *= X.std() / noise.std()
    return [((1 - w) * noise + w * X).astype(np.float32) for w in WEIGHTS]


def series_dataset(root: Path, demo: Path, *, rows: int = 1000, seed: int = 0) -> Dataset:
    """A dataset of ``rows`` real demo digits (samples with labels) holding series ``ckpt``
    (checkpoints, 5 members from ``blocks.5``) and ``layers`` (``blocks.5``, ``pooled``)."""
    src = open_dataset(demo)
    ids = np.sort(src.read_arrow("samples", columns=["id"]).column("id").to_numpy())
    ids = np.sort(np.random.default_rng(seed).choice(ids, rows, replace=False))
    ds = Dataset.create(root)
    samples = src.read_arrow("samples")
    samples = samples.filter(pc.is_in(samples.column("id"), value_set=pa.array(ids)))
    w = ds.writer("samples")
    w.write_part(0, samples.sort_by("id"))
    w.commit({"source": "demo subset"})
    real = {}
    for name in (BLOCKS, POOLED):
        t = src.read_ids(f"embeddings/{name}", ids, ["vector"])
        got = t.column("id").to_numpy()
        assert np.array_equal(got, ids)
        col = t.column("vector").combine_chunks()
        real[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), -1)
    for t, X in enumerate(checkpoint_vectors(real[BLOCKS], seed)):
        entry = series_entry("ckpt", "checkpoints", t, f"epoch-{t:03d}", len(WEIGHTS))
        write_embedding(ds, f"ckpt-epoch-{t:03d}.blocks.5", ids, X, series=entry)
    for t, name in enumerate((BLOCKS, POOLED)):
        entry = series_entry("layers", "layers", t, name.removeprefix("efficientnet_lite0."), 2)
        write_embedding(ds, name, ids, real[name], series=entry)
    return ds.reload()
