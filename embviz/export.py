"""Export the cleaned manifest, a selection, or the tag list of a dataset as Parquet or CSV.

A cleaned manifest drops the samples tagged ``exclude`` and applies ``relabel`` (the new label
in ``label``, the old one in ``original_label``); every export of samples ends with a ``tags``
column naming each row's tags (``review;note``). CSV cells that a spreadsheet would run as a
formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) get a leading
apostrophe, since labels and notes come from users.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .dataset import Dataset, open_dataset
from .errors import ExportError
from .samples import read_sample_columns, sample_columns
from .storage import atomic_write_bytes
from .tags import TagStore, tag_order

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FORMATS",
    "csv_safe",
    "export_format",
    "export_samples",
    "export_tags",
    "samples_table",
    "tags_table",
    "write_table",
]

#: File suffixes and the format each means.
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
#: Cells starting with one of these run as formulas in spreadsheets (OWASP CSV injection).
_FORMULA_START = r"^[=+\-@\t\r]"
#: Columns placed first, in this order, when the samples have them.
_LEADING = ("id", "uri", "label", "original_label", "split")


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _csv_bytes(table: pa.Table) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    pacsv.write_csv(csv_safe(table), sink)
    return sink.getvalue().to_pybytes()


#: Export formats and their writers (a table to bytes).
FORMATS: dict[str, Callable[[Any], bytes]] = {"parquet": _parquet_bytes, "csv": _csv_bytes}


def export_format(out: str | os.PathLike | None = None, fmt: str | None = None) -> str:
    """The format of an export: ``fmt`` if given, else from ``out``'s suffix, else Parquet.

    Raises :class:`~embviz.errors.ExportError` listing the valid formats and suffixes when
    ``fmt`` or the suffix is unknown, or when they disagree.
    """
    valid = f"valid formats: {sorted(FORMATS)} (suffixes {', '.join(_SUFFIXES)})"
    if fmt is not None and fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; {valid}")
    if out is None:
        return fmt or "parquet"
    suffix = Path(out).suffix.lower()
    by_suffix = _SUFFIXES.get(suffix)
    if by_suffix is None and fmt is None:
        raise ExportError(f"{out}: cannot tell the export format from suffix {suffix!r}; {valid}")
    if fmt is not None and by_suffix is not None and by_suffix != fmt:
        raise ExportError(
            f"{out}: suffix {suffix!r} means {by_suffix}, but format {fmt!r} was asked"
        )
    return fmt or by_suffix


def write_table(table: pa.Table, out: str | os.PathLike | None = None, *, fmt: str | None = None):
    """Serialise ``table`` as Parquet or CSV (see :func:`export_format`).

    Returns the bytes when ``out`` is ``None`` (a download), else writes ``out`` atomically
    and returns its :class:`~pathlib.Path`. CSV goes through :func:`csv_safe`.
    """
    data = FORMATS[export_format(out, fmt)](table)
    if out is None:
        return data
    atomic_write_bytes(out, data)
    return Path(out)


def csv_safe(table: pa.Table) -> pa.Table:
    """``table`` made safe and flat for CSV.

    String cells and column names that start like a spreadsheet formula get a leading
    apostrophe; dictionary columns are decoded; nested and binary columns become JSON / hex
    text (CSV has no such types).
    """
    import json

    import pyarrow as pa
    import pyarrow.compute as pc

    def escape(col):
        mask = pc.match_substring_regex(col, _FORMULA_START)
        return pc.if_else(mask, pc.binary_join_element_wise("'", col, ""), col)

    columns = []
    for col in table.columns:
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_nested(col.type):
            col = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in col.to_pylist()],
                pa.string(),
            )
        elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            col = pa.array([None if v is None else v.hex() for v in col.to_pylist()], pa.string())
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = escape(col)
        columns.append(col)
    names = escape(pa.array(table.column_names, pa.string())).to_pylist()
    return pa.table(columns, names=names)


# -- building the tables ------------------------------------------------------------------------
def _dataset(ds: str | os.PathLike | Dataset) -> Dataset:
    return ds if isinstance(ds, Dataset) else open_dataset(ds)


def _selection(ids: Any) -> np.ndarray:
    """``ids`` as int64 in the given order, duplicates dropped (first kept)."""
    arr = np.atleast_1d(np.asarray(ids))
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ExportError(f"ids must be a flat list of integers, got {arr[:5].tolist()!r}...")
    arr = arr.astype(np.int64)
    _, first = np.unique(arr, return_index=True)
    return arr[np.sort(first)]


def _positions(index: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each ``wanted`` id in ``index`` (unsorted, unique), -1 where absent."""
    if not len(index):
        return np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    pos = np.clip(np.searchsorted(index, wanted, sorter=order), 0, len(index) - 1)
    rows = order[pos]
    return np.where(index[rows] == wanted, rows, -1)


def _decoded(table: pa.Table, types: dict[str, str]) -> pa.Table:
    """Plain columns from :func:`read_sample_columns`' dictionary ones (booleans back to bool)."""
    import pyarrow as pa

    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
            if types.get(name) == "bool":
                col = col.cast(pa.bool_())
            table = table.set_column(i, name, col)
    return table


def _free_name(name: str, taken) -> str:
    while name in taken:
        name = f"{name}_embviz"
    return name


def _joined_tags(live, ids: np.ndarray) -> pa.Array:
    """Each id's live tag names joined by ``;`` in display order ('' for none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(live):
        return pa.repeat(pa.scalar("", pa.string()), len(ids))
    rank = {t: i for i, t in enumerate(tag_order(live["tag"].unique()))}
    live = live.assign(_rank=live["tag"].map(rank)).sort_values(["id", "_rank"], kind="stable")
    pairs = pa.table(
        {"id": live["id"].to_numpy(dtype=np.int64), "tag": pa.array(live["tag"], pa.string())}
    )
    # Without threads the grouped lists keep the rows' (display) order.
    grouped = pairs.group_by("id", use_threads=False).aggregate([("tag", "list")])
    joined = pc.binary_join(grouped.column("tag_list"), ";")
    pos = _positions(grouped.column("id").to_numpy(), ids)
    values = pa.concat_arrays([joined.combine_chunks(), pa.array([""], pa.string())])
    return values.take(pa.array(np.where(pos < 0, len(joined), pos)))  # absent: the ''


def samples_table(
    ds: str | os.PathLike | Dataset,
    *,
    ids: Any = None,
    clean: bool = True,
    tags: TagStore | None = None,
) -> pa.Table:
    """The samples rows to export, as a pyarrow Table.

    Parameters
    ----------
    ds : dataset path or :class:`~embviz.dataset.Dataset`.
    ids : export only these samples, in this order (a selection); duplicates count once and an
        id the samples lack raises :class:`~embviz.errors.ExportError` naming it.
    clean : drop the rows tagged ``exclude`` and apply ``relabel``: ``label`` becomes a string
        column holding the new labels and ``original_label`` holds the labels before.
    tags : the dataset's :class:`~embviz.tags.TagStore` (default: a new one).

    Every samples column (and every ``scores`` column) is kept; ``tags`` comes last.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ds = _dataset(ds)
    types = sample_columns(ds)
    table = _decoded(read_sample_columns(ds, list(types)), types)
    sid = table.column("id").to_numpy()
    if ids is not None:
        wanted = _selection(ids)
        rows = _positions(sid, wanted)
        if (rows < 0).any():
            bad = wanted[rows < 0]
            raise ExportError(
                f"{ds.root}: sample id {int(bad[0])} is not in the dataset's samples "
                f"({len(bad):,} of {len(wanted):,} selected ids are unknown)"
            )
        table, sid = table.take(pa.array(rows)), wanted
    live = (tags or TagStore(ds)).current()
    tags_col = _free_name("tags", table.column_names)
    table = table.append_column(tags_col, _joined_tags(live, sid))
    if clean:
        old = (
            table.column("label")
            if "label" in table.column_names
            else pa.nulls(len(sid), pa.string())
        )
        relabel = live[live["tag"] == "relabel"]
        pos = _positions(relabel["id"].to_numpy(dtype=np.int64), sid)
        values = pa.array(relabel["value"].to_numpy(dtype=object), pa.string())
        label = pc.coalesce(values.take(pa.array(pos, mask=pos < 0)), old.cast(pa.string()))
        original = _free_name("original_label", table.column_names)
        if "label" in table.column_names:
            table = table.set_column(table.column_names.index("label"), "label", label)
        else:
            table = table.append_column("label", label)
        table = table.append_column(original, old)
        excluded = live.loc[live["tag"] == "exclude", "id"].to_numpy(dtype=np.int64)
        table = table.filter(pa.array(~np.isin(sid, excluded)))
    names = table.column_names
    first = [c for c in _LEADING if c in names]
    return table.select([*first, *(c for c in names if c not in first and c != tags_col), tags_col])


def tags_table(
    ds: str | os.PathLike | Dataset, *, ids: Any = None, tags: TagStore | None = None
) -> pa.Table:
    """The live tags as a pyarrow Table: ``id, tag, value, user, time, uri, label``.

    Sorted by id, then tag (display order); ``uri`` and ``label`` come from the samples (null
    where the dataset has no such column or no longer has the sample). With ``ids``, only the
    tags of those samples.
    """
    import pyarrow as pa

    ds = _dataset(ds)
    live = (tags or TagStore(ds)).current()
    if ids is not None:
        live = live[live["id"].isin(_selection(ids))]
    rank = {t: i for i, t in enumerate(tag_order(live["tag"].unique()))}
    live = live.assign(_rank=live["tag"].map(rank)).sort_values(["id", "_rank"], kind="stable")
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("tag", pa.string()),
            ("value", pa.string()),
            ("user", pa.string()),
            ("time", pa.timestamp("us", tz="UTC")),
        ]
    )
    out = pa.Table.from_pandas(live[schema.names], schema=schema, preserve_index=False)
    have = [c for c in ("uri", "label") if c in sample_columns(ds)]
    context = _decoded(read_sample_columns(ds, have), {})
    rows = _positions(context.column("id").to_numpy(), out.column("id").to_numpy())
    take = pa.array(rows, mask=rows < 0)
    for name in ("uri", "label"):
        if name in have:
            out = out.append_column(name, context.column(name).take(take))
        else:
            out = out.append_column(name, pa.nulls(out.num_rows, pa.string()))
    return out


def export_tags(
    ds: str | os.PathLike | Dataset,
    out: str | os.PathLike | None = None,
    *,
    fmt: str | None = None,
    ids: Any = None,
    tags: TagStore | None = None,
):
    """Export the tag list (:func:`tags_table`); bytes when ``out`` is None, else the path written.

    The format comes from ``fmt`` (``parquet`` or ``csv``) or ``out``'s suffix; the check runs
    before any data is read.
    """
    export_format(out, fmt)
    return write_table(tags_table(ds, ids=ids, tags=tags), out, fmt=fmt)


def export_samples(
    ds: str | os.PathLike | Dataset,
    out: str | os.PathLike | None = None,
    *,
    ids: Any = None,
    clean: bool = True,
    fmt: str | None = None,
    tags: TagStore | None = None,
):
    """Export the samples (:func:`samples_table`): the cleaned manifest by default, a selection
    with ``ids``, every row untouched with ``clean=False``.

    Returns the bytes when ``out`` is None (a download), else writes ``out`` atomically and
    returns its path. The format comes from ``fmt`` or ``out``'s suffix (:func:`export_format`).
    """
    export_format(out, fmt)
    return write_table(samples_table(ds, ids=ids, clean=clean, tags=tags), out, fmt=fmt)
