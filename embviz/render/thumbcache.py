"""Decoded thumbnails in one least-recently-used cache per process, shared by every session.

The image map draws hundreds of thumbnails per frame and a pan or zoom mostly redraws the same
ones, so decoding (WebP/JPEG/PNG to RGB) happens once per thumbnail while it stays in the
cache. The cache is bounded by the decoded bytes: :data:`CACHE_MB` megabytes, or the
``EMBVIZ_THUMB_CACHE_MB`` environment variable (read when the cache is first used). A 64-px
RGB thumbnail takes 12 KB, so the default holds about 10,000 of them.

Where thumbnail bytes come from is a seam, a :class:`ThumbSource`: :class:`DatasetThumbs`
reads a dataset's ``thumbnails`` table (the one the pipeline writes); tests and benchmarks
pass their own. A thumbnail that fails to decode is cached as broken (drawn as an empty
frame) and logged once per thumb id; nothing here raises for bad image bytes.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Protocol

import numpy as np

__all__ = [
    "CACHE_MB",
    "DatasetThumbs",
    "ThumbCache",
    "ThumbSource",
    "dataset_thumbs",
    "thumb_cache",
]

log = logging.getLogger(__name__)

#: Default size of the process's decoded-thumbnail cache in megabytes (decoded RGB bytes);
#: ``EMBVIZ_THUMB_CACHE_MB`` overrides it.
CACHE_MB = 128
#: Longest side a thumbnail is decoded to: larger images are reduced while decoding, so one
#: odd 4000-px "thumbnail" cannot fill the cache (cells are at most 226 px).
MAX_SIDE = 256
#: Broken thumbnails remembered for the log (each is logged once); past this many, no more.
_LOG_LIMIT = 10_000


class ThumbSource(Protocol):
    """Where thumbnail bytes come from: a cache namespace, sample -> thumb ids, and bytes."""

    #: names the source in cache keys (a dataset and its thumbnails version)
    key: str

    def thumb_ids(self, sample_ids: np.ndarray) -> np.ndarray:
        """The thumb id of each sample (int64, -1 where a sample has none)."""
        ...

    def read(self, thumb_ids: list[int]) -> list[bytes | None]:
        """The encoded bytes of each thumb id, in order (None where absent)."""
        ...


class _Broken:
    """The cached value of a thumbnail that did not decode (drawn as an empty frame)."""


BROKEN = _Broken()


class ThumbCache:
    """A thread-safe LRU of decoded thumbnails (RGB ``PIL.Image``), bounded in bytes.

    ``get`` answers hits under the lock, then reads and decodes the misses outside it (one
    :meth:`ThumbSource.read` call per frame), so sessions never wait on each other's decoding.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._logged: set[Hashable] = set()

    @property
    def hit_rate(self) -> float:
        """Hits over lookups since the cache was made (or :meth:`reset_stats`); 0 before any."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    @property
    def size_bytes(self) -> int:
        """Decoded bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def reset_stats(self) -> None:
        """Zero the hit and miss counts (benchmarks measure one walk at a time)."""
        with self._lock:
            self.hits = self.misses = 0

    def clear(self) -> None:
        """Drop every thumbnail and zero the counts (tests, benchmarks' cold runs)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0
            self._logged.clear()

    def get(self, source: ThumbSource, thumb_ids) -> list:
        """The decoded thumbnails of ``thumb_ids`` from ``source``, in order: a ``PIL.Image``
        (RGB), None where there is no thumbnail (id -1 or no bytes), or :data:`BROKEN`."""
        ids = [int(t) for t in thumb_ids]
        out: list = [None] * len(ids)
        missing: dict[int, list[int]] = {}
        with self._lock:
            for i, t in enumerate(ids):
                if t < 0:
                    continue
                item = self._items.get((source.key, t))
                if item is None:
                    missing.setdefault(t, []).append(i)
                    continue
                self._items.move_to_end((source.key, t))
                out[i] = item[0]
                self.hits += 1
            self.misses += sum(len(v) for v in missing.values())
        if not missing:
            return out
        wanted = list(missing)
        try:
            data = source.read(wanted)
        except Exception:  # a frame is drawn with empty cells rather than not at all
            log.exception("reading %d thumbnails from %s failed", len(wanted), source.key)
            data = [None] * len(wanted)
        decoded = [self._decode(source.key, t, b) for t, b in zip(wanted, data, strict=True)]
        with self._lock:
            for t, img in zip(wanted, decoded, strict=True):
                for i in missing[t]:
                    out[i] = img
                if img is None:
                    continue  # absent: asked again next time (the table may be rebuilt)
                key = (source.key, t)
                if key in self._items:
                    continue
                size = img.width * img.height * 3 if img is not BROKEN else 64
                self._items[key] = (img, size)
                self._bytes += size
            while self._items and self._bytes > self.max_bytes:
                _, (_, size) = self._items.popitem(last=False)
                self._bytes -= size
        return out

    def _decode(self, key: str, thumb_id: int, data: bytes | None):
        if not data:
            return None
        from PIL import Image

        try:
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale
            img = img.convert("RGB")
            if max(img.size) > MAX_SIDE:
                img.thumbnail((MAX_SIDE, MAX_SIDE))
            return img
        except Exception as exc:  # any bad bytes: an empty frame, never a broken map
            with self._lock:
                first = (key, thumb_id) not in self._logged and len(self._logged) < _LOG_LIMIT
                if first:
                    self._logged.add((key, thumb_id))
            if first:
                log.warning("thumbnail %s of %s does not decode: %s", thumb_id, key, exc)
            return BROKEN


_cache: ThumbCache | None = None
_cache_lock = threading.Lock()


def thumb_cache() -> ThumbCache:
    """The process's decoded-thumbnail cache (made on first use, sized by
    ``EMBVIZ_THUMB_CACHE_MB`` or :data:`CACHE_MB`)."""
    global _cache
    with _cache_lock:
        if _cache is None:
            raw = os.environ.get("EMBVIZ_THUMB_CACHE_MB", "")
            try:
                mb = float(raw) if raw.strip() else CACHE_MB
            except ValueError:
                log.warning("EMBVIZ_THUMB_CACHE_MB=%r is not a number; using %d", raw, CACHE_MB)
                mb = CACHE_MB
            _cache = ThumbCache(int(max(mb, 1) * 2**20))
        return _cache


class DatasetThumbs:
    """A dataset's thumbnails: the ``thumb_id`` column of its samples and the ``thumbnails``
    table. The sample -> thumb id map is read once (4-8 bytes a sample) and kept."""

    def __init__(self, ds):
        self.ds = ds
        versions = [ds.table(t)["dir"] for t in ("samples", "thumbnails")]
        self.key = f"{ds.root}:{versions[0]}:{versions[1]}"
        self._map: np.ndarray | None = None
        self._lock = threading.Lock()

    def _table(self) -> np.ndarray:
        """``thumb id`` indexed by sample id (-1: none); ids are dense in practice."""
        with self._lock:
            if self._map is None:
                import pyarrow.compute as pc

                table = self.ds.read_arrow("samples", columns=["id", "thumb_id"])
                ids = table.column("id").to_numpy().astype(np.int64, copy=False)
                tids = pc.fill_null(table.column("thumb_id").cast("int64"), -1).to_numpy()
                top = int(tids.max()) if len(tids) else -1
                dtype = np.int32 if top < 2**31 - 1 else np.int64
                out = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype=dtype)
                out[ids] = tids
                self._map = out
            return self._map

    def thumb_ids(self, sample_ids: np.ndarray) -> np.ndarray:
        """The thumb id of each sample (-1 where it has none)."""
        table = self._table()
        ids = np.asarray(sample_ids, dtype=np.int64)
        ok = (ids >= 0) & (ids < len(table))
        out = np.full(len(ids), -1, dtype=np.int64)
        out[ok] = table[ids[ok]]
        return out

    def read(self, thumb_ids: list[int]) -> list[bytes | None]:
        """The encoded bytes of each thumb id (one filtered read of the thumbnails table)."""
        table = self.ds.read_ids("thumbnails", thumb_ids, ["image"])
        keys, images = table.column("thumb_id").to_pylist(), table.column("image").to_pylist()
        found = dict(zip(keys, images, strict=True))
        return [found.get(t) for t in thumb_ids]


_sources: dict[str, DatasetThumbs] = {}


def dataset_thumbs(ds) -> DatasetThumbs | None:
    """The thumbnail source of dataset ``ds``, shared by the process's sessions (its sample ->
    thumb id map is read once), or None when it has no thumbnails: a dataset ingested from
    vectors alone has no ``thumbnails`` table or no ``thumb_id`` column."""
    if not ds.has("thumbnails") or not ds.has("samples"):
        return None
    if "thumb_id" not in ds.table("samples")["columns"]:
        return None
    source = DatasetThumbs(ds)
    with _cache_lock:
        return _sources.setdefault(source.key, source)
