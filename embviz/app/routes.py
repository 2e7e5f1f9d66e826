"""Tornado routes that serve a registered dataset's thumbnails and images by sample id, never by path.

Declared, never installed behind the server's back: ``panel serve ... --plugins
embviz.app.routes`` reads :data:`ROUTES`, ``embviz serve`` passes them, and a page served
without them says so (:func:`missing_message`).
"""

from __future__ import annotations

import logging
import threading
from http.client import responses
from typing import Any

import tornado.ioloop
import tornado.web
from bokeh.server.views.auth_request_handler import AuthRequestHandler

from embviz.errors import DatasetError
from embviz.images import ImageError

from . import image_source as source
from .image_source import IMAGE_PATTERN, THUMB_PATTERN, image_url, lookup, register, thumb_url

# ROUTES (module __getattr__, for Panel's --plugins) is left out: a star import must not read it.
__all__ = [
    "IMAGE_PATTERN",
    "MISSING_ROUTES",
    "THUMB_PATTERN",
    "ImageHandler",
    "ThumbHandler",
    "declared",
    "extra_patterns",
    "image_url",
    "lookup",
    "missing_message",
    "register",
    "thumb_url",
]

log = logging.getLogger(__name__)


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

    def _lookup(self, key: str, sample_id: str) -> tuple[source.Entry, int]:
        number = int(sample_id)
        try:
            entry = source.entry(key)
        except KeyError:
            raise tornado.web.HTTPError(404) from None
        if number > source.INT64_MAX:
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

    async def _thumbnail(self, entry: source.Entry, sample_id: int, cache_control: str) -> bool:
        """Answer with the sample's thumbnail; False when it has none."""
        thumb_id = await self._read(entry.thumb_id, sample_id)
        if thumb_id is None:
            return False
        if self._cached(f"t{entry.key}-{thumb_id}", cache_control):
            return True
        data = await self._read(source.thumb_bytes, entry, thumb_id)
        if data is None:
            self.clear_header("Etag")
            return False
        self._send(data)
        return True


class ThumbHandler(_ImageRoute):
    """``GET /embviz/thumb/{key}/{sample id}``: the sample's WebP thumbnail, cached as immutable."""

    async def get(self, key: str, sample_id: str) -> None:
        """Send the thumbnail of sample ``sample_id`` of dataset ``key`` (404 when none)."""
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
        """Send the full image of sample ``sample_id`` of dataset ``key`` (404 when none)."""
        entry, number = self._lookup(key, sample_id)
        if not await self._read(entry.has_sample, number):
            raise tornado.web.HTTPError(404)
        found = await self._read(source.full_image, entry, number)
        if found is not None:
            real, etag = found
            if self._cached(etag, self.cache_control):
                return
            try:
                data = await _off_loop(source.encode_full, real)
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


# -- declaring the routes to a server -------------------------------------------------------------
_PATTERNS = ((THUMB_PATTERN, ThumbHandler), (IMAGE_PATTERN, ImageHandler))
_declared = threading.Event()  # set once this process has handed the routes to a server
_warned = threading.Event()

#: What a page served without the routes says (and the log, once): images cannot load.
MISSING_ROUTES = (
    "This server was started without embviz's image routes, so thumbnails and images cannot "
    "load. Start it with 'embviz serve DATASET', or add '--plugins embviz.app.routes' to "
    "'panel serve'."
)


def extra_patterns() -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The image routes as fresh ``(pattern, handler, kwargs)`` rules for a server to add.

    ``pn.serve(..., extra_patterns=extra_patterns())`` serves them (Bokeh extends the list it is
    given, hence a new one each call); ``panel serve --plugins embviz.app.routes`` reads them as
    ``ROUTES``, which calls this. Either way :func:`declared` is True from then on.
    """
    _declared.set()
    return [(pattern, handler, {}) for pattern, handler in _PATTERNS]


def __getattr__(name: str) -> Any:
    # ROUTES is read by `panel serve --plugins embviz.app.routes` as the server starts. Computed on
    # access (not a plain list) so that reading it records that this server has the routes:
    # the page can then tell a server started without them, which tornado's routing cannot.
    if name == "ROUTES":
        from . import guard, throttle

        throttle.install()  # one session's flood of events waits in its own socket
        guard.install()  # what a page sends that is refused: one line, never a traceback
        if _processes() > 1:
            from . import balance

            balance.install()  # each process its own socket of the port: a crowd is shared
            _preload()  # the processes fork from this one: what it loads, they share
        else:  # (forked processes start the schedule in one of them, with its first page)
            _start_reports()
            _warm()  # beside the server's start: the first page finds the maps loaded
        return extra_patterns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _processes() -> int:
    """``--num-procs`` of the ``panel serve`` command line this process runs (1 if absent)."""
    import sys

    argv = sys.argv[: sys.argv.index("--args")] if "--args" in sys.argv else sys.argv
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--num-procs" and i + 1 < len(argv) else None
        if arg.startswith("--num-procs="):
            value = arg.split("=", 1)[1]
        if value is not None:
            return int(value) if value.isdigit() else 1
    return 1


def _datasets() -> list[str]:
    """The dataset folders among ``--args`` of this process's command line."""
    import sys

    args = sys.argv[sys.argv.index("--args") + 1 :] if "--args" in sys.argv else []
    datasets = []
    for arg in args:
        if arg.startswith("--"):
            break
        datasets.append(arg)
    return datasets


def _warm() -> None:
    """Load the maps and compile the kernels in the background as the server starts."""
    from .warm import warm_up

    for dataset in _datasets():
        try:
            warm_up(dataset)
        except Exception as exc:  # the dataset's page says what is wrong
            log.error("warming %s failed: %s", dataset, exc)


def _preload() -> None:
    """Load the datasets of ``--args`` and compile the kernels before the server forks its
    processes, so they share those pages (copy-on-write) instead of each building its own."""
    from .warm import preload

    datasets = _datasets()
    try:
        preload(datasets)
    except Exception as exc:  # an optimisation: each process loads what it needs itself
        log.error("preloading %s before forking failed: %s", datasets, exc)


def _start_reports() -> None:
    """Start the report schedule of ``--args ... --reports FILE`` as the server starts, so a
    server nobody visits still writes its reports (the page's own call finds it running).
    A bad settings file is logged here and raised by the page, naming the key."""
    import sys

    from .schedule import reports_from_argv, schedule_from_settings

    path = reports_from_argv(sys.argv)
    if path is None:
        return
    try:
        job = schedule_from_settings(path)
    except Exception as exc:  # the page reports it too; the server must still start
        log.error("report schedule %s not started: %s", path, exc)
        return
    log.info("report schedule %s started with the server: reports go to %s", path, job.out_dir)


def declared() -> bool:
    """Whether this process handed the image routes to its server (``--plugins
    embviz.app.routes``, ``embviz serve`` or :func:`extra_patterns`)."""
    return _declared.is_set()


def missing_message() -> str | None:
    """None when the routes were declared (:func:`declared`); else :data:`MISSING_ROUTES`,
    the plain-text warning for the page, also logged the first time it is asked for."""
    if declared():
        return None
    if not _warned.is_set():
        _warned.set()  # a race may log it twice: harmless, and no lock on every page build
        log.warning("embviz routes: %s", MISSING_ROUTES)
    return MISSING_ROUTES
