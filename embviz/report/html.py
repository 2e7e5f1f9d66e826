"""HTML for reports: trusted markup is built by :func:`tag`, every other string is escaped.

Data (labels, split names, column and file names, manifest values) only ever enters the page
as a child or attribute value of :func:`tag`, which escapes it; only :class:`Markup` returned
by these helpers passes through as is. The pages load nothing: styles are inline, images are
``data:`` URIs, and a Content-Security-Policy forbids scripts and every network fetch.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable

__all__ = ["CSP", "Markup", "data_uri", "esc", "image_mime", "join", "page", "tag", "void"]

#: No scripts, no fetches: only inline styles and ``data:`` images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;
background:#fff;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.6em;margin:.4em 0}h2{margin-top:1.8em;border-bottom:1px solid #d0d7de;
padding-bottom:.2em}h3{margin:1.2em 0 .4em}
nav a{margin-right:1em}.meta,.note{color:#59636e}.note{font-style:italic}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f6f8fa}
tfoot td{font-weight:600;background:#f6f8fa}
.maps{display:flex;flex-wrap:wrap;gap:16px}.map img{max-width:100%;height:auto;
border:1px solid #d0d7de;background:#fff}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:.4em 0;padding:0;list-style:none}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.gallery figure{margin:0;width:112px;
font-size:.78em;overflow-wrap:anywhere}.gallery img,.gallery .none{width:96px;height:96px;
object-fit:contain;background:#f6f8fa;border:1px solid #d0d7de;display:block}
.gallery figure.explained{width:auto}.pics{display:flex;gap:6px}.sal{width:98px}
.stack{position:relative;width:98px;height:98px}.stack img{position:absolute;top:0;left:0}
.group{border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;margin:8px 0}
pre{background:#f6f8fa;padding:12px;overflow:auto;font-size:.85em;max-height:40em}
"""


class Markup(str):
    """A string of trusted HTML: :func:`esc` leaves it alone, every other string is escaped."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as HTML text: escaped (quotes too) unless it already is :class:`Markup`."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def _attrs(attrs: dict[str, object]) -> str:
    # Names come from code (class_ -> class, data_id -> data-id); values are escaped.
    out = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(out)


def tag(element: str, /, *children: object, **attrs: object) -> Markup:
    """``<element attrs>children</element>``; children and attribute values are escaped."""
    inner = "".join(esc(c) for c in children)
    return Markup(f"<{element}{_attrs(attrs)}>{inner}</{element}>")


def void(element: str, /, **attrs: object) -> Markup:
    """A void element (``img``, ``meta``) with escaped attribute values."""
    return Markup(f"<{element}{_attrs(attrs)}>")


def join(parts: Iterable[object], sep: str = "") -> Markup:
    """Escaped ``parts`` joined by the trusted separator ``sep``."""
    return Markup(sep.join(esc(p) for p in parts))


def image_mime(data: bytes) -> str:
    """The MIME type of PNG, WebP, JPEG or GIF bytes (from the magic number)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def data_uri(data: bytes) -> str:
    """A ``data:`` URI holding ``data`` (base64), typed from its magic number."""
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def page(*, title: str, meta: dict[str, str], body: Markup) -> str:
    """A whole self-contained HTML document: CSP, inline CSS, ``meta`` tags, ``body``."""
    head = join(
        [
            void("meta", charset="utf-8"),
            void("meta", http_equiv="Content-Security-Policy", content=CSP),
            void("meta", name="viewport", content="width=device-width, initial-scale=1"),
            join(void("meta", name=k, content=v) for k, v in meta.items()),
            tag("title", title),
            tag("style", Markup(_CSS)),
        ]
    )
    return f'<!DOCTYPE html>\n<html lang="en">\n<head>{head}</head>\n<body>{body}</body>\n</html>\n'
