"""The ``reduce`` step: fit a reducer on a sample of an embedding, project every row, store it Hilbert-sorted."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embviz.curve import AXES, bounds_of, layout_partitions
from embviz.dataset import Dataset, slugify, table_to_vectors
from embviz.errors import DatasetError
from embviz.reducers import get_reducer

from .choose import as_dataset, pick_table
from .runner import cluster_client, run_tasks

log = logging.getLogger(__name__)

__all__ = ["ROW_GROUP_ROWS", "ReduceResult", "reduce", "write_projection"]

#: Rows per Parquet row group in projection tables: each row group's min/max statistics then
#: describe a small, compact patch of the Hilbert-sorted points, so readers can skip the rest.
ROW_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class ReduceResult:
    """What :func:`reduce` wrote and how long it took."""

    table: str  #: table key written, ``projections/<name>``
    rows: int  #: rows projected
    seconds: float  #: wall time of the whole step
    fit_seconds: float  #: time to read the sample and fit the reducer
    transform_seconds: float  #: time to project every row
    sample_rows: int  #: rows the reducer was fitted on
    reused: bool = False  #: the projection already matched these inputs and parameters
    unplaced: int = 0  #: rows the reducer gave non-finite coordinates: left off the map


def write_projection(
    ds: str | Path | Dataset,
    name: str,
    ids: np.ndarray,
    coords: np.ndarray,
    *,
    meta: dict[str, Any],
    partition_rows: int = 1_000_000,
    strict: bool = False,
) -> dict[str, Any]:
    """Write ``projections/<name>``: points sorted along a Hilbert curve, bounds per partition.

    Rows whose coordinates are not finite (NaN, inf: a reducer's failure, a user's missing
    value) are left off the table and counted in its meta as ``unplaced`` (their samples stay
    in the dataset; :func:`embviz.projections.unplaced_ids` lists them); ``strict`` refuses
    them instead, naming the first id.

    Parameters
    ----------
    ds : dataset (or its path) to write into.
    name : projection name (the table key is ``projections/<name>``).
    ids : (n,) sample ids, int64.
    coords : (n, 2) or (n, 3) coordinates; stored as float32 columns ``x``, ``y`` (, ``z``).
    meta : stored in the table's manifest ``meta`` (method, parameters, source embedding ...);
        ``dims``, ``curve`` ("hilbert") and ``bounds`` (overall ``{"x": [min, max], ...}``) are
        added.
    partition_rows : rows per Parquet file; each file covers a compact region of the plane and
        its bounds go in the manifest. Row groups hold :data:`ROW_GROUP_ROWS` rows.

    Returns the table's new manifest entry.
    """
    import pyarrow as pa

    ds = as_dataset(ds)
    coords = np.asarray(coords, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3) or coords.shape[0] != ids.shape[0]:
        raise ValueError(
            f"projection {name!r}: coords must be (n, 2) or (n, 3) with n = len(ids) = "
            f"{ids.shape[0]}, got {coords.shape}"
        )
    finite = np.isfinite(coords).all(axis=1)
    unplaced = int(len(finite) - finite.sum())
    if unplaced and strict:
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"projection {name!r}: non-finite coordinates for id {int(ids[bad])}")
    if unplaced:
        log.warning("projection %r: %d rows with non-finite coordinates left off", name, unplaced)
        ids, coords = ids[finite], coords[finite]
    dims = coords.shape[1]
    overall = bounds_of(coords)
    key = f"projections/{name}"
    writer = ds.writer(key)
    try:

        def table(id_chunk, c_chunk):
            cols = {"id": pa.array(id_chunk, type=pa.int64())}
            for i in range(dims):
                cols[AXES[i]] = pa.array(np.ascontiguousarray(c_chunk[:, i]), type=pa.float32())
            return pa.table(cols)

        if ids.shape[0] == 0:
            writer.write_part(0, table(ids, coords))
        for index, id_chunk, c_chunk, bounds in layout_partitions(
            ids, coords, partition_rows=partition_rows, bounds=overall
        ):
            writer.write_part(
                index,
                table(id_chunk, c_chunk),
                id_range=(int(id_chunk.min()), int(id_chunk.max())),
                bounds=bounds,
                row_group_size=ROW_GROUP_ROWS,
            )
        full_meta = {
            **meta,
            "dims": dims,
            "curve": "hilbert",
            "bounds": overall,
            "row_group_rows": ROW_GROUP_ROWS,
            "unplaced": unplaced,
        }
        entry = writer.commit(full_meta)
    except BaseException:
        writer.abort()
        raise
    ds.reload()
    return entry


def _split_ids(ds: Dataset, split: str) -> np.ndarray:
    """Sorted ids of the samples whose ``split`` equals ``split``."""
    if not ds.has("samples"):
        raise DatasetError(f"{ds.root}: fit_split={split!r} needs a 'samples' table; none found")
    t = ds.read_arrow("samples", columns=["id", "split"])
    ids = t.column("id").to_numpy()
    splits = np.asarray(t.column("split").to_pandas(), dtype=object)
    chosen = np.sort(ids[splits == split])
    if chosen.size == 0:
        found = sorted({s for s in splits if s is not None})
        raise DatasetError(
            f"{ds.root}: no samples with split {split!r} in table 'samples'; splits present: {found}"
        )
    return chosen


def _read_sample(
    ds: Dataset, key: str, *, sample: int, seed: int, only_ids: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random sample (sorted by position) of at most ``sample`` rows of ``key``.

    Reads partition by partition so memory holds one partition plus the sample.
    """
    import pyarrow.parquet as pq

    paths = ds.part_paths(key)
    id_parts = [pq.read_table(p, columns=["id"]).column("id").to_numpy() for p in paths]
    all_ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int64)
    eligible = np.arange(all_ids.shape[0])
    if only_ids is not None:
        eligible = eligible[np.isin(all_ids, only_ids)]
    if eligible.size == 0:
        raise DatasetError(f"{ds.root}: table {key!r} has no rows to fit on")
    if eligible.size > sample:
        rng = np.random.default_rng(seed)
        eligible = np.sort(rng.choice(eligible, size=sample, replace=False))
    ids_out, vecs_out = [], []
    start = 0
    for path, part_ids in zip(paths, id_parts, strict=True):
        stop = start + part_ids.shape[0]
        lo, hi = np.searchsorted(eligible, [start, stop])
        if hi > lo:
            ids, vecs = table_to_vectors(pq.read_table(path, columns=["id", "vector"]))
            local = eligible[lo:hi] - start
            ids_out.append(ids[local])
            vecs_out.append(vecs[local])
        start = stop
    return np.concatenate(ids_out), np.concatenate(vecs_out)


def _transform_part(
    path: str,
    *,
    reducer: Any,
    fitted_ids: np.ndarray,
    fitted_coords: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Task: project one embedding partition; rows that were fitted keep their fitted coordinates."""
    import pyarrow.parquet as pq

    ids, vecs = table_to_vectors(pq.read_table(path, columns=["id", "vector"]))
    coords = np.empty((ids.shape[0], reducer.dims), dtype=np.float32)
    hit = np.zeros(ids.shape[0], dtype=bool)
    if fitted_ids.size:
        pos = np.minimum(np.searchsorted(fitted_ids, ids), fitted_ids.size - 1)
        hit = fitted_ids[pos] == ids
        coords[hit] = fitted_coords[pos[hit]]
    if not hit.all():
        coords[~hit] = reducer.transform(vecs[~hit])
    return ids, coords


def reduce(
    dataset: str | Path | Dataset,
    *,
    embedding: str | None = None,
    method: str = "umap",
    dims: int = 2,
    pca: int | float | None = None,
    sample: int = 100_000,
    seed: int = 0,
    fit_split: str | None = None,
    fit_embedding: str | None = None,
    fit_dataset: str | Path | Dataset | None = None,
    params: dict[str, Any] | None = None,
    name: str | None = None,
    partition_rows: int = 1_000_000,
    scheduler: str | Any | None = None,
    progress: bool = True,
    force: bool = False,
) -> ReduceResult:
    """Project an embedding table to 2-D or 3-D and store it as ``projections/<name>``.

    The reducer is fitted on a seeded random sample, then every row is transformed partition by
    partition (on the Dask cluster when ``scheduler`` is given). When fitting on the projected
    table itself, the sampled rows keep their fitted coordinates, so with ``sample`` >= rows the
    result is exactly the method's ``fit_transform``.

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`.
    embedding : embedding name (``<model>.<layer>``, without ``embeddings/``); default the
        dataset's first (:func:`~embviz.pipeline.choose.pick_table`).
    method : ``pca``, ``umap``, ``tsne`` or ``pacmap`` (see :mod:`embviz.reducers`).
    dims : 2 or 3.
    pca : PCA pre-reduction before the method: component count (int) or variance fraction
        (0 < pca < 1); None for none. 50 components is a common choice for 512-2048-d features.
    sample : most rows to fit on (fitting cost grows faster than linearly; 50K-100K is plenty).
    seed : seeds the sample and the reducer; same seed, same coordinates.
    fit_split : fit only on samples whose ``split`` is this (e.g. ``train``), then project all.
    fit_embedding : fit on this embedding table instead (default ``embedding``).
    fit_dataset : ... found in this dataset (default this one); it must be the same model space.
    params : method parameters (e.g. ``{"n_neighbors": 30}``); unknown names raise ConfigError.
    name : projection name; default ``<embedding>.<method><dims>d``.
    partition_rows : rows per projection partition file.
    scheduler : Dask scheduler address or ``distributed.Client``; None runs here.
    progress : show a progress bar.
    force : recompute even when the projection exists with the same inputs and parameters.

    Returns a :class:`ReduceResult`.
    """
    started = time.time()
    ds = as_dataset(dataset)
    emb = pick_table(ds, "embeddings", embedding, step="reduce")
    fds = ds if fit_dataset is None else as_dataset(fit_dataset)
    fit_emb = pick_table(
        fds, "embeddings", fit_embedding or emb, step="reduce", what="fit embedding"
    )
    same_table = fds.root.resolve() == ds.root.resolve() and fit_emb == emb
    params = dict(params or {})
    reducer = get_reducer(method, dims=dims, seed=seed, pca=pca, **params)
    if sample < 2:
        raise ValueError(f"sample must be >= 2, got {sample}")
    name = slugify(name or f"{emb}.{method}{dims}d")
    key = f"embeddings/{emb}"
    run_params = {
        "embedding": emb,
        "method": method,
        "dims": dims,
        "pca": pca,
        "sample": sample,
        "seed": seed,
        "fit_split": fit_split,
        "fit_embedding": fit_emb,
        "fit_dataset": None if fit_dataset is None else str(fds.root),
        "params": params,
        "name": name,
        "partition_rows": partition_rows,
    }
    # The inputs' table versions make the fingerprint: a re-embedded table re-projects.
    fingerprint = json.loads(
        json.dumps(
            {
                "params": run_params,
                "source_dir": ds.table(key)["dir"],
                "fit_dir": fds.table(f"embeddings/{fit_emb}")["dir"],
            },
            default=str,
        )
    )
    out_key = f"projections/{name}"
    if not force and ds.has(out_key) and ds.meta(out_key).get("fingerprint") == fingerprint:
        return ReduceResult(
            table=out_key,
            rows=ds.table(out_key)["rows"],
            seconds=round(time.time() - started, 3),
            fit_seconds=0.0,
            transform_seconds=0.0,
            sample_rows=ds.meta(out_key)["sample_rows"],
            reused=True,
            unplaced=int(ds.meta(out_key).get("unplaced", 0)),
        )

    only = _split_ids(fds, fit_split) if fit_split is not None else None
    fit_ids, fit_vecs = _read_sample(
        fds, f"embeddings/{fit_emb}", sample=sample, seed=seed, only_ids=only
    )
    reducer.fit(fit_vecs)
    del fit_vecs
    fit_done = time.time()

    if same_table:
        order = np.argsort(fit_ids, kind="stable")
        fitted_ids, fitted_coords = fit_ids[order], reducer.embedding_[order]
    else:
        fitted_ids = np.zeros(0, np.int64)
        fitted_coords = np.zeros((0, dims), np.float32)
    entry = ds.table(key)
    paths = [str(p) for p in ds.part_paths(key)]
    weights = [p["rows"] for p in entry["partitions"]]
    with cluster_client(scheduler) as client:
        shared: dict[str, Any] = {
            "reducer": reducer,
            "fitted_ids": fitted_ids,
            "fitted_coords": fitted_coords,
        }
        if client is not None:
            # Ship the fitted model and sample once per worker, not once per task.
            shared = {k: client.scatter(v, broadcast=True) for k, v in shared.items()}
        parts = run_tasks(
            _transform_part,
            paths,
            scheduler=client,
            desc=f"reduce {emb} ({method})",
            unit="rows",
            progress=progress,
            weights=weights,
            **shared,
        )
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    coords = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, dims), np.float32)
    transform_done = time.time()

    meta = {
        "source": key,
        "method": method,
        "reducer": reducer.params,
        "sample_rows": int(fit_ids.shape[0]),
        "fit_split": fit_split,
        "fit_table": f"embeddings/{fit_emb}",
        "fit_dataset": None if fit_dataset is None else str(fds.root),
        "fingerprint": fingerprint,
    }
    entry = write_projection(ds, name, ids, coords, meta=meta, partition_rows=partition_rows)
    unplaced = int(entry["meta"].get("unplaced", 0))
    result = ReduceResult(
        table=f"projections/{name}",
        rows=int(ids.shape[0]) - unplaced,
        unplaced=unplaced,
        seconds=round(time.time() - started, 3),
        fit_seconds=round(fit_done - started, 3),
        transform_seconds=round(transform_done - fit_done, 3),
        sample_rows=int(fit_ids.shape[0]),
    )
    ds.record_step(
        "reduce",
        run_params,
        started=started,
        result={k: getattr(result, k) for k in result.__dataclass_fields__},
    )
    return result
