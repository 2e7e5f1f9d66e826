"""The ingest step: scan images, a manifest or the user's own vectors into a dataset's first tables."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embviz.dataset import Dataset
from embviz.errors import ConfigError, DatasetError
from embviz.images import ImageError, image_info, make_thumbnail, thumbnail_size
from embviz.manifest import utc_now
from embviz.storage import atomic_write_json

from .ingest_vectors import ingest_vectors
from .sources import Sources, chunks, detect_kind, input_fingerprint, scan_folder, scan_manifest

__all__ = ["KINDS", "IngestResult", "ingest"]

log = logging.getLogger(__name__)

KINDS = ("auto", "folder", "manifest", "vectors")
#: Parameters that do not change what ingest writes, so they are left out of the fingerprint.
_NOT_FINGERPRINTED = ("threads",)


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest` wrote.

    rows: samples written; skipped: inputs left out (listed in the report); report_path: the
    JSON report; seconds: wall time; tables: keys of the tables written; reused: True when the
    inputs were unchanged since the last ingest, so nothing was written (rows, skipped, tables
    and the report are then those of that earlier run); unplaced: rows kept whose ``--coords``
    are not finite (in the dataset, left off the map).
    """

    rows: int
    skipped: int
    report_path: Path
    seconds: float
    tables: tuple[str, ...]
    reused: bool = False
    unplaced: int = 0


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
    force: bool = False,
    strict: bool = False,
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
    force:
        Ingest even when the inputs are unchanged. Without it, a dataset whose samples table
        carries the same fingerprint (these options plus every input file's path, size and
        mtime) is left as it is and the earlier result returned with ``reused=True``, so a
        recipe run twice does not redo ingest or invalidate the steps after it.
    strict:
        Refuse a vectors file whose ``coord_columns`` hold a NaN or inf (naming the row)
        instead of keeping those rows off the map (counted in ``unplaced``).

    Returns
    -------
    IngestResult
        Row and skip counts, the report's path, the time taken, the tables written and whether
        an earlier ingest was reused.

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
    kind = detect_kind(source, vector_column) if kind == "auto" else kind
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
    fingerprint = input_fingerprint(
        source,
        kind,
        {k: v for k, v in params.items() if k not in _NOT_FINGERPRINTED},
        metadata=Path(metadata) if metadata else None,
    )
    if not force:
        earlier = _earlier_result(ds, fingerprint)
        if earlier is not None:
            log.info("ingest: inputs unchanged since the last run; reusing %s", ds.root)
            rows, skipped, tables = earlier
            report_path = ds.root / "reports" / "ingest.json"
            seconds = round(time.time() - t0, 3)
            return IngestResult(rows, skipped, report_path, seconds, tables, reused=True)
    if kind == "vectors":
        rows, skipped, tables = ingest_vectors(
            ds,
            source,
            vector_column=vector_column,
            coord_columns=coord_columns,
            metadata=Path(metadata) if metadata else None,
            embedding_name=embedding_name,
            partition_rows=partition_rows,
            limit=limit,
            fingerprint=fingerprint,
            strict=strict,
        )
    else:
        sources, skipped = scan_folder(source) if kind == "folder" else scan_manifest(source)
        if limit is not None:
            sources.truncate(limit)
        rows, failed = _ingest_images(
            ds,
            sources,
            source_str=str(source.absolute()),
            kind=kind,
            fingerprint=fingerprint,
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
    projected = [t for t in tables if t.startswith("projections/")]
    unplaced = sum(int(ds.meta(t).get("unplaced", 0)) for t in projected)
    if unplaced:
        log.warning(
            "%d of %d rows have non-finite coordinates: kept, left off the map (%s)",
            unplaced,
            rows,
            ", ".join(projected),
        )
    ds.record_step(
        "ingest",
        params,
        started=t0,
        result={
            "rows": rows,
            "skipped": len(skipped),
            "tables": list(tables),
            "fingerprint": fingerprint,
            "unplaced": unplaced,
        },
    )
    return IngestResult(rows, len(skipped), report_path, seconds, tuple(tables), unplaced=unplaced)


def _earlier_result(ds: Dataset, fingerprint: str) -> tuple[int, int, tuple[str, ...]] | None:
    """``(rows, skipped, tables)`` of the last ingest when it had this fingerprint, else None.

    Both the samples table and the last recorded ingest step must carry the fingerprint: the
    step is recorded only after every table is written, so a run that failed part way (samples
    committed, embeddings or projection not) is never mistaken for a finished one.
    """
    ds.reload()  # a Dataset passed in may predate a run made elsewhere
    if not ds.has("samples") or ds.meta("samples").get("fingerprint") != fingerprint:
        return None
    step = next((s for s in reversed(ds.manifest["steps"]) if s["step"] == "ingest"), None)
    result = (step or {}).get("result") or {}
    tables = tuple(result.get("tables", ()))
    if result.get("fingerprint") != fingerprint or not all(ds.has(t) for t in tables):
        return None
    return ds.table("samples")["rows"], result.get("skipped", 0), tables


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


def _ingest_images(
    ds: Dataset,
    src: Sources,
    *,
    source_str: str,
    kind: str,
    fingerprint: str,
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
            for chunk in chunks(len(src.paths), partition_rows):
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
            samples.commit({**meta, "fingerprint": fingerprint})
            thumbs.commit({**meta, "size": thumb_size, "format": "webp"})
            committed = True
    finally:
        bar.close()
        if not committed:
            samples.abort()
            thumbs.abort()
    return next_id, skipped


def _partition_tables(src: Sources, batch: list[tuple[int, dict[str, Any]]], ids: range):
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
