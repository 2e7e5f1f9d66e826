"""The ``index`` step: a nearest-neighbour index over an embedding, every row's k neighbours, read back."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embviz.dataset import Dataset
from embviz.errors import DatasetError
from embviz.index import NeighbourIndex
from embviz.scores import neighbour_rows
from embviz.storage import atomic_write_json, write_parquet_atomic

from .choose import as_dataset, pick_table

__all__ = [
    "INDEX_DIR",
    "NEIGHBOURS_FILE",
    "IndexResult",
    "ensure_neighbours",
    "index",
    "index_dir",
    "neighbour_matrix",
]

from embviz.index import INDEX_DIR, index_dir  # noqa: E402  (one definition, in the library)

#: The neighbours table in an index folder: ``id int64, neighbours list<int64>, distances list<float>``.
NEIGHBOURS_FILE = "neighbours.parquet"
_STEP_FILE = "step.json"


@dataclass(frozen=True)
class IndexResult:
    """What :func:`index` did.

    Attributes
    ----------
    directory:
        The index folder (``<dataset>/index/<embedding>--<version>``): the faiss index
        (``index.faiss``, ``ids.npy``, ``index.json``), ``neighbours.parquet`` and ``step.json``.
    rows:
        Vectors indexed (rows of the neighbours table).
    k:
        Neighbours per row.
    kind:
        The faiss index class (``IndexFlatIP`` exact, ``IndexIVFFlat`` approximate).
    seconds:
        Wall time of the whole step.
    build_seconds:
        Time to read the vectors and build the index (0 when reused).
    neighbours_seconds:
        Time to query every row's neighbours (0 when reused).
    reused:
        True when the folder already held an index of this embedding version with the same
        options, so nothing ran (``force=True`` rebuilds).
    """

    directory: Path
    rows: int
    k: int
    kind: str
    seconds: float
    build_seconds: float = 0.0
    neighbours_seconds: float = 0.0
    reused: bool = False


def _read_step(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / _STEP_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _neighbours_table(ids, nbr_ids, nbr_dist):
    import numpy as np
    import pyarrow as pa

    n, k = nbr_ids.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.table(
        {
            "id": pa.array(np.asarray(ids, dtype=np.int64)),
            "neighbours": pa.ListArray.from_arrays(offsets, pa.array(nbr_ids.reshape(-1))),
            "distances": pa.ListArray.from_arrays(
                offsets, pa.array(nbr_dist.reshape(-1), type=pa.float32())
            ),
        }
    )


def index(
    dataset: str | Path | Dataset,
    *,
    embedding: str | None = None,
    k: int = 10,
    metric: str = "cosine",
    exact_below: int = 200_000,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> IndexResult:
    """Build a neighbour index over ``embeddings/<embedding>`` and store every row's k neighbours.

    The folder ``<dataset>/index/<embedding>--<version>`` is written whole into a temporary
    folder and renamed into place, so readers see the old index or the new one, never half;
    indexes of older versions of the embedding are removed afterwards. A re-embedded table has
    a new version, so it gets a new index.

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`.
    embedding : embedding name (``<model>.<layer>``, with or without ``embeddings/``);
        default the dataset's first (:func:`~embviz.pipeline.choose.pick_table`).
    k : neighbours stored per row (the row itself is left out).
    metric : ``cosine`` (distance 1 - similarity) or ``l2``.
    exact_below : up to this many rows the index is exact (brute force); above it, IVF
        (approximate, recall@10 >= 0.9; see :func:`embviz.index.build_index`).
    seed : seeds any sampling in the index build.
    force : rebuild even when the folder holds an index with the same options.
    progress : show a progress bar while querying the neighbours.

    Returns an :class:`IndexResult`; load the index with
    ``NeighbourIndex.load(result.directory)``.
    """
    started = time.time()
    ds = as_dataset(dataset)
    emb = pick_table(ds, "embeddings", embedding, step="index")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    key = f"embeddings/{emb}"
    params = {"embedding": emb, "k": k, "metric": metric, "exact_below": exact_below, "seed": seed}
    fingerprint = {"params": params, "source_dir": ds.table(key)["dir"]}
    out = index_dir(ds, emb)
    done = _read_step(out)
    if not force and done is not None and done.get("fingerprint") == fingerprint:
        return IndexResult(
            directory=out,
            rows=done["rows"],
            k=k,
            kind=done["kind"],
            seconds=round(time.time() - started, 3),
            reused=True,
        )

    ids, vectors = ds.read_vectors(key)
    if len(ids) < 2:
        raise ValueError(f"{ds.root}: table {key!r} has {len(ids)} rows; need at least 2 to index")
    k_eff = min(k, len(ids) - 1)
    nindex = NeighbourIndex.build(ids, vectors, metric=metric, exact_below=exact_below, seed=seed)
    del vectors
    built = time.time()
    nbr_ids, nbr_dist = nindex.neighbours(k_eff, progress=progress)
    queried = time.time()

    parent = out.parent
    tmp = parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        nindex.save(tmp)
        write_parquet_atomic(
            _neighbours_table(nindex.ids, nbr_ids, nbr_dist), tmp / NEIGHBOURS_FILE
        )
        step = {
            "fingerprint": fingerprint,
            "source": key,
            "rows": len(nindex),
            "k": k_eff,
            "kind": nindex.kind,
            "metric": metric,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(tmp / _STEP_FILE, step)
        # A directory rename cannot replace a non-empty one: move the old aside first.
        trash = parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            out.rename(trash)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in [trash, *parent.glob(f"{emb}--*"), *parent.glob(f".{emb}--*")]:
        if stale != out and stale.exists():
            shutil.rmtree(stale, ignore_errors=True)

    result = IndexResult(
        directory=out,
        rows=len(nindex),
        k=k_eff,
        kind=nindex.kind,
        seconds=round(time.time() - started, 3),
        build_seconds=round(built - started, 3),
        neighbours_seconds=round(queried - built, 3),
    )
    ds.record_step(
        "index",
        params,
        started=started,
        result={
            **{f: getattr(result, f) for f in result.__dataclass_fields__},
            "directory": str(out),
        },
    )
    return result


def ensure_neighbours(ds: Dataset, emb: str, k: int, *, progress: bool = True) -> dict[str, Any]:
    """The step record of ``emb``'s index, built first unless it holds at least ``k``
    neighbours per row (or every other row, for a smaller table)."""
    where = index_dir(ds, emb)
    rows = ds.table(f"embeddings/{emb}")["rows"]
    step = _read_step(where)
    enough = step is not None and step.get("k", 0) >= min(k, rows - 1)
    if not enough or not (where / NEIGHBOURS_FILE).exists():
        index(ds, embedding=emb, k=k, progress=progress)
        ds.reload()
        step = _read_step(where)
    assert step is not None  # index() just wrote it
    return step


def neighbour_matrix(
    ds: Dataset, embedding: str, ids: np.ndarray, *, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The saved neighbours of ``embedding`` as rows of ``ids``: ``(nbr (n, k), dist (n, k))``.

    ``nbr`` holds row positions in ``ids`` (-1 for a neighbour not in ``ids``, or a row that
    was not indexed) and ``dist`` the distances (inf where ``nbr`` is -1), nearest first: the
    form :mod:`embviz.scores` takes. Reads ``neighbours.parquet`` of the current index of the
    embedding (run the ``index`` step first); at most its ``k`` first neighbours.
    """
    import pyarrow.parquet as pq

    path = index_dir(ds, embedding) / NEIGHBOURS_FILE
    try:
        t = pq.read_table(path, columns=["id", "neighbours", "distances"])
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot read the neighbours table ({exc}); run 'embviz index' first"
        ) from exc
    nids = t.column("id").to_numpy()
    m = len(nids)

    def matrix(name: str, dtype) -> np.ndarray:
        flat = t.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        width = flat.shape[0] // m if m else 0
        return flat.astype(dtype, copy=False).reshape(m, width)[:, :k]

    nbr_ids, dist_t = matrix("neighbours", np.int64), matrix("distances", np.float32)
    pos = neighbour_rows(ids, nids)
    ok = pos >= 0
    nbr = np.full((len(ids), nbr_ids.shape[1]), -1, dtype=np.int64)
    dist = np.full(nbr.shape, np.inf, dtype=np.float32)
    nbr[pos[ok]] = neighbour_rows(ids, nbr_ids[ok])
    dist[pos[ok]] = dist_t[ok]
    dist[nbr < 0] = np.inf
    return nbr, dist
