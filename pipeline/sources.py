"""Ingest sources: tell what a source is, list its image candidates and fingerprint its files."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embviz.errors import DatasetError
from embviz.images import content_hash, is_image_path

__all__ = [
    "SPLIT_NAMES",
    "Sources",
    "chunks",
    "detect_kind",
    "input_fingerprint",
    "metadata_columns",
    "norm_split",
    "read_table",
    "scan_folder",
    "scan_manifest",
    "str_or_none",
]

log = logging.getLogger(__name__)

#: Folder names recognised as a split anywhere under the root, and what they normalise to.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
#: Columns of the samples table that ingest fills itself; metadata columns must not reuse them.
_CORE = ("id", "uri", "label", "split", "width", "height", "content_hash", "thumb_id")


@dataclass
class Sources:
    """Image candidates in their final order, with per-candidate label, split and metadata row."""

    paths: list[str]
    labels: list[str | None]
    splits: list[str | None]
    rows: list[int] | None  # row in the manifest (for reports and metadata), None for folders
    metadata: Any = None  # pyarrow Table aligned with the manifest rows, or None

    def truncate(self, limit: int) -> None:
        """Keep the first ``limit`` candidates."""
        del self.paths[limit:], self.labels[limit:], self.splits[limit:]
        if self.rows is not None:
            del self.rows[limit:]


def chunks(n: int, size: int) -> Iterator[range]:
    """Consecutive ranges of at most ``size`` of ``range(n)``: one per partition."""
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


# -- what the source is -----------------------------------------------------------------------
def _read_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".csv":
        import pandas as pd

        return list(pd.read_csv(path, nrows=0).columns)
    return list(pq.read_schema(path).names)


def detect_kind(source: Path, vector_column: str) -> str:
    """``"folder"``, ``"manifest"`` or ``"vectors"`` from the source's type and columns."""
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


# -- folders and manifests --------------------------------------------------------------------
def _image_files(root: Path) -> list[tuple[str, ...]]:
    """Path parts, relative to ``root``, of every image under it (sorted, hidden entries skipped)."""
    found: list[tuple[str, ...]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).parts
        found.extend((*rel, f) for f in filenames if not f.startswith(".") and is_image_path(f))
    found.sort()
    return found


def scan_folder(root: Path) -> tuple[Sources, list[dict[str, Any]]]:
    """Every image under ``root`` (sorted, hidden entries skipped), labelled by its folder."""
    found = _image_files(root)
    labels: list[str | None] = []
    splits: list[str | None] = []
    for parts in found:
        dirs = parts[:-1]
        split = next((SPLIT_NAMES[d.lower()] for d in dirs if d.lower() in SPLIT_NAMES), None)
        label = next((d for d in reversed(dirs) if d.lower() not in SPLIT_NAMES), None)
        labels.append(label)
        splits.append(split)
    paths = [os.path.abspath(root.joinpath(*parts)) for parts in found]
    return Sources(paths, labels, splits, None), []


def read_table(path: Path):
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


def norm_split(value: Any) -> str | None:
    """A split name with ``valid``/``validation`` (any case) normalised to ``val``."""
    text = str_or_none(value)
    return None if text is None else SPLIT_NAMES.get(text.lower(), text)


def str_or_none(value: Any) -> str | None:
    """Labels as strings; a float label that is a whole number prints without ``.0``."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


#: A manifest cell that is a URL (``http://``, ``s3://``, ``file://``...), not a path. One
#: letter before the colon is a Windows drive, not a scheme.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")


def _manifest_path(base: Path, raw: Any) -> str | None:
    """The absolute path a manifest cell points at, or None for an empty cell."""
    if raw is None or str(raw).strip() == "":
        return None
    return os.path.abspath(base / str(raw))


def scan_manifest(path: Path) -> tuple[Sources, list[dict[str, Any]]]:
    """Rows of a CSV/Parquet manifest whose ``path`` exists; missing files are reported."""
    table = read_table(path)
    if "path" not in table.column_names:
        raise DatasetError(
            f"{path}: manifest has no 'path' column; columns found: {table.column_names}"
        )
    raw_paths = table.column("path").to_pylist()
    labels = (
        table.column("label").to_pylist() if "label" in table.column_names else [None] * len(table)
    )
    splits = (
        table.column("split").to_pylist() if "split" in table.column_names else [None] * len(table)
    )
    src = Sources([], [], [], [], metadata_columns(table, path, drop=("path", "label", "split")))
    skipped: list[dict[str, Any]] = []
    for row, raw in enumerate(raw_paths):
        if raw is not None and _URL.match(str(raw).strip()):
            # Never fetched: a dataset must not make this machine request other hosts (or
            # read file:// paths outside the manifest's rules). Download the images first.
            skipped.append(
                {"row": row, "path": str(raw), "reason": "a URL, not a local file: not fetched"}
            )
            continue
        full = _manifest_path(path.parent, raw)
        if full is None:
            skipped.append({"row": row, "path": None, "reason": "empty path"})
            continue
        if not os.path.isfile(full):
            skipped.append({"row": row, "path": full, "reason": "file not found"})
            continue
        src.paths.append(full)
        src.labels.append(str_or_none(labels[row]))
        src.splits.append(norm_split(splits[row]))
        src.rows.append(row)
    return src, skipped


def metadata_columns(table, path: Path, *, drop: Sequence[str]):
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


# -- fingerprint --------------------------------------------------------------------------------
def _stat(path: str | os.PathLike) -> tuple[int | None, int | None]:
    """``(size, mtime_ns)`` of a file, ``(None, None)`` when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def input_fingerprint(
    source: Path, kind: str, params: Mapping[str, Any], *, metadata: Path | None = None
) -> str:
    """A digest of ``params`` and the (path, size, mtime_ns) of every input file.

    Only names and ``stat`` results are read, never file contents, so it costs a directory walk.
    A folder contributes every candidate image (by path relative to it); a manifest itself and
    the images it names; vectors their file and the ``metadata`` file. Touching, adding or
    removing a file, or changing a parameter, changes the digest.
    """
    files: list[tuple[str, int | None, int | None]] = []
    if kind == "folder":
        for parts in _image_files(source):
            files.append(("/".join(parts), *_stat(source.joinpath(*parts))))
    else:
        for path in (source, metadata):
            if path is not None:
                files.append((str(path.absolute()), *_stat(path)))
        if kind == "manifest":
            table = read_table(source)
            if "path" in table.column_names:
                for raw in table.column("path").to_pylist():
                    full = _manifest_path(source.parent, raw)
                    if full is not None:
                        files.append((full, *_stat(full)))
    blob = json.dumps({"params": params, "files": files}, sort_keys=True, default=str)
    return content_hash(blob.encode())
