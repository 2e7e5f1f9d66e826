"""The index of a folder of reports: ``index.html`` listing every embviz report, newest first."""

from __future__ import annotations

import html
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from embviz.dataset import slugify
from embviz.storage import atomic_write_bytes

from .html import join, page, tag

__all__ = ["INDEX_NAME", "is_embviz_index", "publish", "report_path", "update_index"]

INDEX_NAME = "index.html"
_META_RE = re.compile(r'<meta name="([a-z-]+)" content="([^"]*)">')
_HEAD_BYTES = 4096  # the meta tags sit at the top of the head


def publish(path: str | Path, data: bytes) -> None:
    """Write ``data`` atomically and make it world-readable: reports are meant to be shared
    (the temp file behind an atomic write is created owner-only)."""
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)


def _meta(path: Path) -> dict[str, str]:
    """The ``<meta name content>`` pairs at the top of an HTML file ({} when unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES).decode("utf-8", "replace")
    except OSError:
        return {}
    return {k: html.unescape(v) for k, v in _META_RE.findall(head)}


def is_embviz_index(path: str | Path) -> bool:
    """Whether ``path`` is an index written by :func:`update_index` (so it may be rewritten)."""
    return _meta(Path(path)).get("generator") == "embviz-report-index"


def report_path(out_dir: str | Path, dataset_name: str, when: datetime | None = None) -> Path:
    """``out_dir/<dataset-name>-<UTC timestamp>.html``, made unique with a ``-2``... suffix."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    stem = f"{slugify(dataset_name)}-{when:%Y%m%dT%H%M%SZ}"
    path = Path(out_dir) / f"{stem}.html"
    i = 2
    while path.exists():
        path = Path(out_dir) / f"{stem}-{i}.html"
        i += 1
    return path


def update_index(out_dir: str | Path, *, title: str = "embviz reports") -> Path:
    """Rewrite ``out_dir/index.html``: every embviz report in ``out_dir``, newest first.

    Reports are recognised by their ``generator`` meta tag; links are relative, names escaped.
    Written atomically, so a browser never sees half an index. Returns the index path.
    """
    out_dir = Path(out_dir)
    found = []
    for path in out_dir.glob("*.html"):
        if path.name == INDEX_NAME:
            continue
        meta = _meta(path)
        if meta.get("generator") != "embviz-report":
            continue
        stat = path.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds")
        found.append((meta.get("embviz-created") or modified, path.name, meta, stat.st_size))
    found.sort(reverse=True)
    rows = [
        tag(
            "tr",
            tag("td", tag("a", name, href=quote(name))),
            tag("td", meta.get("embviz-dataset", "")),
            tag("td", created),
            tag("td", f"{size / 1e6:.2f} MB"),
        )
        for created, name, meta, size in found
    ]
    head = tag(
        "thead",
        tag("tr", join(tag("th", h) for h in ("report", "dataset", "created (UTC)", "size"))),
    )
    body = tag(
        "main",
        tag("h1", title),
        tag("p", f"{len(rows)} reports, newest first.", class_="meta"),
        tag("table", head, tag("tbody", join(rows)), id="reports"),
    )
    text = page(title=title, meta={"generator": "embviz-report-index"}, body=body)
    index = out_dir / INDEX_NAME
    publish(index, text.encode("utf-8"))
    return index
