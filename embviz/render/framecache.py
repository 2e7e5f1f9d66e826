"""Frames every session of a process shares: the last few rendered pictures of each store.

Many people opening the same map see the same first picture (the full view at the default
size and colouring), and popular views repeat; a frame depends only on the store and the
request, so one rendered frame serves them all. Kept per store (forgotten with it), bounded
by count; frames drawn through a filter mask are not shared (the mask is the session's).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .raster import Frame
    from .store import PointStore

__all__ = ["FRAMES_PER_STORE", "clear", "get", "has", "put", "stats"]

#: Frames kept per store (a frame's PNG is 50-400 KB).
FRAMES_PER_STORE = 32

_LOCK = threading.Lock()
_FRAMES: weakref.WeakKeyDictionary[PointStore, OrderedDict] = weakref.WeakKeyDictionary()
_COUNTS = {"hits": 0, "misses": 0}


def get(store: PointStore, key: tuple) -> Frame | None:
    """The frame rendered for ``key`` on ``store``, or None."""
    with _LOCK:
        frames = _FRAMES.get(store)
        frame = frames.get(key) if frames is not None else None
        if frame is None:
            _COUNTS["misses"] += 1
            return None
        frames.move_to_end(key)
        _COUNTS["hits"] += 1
        return frame


def has(store: PointStore, key: tuple) -> bool:
    """Whether a frame for ``key`` on ``store`` is kept (not counted as a hit or a miss)."""
    with _LOCK:
        frames = _FRAMES.get(store)
        return frames is not None and key in frames


def put(store: PointStore, key: tuple, frame: Frame) -> None:
    """Keep ``frame`` for ``key`` on ``store``, dropping the least recently used beyond
    :data:`FRAMES_PER_STORE`."""
    with _LOCK:
        frames = _FRAMES.setdefault(store, OrderedDict())
        frames[key] = frame
        frames.move_to_end(key)
        while len(frames) > FRAMES_PER_STORE:
            frames.popitem(last=False)


def stats() -> dict[str, int]:
    """Hits and misses since the process started (or :func:`clear`)."""
    with _LOCK:
        return dict(_COUNTS)


def clear() -> None:
    """Forget every shared frame (tests, benchmarks)."""
    with _LOCK:
        _FRAMES.clear()
        _COUNTS.update(hits=0, misses=0)
