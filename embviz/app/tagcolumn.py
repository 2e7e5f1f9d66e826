"""Tags as a live map column: the shared tag store and a ``tag`` category per point.

Tags change while people work, so the column is not part of the shared point store: it is
added to a copy of the store (the arrays are shared, only the column is new) built once per
tag-store version and shared by every session that sees that version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np

__all__ = ["TAG_COLUMN", "UNTAGGED", "tag_column", "tag_store"]

#: Name of the live tag column (colour and filter by it like any category).
TAG_COLUMN = "tag"
#: Category of the points that carry no tag.
UNTAGGED = "(untagged)"
#: Stores with a tag column kept per process (a few versions of a few maps).
_KEEP = 8

_TAG_STORES: dict[str, Any] = {}
_TAGGED: OrderedDict[tuple[int, str], Any] = OrderedDict()
_LOCK = threading.Lock()
_BUILDING = threading.Lock()  # one tag column built at a time (the others wait, then hit)


def tag_store(root):
    """The process-wide :class:`embviz.tags.TagStore` of the dataset at ``root``: sessions
    share its read cache; writes from any session or process are seen through its version."""
    from embviz.tags import TagStore

    key = str(root.resolve()) if hasattr(root, "resolve") else str(root)
    with _LOCK:
        store = _TAG_STORES.get(key)
        if store is None:
            store = _TAG_STORES[key] = TagStore(root)
    return store


def tag_column(store, tags, version: str):
    """``store`` with a ``tag`` category column built from ``tags`` at ``version``.

    A point carrying several tags shows the first in display order (``exclude`` before
    ``review`` ...). Returns ``store`` itself when no sample is tagged or the tags cannot be
    read, so untagged datasets pay nothing. Built once per (store, version) in the process:
    callers asking at once wait for the one build (sessions warm it on the task pool, see
    :meth:`embviz.app.session_tags.TagActions.poll_tags`).
    """
    if not version or TAG_COLUMN in store.categorical:
        return store
    key = (id(store), version)
    hit = _cached(key)
    if hit is not None:
        return hit
    with _BUILDING:
        hit = _cached(key)  # built by another caller while this one waited
        if hit is not None:
            return hit
        try:
            live = tags.current()
        except Exception:  # a tag folder being rewritten: show the map without the column
            return store
        tagged = _build(store, live) if len(live) else store
        with _LOCK:
            # Keep the base alive with its copy: ``id(store)`` must not be reused while cached.
            # (Nothing tagged at this version is remembered too: asking again costs nothing.)
            _TAGGED[key] = (store, tagged)
            while len(_TAGGED) > _KEEP:
                _TAGGED.popitem(last=False)
    return tagged


def _cached(key):
    with _LOCK:
        hit = _TAGGED.get(key)
        if hit is None:
            return None
        _TAGGED.move_to_end(key)
        return hit[1]


def _build(store, live):
    """``store`` with the tag column of the live tags ``live`` (at least one row)."""
    import pandas as pd

    from embviz.tags import tag_order

    names = tag_order(live["tag"].unique())
    # Each row's rank among the names, hashed in pandas (a Python dict lookup per row took
    # 0.6 s at 234K tagged rows).
    rank = pd.Categorical(live["tag"], categories=names).codes
    order = live.assign(r=rank).sort_values(["id", "r"])
    first = order.drop_duplicates("id")
    rows = store.row_of(first["id"].to_numpy(dtype=np.int64))
    ok = rows >= 0
    dtype = np.int8 if len(names) < 127 else np.int16
    codes = np.full(store.n, len(names), dtype=dtype)
    codes[rows[ok]] = first["r"].to_numpy()[ok].astype(dtype)
    return replace(
        store, categorical={**store.categorical, TAG_COLUMN: (codes, [*names, UNTAGGED])}
    )
