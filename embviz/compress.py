"""Compressing what the explorer's server sends: gzip with each static file compressed once.

Used by ``embviz serve`` (Panel's server settings); ``panel serve`` has no option for it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import tornado.web

__all__ = ["CachedGzip", "server_settings"]


class CachedGzip(tornado.web.GZipContentEncoding):
    """Tornado's gzip of responses (its ``compress_response``), each static file compressed
    once per process.

    A first page load fetches about 6 MB of Bokeh and Panel JavaScript; gzip makes that 1.6 MB
    on the wire, but costs about 0.3 s of CPU a page on the server's event loop, so 25 people
    opening the page at once would queue for seconds behind it. So the compressed bytes of a
    static file (a ``GET`` under ``/static/`` answered with an ``Etag``) are kept, keyed by its
    URL, ``Etag``, ``Last-Modified`` and length (Tornado caches a file's ``Etag`` for good, its
    time and size are read at each request), at most :attr:`MAX_BYTES` in all, and sent again
    as they are; every other response (the page, errors) is compressed as it goes out.
    """

    #: Most compressed bytes kept in all (the shipped static files take about 3 MB).
    MAX_BYTES = 64 * 1024 * 1024
    _kept: ClassVar[dict[tuple, bytes]] = {}
    _kept_bytes: ClassVar[int] = 0

    def __init__(self, request) -> None:
        super().__init__(request)
        static = request.method == "GET" and "/static/" in request.path
        self._uri = request.uri if static else None
        self._key: tuple | None = None
        self._parts: list[bytes] | None = None
        self._sent = False

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        """Send the kept bytes of a static file, or compress the response (keeping a static
        file's bytes once it is whole)."""
        if status_code == 206:
            self._gzipping = False  # a byte range of the file as it is, never of its gzip
        etag = headers.get("Etag")
        if status_code == 200 and self._uri and etag and self._gzipping:
            self._key = (
                self._uri,
                etag,
                headers.get("Last-Modified"),
                headers.get("Content-Length"),
            )
            kept = self._kept.get(self._key)
            if kept is not None and "Content-Encoding" not in headers:
                headers.add("Vary", "Accept-Encoding")
                headers["Content-Encoding"] = "gzip"
                headers["Content-Length"] = str(len(kept))
                self._gzipping, self._sent = False, True
                return status_code, headers, kept
            self._parts = []
        return super().transform_first_chunk(status_code, headers, chunk, finishing)

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        """The next piece of the body: nothing once the kept bytes went out, else compressed."""
        if self._sent:
            return b""  # the kept body went out whole with the first chunk
        out = super().transform_chunk(chunk, finishing)
        if self._parts is not None and self._gzipping:
            self._parts.append(out)
            if finishing:
                self._keep(b"".join(self._parts))
        return out

    def _keep(self, body: bytes) -> None:
        cls = type(self)
        if self._key not in cls._kept and cls._kept_bytes + len(body) <= cls.MAX_BYTES:
            cls._kept[self._key] = body
            cls._kept_bytes += len(body)


def server_settings() -> dict[str, Any]:
    """Tornado application settings for a Panel server of the explorer: responses gzipped
    (:class:`CachedGzip`). ``embviz serve`` passes them to Panel's server; ``panel serve``
    has no option for them (put the server behind a proxy that compresses)."""
    return {"transforms": [CachedGzip]}
