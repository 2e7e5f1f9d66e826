"""A dataset directory: open and validate it, read its Parquet tables, write new ones atomically."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import DatasetError, DiskFullError
from .manifest import (
    MANIFEST_NAME,
    NAMED_KINDS,
    TABLE_KINDS,
    new_manifest,
    read_manifest,
    table_kind,
    utc_now,
    validate_manifest,
)
from .storage import atomic_write_json, file_lock, write_parquet_atomic

__all__ = [
    "Dataset",
    "TableWriter",
    "open_dataset",
    "slugify",
    "table_to_vectors",
    "vectors_to_table",
]

_LOCK_NAME = ".manifest.lock"


def slugify(text: str) -> str:
    """A file-name-safe form of ``text`` (``hf:google/vit-b`` -> ``hf-google-vit-b``)."""
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.")
    return slug or "unnamed"


def vectors_to_table(ids, vectors):
    """An Arrow table ``id int64, vector fixed_size_list<float32>[d]`` from ids and an (n, d) array."""
    import numpy as np
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {vectors.shape}")
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    col = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    return pa.table({"id": pa.array(np.asarray(ids, dtype=np.int64)), "vector": col})


def table_to_vectors(table):
    """``(ids, vectors)`` numpy arrays from a table written by :func:`vectors_to_table`."""
    import numpy as np

    col = table.column("vector").combine_chunks()
    dim = col.type.list_size
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table.column("id").to_numpy(), values.reshape(-1, dim)


class Dataset:
    """An embviz dataset: a directory with ``manifest.json`` and Parquet tables.

    Open one with :func:`open_dataset`; create one with :meth:`Dataset.create`.
    """

    def __init__(self, root: str | Path, manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, tables={sorted(self.tables)})"

    # -- creation and reloading ------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, *, name: str | None = None, exist_ok: bool = True) -> Dataset:
        """Create an empty dataset at ``root`` (or open it when it exists and ``exist_ok``)."""
        root = Path(root)
        if (root / MANIFEST_NAME).exists():
            if not exist_ok:
                raise DatasetError(f"{root}: a dataset already exists here")
            return open_dataset(root)
        if root.exists() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise DatasetError(
                f"{root}: directory exists, is not empty and holds no {MANIFEST_NAME}; "
                "choose an empty or new directory"
            )
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(root / MANIFEST_NAME, new_manifest(name or root.name))
        return cls(root, read_manifest(root))

    def reload(self) -> Dataset:
        """Re-read the manifest from disk (another process may have written a table)."""
        self.manifest = read_manifest(self.root)
        return self

    def update_manifest(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the on-disk manifest under a lock, validate, write atomically."""
        with file_lock(self.root / _LOCK_NAME):
            manifest = read_manifest(self.root)
            change(manifest)
            validate_manifest(manifest)
            atomic_write_json(self.root / MANIFEST_NAME, manifest)
            self.manifest = manifest

    def record_step(
        self, step: str, params: dict[str, Any], *, started: float, result: Any = None
    ) -> None:
        """Append a run record (parameters, times, result summary) to the manifest."""
        finished = time.time()
        record = {
            "step": step,
            "params": params,
            "started": _iso(started),
            "finished": _iso(finished),
            "seconds": round(finished - started, 3),
            "result": result,
        }
        self.update_manifest(
            lambda m: m["steps"].append(json.loads(json.dumps(record, default=str)))
        )

    # -- table lookup ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The dataset's name from its manifest."""
        return self.manifest["name"]

    @property
    def tables(self) -> dict[str, dict[str, Any]]:
        """Manifest entries of every table, keyed by table key."""
        return self.manifest["tables"]

    def keys(self, kind: str) -> list[str]:
        """Names of the tables of one kind (``embeddings`` or ``projections``), without prefix."""
        if kind not in TABLE_KINDS:
            raise DatasetError(f"unknown table kind {kind!r}; valid kinds: {list(TABLE_KINDS)}")
        return sorted(k.split("/", 1)[1] for k in self.tables if table_kind(k) == kind and "/" in k)

    @property
    def embeddings(self) -> list[str]:
        """Names of the embedding tables (``<model>.<layer>``)."""
        return self.keys("embeddings")

    @property
    def projections(self) -> list[str]:
        """Names of the projection tables."""
        return self.keys("projections")

    def has(self, key: str) -> bool:
        """Whether the table ``key`` exists."""
        return key in self.tables

    def table(self, key: str) -> dict[str, Any]:
        """The manifest entry of table ``key``; the error lists the tables that exist."""
        try:
            return self.tables[key]
        except KeyError:
            raise DatasetError(
                f"{self.root}: no table {key!r}; tables in this dataset: {sorted(self.tables) or 'none'}"
            ) from None

    def meta(self, key: str) -> dict[str, Any]:
        """The ``meta`` block of table ``key`` (model, layer, method, bounds ...)."""
        return self.table(key)["meta"]

    def part_paths(self, key: str, partitions: Sequence[int] | None = None) -> list[Path]:
        """Paths of the Parquet files of ``key`` (all, or the listed partition numbers)."""
        entry = self.table(key)
        parts = entry["partitions"]
        chosen = parts if partitions is None else [parts[i] for i in partitions]
        return [self.root / entry["dir"] / p["file"] for p in chosen]

    def check_files(self) -> None:
        """Check every partition file exists and is non-empty; name the first one that is not."""
        for key in self.tables:
            for path in self.part_paths(key):
                if not path.is_file() or path.stat().st_size == 0:
                    raise DatasetError(
                        f"{path}: table {key!r} lists this file but it is missing or empty"
                    )

    # -- reading -----------------------------------------------------------------------------
    def read_arrow(
        self,
        key: str,
        *,
        columns: Sequence[str] | None = None,
        partitions: Sequence[int] | None = None,
    ):
        """Read table ``key`` (optionally some columns / partitions) as one pyarrow Table."""
        from .reading import read_arrow

        return read_arrow(self, key, columns=columns, partitions=partitions)

    def read_ids(self, table: str, ids, columns: Sequence[str] | None = None):
        """Rows of ``table`` whose id is in ``ids``, in the order of ``ids``: the one way to
        read rows by id (:func:`embviz.reading.read_ids`).

        ``table`` is a table key (``samples``, ``scores``, ``thumbnails`` keyed by
        ``thumb_id``...); ``columns`` default to all. Ids absent from the table are left out;
        only the partitions whose recorded ``id_range`` can hold them are read. Returns a
        pyarrow Table.
        """
        from .reading import read_ids

        return read_ids(self, table, ids, columns)

    def read_pandas(
        self,
        key: str,
        *,
        columns: Sequence[str] | None = None,
        partitions: Sequence[int] | None = None,
    ):
        """Read table ``key`` as a pandas DataFrame."""
        return self.read_arrow(key, columns=columns, partitions=partitions).to_pandas()

    def read_vectors(self, key: str, *, partitions: Sequence[int] | None = None):
        """``(ids, vectors)`` of embedding table ``key`` (``embeddings/<name>`` or ``<name>``)."""
        key = key if key.startswith("embeddings/") else f"embeddings/{key}"
        return table_to_vectors(self.read_arrow(key, partitions=partitions))

    def to_dask(self, key: str, *, columns: Sequence[str] | None = None):
        """Table ``key`` as a Dask DataFrame with one partition per Parquet file."""
        import dask.dataframe as dd

        return dd.read_parquet(
            [str(p) for p in self.part_paths(key)], columns=list(columns) if columns else None
        )

    # -- writing -----------------------------------------------------------------------------
    def writer(self, key: str, *, fingerprint: dict[str, Any] | None = None) -> TableWriter:
        """A :class:`TableWriter` for table ``key``; with ``fingerprint`` it resumes a staged write."""
        return TableWriter(self.root, key, fingerprint=fingerprint, dataset=self)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class TableWriter:
    """Stage a table's partitions, then publish them in one manifest update.

    Each partition file is written atomically into a staging directory, with a JSON sidecar
    holding its row count, id range and bounds. :meth:`commit` renames the staging directory to
    a fresh versioned name, points the manifest at it and removes the previous version, so a
    crash at any point leaves the last good table readable. With a ``fingerprint`` (the step's
    parameters) the staging directory is stable, so a re-run skips partitions already written;
    a different fingerprint discards them. The writer holds only paths, so it pickles to Dask
    workers, which call :meth:`write_part`.
    """

    def __init__(
        self,
        root: str | Path,
        key: str,
        *,
        fingerprint: dict[str, Any] | None = None,
        dataset: Dataset | None = None,
    ):
        if table_kind(key) not in TABLE_KINDS or (("/" in key) != (table_kind(key) in NAMED_KINDS)):
            raise DatasetError(
                f"bad table key {key!r}; expected samples, thumbnails, scores, predictions, "
                "embeddings/<name>, projections/<name> or clusters/<projection>"
            )
        self.root = Path(root)
        self.key = key
        self._dataset = dataset  # kept current on commit
        kind, _, name = key.partition("/")
        self._parent = self.root / kind if name else self.root
        self._name = name or kind
        if fingerprint is None:
            self.staging = self._parent / f".{self._name}.staging-{uuid.uuid4().hex[:8]}"
        else:
            self.staging = self._parent / f".{self._name}.staging"
            stamp = self.staging / "_fingerprint.json"
            wanted = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
            if stamp.exists():
                try:
                    found = json.loads(stamp.read_text())
                except (OSError, json.JSONDecodeError):
                    found = None
                if found != wanted:
                    shutil.rmtree(self.staging)
            if not stamp.exists():
                self.staging.mkdir(parents=True, exist_ok=True)
                atomic_write_json(stamp, wanted)
        self.staging.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def part_name(index: int) -> str:
        """File name of partition ``index``."""
        return f"part-{index:05d}.parquet"

    def has_part(self, index: int) -> bool:
        """Whether partition ``index`` is already staged (complete: writes are atomic)."""
        return (self.staging / (self.part_name(index) + ".json")).exists()

    def write_part(
        self,
        index: int,
        table,
        *,
        id_range: tuple[int, int] | None = None,
        bounds: dict[str, list[float]] | None = None,
        row_group_size: int | None = None,
    ) -> int:
        """Write partition ``index`` atomically; return its row count."""
        path = self.staging / self.part_name(index)
        try:  # name the table: the path alone is a staging file
            write_parquet_atomic(table, path, row_group_size=row_group_size)
            if id_range is None and "id" in table.column_names and table.num_rows:
                import pyarrow.compute as pc

                mm = pc.min_max(table.column("id")).as_py()
                id_range = (int(mm["min"]), int(mm["max"]))
            info: dict[str, Any] = {"file": path.name, "rows": table.num_rows}
            if id_range is not None:
                info["id_range"] = [int(id_range[0]), int(id_range[1])]
            if bounds is not None:
                info["bounds"] = {k: [float(v[0]), float(v[1])] for k, v in bounds.items()}
            atomic_write_json(str(path) + ".json", info)
        except DiskFullError as exc:
            raise DiskFullError(exc.path, exc.reason, f"table {self.key!r}") from exc
        return table.num_rows

    def staged_parts(self) -> list[dict[str, Any]]:
        """Sidecar records of the staged partitions, in partition order."""
        return [json.loads(p.read_text()) for p in sorted(self.staging.glob("part-*.parquet.json"))]

    def commit(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish the staged partitions as table ``key``; return the new manifest entry."""
        import pyarrow.parquet as pq

        parts = self.staged_parts()
        if not parts:
            raise DatasetError(f"{self.staging}: nothing staged for table {self.key!r}")
        schema = pq.read_schema(self.staging / parts[0]["file"])
        columns = {f.name: str(f.type) for f in schema}
        final = (
            self._parent / f"{self._name}--{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        )
        self.staging.rename(final)
        entry = {
            "dir": str(final.relative_to(self.root)),
            "rows": sum(p["rows"] for p in parts),
            "columns": columns,
            "partitions": parts,
            "meta": json.loads(json.dumps(meta or {}, default=str)),
            "written": utc_now(),
        }
        old: list[str] = []

        def change(m: dict[str, Any]) -> None:
            prev = m["tables"].get(self.key)
            if prev:
                old.append(prev["dir"])
            m["tables"][self.key] = entry

        try:
            (self._dataset or Dataset(self.root, {})).update_manifest(change)
        except Exception:
            # The manifest was not replaced (its write is atomic): un-publish, keeping the
            # sidecars so a re-run with the same fingerprint resumes from the staged parts.
            final.rename(self.staging)
            raise
        for sidecar in final.glob("*.json"):  # only the staging steps read them
            sidecar.unlink()
        for rel in old:
            if rel != entry["dir"]:
                shutil.rmtree(self.root / rel, ignore_errors=True)
        for stale in self._parent.glob(f".{self._name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return entry

    def abort(self) -> None:
        """Discard the staged partitions."""
        shutil.rmtree(self.staging, ignore_errors=True)


def open_dataset(root: str | Path, *, check_files: bool = True) -> Dataset:
    """Open the dataset at ``root``, validating the manifest and that every table file exists.

    Raises :class:`~embviz.errors.DatasetError` naming the file and key that is wrong.
    """
    ds = Dataset(root, read_manifest(root))
    if check_files:
        ds.check_files()
    return ds
