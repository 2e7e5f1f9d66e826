"""The dataset manifest: format version, tables with their partitions, and the steps that ran."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import DatasetError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "NAMED_KINDS",
    "new_manifest",
    "read_manifest",
    "table_kind",
    "utc_now",
    "validate_manifest",
]

FORMAT_NAME = "embviz-dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

#: Table keys: ``samples``, ``thumbnails``, ``scores`` (per-sample scores keyed by ``id``),
#: ``predictions`` (a classifier's, keyed by ``id``), ``embeddings/<slug>``, ``projections/<slug>``,
#: ``clusters/<projection>`` (a 2D projection's cluster codes per level, ``embviz cluster``).
TABLE_KINDS = (
    "samples",
    "thumbnails",
    "scores",
    "predictions",
    "embeddings",
    "projections",
    "clusters",
)
#: The kinds whose keys name a table of that kind: ``<kind>/<name>``.
NAMED_KINDS = ("embeddings", "projections", "clusters")
_KEY_RE = re.compile(
    r"^(samples|thumbnails|scores|predictions|(embeddings|projections|clusters)/[A-Za-z0-9][A-Za-z0-9_.\-]*)$"
)
_TOP_KEYS = {"format", "format_version", "name", "created", "tables", "steps"}
_TABLE_KEYS = {"dir", "rows", "columns", "partitions", "meta", "written"}
_PART_KEYS = {"file", "rows", "id_range", "bounds"}
_STEP_KEYS = {"step", "params", "started", "finished", "seconds", "result"}


def utc_now() -> str:
    """Current time as an ISO-8601 UTC string with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def table_kind(key: str) -> str:
    """The kind of a table key (``embeddings/foo`` -> ``embeddings``)."""
    return key.split("/", 1)[0]


def new_manifest(name: str) -> dict[str, Any]:
    """An empty manifest for a dataset called ``name``."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": utc_now(),
        "tables": {},
        "steps": [],
    }


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read and validate ``root/manifest.json``; raise :class:`DatasetError` naming the problem."""
    path = Path(root) / MANIFEST_NAME
    if not Path(root).is_dir():
        raise DatasetError(f"{root}: not a directory; expected an embviz dataset directory")
    if not path.is_file():
        raise DatasetError(
            f"{path}: missing; this is not an embviz dataset (run 'embviz ingest' to create one)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    validate_manifest(manifest, where=str(path))
    return manifest


def _fail(where: str, msg: str) -> None:
    raise DatasetError(f"{where}: {msg}")


def validate_manifest(m: Any, *, where: str = MANIFEST_NAME) -> None:
    """Check the manifest's structure; the message names the first bad key."""
    if not isinstance(m, dict):
        _fail(where, "top level must be a JSON object")
    if m.get("format") != FORMAT_NAME:
        _fail(where, f"key 'format' must be {FORMAT_NAME!r}, found {m.get('format')!r}")
    version = m.get("format_version")
    if version != FORMAT_VERSION:
        _fail(
            where,
            f"key 'format_version' is {version!r}; this embviz reads version {FORMAT_VERSION}",
        )
    unknown = set(m) - _TOP_KEYS
    if unknown:
        _fail(where, f"unknown key {sorted(unknown)[0]!r}; valid keys: {sorted(_TOP_KEYS)}")
    for key in ("name", "created"):
        if not isinstance(m.get(key), str):
            _fail(where, f"key {key!r} must be a string")
    tables = m.get("tables")
    if not isinstance(tables, dict):
        _fail(where, "key 'tables' must be an object")
    for tkey, entry in tables.items():
        _validate_table(tkey, entry, where)
    steps = m.get("steps")
    if not isinstance(steps, list):
        _fail(where, "key 'steps' must be a list")
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("step"), str):
            _fail(where, f"steps[{i}] must be an object with a string 'step'")
        unknown = set(step) - _STEP_KEYS
        if unknown:
            _fail(where, f"steps[{i}] has unknown key {sorted(unknown)[0]!r}")


def _validate_table(tkey: str, entry: Any, where: str) -> None:
    at = f"tables[{tkey!r}]"
    if not _KEY_RE.match(tkey):
        _fail(
            where,
            f"{at}: bad table key; expected samples, thumbnails, scores, predictions, "
            "embeddings/<name>, projections/<name> or clusters/<projection>",
        )
    if not isinstance(entry, dict):
        _fail(where, f"{at} must be an object")
    unknown = set(entry) - _TABLE_KEYS
    if unknown:
        _fail(
            where, f"{at} has unknown key {sorted(unknown)[0]!r}; valid keys: {sorted(_TABLE_KEYS)}"
        )
    for key, typ in (
        ("dir", str),
        ("rows", int),
        ("columns", dict),
        ("partitions", list),
        ("meta", dict),
    ):
        if not isinstance(entry.get(key), typ):
            _fail(where, f"{at}: key {key!r} must be a {typ.__name__}")
    d = entry["dir"]
    if d.startswith("/") or ".." in Path(d).parts:
        _fail(where, f"{at}: key 'dir' must be a relative path inside the dataset, found {d!r}")
    total = 0
    for i, part in enumerate(entry["partitions"]):
        if (
            not isinstance(part, dict)
            or not isinstance(part.get("file"), str)
            or not isinstance(part.get("rows"), int)
        ):
            _fail(where, f"{at}.partitions[{i}] must have a string 'file' and an integer 'rows'")
        unknown = set(part) - _PART_KEYS
        if unknown:
            _fail(where, f"{at}.partitions[{i}] has unknown key {sorted(unknown)[0]!r}")
        if "/" in part["file"] or part["file"].startswith("."):
            _fail(where, f"{at}.partitions[{i}]: bad file name {part['file']!r}")
        total += part["rows"]
    if total != entry["rows"]:
        _fail(where, f"{at}: 'rows' is {entry['rows']} but its partitions add up to {total}")
