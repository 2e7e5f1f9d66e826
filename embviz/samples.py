"""Per-sample columns: the ``samples`` table joined with the ``scores`` and ``predictions`` tables."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "JOINED",
    "PREDICTIONS",
    "SCORES",
    "read_sample_columns",
    "sample_columns",
    "samples_version",
]

#: Table key of the per-sample scores (outlier, uniqueness, label issue, duplicates, cluster),
#: written by ``embviz score``. Keyed by ``id``; its columns read as if they were samples columns.
SCORES = "scores"
#: Table key of a classifier's per-sample predictions, written by ``embviz predict``
#: (:mod:`embviz.predictions`); its scalar columns read as samples columns too.
PREDICTIONS = "predictions"
#: The tables joined onto ``samples`` by id, in order (an earlier one wins a shared name).
JOINED = (SCORES, PREDICTIONS)


def _scalar(kind: str) -> bool:
    """Whether a column type reads as one value per sample (lists, e.g. top-k, do not)."""
    return not kind.startswith(("list", "large_list", "struct", "fixed_size_list"))


def sample_columns(ds) -> dict[str, str]:
    """Column name -> type of every per-sample column: ``samples`` first, then the scalar
    columns of ``scores`` and ``predictions`` (:data:`JOINED`).

    A joined column named like an earlier one is ignored (the samples table wins).
    """
    columns = dict(ds.table("samples")["columns"]) if ds.has("samples") else {}
    for key in JOINED:
        if ds.has(key):
            for name, kind in ds.table(key)["columns"].items():
                if _scalar(str(kind)):
                    columns.setdefault(name, kind)
    return columns


def samples_version(ds) -> str:
    """A string that changes whenever the samples, a joined or a ``clusters/*`` table is
    rewritten (cache keys: the map's stores colour by cluster codes too)."""
    parts = [ds.table(key)["dir"] for key in ("samples", *JOINED) if ds.has(key)]
    parts += [ds.table(f"clusters/{name}")["dir"] for name in ds.keys("clusters")]
    return "|".join(parts)


def _read(ds, key: str, wanted: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .errors import DatasetError

    types = ds.table(key)["columns"]
    strings = [c for c in wanted if types.get(c) in ("string", "large_string", "bool")]
    parts = []
    for path in ds.part_paths(key):
        try:
            t = pq.read_table(path, columns=["id", *wanted], read_dictionary=strings)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DatasetError(f"{path}: cannot read Parquet ({exc})") from exc
        for c in strings:
            if not pa.types.is_dictionary(t.schema.field(c).type):
                i = t.schema.get_field_index(c)
                t = t.set_column(i, c, t.column(c).cast(pa.string()).dictionary_encode())
        parts.append(t)
    if not parts:
        return pa.table({c: pa.array([], type=pa.int64()) for c in ["id", *wanted]})
    return pa.concat_tables(parts).unify_dictionaries()


def read_sample_columns(ds, wanted: list[str]) -> Any:
    """The samples' ``id`` and ``wanted`` columns as a pyarrow Table in samples order.

    Strings and booleans come back dictionary-encoded (Parquet decodes them straight into
    dictionaries, so tens of millions of rows cost no per-row Python objects). Columns the
    samples table lacks are taken from the ``scores`` or ``predictions`` table, joined on
    ``id``; a sample with no row there gets a null. An unknown column raises :class:`DatasetError` naming it.
    """

    from .errors import DatasetError

    wanted = [c for c in dict.fromkeys(wanted) if c != "id"]
    in_samples = ds.table("samples")["columns"]
    known = sample_columns(ds)
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise DatasetError(f"{ds.root}: no sample column {unknown[0]!r}; have {sorted(known)}")
    table = _read(ds, "samples", [c for c in wanted if c in in_samples])
    taken = set(in_samples)
    for key in JOINED:
        if not ds.has(key):
            continue
        extra = [c for c in wanted if c not in taken and c in ds.table(key)["columns"]]
        taken |= set(ds.table(key)["columns"])
        if extra:
            table = _join(table, _read(ds, key, extra), extra)
    return table.select(["id", *wanted])


def _join(table, other, extra: list[str]):
    """``table`` with ``other``'s columns ``extra`` appended, matched on ``id`` (null where
    ``other`` has no row)."""
    import pyarrow as pa

    ids = table.column("id").to_numpy()
    oid = other.column("id").to_numpy()
    if len(oid) == len(ids) and np.array_equal(oid, ids):
        take = None  # the steps write rows in samples order: no join needed
    else:
        top = int(max(ids.max(initial=-1), oid.max(initial=-1))) + 1
        where = np.full(top, -1, dtype=np.int64)
        where[oid] = np.arange(len(oid))
        rows = where[ids]
        take = pa.array(rows, mask=rows < 0)
    for c in extra:
        col = other.column(c)
        table = table.append_column(c, col if take is None else col.take(take))
    return table
