"""The explorer cache: a store's joined, curve-ordered columns as .npy files, memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["CACHE_LAYOUT", "cache_dir", "read_columns", "write_columns"]

#: Bumped when the cached columns' layout changes (2: int8 category codes), so old caches
#: are rebuilt instead of read.
CACHE_LAYOUT = 2


def cache_dir(ds, projection: str, dims: int = 2) -> Path:
    """``<dataset>/cache/explorer/<projection>--<tag>``: the tag changes with the projection
    and samples table versions, the layout and, in 3D, the ranking, so a stale cache is never
    read (a new one is written beside it)."""
    import hashlib

    from embviz.samples import samples_version

    table = ds.table(f"projections/{projection}")["dir"]
    versions = f"{table}|{samples_version(ds)}|{CACHE_LAYOUT}"
    if dims == 3:
        from .sample3d import GRID, RANK_VERSION

        versions += f"|3d|r{RANK_VERSION}g{GRID}"
    tag = hashlib.sha1(versions.encode()).hexdigest()[:12]
    return ds.root / "cache" / "explorer" / f"{projection}--{tag}"


def write_columns(target: Path, store) -> None:
    """Persist a store's columns (x, y[, z], ids, bounds[, rank], categories, numbers) as .npy
    files in ``target`` so the next start memory-maps them instead of joining tables.

    Derived data only: safe to delete; written to a temp dir then renamed, and skipped with a
    log line (never an error) when the dataset is read-only.
    """
    import json
    import logging
    import shutil
    import tempfile

    if target.exists():
        return
    extra = {k: v for k, v in (("z", store.z), ("rank", store.rank)) if v is not None}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        arrays = {"x": store.x, "y": store.y, "ids": store.ids, "bounds": store.bounds}
        arrays |= extra
        arrays |= {f"cat.{k}": v[0] for k, v in store.categorical.items()}
        arrays |= {f"num.{k}": v for k, v in store.numeric.items()}
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
        meta = {
            "chunk_rows": store.chunk_rows,
            "categories": {k: v[1] for k, v in store.categorical.items()},
            "numeric": list(store.numeric),
            "extra": list(extra),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            tmp.rename(target)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        logging.getLogger(__name__).info("explorer cache not written (%s): %s", target, exc)


def read_columns(where: Path, dims: int = 2) -> dict | None:
    """The :class:`~embviz.render.store.PointStore` fields written by :func:`write_columns`
    (arrays memory-mapped), or None when ``where`` holds no complete ``dims``-D cache."""
    import json

    if not (where / "meta.json").exists():
        return None
    try:
        meta = json.loads((where / "meta.json").read_text())
        if dims == 3 and not {"z", "rank"} <= set(meta.get("extra", [])):
            return None
        load = lambda name: np.load(where / f"{name}.npy", mmap_mode="r")  # noqa: E731
        return {
            "key": str(where),
            "x": load("x"),
            "y": load("y"),
            "ids": load("ids"),
            "chunk_rows": int(meta["chunk_rows"]),
            "bounds": np.load(where / "bounds.npy"),
            "categorical": {k: (load(f"cat.{k}"), n) for k, n in meta["categories"].items()},
            "numeric": {k: load(f"num.{k}") for k in meta["numeric"]},
            **{k: load(k) for k in meta.get("extra", [])},
        }
    except (OSError, ValueError, KeyError):
        return None
