"""Series of tables: the same samples seen by several checkpoints of a model, or several layers.

A series is recorded in each member table's manifest ``meta`` (no new manifest key, so older
embviz versions still read the dataset)::

    "series": {"name": "cnn-checkpoints", "kind": "checkpoints", "index": 2,
               "member": "epoch-002", "size": 5}

``name`` groups the members (a slug, unique per series within its table kind), ``kind`` says what
varies (``checkpoints`` or ``layers``), ``index`` orders the members from 0, ``member`` labels
one (a checkpoint's file stem, a layer name, a revision), ``size`` is how many members the series
has. Embedding tables of a series are written by ``embviz embed --checkpoints`` (one per
checkpoint) or by one ``embed`` run with several layers; the aligned projections of a series
(``embviz reduce --series``) carry a ``series`` entry of their own, named after the embedding
series and the method (``cnn-checkpoints.umap2d``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import DatasetError

__all__ = ["KINDS", "SeriesMember", "list_series", "series_entry", "series_members", "series_of"]

#: What varies along a series.
KINDS = ("checkpoints", "layers")


@dataclass(frozen=True)
class SeriesMember:
    """One member of a series: its table key (``embeddings/...`` or ``projections/...``),
    position, label and the series' name, kind and size."""

    key: str
    name: str
    kind: str
    index: int
    member: str
    size: int


def series_entry(name: str, kind: str, index: int, member: str, size: int) -> dict[str, Any]:
    """The ``series`` meta entry of one member (checked: a known kind, ``0 <= index < size``)."""
    if kind not in KINDS:
        raise ValueError(f"series {name!r}: kind must be one of {KINDS}, got {kind!r}")
    if not 0 <= int(index) < int(size):
        raise ValueError(f"series {name!r}: index {index} outside 0..{int(size) - 1}")
    return {
        "name": str(name),
        "kind": kind,
        "index": int(index),
        "member": str(member),
        "size": int(size),
    }


def series_of(ds, key: str) -> SeriesMember | None:
    """The series membership of table ``key`` (``embeddings/x`` or ``projections/x``), or None."""
    entry = ds.meta(key).get("series")
    if not isinstance(entry, dict):
        return None
    try:
        return SeriesMember(
            key=key,
            name=str(entry["name"]),
            kind=str(entry["kind"]),
            index=int(entry["index"]),
            member=str(entry["member"]),
            size=int(entry["size"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def list_series(ds, kind: str = "embeddings") -> dict[str, list[SeriesMember]]:
    """Every complete series among the tables of ``kind`` (``embeddings`` or ``projections``):
    ``{series name: members ordered by index}``. A series missing a member (a run that was
    stopped, a table deleted) is left out."""
    found: dict[str, list[SeriesMember]] = {}
    for name in ds.keys(kind):
        member = series_of(ds, f"{kind}/{name}")
        if member is not None:
            found.setdefault(member.name, []).append(member)
    out = {}
    for name, members in sorted(found.items()):
        members.sort(key=lambda m: m.index)
        size = members[0].size
        if [m.index for m in members] == list(range(size)):
            out[name] = members
    return out


def series_members(ds, name: str, kind: str = "embeddings") -> list[SeriesMember]:
    """The members of series ``name`` in order; :class:`DatasetError` naming the series and the
    ones there are when it is missing or incomplete."""
    every = list_series(ds, kind)
    if name not in every:
        raise DatasetError(
            f"{ds.root}: no complete {kind} series {name!r}; series present: {sorted(every)}"
        )
    return every[name]
