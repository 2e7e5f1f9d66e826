"""The per-sample columns a store colours by, joined onto a projection's rows."""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_CATEGORIES", "sample_columns_for"]

#: Category columns with more distinct values than this are not offered for colouring.
MAX_CATEGORIES = 4096


def sample_columns_for(ds, ids: np.ndarray) -> tuple[dict, dict]:
    """The samples' category and number columns aligned with the rows of ``ids``.

    Returns ``(categorical, numeric)``: ``{column: (codes, sorted names)}`` for strings and
    booleans with at most ``MAX_CATEGORIES`` values (``(none)`` for nulls and for ids with no
    sample row), ``{column: float32}`` for numbers (NaN for those). ``uri``, ``content_hash``
    ``thumb_id`` and ``probe_fold`` are left out: nothing colours by them.
    """
    import pyarrow as pa

    from embviz.samples import read_sample_columns, sample_columns

    skip = ("id", "uri", "content_hash", "thumb_id", "probe_fold")
    wanted = [c for c in sample_columns(ds) if c not in skip]
    samples = read_sample_columns(ds, wanted)
    sample_ids = samples.column("id").to_numpy()
    # Sample ids are usually dense (0..n-1): then the join is one array take, not a hash join.
    top = max(int(sample_ids.max()) if len(sample_ids) else -1, int(ids.max()) if len(ids) else -1)
    order = np.full(top + 1, -1, dtype=np.int64)  # ids with no sample stay -1: "(none)" / NaN
    order[sample_ids] = np.arange(len(sample_ids))
    rows = order[ids] if len(ids) else np.empty(0, dtype=np.int64)
    missing = rows < 0
    take = np.where(missing, 0, rows) if missing.any() else rows
    categorical: dict[str, tuple[np.ndarray, list[str]]] = {}
    numeric: dict[str, np.ndarray] = {}
    for name in wanted:
        col = samples.column(name)
        kind = col.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values = col.to_numpy().astype(np.float32)[take]
            values[missing] = np.nan
            numeric[name] = values
        elif pa.types.is_dictionary(kind):
            names = [str(v) for v in col.chunk(0).dictionary.to_pylist()] if col.num_chunks else []
            if len(names) > MAX_CATEGORIES:
                continue
            none = len(names)
            codes = np.concatenate(
                [c.indices.fill_null(none).to_numpy() for c in col.chunks]
                or [np.empty(0, dtype=np.int32)]
            )
            if (codes == none).any() or missing.any():
                names.append("(none)")
            # Sorted category names make colours and legends stable across datasets and runs.
            perm = np.argsort(np.array(names, dtype=object), kind="stable")
            remap = np.empty(len(names), dtype=np.int32)
            remap[perm] = np.arange(len(names))
            # The smallest type: pandas' Categorical (what Datashader counts by) takes int8
            # codes for up to 127 categories as they are, and copies anything wider.
            dtype = np.int8 if len(names) < 2**7 else np.int16 if len(names) < 2**15 else np.int32
            codes = remap.astype(dtype)[codes][take]
            if missing.any():
                codes[missing] = remap[none]
            categorical[name] = (codes, [names[i] for i in perm])
    return categorical, numeric
