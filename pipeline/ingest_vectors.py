"""The vectors path of ingest: the user's own embeddings (.npy or a list column) as tables."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embviz.dataset import Dataset, slugify, vectors_to_table
from embviz.errors import ConfigError, DatasetError

from .sources import chunks, metadata_columns, norm_split, read_table, str_or_none

__all__ = ["ingest_vectors"]


def _vectors_from_column(table, path: Path, column: str):
    """An (n, d) float array from a list / fixed-size-list column; errors name the row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in table.column_names:
        raise DatasetError(
            f"{path}: no vector column {column!r}; columns found: {table.column_names} "
            "(pass vector_column= to name it)"
        )
    col = table.column(column).combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) and not (
        pa.types.is_fixed_size_list(col.type)
    ):
        raise DatasetError(
            f"{path}: column {column!r} has type {col.type}; expected a list of floats per row"
        )
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetError(f"{path}: row {row}: column {column!r} is null")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DatasetError(
            f"{path}: row {row}: column {column!r} has {lengths[row]} values, "
            f"row 0 has {lengths[0]}; every vector must have the same length"
        )
    dim = int(lengths[0]) if len(lengths) else 0
    flat = col.flatten()
    if flat.null_count:
        row = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0]) // max(dim, 1)
        raise DatasetError(f"{path}: row {row}: column {column!r} holds a null value")
    values = flat.to_numpy(zero_copy_only=False)
    if not np.issubdtype(values.dtype, np.number):
        raise DatasetError(f"{path}: column {column!r} holds {flat.type} values; expected floats")
    return values.reshape(len(col), dim)


def _check_finite(values, path: Path, what: str, rows=None) -> None:
    """Raise naming the first row (``rows[i]`` when given) holding a NaN or inf."""
    import numpy as np

    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[0])
        row = int(rows[row]) if rows is not None else row
        raise DatasetError(
            f"{path}: row {row}: {what} holds a non-finite value (NaN or inf); "
            "fix or drop that row and ingest again"
        )


def ingest_vectors(
    ds: Dataset,
    source: Path,
    *,
    vector_column: str,
    coord_columns: Sequence[str] | None,
    metadata: Path | None,
    embedding_name: str,
    partition_rows: int,
    limit: int | None,
    fingerprint: str,
    strict: bool = False,
) -> tuple[int, list[dict[str, Any]], tuple[str, ...]]:
    """Write ``samples`` and ``embeddings/<embedding_name>`` (and a user projection) from vectors.

    The options are those of :func:`embviz.pipeline.ingest.ingest`; ``fingerprint`` is stored in the
    samples table's meta. Returns ``(rows, skipped, tables written)``; skipped is always empty
    because a bad vector fails the whole run, naming its row. Rows whose coordinates are not
    finite stay in the dataset and are left off the map (counted as the projection's
    ``unplaced``); ``strict`` refuses the file instead, naming the first such row.
    """
    import numpy as np
    import pyarrow as pa

    if source.suffix.lower() == ".npy":
        try:
            vectors = np.load(source, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{source}: cannot read as a .npy array ({exc})") from exc
        if vectors.ndim != 2:
            raise DatasetError(f"{source}: expected an (n, d) array, found shape {vectors.shape}")
        table = read_table(metadata) if metadata is not None else pa.table({})
        if metadata is not None and table.num_rows != len(vectors):
            raise DatasetError(
                f"{metadata} has {table.num_rows} rows but {source} has {len(vectors)} vectors; "
                "the metadata needs exactly one row per vector, in the same order"
            )
        where = metadata or source
    else:
        if metadata is not None:
            raise ConfigError(
                f"metadata= goes with a .npy source; {source} carries its own columns"
            )
        table = read_table(source)
        vectors = _vectors_from_column(table, source, vector_column)
        table = table.drop_columns([vector_column])
        where = source
    if limit is not None:
        vectors, table = vectors[:limit], table.slice(0, limit)
    n = len(vectors)
    if n == 0:
        return 0, [], ()
    ids = _user_ids(table, where, n)
    coords = None
    if coord_columns:
        coord_columns = list(coord_columns)
        if len(coord_columns) not in (2, 3):
            raise ConfigError(f"coord_columns must name 2 or 3 columns, got {coord_columns}")
        missing = [c for c in coord_columns if c not in table.column_names]
        if missing:
            raise DatasetError(
                f"{where}: coord_columns {missing} not found; columns found: {table.column_names}"
            )
        coords = np.column_stack(
            [
                table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                for c in coord_columns
            ]
        )
        if strict:
            _check_finite(coords, where, f"coordinates {coord_columns}")
        table = table.drop_columns(coord_columns)
    # Rows are written in id order so each partition's id range is tight; ``order`` maps
    # written rows back to the user's rows for error messages.
    order = np.argsort(ids, kind="stable")
    if (order != np.arange(n)).any():
        ids, table = ids[order], table.take(pa.array(order))
        coords = coords[order] if coords is not None else None
    else:
        order = None

    def column(name: str, fn=str_or_none) -> list[Any]:
        if name not in table.column_names:
            return [None] * n
        return [fn(v) for v in table.column(name).to_pylist()]

    base = where.parent

    def uri(v: Any) -> str | None:
        return None if v is None or str(v) == "" else os.path.abspath(base / str(v))

    uris, labels, splits = column("path", uri), column("label"), column("split", norm_split)
    meta = metadata_columns(table, where, drop=("id", "path", "label", "split"))

    samples = ds.writer("samples")
    emb_key = f"embeddings/{slugify(embedding_name)}"
    emb = ds.writer(emb_key)
    try:
        for part, chunk in enumerate(chunks(n, partition_rows)):
            sl = slice(chunk.start, chunk.stop)
            id_arr = pa.array(ids[sl])
            cols = {
                "id": id_arr,
                "uri": pa.array(uris[sl], pa.string()),
                "label": pa.array(labels[sl], pa.string()),
                "split": pa.array(splits[sl], pa.string()),
                "width": pa.nulls(len(chunk), pa.int32()),
                "height": pa.nulls(len(chunk), pa.int32()),
                "content_hash": pa.nulls(len(chunk), pa.string()),
                "thumb_id": pa.array(np.full(len(chunk), -1, dtype=np.int64)),
            }
            s_table = pa.table(cols)
            if meta is not None:
                m = meta.slice(chunk.start, len(chunk))
                for name in m.column_names:
                    s_table = s_table.append_column(name, m.column(name))
            id_range = (int(ids[chunk.start]), int(ids[chunk.stop - 1]))
            # One partition of vectors at a time: a memory-mapped .npy is never loaded whole.
            rows = order[sl] if order is not None else np.arange(chunk.start, chunk.stop)
            vecs = np.asarray(vectors[np.sort(rows)] if order is not None else vectors[sl])
            if order is not None:
                vecs = vecs[np.argsort(np.argsort(rows))]
            with np.errstate(over="ignore"):
                vecs = vecs.astype(np.float32)  # values beyond float32 become inf: caught here
            _check_finite(vecs, source, f"vector ({vector_column!r})", rows)
            samples.write_part(part, s_table, id_range=id_range)
            emb.write_part(part, vectors_to_table(ids[sl], vecs), id_range=id_range)
        samples.commit(
            {"source": str(where.absolute()), "kind": "vectors", "fingerprint": fingerprint}
        )
        emb.commit(
            {
                "model": "user",
                "layer": embedding_name,
                "dim": int(vectors.shape[1]),
                "source": str(source),
            }
        )
    except BaseException:
        samples.abort()
        emb.abort()
        raise
    tables: tuple[str, ...] = ("samples", emb_key)
    if coords is not None:
        from .reduce import write_projection

        proj = f"user{coords.shape[1]}d"
        write_projection(
            ds,
            proj,
            ids,
            coords,
            meta={
                "method": "user",
                "embedding": emb_key.split("/", 1)[1],
                "columns": coord_columns,
                "source": str(where),
            },
            strict=strict,
        )
        tables += (f"projections/{proj}",)
    return n, [], tables


def _user_ids(table, where: Path, n: int):
    """The ``id`` column when present (unique non-negative integers), else 0..n-1."""
    import numpy as np

    if "id" not in table.column_names:
        return np.arange(n, dtype=np.int64)
    col = table.column("id")
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetError(f"{where}: row {row}: column 'id' is null")
    ids = col.to_numpy(zero_copy_only=False)
    if not np.issubdtype(ids.dtype, np.integer):
        raise DatasetError(f"{where}: column 'id' must hold integers, found {col.type}")
    ids = ids.astype(np.int64)
    if (ids < 0).any():
        row = int(np.flatnonzero(ids < 0)[0])
        raise DatasetError(f"{where}: row {row}: column 'id' is negative ({ids[row]})")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[counts > 1][0])
        rows = np.flatnonzero(ids == dup)[:2].tolist()
        raise DatasetError(f"{where}: column 'id' repeats {dup} (rows {rows}); ids must be unique")
    return ids
