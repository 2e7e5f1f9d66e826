"""Tornado routes that serve a registered dataset's thumbnails and images by sample id, never by path."""

from __future__ import annotations

import gc
import hashlib
import logging
import re
import sys
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from http.client import responses
from pathlib import Path
from typing import Any

import tornado.ioloop
import tornado.web
from bokeh.server.views.auth_request_handler import AuthRequestHandler

from embviz.dataset import Dataset, open_dataset, slugify
from embviz.errors import DatasetError
from embviz.images import ImageError, make_thumbnail, open_image

__all__ = [
    "IMAGE_PATTERN",
    "ROUTES",
    "THUMB_PATTERN",
    "ImageHandler",
    "ThumbHandler",
    "extra_patterns",
    "image_url",
    "install",
    "lookup",
    "register",
    "thumb_url",
]

log = logging.getLogger(__name__)

#: URL patterns: a registry key and a decimal sample id, nothing that could name a file.
THUMB_PATTERN = r"/embviz/thumb/([a-z0-9-]{1,80})/([0-9]{1,19})"
IMAGE_PATTERN = r"/embviz/image/([a-z0-9-]{1,80})/([0-9]{1,19})"
_KEY_RE = re.compile(r"[a-z0-9-]{1,80}")

#: Longest side, in pixels, of the re-encoded "full" image.
FULL_SIZE = 1024
_FULL_QUALITY = 85
_INT64_MAX = 2**63 - 1
#: Thumbnail partitions kept decoded in memory, bounded by count and by total bytes.
_CACHE_PARTS = 8
_CACHE_BYTES = 128 * 2**20


# -- registry ------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Entry:
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
        import pyarrow.parquet as pq

        if not self.ds.has("samples") or "uri" not in self.ds.table("samples")["columns"]:
            return None
        for index, part in enumerate(self.ds.table("samples")["partitions"]):
            lo, hi = part.get("id_range") or (None, None)
            if lo is not None and not lo <= sample_id <= hi:
                continue
            path = self.ds.part_paths("samples", [index])[0]
            table = pq.read_table(path, columns=["uri"], filters=[("id", "==", sample_id)])
            if table.num_rows:
                return table.column("uri")[0].as_py()
        return None


_registry: dict[str, _Entry] = {}
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
            _drop_cached(old)
        _registry[key] = _Entry(key, ds, _image_root(ds))
        _key_by_root[ds.root] = key
    return key


def lookup(key: str) -> Dataset:
    """The dataset registered under ``key``; raises KeyError for a key never registered here."""
    return _entry(key).ds


def _entry(key: str) -> _Entry:
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
    if not 0 <= int(sample_id) <= _INT64_MAX:
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


def _drop_cached(key: str) -> None:
    with _cache_lock:
        for ck in [ck for ck in _parts if ck[0] == key]:
            del _parts[ck]
        for ck in [ck for ck in _part_locks if ck[0] == key]:
            del _part_locks[ck]


def _partition(entry: _Entry, index: int) -> dict[int, bytes]:
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


def _thumb_bytes(entry: _Entry, thumb_id: int) -> bytes | None:
    ds = entry.ds
    if not ds.has("thumbnails"):
        return None
    for index, part in enumerate(ds.table("thumbnails")["partitions"]):
        lo, hi = part.get("id_range") or (None, None)
        if lo is not None and not lo <= thumb_id <= hi:
            continue
        data = _partition(entry, index).get(thumb_id)
        if data:
            return data
    return None


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


def _full_image(entry: _Entry, sample_id: int) -> tuple[Path, str] | None:
    """``(real path, etag)`` of the sample's servable original image, or None."""
    real = _local_file(entry.uri(sample_id), entry.image_root)
    if real is None:
        return None
    st = real.stat()
    tag = f"{entry.key}\0{sample_id}\0{real}\0{st.st_mtime_ns}\0{st.st_size}"
    return real, "f" + hashlib.blake2b(tag.encode(), digest_size=12).hexdigest()


def _encode_full(path: Path) -> bytes:
    """Decode ``path`` safely and re-encode it as WebP, longest side at most :data:`FULL_SIZE`."""
    img = open_image(path, reduce_to=FULL_SIZE)
    return make_thumbnail(img, min(FULL_SIZE, max(img.size)), quality=_FULL_QUALITY)


# -- handlers ------------------------------------------------------------------------------------
def _allowed(handler: tornado.web.RequestHandler) -> bool:
    """Whether ``handler``'s request may read images, after the login check: a seam for
    per-dataset rules (allows every logged-in user)."""
    return True


async def _off_loop(fn, *args):
    """Run blocking ``fn(*args)`` (Parquet reads, decoding) in the IO loop's default executor."""
    return await tornado.ioloop.IOLoop.current().run_in_executor(None, fn, *args)


def _auth_on(handler: tornado.web.RequestHandler) -> bool:
    """Whether the server runs with an auth provider (Panel's ``--basic-auth``, ``--oauth-*``,
    or Bokeh's ``--auth-module``): then every image request needs a logged-in user."""
    provider = getattr(handler.application, "auth_provider", None)
    return provider is not None and (
        getattr(provider, "get_user", None) is not None
        or getattr(provider, "get_user_async", None) is not None
    )


class _ImageRoute(AuthRequestHandler):
    """Shared behaviour: login check, access hook, key and id parsing, caching headers,
    plain-text errors."""

    cache_control = "public, max-age=31536000, immutable"

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")

    async def prepare(self) -> None:
        # With auth on, the same user check as Bokeh's own pages (the secure "user" cookie that
        # Panel's login sets): no image is readable without logging in, and responses are
        # cacheable by the browser only, never by a shared proxy.
        if _auth_on(self):
            await super().prepare()
            if not self.current_user:
                raise tornado.web.HTTPError(403)
            self.cache_control = self.cache_control.replace("public", "private")
        if not _allowed(self):
            raise tornado.web.HTTPError(403)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(f"{status_code} {responses.get(status_code, 'Error')}\n")

    def _lookup(self, key: str, sample_id: str) -> tuple[_Entry, int]:
        number = int(sample_id)
        try:
            entry = _entry(key)
        except KeyError:
            raise tornado.web.HTTPError(404) from None
        if number > _INT64_MAX:
            raise tornado.web.HTTPError(404)
        return entry, number

    async def _read(self, fn, *args):
        try:
            return await _off_loop(fn, *args)
        except (DatasetError, OSError) as exc:  # e.g. files of a version rebuilt since
            log.warning("embviz routes: %s: %s", self.request.path, exc)
            raise tornado.web.HTTPError(404) from None

    def _cached(self, etag: str, cache_control: str) -> bool:
        """Set the caching headers; answer 304 (and return True) when the client has ``etag``."""
        self.set_header("Cache-Control", cache_control)
        self.set_header("Etag", f'"{etag}"')
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return True
        return False

    def _send(self, data: bytes) -> None:
        self.set_header("Content-Type", "image/webp")
        self.finish(data)

    async def _thumbnail(self, entry: _Entry, sample_id: int, cache_control: str) -> bool:
        """Answer with the sample's thumbnail; False when it has none."""
        thumb_id = await self._read(entry.thumb_id, sample_id)
        if thumb_id is None:
            return False
        if self._cached(f"t{entry.key}-{thumb_id}", cache_control):
            return True
        data = await self._read(_thumb_bytes, entry, thumb_id)
        if data is None:
            self.clear_header("Etag")
            return False
        self._send(data)
        return True


class ThumbHandler(_ImageRoute):
    """``GET /embviz/thumb/{key}/{sample id}``: the sample's WebP thumbnail, cached as immutable."""

    async def get(self, key: str, sample_id: str) -> None:
        entry, number = self._lookup(key, sample_id)
        if not await self._thumbnail(entry, number, self.cache_control):
            raise tornado.web.HTTPError(404)

    head = get


class ImageHandler(_ImageRoute):
    """``GET /embviz/image/{key}/{sample id}``: the original image re-encoded, else the thumbnail.

    The sample's ``uri`` is served only when it is a local file that, with symlinks resolved,
    lies inside the dataset's recorded image folder and decodes; it is always decoded and
    re-encoded as WebP (longest side at most 1024 px), never streamed. Otherwise the thumbnail
    is sent with ``X-Embviz-Fallback: thumbnail``; 404 when there is neither.
    """

    cache_control = "public, max-age=3600"

    async def get(self, key: str, sample_id: str) -> None:
        entry, number = self._lookup(key, sample_id)
        if not await self._read(entry.has_sample, number):
            raise tornado.web.HTTPError(404)
        found = await self._read(_full_image, entry, number)
        if found is not None:
            real, etag = found
            if self._cached(etag, self.cache_control):
                return
            try:
                data = await _off_loop(_encode_full, real)
            except (ImageError, OSError, ValueError) as exc:
                log.info("embviz routes: serving the thumbnail of sample %d: %s", number, exc)
                self.clear_header("Etag")
            else:
                self._send(data)
                return
        self.set_header("X-Embviz-Fallback", "thumbnail")
        if not await self._thumbnail(entry, number, self.cache_control):
            self.clear_header("X-Embviz-Fallback")
            raise tornado.web.HTTPError(404)

    head = get


ROUTES: list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]] = [
    (THUMB_PATTERN, ThumbHandler, {}),
    (IMAGE_PATTERN, ImageHandler, {}),
]


def extra_patterns() -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """A fresh copy of :data:`ROUTES` for ``pn.serve(..., extra_patterns=...)`` (Bokeh extends it)."""
    return [(pattern, handler, dict(kwargs)) for pattern, handler, kwargs in ROUTES]


# -- installing into a running server ----------------------------------------------------------
_install_lock = threading.Lock()
_done: weakref.WeakSet = weakref.WeakSet()  # ApplicationContexts whose server has the routes


def _has_routes(router: Any) -> bool:
    """Whether ``router`` (a tornado Application or rule router) already routes to ThumbHandler."""
    routers = [router.default_router] if hasattr(router, "default_router") else [router]
    while routers:
        for rule in getattr(routers.pop(), "rules", ()):
            if rule.target is ThumbHandler:
                return True
            if hasattr(rule.target, "rules"):
                routers.append(rule.target)
    return False


def _install_into(app: tornado.web.Application) -> bool:
    """Add :data:`ROUTES` to ``app`` ahead of its own rules unless it has them; return True."""
    with _install_lock:
        if not _has_routes(app):
            # add_handlers inserts a host rule just before the catch-all wildcard router that
            # holds the application's own patterns, so these win over any of Bokeh's.
            prefix = str(getattr(app, "prefix", "") or "")  # a server run with --prefix
            app.add_handlers(r".*", [(prefix + p, h, kw) for p, h, kw in extra_patterns()])
        return _has_routes(app)


def _current_doc():
    state = getattr(sys.modules.get("panel.io.state"), "state", None)
    doc = getattr(state, "curdoc", None)
    if doc is None:
        from bokeh.io import curdoc

        doc = curdoc()
    return doc


def _tornado_app(app_context: Any, session_context: Any) -> Any:
    """The BokehTornado application that serves ``app_context``, or None when it is not found."""
    from bokeh.server.tornado import BokehTornado

    def serves(obj: Any) -> bool:
        return isinstance(obj, BokehTornado) and any(
            ctx is app_context for ctx in obj.applications.values()
        )

    # 1. The HTTP request that created the session: tornado's RequestHandler.__init__ registers
    # its bound on_connection_close with request.connection until the response is finished.
    request = getattr(session_context, "request", None)
    callback = getattr(getattr(request, "connection", None), "_close_callback", None)
    app = getattr(getattr(callback, "__self__", None), "application", None)
    if serves(app):
        return app
    # 2. Who holds the ApplicationContext: BokehTornado.applications (a dict in its instance
    # attributes). Each get_referrers call scans the heap once; three scans at most.
    level = [r for r in gc.get_referrers(app_context) if isinstance(r, dict)]
    for _ in range(2):
        if not level:
            break
        holders = gc.get_referrers(*level)
        for obj in holders:
            if serves(obj):
                return obj
        level = [h for h in holders if isinstance(h, dict)]
    return None


def install(doc: Any = None) -> bool:
    """Add the image routes to the running Bokeh/Panel server of the current session.

    Call it from an app script served with ``panel serve app.py`` (no ``--plugins``). It is
    idempotent and thread-safe, adds the routes once per server, and does nothing when they are
    already there (``--plugins embviz.app.routes`` or ``pn.serve(extra_patterns=...)``).

    How it reaches tornado (Bokeh 3.9, tornado 6): ``doc.session_context.server_context
    .application_context`` (public Bokeh API) names the ``ApplicationContext`` of this app. The
    ``BokehTornado`` serving it is then found (a) through the request that created the session:
    ``session_context.request.connection`` is tornado's ``HTTP1Connection`` whose private
    ``_close_callback`` is the live ``RequestHandler.on_connection_close``, whose ``application``
    is the server; or, when that request has finished or was a websocket, (b) with a
    ``gc.get_referrers`` walk from the ``ApplicationContext`` to the object whose
    ``applications`` mapping holds it. Either candidate is accepted only if it is a
    ``BokehTornado`` whose public ``applications`` holds this very context. The routes go in
    with the public ``Application.add_handlers(".*", ...)``, which inserts them before the
    wildcard router holding Bokeh's and Panel's patterns, so they take precedence.

    Parameters
    ----------
    doc:
        The session's Bokeh document; default: the current one (``pn.state.curdoc`` or
        ``bokeh.io.curdoc()``).

    Returns
    -------
    True when the routes are served by this session's server; False outside a server session
    or when the server could not be found (then serve with ``--plugins embviz.app.routes``).
    """
    doc = doc if doc is not None else _current_doc()
    session_context = getattr(doc, "session_context", None)
    server_context = getattr(session_context, "server_context", None)
    app_context = getattr(server_context, "application_context", None)
    if app_context is None:
        return False
    with _install_lock:
        if app_context in _done:
            return True
    app = _tornado_app(app_context, session_context)
    if app is None:
        log.warning(
            "embviz routes: could not find the tornado application of this session; serve "
            "with 'panel serve ... --plugins embviz.app.routes' to install the image routes"
        )
        return False
    ok = _install_into(app)
    if ok:
        with _install_lock:
            _done.add(app_context)
    return ok
