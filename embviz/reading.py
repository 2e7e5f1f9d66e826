"""Reading a dataset's Parquet tables: whole partitions, or rows by id through the id ranges."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["id_column", "partitions_holding", "read_arrow", "read_ids"]


def id_column(table: str) -> str:
    """The column a table's rows are keyed by: ``thumb_id`` in ``thumbnails``, else ``id``."""
    return "thumb_id" if table == "thumbnails" else "id"


def _read(ds, key: str, path, **options):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .errors import DatasetError

    try:
        return pq.read_table(path, **options)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DatasetError(f"{path}: cannot read Parquet ({exc})") from exc
    except KeyError as exc:
        raise DatasetError(
            f"{path}: no column {exc}; columns: {list(ds.table(key)['columns'])}"
        ) from exc


def read_arrow(
    ds, key: str, *, columns: Sequence[str] | None = None, partitions: Sequence[int] | None = None
):
    """Table ``key`` of ``ds`` (optionally some columns / partitions) as one pyarrow Table."""
    import pyarrow as pa

    columns = list(columns) if columns else None
    tables = [_read(ds, key, p, columns=columns) for p in ds.part_paths(key, partitions)]
    if not tables:
        return pa.table({c: pa.array([]) for c in columns or ds.table(key)["columns"]})
    return pa.concat_tables(tables)


def partitions_holding(ds, table: str, ids) -> list[int]:
    """Numbers of the partitions of ``table`` whose recorded ``id_range`` can hold one of
    ``ids`` (a partition with no recorded range always can), from the manifest alone."""
    import numpy as np

    wanted = np.unique(np.asarray(ids, dtype=np.int64).ravel())
    if not len(wanted):
        return []
    out = []
    for index, part in enumerate(ds.table(table)["partitions"]):
        lo, hi = part.get("id_range") or (None, None)
        first = int(np.searchsorted(wanted, lo)) if lo is not None else 0
        if lo is None or (first < len(wanted) and wanted[first] <= hi):
            out.append(index)
    return out


def read_ids(ds, table: str, ids, columns: Sequence[str] | None = None):
    """Rows of ``table`` whose id (:func:`id_column`) is in ``ids``, in the order of ``ids``.

    Parameters
    ----------
    ds : the dataset.
    table : table key (``samples``, ``scores``, ``thumbnails``, ``projections/<name>`` ...).
    ids : the ids wanted (any int sequence; an id given twice gives its row twice).
    columns : columns to read (the id column always comes first); default all.

    Only the partitions whose recorded ``id_range`` can hold a wanted id are read
    (:func:`partitions_holding`), each with a Parquet filter on the id, so one sample costs one
    partition's row group, not the table. Ids absent from the table are left out. Returns a
    pyarrow Table (empty, with the table's columns, when nothing matches).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = id_column(table)
    ids = np.asarray(ids, dtype=np.int64).ravel()
    names = None if columns is None else list(dict.fromkeys([key, *columns]))
    wanted = np.unique(ids)
    # One id filters with ==, which Parquet statistics prune by row group as well.
    test = ("==", int(wanted[0])) if len(wanted) == 1 else ("in", wanted.tolist())
    parts = [
        _read(ds, table, path, columns=names, filters=[(key, *test)])
        for path in ds.part_paths(table, partitions_holding(ds, table, wanted))
    ]
    if not parts:
        paths = ds.part_paths(table)
        if not paths:
            return pa.table({c: pa.array([]) for c in names or ds.table(table)["columns"]})
        empty = pq.read_schema(paths[0]).empty_table()
        return empty.select(names) if names else empty
    from .scores.neighbours import neighbour_rows

    found = pa.concat_tables(parts)
    rows = neighbour_rows(found.column(key).to_numpy(), ids)
    return found.take(pa.array(rows[rows >= 0], type=pa.int64()))
