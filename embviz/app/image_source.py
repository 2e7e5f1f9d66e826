"""The images a registered dataset serves: registry keys, id lookups, thumbnail and full-image bytes.

Data and requests never name a file: a URL holds a registry key and a sample id, and full
images are read only from inside the dataset's own image folder.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embviz.dataset import Dataset, open_dataset, slugify
from embviz.images import make_thumbnail, open_image

__all__ = [
    "FULL_SIZE",
    "IMAGE_PATTERN",
    "THUMB_PATTERN",
    "Entry",
    "drop_cached",
    "encode_full",
    "entry",
    "full_image",
    "image_url",
    "lookup",
    "register",
    "thumb_bytes",
    "thumb_url",
    "thumbs_bytes",
]

log = logging.getLogger(__name__)

#: URL patterns: a registry key and a decimal sample id, nothing that could name a file.
THUMB_PATTERN = r"/embviz/thumb/([a-z0-9-]{1,80})/([0-9]{1,19})"
IMAGE_PATTERN = r"/embviz/image/([a-z0-9-]{1,80})/([0-9]{1,19})"
_KEY_RE = re.compile(r"[a-z0-9-]{1,80}")

#: Longest side, in pixels, of the re-encoded "full" image.
FULL_SIZE = 1024
_FULL_QUALITY = 85
INT64_MAX = 2**63 - 1
#: Thumbnail partitions kept decoded in memory, bounded by count and by total bytes.
_CACHE_PARTS = 8
_CACHE_BYTES = 128 * 2**20


# -- registry ------------------------------------------------------------------------------------
@dataclass(eq=False)
class Entry:
    """A registered dataset version: its files, its allowed image folder and lazy id lookups."""

    key: str
    ds: Dataset
    image_root: Path | None
    _index: tuple[Any, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def index(self):
        """``(ids, thumb_ids)``: sample ids sorted, and each one's thumb_id (-1 for none)."""
        with self._lock:
            if self._index is None:
                self._index = _read_index(self.ds)
            return self._index

    def thumb_id(self, sample_id: int) -> int | None:
        """The thumb_id of sample ``sample_id``, or None when the sample or its thumbnail is absent."""
        ids, thumbs = self.index()
        i = int(ids.searchsorted(sample_id))
        if i < len(ids) and ids[i] == sample_id and thumbs[i] >= 0:
            return int(thumbs[i])
        return None

    def has_sample(self, sample_id: int) -> bool:
        """Whether the samples table has a row with id ``sample_id``."""
        ids, _ = self.index()
        i = int(ids.searchsorted(sample_id))
        return i < len(ids) and ids[i] == sample_id

    def uri(self, sample_id: int) -> str | None:
        """The ``uri`` cell of sample ``sample_id`` (one filtered Parquet read), or None."""
        if not self.ds.has("samples") or "uri" not in self.ds.table("samples")["columns"]:
            return None
        table = self.ds.read_ids("samples", [sample_id], ["uri"])
        return table.column("uri")[0].as_py() if table.num_rows else None


_registry: dict[str, Entry] = {}
_key_by_root: dict[Path, str] = {}
_registry_lock = threading.Lock()


def _read_index(ds: Dataset):
    import numpy as np
    import pyarrow.compute as pc

    if not ds.has("samples"):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    has_thumbs = "thumb_id" in ds.table("samples")["columns"]
    table = ds.read_arrow("samples", columns=["id", "thumb_id"] if has_thumbs else ["id"])
    ids = table.column("id").to_numpy().astype(np.int64, copy=False)
    if has_thumbs:
        col = pc.fill_null(table.column("thumb_id").cast("int64"), -1)
        thumbs = col.to_numpy().astype(np.int64, copy=False)
    else:
        thumbs = np.full(len(ids), -1, np.int64)
    order = np.argsort(ids, kind="stable")
    return ids[order], thumbs[order]


def _image_root(ds: Dataset) -> Path | None:
    """The folder the samples' images may come from, resolved; None when none is recorded.

    Taken from the source recorded with the samples table (its ``meta``), else from the last
    ``ingest`` step in the manifest: an image folder is the root itself, a manifest (or vectors)
    file allows the folder that holds it.
    """
    meta = (ds.tables.get("samples") or {}).get("meta") or {}
    info = meta if meta.get("source") and meta.get("kind") else None
    if info is None:
        steps = [s for s in ds.manifest.get("steps", []) if s.get("step") == "ingest"]
        info = (steps[-1].get("params") or {}) if steps else {}
    source, kind = info.get("source"), info.get("kind")
    if not source or not kind:
        return None
    folder = Path(source) if kind == "folder" else Path(source).parent
    if not folder.is_absolute():
        return None  # relative to an unknown working directory: allow nothing
    try:
        return folder.resolve(strict=True)
    except (OSError, RuntimeError):
        return None


def _url_slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", slugify(name).lower()).strip("-")
    return slug[:60].rstrip("-") or "dataset"


def register(root: str | Path) -> str:
    """Register the dataset at ``root`` with this process's routes and return its URL key.

    The key is ``<slug of the name>-<8 hex>``, the hex a hash of the resolved root and the
    current versions of the ``samples`` and ``thumbnails`` tables, so a rebuilt dataset gets a
    new key (responses are cached as immutable) while the same files always give the same key,
    in any process. Registering again is cheap and returns the same key; a new version of the
    same root replaces the older one.

    Raises :class:`~embviz.errors.DatasetError` when ``root`` is not a valid dataset.
    """
    ds = open_dataset(Path(root).resolve())
    versions = [(ds.tables.get(t) or {}).get("dir", "") for t in ("samples", "thumbnails")]
    text = "\0".join([str(ds.root), *versions])
    key = f"{_url_slug(ds.name)}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"
    with _registry_lock:
        if key in _registry:
            return key
        old = _key_by_root.get(ds.root)
        if old is not None:
            _registry.pop(old, None)
            drop_cached(old)
        _registry[key] = Entry(key, ds, _image_root(ds))
        _key_by_root[ds.root] = key
    return key


def lookup(key: str) -> Dataset:
    """The dataset registered under ``key``; raises KeyError for a key never registered here."""
    return entry(key).ds


def entry(key: str) -> Entry:
    """The registered dataset version behind URL key ``key`` (KeyError when unknown)."""
    with _registry_lock:
        try:
            return _registry[key]
        except KeyError:
            raise KeyError(f"no dataset registered under key {key!r}") from None


#: A server's ``--prefix`` as it appears in URLs: "" or "/seg/seg" (no trailing slash).
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9._~-]+)*")


def _url(kind: str, key: str, sample_id: int, prefix: str = "") -> str:
    if not _KEY_RE.fullmatch(key):
        raise ValueError(f"bad key {key!r}: use the string register() returned")
    if not 0 <= int(sample_id) <= INT64_MAX:
        raise ValueError(f"sample id must be a non-negative int64, got {sample_id!r}")
    prefix = prefix.rstrip("/")
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"bad URL prefix {prefix!r}: expected '' or '/path'")
    return f"{prefix}/embviz/{kind}/{key}/{int(sample_id)}"


def thumb_url(key: str, sample_id: int, *, prefix: str = "") -> str:
    """Same-origin URL of sample ``sample_id``'s thumbnail: ``{prefix}/embviz/thumb/{key}/{id}``.

    ``prefix``: the server's ``--prefix`` (Panel's ``pn.state.base_url`` in a session)."""
    return _url("thumb", key, sample_id, prefix)


def image_url(key: str, sample_id: int, *, prefix: str = "") -> str:
    """Same-origin URL of sample ``sample_id``'s image (at most 1024 px):
    ``{prefix}/embviz/image/{key}/{id}``."""
    return _url("image", key, sample_id, prefix)


# -- thumbnails cache ----------------------------------------------------------------------------
_parts: OrderedDict[tuple[str, int], tuple[dict[int, bytes], int]] = OrderedDict()
_part_locks: dict[tuple[str, int], threading.Lock] = {}
_cache_lock = threading.Lock()


def drop_cached(key: str) -> None:
    """Forget the decoded thumbnail partitions of ``key`` (its files were rebuilt)."""
    with _cache_lock:
        for ck in [ck for ck in _parts if ck[0] == key]:
            del _parts[ck]
        for ck in [ck for ck in _part_locks if ck[0] == key]:
            del _part_locks[ck]


def _partition(entry: Entry, index: int) -> dict[int, bytes]:
    """``thumb_id -> WebP bytes`` of one thumbnails partition, read once and kept in an LRU."""
    ck = (entry.key, index)
    with _cache_lock:
        if ck in _parts:
            _parts.move_to_end(ck)
            return _parts[ck][0]
        lock = _part_locks.setdefault(ck, threading.Lock())
    with lock:  # one reader per partition; concurrent requests for it wait for that read
        with _cache_lock:
            if ck in _parts:
                return _parts[ck][0]
        table = entry.ds.read_arrow("thumbnails", columns=["thumb_id", "image"], partitions=[index])
        images = table.column("image").to_pylist()
        thumbs = dict(zip(table.column("thumb_id").to_pylist(), images, strict=True))
        size = sum(len(b) for b in images if b)
        with _cache_lock:
            _parts[ck] = (thumbs, size)
            total = sum(s for _, s in _parts.values())
            while len(_parts) > 1 and (len(_parts) > _CACHE_PARTS or total > _CACHE_BYTES):
                _, (_, dropped) = _parts.popitem(last=False)
                total -= dropped
    return thumbs


def thumb_bytes(entry: Entry, thumb_id: int) -> bytes | None:
    """Thumbnail ``thumb_id`` from the cached partition that holds it (served many times, so a
    partition is decoded once instead of one filtered read per request)."""
    from embviz.reading import partitions_holding

    if not entry.ds.has("thumbnails"):
        return None
    for index in partitions_holding(entry.ds, "thumbnails", [thumb_id]):
        data = _partition(entry, index).get(thumb_id)
        if data:
            return data
    return None


def thumbs_bytes(entry: Entry, sample_ids) -> list[bytes | None]:
    """The thumbnails of ``sample_ids`` in their order (None where a sample has none): each
    partition's cached dict is looked up once per call, not once per id."""
    import numpy as np

    from embviz.reading import partitions_holding

    ids, thumbs = entry.index()
    want = np.asarray(sample_ids, dtype=np.int64)
    tid = np.full(len(want), -1, np.int64)
    if len(ids):
        at = np.minimum(ids.searchsorted(want), len(ids) - 1)
        hit = ids[at] == want
        tid[hit] = thumbs[at[hit]]
    out: list[bytes | None] = [None] * len(want)
    todo: dict[int, list[int]] = {}
    for i, t in enumerate(tid.tolist()):
        if t >= 0:
            todo.setdefault(t, []).append(i)
    if not todo or not entry.ds.has("thumbnails"):
        return out
    for index in partitions_holding(entry.ds, "thumbnails", list(todo)):
        part = _partition(entry, index)
        for t in [t for t in todo if t in part]:
            for i in todo.pop(t):
                out[i] = part[t] or None
        if not todo:
            break
    return out


# -- full images ---------------------------------------------------------------------------------
def _local_file(uri: str | None, root: Path | None) -> Path | None:
    """The real path of ``uri`` when it is an existing regular file inside ``root``, else None.

    Only absolute local paths qualify (``http://``, ``s3://``, ``file:`` and relative paths do
    not); symlinks are followed first, so a link inside ``root`` to a file outside is refused.
    """
    if not uri or root is None:
        return None
    path = Path(uri)
    if not path.is_absolute():
        return None
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, symlink loop, NUL byte
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


def full_image(entry: Entry, sample_id: int) -> tuple[Path, str] | None:
    """``(real path, etag)`` of the sample's servable original image, or None."""
    real = _local_file(entry.uri(sample_id), entry.image_root)
    if real is None:
        return None
    st = real.stat()
    tag = f"{entry.key}\0{sample_id}\0{real}\0{st.st_mtime_ns}\0{st.st_size}"
    return real, "f" + hashlib.blake2b(tag.encode(), digest_size=12).hexdigest()


def encode_full(path: Path) -> bytes:
    """Decode ``path`` safely and re-encode it as WebP, longest side at most :data:`FULL_SIZE`."""
    img = open_image(path, reduce_to=FULL_SIZE)
    return make_thumbnail(img, min(FULL_SIZE, max(img.size)), quality=_FULL_QUALITY)


# -- handlers ------------------------------------------------------------------------------------
