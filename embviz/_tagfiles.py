"""The files of one tag folder: event and snapshot Parquet files, their pointer, and compaction.

:class:`embviz.tags.TagStore` is the public face; its module docstring describes the layout and
the protocol these functions follow. Nothing here validates tags or ids: the store does that
before it writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import TagError
from .storage import atomic_write_json, file_lock, write_parquet_atomic

if TYPE_CHECKING:
    import pandas as pd

POINTER = "CURRENT.json"
LOCK = ".compact.lock"
EVENT_PREFIX = "events-"
SNAPSHOT_PREFIX = "snapshot-"
SUFFIX = ".parquet"
#: A temporary file this old was left by a writer that died mid-write.
STALE_TMP_SECONDS = 3600.0
#: A reader starts over at most this many times while compactions replace the files it lists.
READ_ATTEMPTS = 200
#: Columns of the live tags, as :meth:`embviz.tags.TagStore.current` returns them.
LIVE_COLUMNS = ["id", "tag", "value", "user", "time"]

_clock_lock = threading.Lock()
_last_ns = 0


def now_ns() -> int:
    """Wall-clock nanoseconds, strictly increasing within this process (threads included)."""
    global _last_ns
    with _clock_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


def schema(*, snapshot: bool):
    """The Arrow schema of an event file, or of a snapshot (which adds ``src``)."""
    import pyarrow as pa

    fields = [
        ("id", pa.int64()),
        ("tag", pa.string()),
        ("value", pa.string()),
        ("op", pa.string()),
        ("user", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema([*fields, ("src", pa.string())] if snapshot else fields)


def empty_state() -> pd.DataFrame:
    """A state frame (snapshot columns) with no rows."""
    return schema(snapshot=True).empty_table().to_pandas()


def fold(frames: list[pd.DataFrame], *, categorical: bool = False) -> pd.DataFrame:
    """The latest event of each (id, tag) among ``frames`` (order-free: latest = largest src).

    ``categorical``: leave ``tag`` categorical when it became so (a state kept to fold again
    later: converting 234K names back and forth costs ~0.2 s a write); else names as strings.
    """
    import pandas as pd

    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_state()
    if len(frames) == 1:
        df = frames[0]
    else:
        # One categorical dtype per text key (categories sorted as the names are): concatenating
        # the cached state (categorical) with new events (strings) otherwise turns every row
        # back into Python strings, then sorts and de-duplicates those (0.9 s a tag write at
        # 234K tagged rows, on the document thread: bench soak's p95 drift).
        frames = _shared_categories(frames, ["src", "op", "tag"])
        df = pd.concat(frames, ignore_index=True)
    df = df.sort_values("src", kind="stable")
    df = df.drop_duplicates(["id", "tag"], keep="last").reset_index(drop=True)
    if not categorical and isinstance(df["tag"].dtype, pd.CategoricalDtype):
        df["tag"] = df["tag"].astype(object)
    return df


def _shared_categories(frames: list[pd.DataFrame], columns: list[str]) -> list[pd.DataFrame]:
    """``frames`` with each of ``columns`` categorical over the sorted union of its values."""
    import pandas as pd

    out = [f.copy(deep=False) for f in frames]
    for col in columns:
        values: set = set()
        for f in out:
            series = f[col]
            cats = series.cat.categories if isinstance(series.dtype, pd.CategoricalDtype) else None
            values.update(cats if cats is not None else series.unique())
        dtype = pd.CategoricalDtype(sorted(values))
        for f in out:
            f[col] = f[col].astype(dtype)
    return out


@dataclass(frozen=True)
class TagState:
    """The tags as read at one moment, and what they were read from (to refresh incrementally)."""

    snapshot: str | None  #: the snapshot the state was built on
    seen: frozenset[str]  #: event files folded in on top of it
    state: Any  #: latest event per (id, tag), tombstones included
    live: Any  #: the adds of ``state``: the current tags


class TagFiles:
    """The files in one dataset's ``tags/`` folder: list, read, append events, compact."""

    def __init__(self, folder: Path):
        self.dir = folder

    def read_pointer(self) -> tuple[str | None, frozenset[str]]:
        """``(snapshot name or None, names of the event files it absorbed)`` from the pointer."""
        path = self.dir / POINTER
        try:
            data = json.loads(path.read_text())
            return data["snapshot"], frozenset(data["absorbed"])
        except FileNotFoundError:
            return None, frozenset()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TagError(
                f"{path}: unreadable ({exc}); it names the tag snapshot in use, so restore it "
                "from a backup or delete it (event files absorbed since are then read again)"
            ) from exc

    def event_names(self) -> set[str]:
        """Names of the event files in the folder now (absorbed ones included)."""
        try:
            with os.scandir(self.dir) as entries:
                return {
                    e.name
                    for e in entries
                    if e.name.startswith(EVENT_PREFIX) and e.name.endswith(SUFFIX)
                }
        except FileNotFoundError:
            return set()

    def read_file(self, name: str) -> pd.DataFrame:
        """One event or snapshot file as a state frame; ``FileNotFoundError`` passes through."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.dir / name
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowInvalid) as exc:
            if not path.exists():
                raise FileNotFoundError(path) from exc
            raise TagError(
                f"{path}: cannot read this tag file ({exc}); move it out of {self.dir} to go on "
                "without the tags it holds"
            ) from exc
        if "src" not in table.column_names:
            table = table.append_column("src", pa.repeat(pa.scalar(name), table.num_rows))
        return table.select(schema(snapshot=True).names).to_pandas()

    def load(self, cache: TagState | None) -> TagState:
        """The current state, read consistently, reusing ``cache`` where it still holds.

        Lists the files, reads the snapshot and the event files it did not absorb (only those
        not in ``cache`` when its snapshot is still the published one), and starts over if the
        pointer changed or a listed file vanished meanwhile (a compaction replaced it).
        """
        for attempt in range(READ_ATTEMPTS):
            snapshot, absorbed = self.read_pointer()
            names = self.event_names() - absorbed
            # The cache holds while the snapshot is the same: until a compaction publishes
            # another, no event file that is not absorbed can be deleted.
            reuse = cache is not None and cache.snapshot == snapshot and cache.seen <= names
            seen = cache.seen if reuse else frozenset()
            new = sorted(names - seen)
            try:
                if reuse:
                    base = cache.state
                else:
                    base = self.read_file(snapshot) if snapshot else empty_state()
                frames = [self.read_file(n) for n in new]
            except FileNotFoundError:
                time.sleep(min(0.001 * attempt, 0.05))  # a compaction is replacing files
                continue
            if self.read_pointer()[0] != snapshot:
                continue
            if reuse and not frames:
                return cache
            state = fold([base, *frames], categorical=True)
            # Kept in every process that reads tags, and growing with them: each event file's
            # name (~80 bytes), op and tag name once, not on every row (categories sort as the
            # names do); readers of ``live`` get tag names as strings.
            state = state.astype({"src": "category", "op": "category", "tag": "category"})
            live = state.loc[state["op"] == "add", LIVE_COLUMNS]
            live = live.sort_values(["id", "tag"], kind="stable").reset_index(drop=True)
            live["tag"] = live["tag"].astype(object)
            return TagState(snapshot, seen | frozenset(new), state, live)
        raise TagError(
            f"{self.dir}: could not read a consistent set of tag files in {READ_ATTEMPTS} "
            "attempts (files kept changing); try again"
        )

    def version(self) -> str:
        """A short string that changes on every event file and compaction; reads no Parquet."""
        import hashlib

        snapshot, absorbed = self.read_pointer()
        names = sorted(self.event_names() - absorbed)
        digest = hashlib.blake2b("\n".join(names).encode(), digest_size=8).hexdigest()
        return f"{snapshot or '-'}:{len(names)}:{digest}"

    def waiting(self) -> int:
        """How many event files the snapshot has not absorbed yet."""
        _, absorbed = self.read_pointer()
        return len(self.event_names() - absorbed)

    def append(
        self, ids: np.ndarray, tag: str, value: str | None, op: str, user: str | None
    ) -> None:
        """Write one event file: ``op`` (``add`` or ``remove``) of ``tag`` for each of ``ids``."""
        import pyarrow as pa

        n = len(ids)
        t = now_ns()
        name = f"{EVENT_PREFIX}{t:020d}-{os.getpid()}-{uuid.uuid4().hex}{SUFFIX}"
        table = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "tag": pa.repeat(pa.scalar(tag, pa.string()), n),
                "value": pa.repeat(pa.scalar(value, pa.string()), n),
                "op": pa.repeat(pa.scalar(op, pa.string()), n),
                "user": pa.repeat(pa.scalar(user, pa.string()), n),
                "time": pa.repeat(pa.scalar(t // 1000, pa.timestamp("us", tz="UTC")), n),
            },
            schema=schema(snapshot=False),
        )
        write_parquet_atomic(table, self.dir / name)

    def compact(self, *, min_events: int) -> int:
        """Fold the waiting event files into a new snapshot if at least ``min_events`` wait.

        Returns how many were absorbed. Holds the folder's lock; publishes the snapshot by
        rewriting the pointer before it deletes what the snapshot replaced.
        """
        if not self.dir.is_dir():
            return 0
        with file_lock(self.dir / LOCK):
            snapshot, absorbed = self.read_pointer()
            # Leftovers of a compaction stopped between publishing and deleting. Only a
            # compaction deletes tag files, and it holds this lock.
            for name in absorbed:
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / name).unlink()
            self._remove_strays(snapshot)
            names = sorted(self.event_names() - absorbed)
            if len(names) < min_events:
                return 0
            frames = [self.read_file(snapshot)] if snapshot else []
            state = fold([*frames, *(self.read_file(n) for n in names)])
            import pyarrow as pa

            new = f"{SNAPSHOT_PREFIX}{now_ns():020d}-{uuid.uuid4().hex}{SUFFIX}"
            table = pa.Table.from_pandas(state, schema=schema(snapshot=True), preserve_index=False)
            write_parquet_atomic(table, self.dir / new)
            atomic_write_json(
                self.dir / POINTER, {"snapshot": new, "absorbed": names, "rows": len(state)}
            )
            for name in [*([snapshot] if snapshot else []), *names]:
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / name).unlink()
            return len(names)

    def _remove_strays(self, snapshot: str | None) -> None:
        """Delete snapshots other than the published one, and temporary files an hour old
        (left by a writer that died mid-write)."""
        now = time.time()
        with os.scandir(self.dir) as entries:
            for e in entries:
                with contextlib.suppress(FileNotFoundError):
                    if (e.name.startswith(SNAPSHOT_PREFIX) and e.name != snapshot) or (
                        e.name.startswith(".")
                        and e.name.endswith(".tmp")
                        and now - e.stat().st_mtime > STALE_TMP_SECONDS
                    ):
                        os.unlink(e.path)
