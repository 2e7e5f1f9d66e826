"""Checks a series of embedding tables before ``reduce --series`` writes anything.

Every member must be present and readable and hold the same samples; checkpoints must also
have the same vector dimension (layers legitimately differ). Each failure names the member.
"""

from __future__ import annotations

import numpy as np

from embviz.dataset import Dataset
from embviz.errors import DatasetError
from embviz.series import SeriesMember, list_series, series_of

__all__ = ["check_series", "member_ids", "vector_dim"]


def _describe(m: SeriesMember) -> str:
    return f"member {m.index} {m.member!r} ({m.key})"


def member_ids(ds: Dataset, m: SeriesMember) -> np.ndarray:
    """The sorted sample ids of member ``m``; :class:`DatasetError` naming it when unreadable."""
    import pyarrow.parquet as pq

    try:
        parts = [
            pq.read_table(p, columns=["id"]).column("id").to_numpy() for p in ds.part_paths(m.key)
        ]
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors derive from these
        raise DatasetError(
            f"{ds.root}: series {m.name!r}: cannot read {_describe(m)}: {exc}"
        ) from exc
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def vector_dim(ds: Dataset, m: SeriesMember) -> int:
    """The vector dimension of member ``m`` (from its Parquet schema)."""
    import pyarrow.parquet as pq

    try:
        field = pq.read_schema(ds.part_paths(m.key)[0]).field("vector")
        return int(field.type.list_size)
    except (OSError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise DatasetError(
            f"{ds.root}: series {m.name!r}: {_describe(m)} has no readable 'vector' column: {exc}"
        ) from exc


def _present(ds: Dataset, name: str) -> list[SeriesMember]:
    """Every embedding table that says it belongs to series ``name``, by index."""
    found = [series_of(ds, f"embeddings/{t}") for t in ds.keys("embeddings")]
    return sorted((m for m in found if m is not None and m.name == name), key=lambda m: m.index)


def check_series(ds: Dataset, name: str) -> tuple[list[SeriesMember], np.ndarray, list[int]]:
    """The members of embedding series ``name`` in order, their shared sorted sample ids and
    each member's vector dimension, after checking that

    - the series exists and no member is missing (each index ``0..size-1`` present once);
    - every member table can be read and holds the same set of sample ids as member 0;
    - for ``checkpoints``, every member has member 0's vector dimension.

    Raises :class:`DatasetError` naming the series and the member at fault.
    """
    members = _present(ds, name)
    if not members:
        raise DatasetError(
            f"{ds.root}: no embedding series {name!r}; series present: "
            f"{sorted(list_series(ds, 'embeddings')) or 'none'}"
        )
    size = members[0].size
    indices = [m.index for m in members]
    have = ", ".join(f"{m.index}: {m.member!r}" for m in members)
    missing = sorted(set(range(size)) - set(indices))
    if missing or len(indices) != len(set(indices)) or any(m.size != size for m in members):
        what = f"member {missing[0]} of {size} is missing" if missing else "members disagree"
        raise DatasetError(
            f"{ds.root}: series {name!r}: {what} (tables present: {have}); re-run the embed "
            "step that writes the series"
        )
    kinds = {m.kind for m in members}
    if len(kinds) != 1:
        raise DatasetError(f"{ds.root}: series {name!r}: members of several kinds {sorted(kinds)}")
    ref = members[0]
    ids = member_ids(ds, ref)
    if ids.size and np.unique(ids).size != ids.size:
        raise DatasetError(f"{ds.root}: series {name!r}: {_describe(ref)} repeats sample ids")
    dims = [vector_dim(ds, ref)]
    for m in members[1:]:
        other = member_ids(ds, m)
        if other.shape != ids.shape or not np.array_equal(other, ids):
            extra = np.setdiff1d(other, ids)
            lack = np.setdiff1d(ids, other)
            example = (
                f"id {int(extra[0])} is not in {_describe(ref)}"
                if extra.size
                else f"id {int(lack[0])} is missing"
                if lack.size
                else "ids repeat"
            )
            raise DatasetError(
                f"{ds.root}: series {name!r}: {_describe(m)} holds {other.size:,} samples, "
                f"{_describe(ref)} {ids.size:,}; a series needs the same samples in every "
                f"member ({example})"
            )
        dims.append(vector_dim(ds, m))
        if ref.kind == "checkpoints" and dims[-1] != dims[0]:
            raise DatasetError(
                f"{ds.root}: series {name!r}: {_describe(m)} has {dims[-1]}-d vectors, "
                f"{_describe(ref)} {dims[0]}-d; checkpoints of one model must agree (a checkpoint "
                "of another architecture?)"
            )
    return members, ids, dims
