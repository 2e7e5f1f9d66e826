"""The ``export`` step: write a dataset's cleaned manifest, its rows with their tags, or its tag list."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embviz.dataset import Dataset
from embviz.errors import ExportError
from embviz.export import export_format, samples_table, tags_table, write_table

from .choose import as_dataset

__all__ = ["WHAT", "ExportResult", "export", "read_ids"]

#: What ``export`` can write, and what each holds.
WHAT = {
    "clean": "the cleaned manifest: excluded samples dropped, relabels applied, a tags column",
    "all": "every sample as it is, with a tags column",
    "tags": "the tag list: id, tag, value, user, time, uri, label",
}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote.

    Attributes
    ----------
    path : the file written.
    what : ``clean``, ``all`` or ``tags``.
    format : ``parquet`` or ``csv``.
    rows : rows in the file.
    seconds : wall time of the step.
    """

    path: Path
    what: str
    format: str
    rows: int
    seconds: float


def read_ids(path: str | Path) -> np.ndarray:
    """Sample ids from a file: a Parquet or CSV file's ``id`` column, or a text file of integers
    separated by commas, spaces or new lines (``#`` starts a comment)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: ids file does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq", ".csv"):
        import pyarrow as pa

        try:
            if suffix == ".csv":
                import pyarrow.csv as pacsv

                table = pacsv.read_csv(path)
            else:
                import pyarrow.parquet as pq

                table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ExportError(f"{path}: cannot read ids ({exc})") from exc
        if "id" not in table.column_names:
            raise ExportError(f"{path}: no 'id' column; columns: {table.column_names}")
        col = table.column("id")
        if not pa.types.is_integer(col.type) or col.null_count:
            raise ExportError(f"{path}: column 'id' must hold integers, found {col.type}")
        return col.to_numpy().astype(np.int64)
    ids = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        for token in re.split(r"[\s,]+", line.split("#", 1)[0].strip()):
            if not token:
                continue
            if not re.fullmatch(r"-?\d+", token):
                raise ExportError(f"{path}, line {n}: {token!r} is not an integer sample id")
            ids.append(int(token))
    return np.array(ids, dtype=np.int64)


def export(
    dataset: str | Path | Dataset,
    *,
    out: str | Path,
    what: str = "clean",
    ids: np.ndarray | list[int] | None = None,
    ids_from: str | Path | None = None,
) -> ExportResult:
    """Write ``what`` (see :data:`WHAT`) of ``dataset`` to ``out`` (``.parquet`` or ``.csv``).

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`.
    out : the file to write (atomically); its suffix picks the format.
    what : ``clean`` (default), ``all`` or ``tags``.
    ids, ids_from : export only these samples (``clean``/``all``: in this order; ``tags``: their
        tags), given as ids or as a file :func:`read_ids` reads.

    Raises :class:`~embviz.errors.ExportError` for an unknown ``what`` or suffix (before
    reading any data), a bad ids file or an id the samples lack.
    """
    started = time.time()
    if what not in WHAT:
        raise ExportError(f"unknown export {what!r}; valid: {list(WHAT)}")
    fmt = export_format(out, None)
    if ids_from is not None:
        if ids is not None:
            raise ExportError("give ids or ids_from, not both")
        ids = read_ids(ids_from)
    ds = as_dataset(dataset)
    if what == "tags":
        table = tags_table(ds, ids=ids)
    else:
        table = samples_table(ds, ids=ids, clean=what == "clean")
    path = write_table(table, out, fmt=fmt)
    return ExportResult(
        path=path,
        what=what,
        format=fmt,
        rows=table.num_rows,
        seconds=round(time.time() - started, 3),
    )
