"""The ingest step: scan images, a manifest or the user's own vectors into a dataset's first tables."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embviz.dataset import Dataset, slugify, vectors_to_table
from embviz.errors import ConfigError, DatasetError
from embviz.images import ImageError, image_info, is_image_path, make_thumbnail, thumbnail_size
from embviz.manifest import utc_now
from embviz.storage import atomic_write_json

__all__ = ["KINDS", "IngestResult", "ingest"]

log = logging.getLogger(__name__)

KINDS = ("auto", "folder", "manifest", "vectors")
#: Folder names recognised as a split anywhere under the root, and what they normalise to.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
#: Columns of the samples table that ingest fills itself; metadata columns must not reuse them.
_CORE = ("id", "uri", "label", "split", "width", "height", "content_hash", "thumb_id")


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest` wrote.

    rows: samples written; skipped: inputs left out (listed in the report); report_path: the
    JSON report; seconds: wall time; tables: keys of the tables written.
    """

    rows: int
    skipped: int
    report_path: Path
    seconds: float
    tables: tuple[str, ...]


@dataclass
class _Sources:
    """Image candidates in their final order, with per-candidate label, split and metadata row."""

    paths: list[str]
    labels: list[str | None]
    splits: list[str | None]
    rows: list[int] | None  # row in the manifest (for reports and metadata), None for folders
    metadata: Any = None  # pyarrow Table aligned with the manifest rows, or None


def ingest(
    dataset: str | os.PathLike | Dataset,
    *,
    source: str | os.PathLike,
    kind: str = "auto",
    partition_rows: int = 10_000,
    thumb_size: int = 96,
    max_pixels: int = 100_000_000,
    threads: int = 2,
    limit: int | None = None,
    name: str | None = None,
    vector_column: str = "vector",
    coord_columns: Sequence[str] | None = None,
    metadata: str | os.PathLike | None = None,
    embedding_name: str = "user",
    progress: bool = True,
) -> IngestResult:
    """Build the ``samples`` table (and ``thumbnails``, or a user embedding) of a dataset.

    Parameters
    ----------
    dataset:
        A :class:`~embviz.dataset.Dataset`, or a directory to create one in (or reopen).
    source:
        An image folder, a CSV/Parquet manifest with a ``path`` column, or the user's vectors
        (a Parquet file with a list column, or an ``.npy`` (n, d) array).
    kind:
        ``"folder"``, ``"manifest"``, ``"vectors"`` or ``"auto"`` (chosen from ``source``).
    partition_rows:
        Rows per Parquet partition; also the unit of work and of memory for decoding.
    thumb_size:
        Longest side of the WebP thumbnails, in pixels.
    max_pixels:
        Images whose header claims more pixels are skipped as decompression bombs.
    threads:
        Decoding threads (Pillow releases the GIL while decoding).
    limit:
        Ingest at most this many inputs (the first ones in the deterministic order).
    name:
        Dataset name when creating it (default: the directory name).
    vector_column, coord_columns, metadata, embedding_name:
        For ``kind="vectors"``: the list column holding the vectors, optional 2 or 3 columns
        holding the user's own projection, a CSV/Parquet with one row per ``.npy`` row, and the
        name of the embedding table written (``embeddings/<embedding_name>``).
    progress:
        Show a tqdm progress bar.

    Returns
    -------
    IngestResult
        Row and skip counts, the report's path, the time taken and the tables written.

    Raises
    ------
    DatasetError
        When the source is unusable (missing ``path`` column, mismatched row counts, a
        non-finite vector) or no valid input remains; the message names the file, row or column.
    """
    t0 = time.time()
    if kind not in KINDS:
        raise ConfigError(f"unknown ingest kind {kind!r}; valid kinds: {list(KINDS)}")
    if partition_rows < 1:
        raise ConfigError(f"partition_rows must be >= 1, got {partition_rows}")
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source}: ingest source does not exist")
    kind = _detect_kind(source, vector_column) if kind == "auto" else kind
    if metadata is not None and kind != "vectors":
        raise ConfigError(f"metadata= is only used with kind='vectors' (.npy); kind is {kind!r}")
    ds = dataset if isinstance(dataset, Dataset) else Dataset.create(dataset, name=name)
    params = {
        "source": str(source.absolute()),
        "kind": kind,
        "partition_rows": partition_rows,
        "thumb_size": thumb_size,
        "max_pixels": max_pixels,
        "threads": threads,
        "limit": limit,
    }
    if kind == "vectors":
        params.update(
            vector_column=vector_column,
            coord_columns=list(coord_columns) if coord_columns else None,
            metadata=str(metadata) if metadata else None,
            embedding_name=embedding_name,
        )
        rows, skipped, tables = _ingest_vectors(
            ds,
            source,
            vector_column=vector_column,
            coord_columns=coord_columns,
            metadata=Path(metadata) if metadata else None,
            embedding_name=embedding_name,
            partition_rows=partition_rows,
            limit=limit,
        )
    else:
        sources, skipped = _folder(source) if kind == "folder" else _manifest(source)
        if limit is not None:
            _truncate(sources, limit)
        rows, failed = _ingest_images(
            ds,
            sources,
            source_str=str(source.absolute()),
            kind=kind,
            partition_rows=partition_rows,
            thumb_size=thumb_size,
            max_pixels=max_pixels,
            threads=threads,
            progress=progress,
        )
        skipped = skipped + failed
        tables = ("samples", "thumbnails") if rows else ()
    report_path = _write_report(ds, source, kind, rows, skipped)
    if skipped:
        reasons = Counter(s["reason"].split(":")[0] for s in skipped)
        log.warning(
            "ingest skipped %d of %d inputs (%s); see %s",
            len(skipped),
            rows + len(skipped),
            ", ".join(f"{n} {r}" for r, n in reasons.most_common()),
            report_path,
        )
    if rows == 0:
        raise DatasetError(
            f"{source}: no valid input to ingest ({len(skipped)} skipped); see {report_path}"
        )
    seconds = round(time.time() - t0, 3)
    ds.record_step(
        "ingest",
        params,
        started=t0,
        result={"rows": rows, "skipped": len(skipped), "tables": list(tables)},
    )
    return IngestResult(rows, len(skipped), report_path, seconds, tuple(tables))


# -- source detection and scanning ------------------------------------------------------------
def _read_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".csv":
        import pandas as pd

        return list(pd.read_csv(path, nrows=0).columns)
    return list(pq.read_schema(path).names)


def _detect_kind(source: Path, vector_column: str) -> str:
    if source.is_dir():
        return "folder"
    suffix = source.suffix.lower()
    if suffix == ".npy":
        return "vectors"
    if suffix in (".csv", ".parquet", ".pq"):
        columns = _read_columns(source)
        if suffix != ".csv" and vector_column in columns:
            return "vectors"
        if "path" in columns:
            return "manifest"
        raise DatasetError(
            f"{source}: cannot tell what to ingest: no 'path' column (image manifest) and no "
            f"{vector_column!r} column (vectors); columns found: {columns}"
        )
    raise DatasetError(
        f"{source}: cannot ingest a {suffix or 'extension-less'} file; expected an image folder, "
        "a .csv/.parquet manifest with a 'path' column, or vectors (.npy or .parquet)"
    )


def _folder(root: Path) -> tuple[_Sources, list[dict[str, Any]]]:
    """Every image under ``root`` (sorted, hidden entries skipped), labelled by its folder."""
    found: list[tuple[str, ...]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).parts
        found.extend((*rel, f) for f in filenames if not f.startswith(".") and is_image_path(f))
    found.sort()
    labels: list[str | None] = []
    splits: list[str | None] = []
    for parts in found:
        dirs = parts[:-1]
        split = next((SPLIT_NAMES[d.lower()] for d in dirs if d.lower() in SPLIT_NAMES), None)
        label = next((d for d in reversed(dirs) if d.lower() not in SPLIT_NAMES), None)
        labels.append(label)
        splits.append(split)
    paths = [os.path.abspath(root.joinpath(*parts)) for parts in found]
    return _Sources(paths, labels, splits, None), []


def _read_table(path: Path):
    """A CSV or Parquet file as a pyarrow Table; the error names the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            # Empty cells are nulls, as in pandas, not empty strings.
            convert = pacsv.ConvertOptions(strings_can_be_null=True)
            return pacsv.read_csv(path, convert_options=convert)
        return pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: cannot read as CSV/Parquet ({exc})") from exc


def _norm_split(value: Any) -> str | None:
    """A split name with ``valid``/``validation`` (any case) normalised to ``val``."""
    text = _str_or_none(value)
    return None if text is None else SPLIT_NAMES.get(text.lower(), text)


def _str_or_none(value: Any) -> str | None:
    """Labels as strings; a float label that is a whole number prints without ``.0``."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _manifest(path: Path) -> tuple[_Sources, list[dict[str, Any]]]:
    """Rows of a CSV/Parquet manifest whose ``path`` exists; missing files are reported."""
    table = _read_table(path)
    if "path" not in table.column_names:
        raise DatasetError(
            f"{path}: manifest has no 'path' column; columns found: {table.column_names}"
        )
    base = path.parent
    raw_paths = table.column("path").to_pylist()
    labels = (
        table.column("label").to_pylist() if "label" in table.column_names else [None] * len(table)
    )
    splits = (
        table.column("split").to_pylist() if "split" in table.column_names else [None] * len(table)
    )
    src = _Sources([], [], [], [], _metadata_columns(table, path, drop=("path", "label", "split")))
    skipped: list[dict[str, Any]] = []
    for row, raw in enumerate(raw_paths):
        if raw is None or str(raw).strip() == "":
            skipped.append({"row": row, "path": None, "reason": "empty path"})
            continue
        full = os.path.abspath(base / str(raw))
        if not os.path.isfile(full):
            skipped.append({"row": row, "path": full, "reason": "file not found"})
            continue
        src.paths.append(full)
        src.labels.append(_str_or_none(labels[row]))
        src.splits.append(_norm_split(splits[row]))
        src.rows.append(row)
    return src, skipped


def _metadata_columns(table, path: Path, *, drop: Sequence[str]):
    """The user's extra columns; ones that clash with core column names get a ``meta_`` prefix."""
    keep = [c for c in table.column_names if c not in drop]
    if not keep:
        return None
    meta = table.select(keep)
    renamed = [f"meta_{c}" if c in _CORE else c for c in keep]
    if renamed != keep:
        log.warning(
            "%s: columns %s clash with embviz's own and are kept as %s",
            path,
            [c for c in keep if c in _CORE],
            [f"meta_{c}" for c in keep if c in _CORE],
        )
        meta = meta.rename_columns(renamed)
    return meta


def _truncate(src: _Sources, limit: int) -> None:
    del src.paths[limit:], src.labels[limit:], src.splits[limit:]
    if src.rows is not None:
        del src.rows[limit:]


# -- images -------------------------------------------------------------------------------------
def _decode_one(path: str, thumb_size: int, max_pixels: int) -> dict[str, Any]:
    """Decode one file into the fields of a samples row and its thumbnail; never raises."""
    try:
        img, width, height, digest = image_info(path, max_pixels=max_pixels, reduce_to=thumb_size)
        thumb = make_thumbnail(img, thumb_size)
        tw, th = thumbnail_size(img.size, thumb_size)
        return {
            "width": width,
            "height": height,
            "hash": digest,
            "thumb": thumb,
            "tw": tw,
            "th": th,
        }
    except ImageError as exc:
        return {"error": exc.reason, "detail": exc.detail}
    except Exception as exc:  # a bug or an encoder failure must cost one file, not the run
        return {"error": f"unexpected error: {type(exc).__name__}: {exc}"}


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _ingest_images(
    ds: Dataset,
    src: _Sources,
    *,
    source_str: str,
    kind: str,
    partition_rows: int,
    thumb_size: int,
    max_pixels: int,
    threads: int,
    progress: bool,
) -> tuple[int, list[dict[str, Any]]]:
    """Decode candidates a partition at a time; write aligned samples/thumbnails partitions."""
    from tqdm.auto import tqdm

    samples = ds.writer("samples")
    thumbs = ds.writer("thumbnails")
    skipped: list[dict[str, Any]] = []
    pending: list[tuple[int, dict[str, Any]]] = []  # (candidate index, decoded) awaiting a write
    next_id = 0
    part = 0
    committed = False

    def flush(count: int) -> None:
        nonlocal next_id, part
        batch, pending[:] = pending[:count], pending[count:]
        ids = range(next_id, next_id + len(batch))
        s_table, t_table = _partition_tables(src, batch, ids)
        id_range = (ids[0], ids[-1])
        samples.write_part(part, s_table, id_range=id_range)
        thumbs.write_part(part, t_table, id_range=id_range)
        next_id += len(batch)
        part += 1

    bar = tqdm(total=len(src.paths), desc="ingest", unit="img", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for chunk in _chunks(len(src.paths), partition_rows):
                results = pool.map(
                    _decode_one,
                    (src.paths[i] for i in chunk),
                    [thumb_size] * len(chunk),
                    [max_pixels] * len(chunk),
                )
                for i, res in zip(chunk, results, strict=True):
                    bar.update(1)
                    if "error" in res:
                        entry: dict[str, Any] = {"path": src.paths[i], "reason": res["error"]}
                        if res.get("detail"):
                            entry["detail"] = res["detail"]
                        if src.rows is not None:
                            entry = {"row": src.rows[i], **entry}
                        skipped.append(entry)
                    else:
                        pending.append((i, res))
                while len(pending) >= partition_rows:
                    flush(partition_rows)
            if pending:
                flush(len(pending))
        if next_id:
            meta = {"source": source_str, "kind": kind}
            samples.commit(meta)
            thumbs.commit({**meta, "size": thumb_size, "format": "webp"})
            committed = True
    finally:
        bar.close()
        if not committed:
            samples.abort()
            thumbs.abort()
    return next_id, skipped


def _partition_tables(src: _Sources, batch: list[tuple[int, dict[str, Any]]], ids: range):
    import numpy as np
    import pyarrow as pa

    idx = [i for i, _ in batch]
    res = [r for _, r in batch]
    id_arr = pa.array(np.arange(ids.start, ids.stop, dtype=np.int64))
    columns = {
        "id": id_arr,
        "uri": pa.array([src.paths[i] for i in idx], pa.string()),
        "label": pa.array([src.labels[i] for i in idx], pa.string()),
        "split": pa.array([src.splits[i] for i in idx], pa.string()),
        "width": pa.array([r["width"] for r in res], pa.int32()),
        "height": pa.array([r["height"] for r in res], pa.int32()),
        "content_hash": pa.array([r["hash"] for r in res], pa.string()),
        "thumb_id": id_arr,
    }
    s_table = pa.table(columns)
    if src.metadata is not None:
        meta = src.metadata.take(pa.array([src.rows[i] for i in idx], pa.int64()))
        for name in meta.column_names:
            s_table = s_table.append_column(name, meta.column(name))
    t_table = pa.table(
        {
            "thumb_id": id_arr,
            "image": pa.array([r["thumb"] for r in res], pa.binary()),
            "width": pa.array([r["tw"] for r in res], pa.int32()),
            "height": pa.array([r["th"] for r in res], pa.int32()),
        }
    )
    return s_table, t_table


# -- the user's own vectors --------------------------------------------------------------------
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


def _ingest_vectors(
    ds: Dataset,
    source: Path,
    *,
    vector_column: str,
    coord_columns: Sequence[str] | None,
    metadata: Path | None,
    embedding_name: str,
    partition_rows: int,
    limit: int | None,
) -> tuple[int, list[dict[str, Any]], tuple[str, ...]]:
    import numpy as np
    import pyarrow as pa

    if source.suffix.lower() == ".npy":
        try:
            vectors = np.load(source, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{source}: cannot read as a .npy array ({exc})") from exc
        if vectors.ndim != 2:
            raise DatasetError(f"{source}: expected an (n, d) array, found shape {vectors.shape}")
        table = _read_table(metadata) if metadata is not None else pa.table({})
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
        table = _read_table(source)
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

    def column(name: str, fn=_str_or_none) -> list[Any]:
        if name not in table.column_names:
            return [None] * n
        return [fn(v) for v in table.column(name).to_pylist()]

    base = where.parent

    def uri(v: Any) -> str | None:
        return None if v is None or str(v) == "" else os.path.abspath(base / str(v))

    uris, labels, splits = column("path", uri), column("label"), column("split", _norm_split)
    meta = _metadata_columns(table, where, drop=("id", "path", "label", "split"))

    samples = ds.writer("samples")
    emb_key = f"embeddings/{slugify(embedding_name)}"
    emb = ds.writer(emb_key)
    try:
        for part, chunk in enumerate(_chunks(n, partition_rows)):
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
        samples.commit({"source": str(where.absolute()), "kind": "vectors"})
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
        from pipeline.reduce import write_projection

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


# -- report ---------------------------------------------------------------------------------------
def _write_report(
    ds: Dataset, source: Path, kind: str, rows: int, skipped: list[dict[str, Any]]
) -> Path:
    path = ds.root / "reports" / "ingest.json"
    reasons = Counter(s["reason"].split(":")[0] for s in skipped)
    atomic_write_json(
        path,
        {
            "source": str(source.absolute()),
            "kind": kind,
            "written": utc_now(),
            "rows": rows,
            "skipped_count": len(skipped),
            "reasons": dict(reasons.most_common()),
            "skipped": skipped,
        },
    )
    return path
