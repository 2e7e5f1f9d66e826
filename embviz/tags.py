"""Durable sample tags that concurrent sessions and processes can write without losing any.

Layout of ``<dataset>/tags/``::

    events-<time_ns:020d>-<pid>-<uuid4>.parquet   one file per add/remove call (append-only log)
    snapshot-<time_ns:020d>-<uuid4>.parquet       the folded log, written by compaction
    CURRENT.json                                  {"snapshot": name | null, "absorbed": [event names]}
    .compact.lock                                 held while compacting

Every file is written to a hidden temporary name and renamed into place, so a reader sees a
whole file or none. An event row is ``id int64, tag, value, op ("add" | "remove"), user,
time timestamp[us, UTC]``; the snapshot rows add ``src``, the event file each row came from.
Events are ordered by (time, file name) -- the file name starts with the zero-padded time --
and the state is the latest event of each (id, tag): an ``add`` with a new value replaces the
old one, a ``remove`` (kept in the snapshot as a tombstone) hides it. Folding takes the
maximum event per key, so it is order-free and idempotent: an event read twice, or an event
file renamed into place late with an early time, still gives the same state.

Writers never take a lock. Compaction (automatic once more than ``compact_after`` event files
wait, or :meth:`TagStore.compact`) runs under :func:`embviz.storage.file_lock`: it folds the
snapshot and the event files it lists into a new snapshot, publishes it by rewriting
``CURRENT.json`` (naming the event files it absorbed) and only then deletes the absorbed files
and the old snapshot. Readers take no lock either: they read ``CURRENT.json``, list the event
files, read the snapshot it names plus the listed files it did not absorb, and re-read
``CURRENT.json``; if it changed or a file vanished meanwhile, they start over. So no reader
ever misses an event renamed into place before its read began, and no event is lost to a
writer racing a compaction.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._tagfiles import TagFiles, TagState
from .dataset import Dataset
from .errors import DiskFullError, TagError
from .manifest import read_manifest

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BUILTIN_TAGS",
    "MAX_USER_CHARS",
    "MAX_VALUE_CHARS",
    "TAGS_DIR",
    "VALUE_TAGS",
    "TagStore",
    "tag_order",
    "validate_tag",
]

#: Folder of the tag log inside a dataset directory.
TAGS_DIR = "tags"
#: The built-in tags, in menu order, with what each means.
BUILTIN_TAGS: dict[str, str] = {
    "exclude": "leave the sample out of the cleaned export",
    "relabel": "give the sample a new label (the value) in the cleaned export",
    "review": "needs review: a person should look at it",
    "note": "a free-text note (the value)",
}
#: Tags whose value is required (the new label, the note's text).
VALUE_TAGS = frozenset({"relabel", "note"})
#: Longest tag value (a label or a note), in characters.
MAX_VALUE_CHARS = 500
#: Longest user name, in characters.
MAX_USER_CHARS = 100

log = logging.getLogger(__name__)
_CUSTOM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")
_VALUE_WHAT = {"relabel": "the new label", "note": "the note's text"}
#: Characters a value may not hold: control characters (tab and line breaks are text) and the
#: bidirectional overrides that make text read differently from what it holds.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def tag_order(names) -> list[str]:
    """``names`` in display order: built-in tags in :data:`BUILTIN_TAGS` order, then the rest sorted."""
    names = set(names)
    return [t for t in BUILTIN_TAGS if t in names] + sorted(names - set(BUILTIN_TAGS))


def validate_tag(tag: Any) -> str:
    """Return ``tag`` if it is a built-in tag or a valid custom name, else raise :class:`TagError`.

    Custom names are 1-40 characters: letters, digits, space, ``_``, ``.`` and ``-``, starting
    with a letter or digit and not ending with a space; a name that differs from a built-in tag
    only in case is refused (use the built-in).
    """
    if not isinstance(tag, str):
        raise TagError(f"tag name must be a string, got {type(tag).__name__} {tag!r}")
    if tag in BUILTIN_TAGS:
        return tag
    if tag.lower() in BUILTIN_TAGS:
        raise TagError(f"tag {tag!r} differs from the built-in tag {tag.lower()!r} only in case")
    if not _CUSTOM_RE.match(tag) or tag.endswith(" "):
        raise TagError(
            f"bad tag name {tag!r}: use a built-in tag ({', '.join(BUILTIN_TAGS)}) or a custom "
            "name of 1-40 letters, digits, spaces, '_', '.' or '-' that starts with a letter or "
            "digit and does not end with a space"
        )
    return tag


def _check_value(tag: str, value: Any) -> str | None:
    if value is None:
        if tag in VALUE_TAGS:
            raise TagError(f"tag {tag!r} needs a value ({_VALUE_WHAT[tag]})")
        return None
    if not isinstance(value, str):
        raise TagError(f"tag {tag!r}: value must be a string, got {type(value).__name__} {value!r}")
    if len(value) > MAX_VALUE_CHARS:
        raise TagError(
            f"tag {tag!r}: value {value[:40]!r}... is {len(value)} characters; "
            f"at most {MAX_VALUE_CHARS} are allowed"
        )
    if tag in VALUE_TAGS and not value.strip():
        raise TagError(f"tag {tag!r} needs a non-empty value ({_VALUE_WHAT[tag]})")
    bad = _CONTROL_RE.search(value)
    if bad:
        raise TagError(
            f"tag {tag!r}: value {value[:40]!r} holds the control character {bad.group()!r} "
            f"at character {bad.start()}; values are plain text"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a JSON "\ud800"
        raise TagError(
            f"tag {tag!r}: value {value[:40]!r} is not valid text (character {exc.start})"
        ) from None
    return value


def _check_user(user: Any) -> str | None:
    if user is None:
        return None
    if not isinstance(user, str) or len(user) > MAX_USER_CHARS:
        raise TagError(
            f"user must be a string of at most {MAX_USER_CHARS} characters, got {user!r:.60}"
        )
    return user


def _as_ids(ids: Any) -> np.ndarray:
    """``ids`` (an int, a sequence or an array of ints) as an int64 array, in the given order."""
    arr = np.atleast_1d(np.asarray(ids))
    if arr.ndim != 1:
        raise TagError(f"sample ids must be a flat list of integers, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        items = ids if isinstance(ids, (list, tuple)) else arr.tolist()
        bad = next(
            (v for v in items if isinstance(v, bool) or not isinstance(v, (int, np.integer))),
            items[0],
        )
        raise TagError(f"sample ids must be integers; got {bad!r} ({type(bad).__name__})")
    return arr.astype(np.int64)


class TagStore:
    """The tags of one dataset's samples, stored durably in ``<dataset>/tags/``.

    Safe to share between threads, and to use from several processes at once (see the module
    docstring for the protocol). Reads are cached and refreshed incrementally from the event
    files written since; poll :attr:`version` to learn cheaply whether anything changed.

    Parameters
    ----------
    dataset : the dataset directory or a :class:`~embviz.dataset.Dataset`.
    compact_after : once more than this many event files wait after a write, the writer
        compacts them into the snapshot (fewer files to list and read, at the cost of one
        locked rewrite of the snapshot every ``compact_after`` writes).
    """

    def __init__(self, dataset: str | os.PathLike | Dataset, *, compact_after: int = 64):
        self.root = Path(dataset.root if isinstance(dataset, Dataset) else dataset)
        read_manifest(self.root)  # fail early, naming the path, when it is no dataset
        if compact_after < 1:
            raise TagError(f"compact_after must be >= 1, got {compact_after}")
        self.dir = self.root / TAGS_DIR
        self._files = TagFiles(self.dir)
        self.compact_after = compact_after
        self._lock = threading.Lock()
        self._cache: TagState | None = None
        self._ids_lock = threading.Lock()
        self._known: tuple[str, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"TagStore({str(self.root)!r})"

    # -- writing ------------------------------------------------------------------------------
    def add(self, ids, tag: str, value: str | None = None, *, user: str | None = None) -> int:
        """Tag the samples ``ids`` with ``tag`` (and ``value``); return the rows written.

        Parameters
        ----------
        ids : a sample id or a sequence/array of them; each must be in the dataset's samples
            (duplicates count once).
        tag : a built-in tag (:data:`BUILTIN_TAGS`) or a custom name (see :func:`validate_tag`).
        value : the new label for ``relabel``, the text for ``note`` (both required); optional
            for other tags. At most :data:`MAX_VALUE_CHARS` characters, stored as given (whoever
            renders it escapes it). Adding a tag a sample already has replaces its value.
        user : who tagged, for the record.

        Raises :class:`~embviz.errors.TagError` naming the bad tag, value or the first unknown id.
        """
        tag = validate_tag(tag)
        value = _check_value(tag, value)
        return self._write(ids, tag, value, "add", _check_user(user))

    def remove(self, ids, tag: str, *, user: str | None = None) -> int:
        """Remove ``tag`` from the samples ``ids`` (whatever its value); return the rows written.

        Removing a tag a sample does not have is harmless (it records the removal anyway, so
        it also wins over an add another process made a moment earlier).
        """
        tag = validate_tag(tag)
        return self._write(ids, tag, None, "remove", _check_user(user))

    def _write(self, ids, tag: str, value: str | None, op: str, user: str | None) -> int:
        ids = np.unique(self._check_known(_as_ids(ids)))
        if not len(ids):
            return 0
        self._files.append(ids, tag, value, op, user)
        if self._files.waiting() > self.compact_after:
            try:
                self._files.compact(min_events=self.compact_after + 1)
            except DiskFullError as exc:  # the tags are saved: compaction can wait for space
                log.warning("tags saved; compacting them waits for free space: %s", exc)
        return len(ids)

    def _check_known(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` if every one is a sample id of the dataset, else a :class:`TagError`."""
        if not len(ids):
            return ids
        known = self._known_ids()
        if len(known) and known[-1] - known[0] + 1 == len(known):
            bad = ids[(ids < known[0]) | (ids > known[-1])]  # contiguous ids: a range check
        else:
            pos = np.clip(np.searchsorted(known, ids), 0, max(len(known) - 1, 0))
            bad = ids[known[pos] != ids] if len(known) else ids
        if len(bad):
            span = f"ids {known[0]}..{known[-1]}" if len(known) else "no ids"
            raise TagError(
                f"{self.root}: sample id {int(bad[0])} is not in the dataset's samples "
                f"({len(known):,} samples, {span}); {len(bad):,} of {len(ids):,} ids are unknown"
            )
        return ids

    def _known_ids(self) -> np.ndarray:
        """The dataset's sample ids, sorted; re-read only when the samples table is rewritten."""
        ds = Dataset(self.root, read_manifest(self.root))
        version = ds.table("samples")["dir"]
        with self._ids_lock:
            if self._known is None or self._known[0] != version:
                ids = ds.read_arrow("samples", columns=["id"]).column("id").to_numpy()
                ids = ids.astype(np.int64, copy=False)
                if not (ids[1:] > ids[:-1]).all():  # ingest writes them sorted: skip the sort
                    ids = np.unique(ids)
                self._known = (version, ids)
            return self._known[1]

    # -- reading ------------------------------------------------------------------------------
    def _load(self) -> TagState:
        """The current state, read consistently (see the module docstring) and cached."""
        with self._lock:
            self._cache = self._files.load(self._cache)
            return self._cache

    @property
    def version(self) -> str:
        """A short string that changes on every add, remove and compaction (poll it to refresh).

        Costs one directory listing and one small JSON read; no Parquet is read.
        """
        return self._files.version()

    def current(self) -> pd.DataFrame:
        """Every live tag: one row per (id, tag), columns ``id, tag, value, user, time``.

        Sorted by id, then tag. ``value`` and ``user`` are missing (NaN) where none was given;
        ``time`` is the UTC time of the add that set the row.
        """
        return self._load().live.copy(deep=False)

    def ids(self, tag: str, value: str | None = None) -> np.ndarray:
        """Sorted ids of the samples tagged ``tag`` (with exactly ``value`` when given)."""
        tag = validate_tag(tag)
        live = self._load().live
        mask = live["tag"] == tag
        if value is not None:
            mask &= live["value"] == value
        return live.loc[mask, "id"].to_numpy(dtype=np.int64)

    def of(self, sample_id: int) -> list[dict[str, Any]]:
        """The live tags of one sample in display order (:func:`tag_order`).

        Each is a dict ``{"tag", "value", "user", "time"}``: ``value`` and ``user`` are ``None``
        where not given, ``time`` a timezone-aware ``datetime`` (UTC).
        """
        sid = _as_ids(sample_id)
        if len(sid) != 1:
            raise TagError(f"of() takes one sample id, got {sample_id!r}")
        live = self._load().live
        rows = live[live["id"] == sid[0]]
        out = {
            r["tag"]: {
                "tag": r["tag"],
                "value": None if _missing(r["value"]) else r["value"],
                "user": None if _missing(r["user"]) else r["user"],
                "time": r["time"].to_pydatetime(),
            }
            for r in rows.to_dict("records")
        }
        return [out[t] for t in tag_order(out)]

    def counts(self) -> dict[str, int]:
        """Number of samples carrying each tag that is in use, in display order (:func:`tag_order`)."""
        sizes = self._load().live.groupby("tag", sort=False).size()
        return {t: int(sizes[t]) for t in tag_order(sizes.index)}

    # -- compaction ----------------------------------------------------------------------------
    def compact(self) -> int:
        """Fold every waiting event file into a new snapshot; return how many were absorbed.

        Safe while other threads and processes write and read (see the module docstring).
        """
        return self._files.compact(min_events=1)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)
