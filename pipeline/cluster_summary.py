"""Per-cluster records of the ``cluster`` step: size, majority label, centre, typical sample, name.

See :mod:`embviz.pipeline.cluster` for the method; :func:`summaries` is its last stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embviz.clusters import majority_name
from embviz.dataset import Dataset, table_to_vectors
from embviz.errors import ConfigError

__all__ = [
    "SAMPLE_PER_CLUSTER",
    "label_codes",
    "read_prompts",
    "summaries",
    "text_vectors",
    "vectors",
]

#: Points sampled per cluster for its medoid, typical sample and mean vector.
SAMPLE_PER_CLUSTER = 256


def read_prompts(prompts: str | Path | Sequence[str]) -> list[str]:
    """The text prompts: a list of texts as given, or a file's lines (a ``str`` or ``Path``
    is a file: UTF-8, one prompt a line, blank lines and ``#`` comments skipped).

    Raises :class:`~embviz.errors.ConfigError` naming the file when it cannot be read or
    holds no prompt.
    """
    if isinstance(prompts, str | Path):
        path = Path(prompts)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the prompts file ({exc})") from exc
        texts = [t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")]
        where = str(path)
    else:
        texts = [str(t).strip() for t in prompts if str(t).strip()]
        where = "prompts"
    if not texts:
        raise ConfigError(f"{where}: no prompts; give one text per line (e.g. 'a photo of a dog')")
    return list(dict.fromkeys(texts))


def _samples(codes: np.ndarray, k: int, rows: np.ndarray, weight: np.ndarray, rng) -> list:
    """Up to :data:`SAMPLE_PER_CLUSTER` of ``rows`` (whose clusters are ``codes``) per cluster,
    drawn in proportion to ``weight`` (the inverse of each row's chance of being a candidate)."""
    key = np.log(rng.random(len(rows))) / weight  # Efraimidis-Spirakis: top keys win
    order = np.lexsort((-key, codes))
    starts = np.searchsorted(codes[order], np.arange(k + 1))
    return [
        rows[order[starts[g] : min(starts[g + 1], starts[g] + SAMPLE_PER_CLUSTER)]]
        for g in range(k)
    ]


def _medoid(xy: np.ndarray) -> int:
    """Index of the point with the least summed distance to the others."""
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=-1))
    return int(np.argmin(d.sum(axis=1)))


def label_codes(ds: Dataset, ids: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """The samples' ``label`` as codes aligned with ``ids`` (-1: none), and the label names."""
    from embviz.samples import read_sample_columns

    if not ds.has("samples") or "label" not in ds.table("samples")["columns"]:
        return None, []
    table = read_sample_columns(ds, ["label"])
    col = table.column("label")
    names = [str(v) for v in col.chunk(0).dictionary.to_pylist()] if col.num_chunks else []
    codes = np.concatenate(
        [c.indices.fill_null(-1).to_numpy() for c in col.chunks] or [np.empty(0, np.int32)]
    )
    sid = table.column("id").to_numpy()
    if len(sid) and sid[0] == 0 and sid[-1] == len(sid) - 1 and (np.diff(sid) == 1).all():
        # Dense ids 0..n-1 (what ingest writes): a sample's row is its id, one gather.
        inside = (ids >= 0) & (ids < len(sid))
        return np.where(inside, codes[np.where(inside, ids, 0)], -1), names
    top = int(max(sid.max(initial=-1), ids.max(initial=-1))) + 1
    where = np.full(top, -1, dtype=np.int64)
    where[sid] = np.arange(len(sid))
    rows = where[ids]
    return np.where(rows >= 0, codes[np.maximum(rows, 0)], -1), names


def vectors(ds: Dataset, key: str, ids: np.ndarray) -> dict[int, np.ndarray]:
    """Unit vectors of ``ids`` from embedding table ``key`` (ids it lacks are left out)."""
    found_ids, vecs = table_to_vectors(ds.read_ids(key, np.unique(ids), ["vector"]))
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return dict(zip(found_ids.tolist(), vecs, strict=True))


def text_vectors(ds: Dataset, embedding: str, texts: list[str], projection: str) -> np.ndarray:
    """Unit text vectors of ``texts`` in the space of ``embedding`` (a CLIP-like model's
    ``pooled`` layer); a :class:`~embviz.errors.ModelError` says which model cannot."""
    from embviz.errors import ModelError
    from embviz.search import searcher

    s = searcher(ds, embedding)
    if not s.supports_text:
        raise ModelError(
            f"{ds.root}: naming clusters by prompts needs a CLIP-like model's pooled embedding "
            f"(e.g. hf:openai/clip-vit-base-patch32, layer 'pooled'); projection {projection!r} "
            f"comes from {embedding.removeprefix('embeddings/')!r} (model {s.model!r}, layer "
            f"{s.layer!r}), which cannot embed text. Drop --prompts to name clusters by their "
            "majority label."
        )
    t = np.stack([s.embed_text(text) for text in texts]).astype(np.float64)
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def summaries(
    xy: np.ndarray,
    ids: np.ndarray,
    fine: np.ndarray,
    maps: list[np.ndarray],
    labels: tuple[np.ndarray | None, list[str]],
    *,
    read_vectors: Any,
    texts: np.ndarray | None,
    prompts: list[str] | None,
    rng: np.random.Generator,
) -> dict[str, list]:
    """The per-cluster records of every level (see :func:`embviz.clusters.read_clusters`).

    ``fine`` is each point's cluster at the finest level, ``maps[level]`` the cluster at that
    level of each fine cluster (levels nest, coarse first), ``labels`` what
    :func:`label_codes` returns, ``read_vectors`` maps sample ids to unit vectors (None: no
    embedding), ``texts`` the prompts' unit text vectors. Only the finest level passes over
    the points; coarser sizes, label counts and parents add up fine clusters.
    """
    n, m = len(xy), len(maps[-1])
    fine_size = np.bincount(fine, minlength=m)
    # Candidates: every point of a small fine cluster, ~4 x SAMPLE_PER_CLUSTER of a big one.
    chance = np.minimum(1.0, 4 * SAMPLE_PER_CLUSTER / np.maximum(fine_size, 1))
    rows = np.flatnonzero(rng.random(n) < chance[fine])
    weight = 1.0 / chance[fine[rows]]
    codes_of, names = labels
    fine_counts = None
    if codes_of is not None and names:
        ok = codes_of >= 0
        flat = fine[ok] * len(names) + codes_of[ok]
        fine_counts = np.bincount(flat, minlength=m * len(names)).reshape(m, len(names))
    picks = [_samples(mp[fine[rows]], int(mp.max()) + 1, rows, weight, rng) for mp in maps]
    sampled = np.unique(np.concatenate([r for p in picks for r in p]))
    vec = read_vectors(ids[sampled]) if read_vectors is not None else {}
    out: dict[str, list] = {c: [] for c in ("level", "cluster", "name", "size", "label")}
    out |= {c: [] for c in ("purity", "x", "y", "typical_id", "parent")}
    for level, (mp, pick) in enumerate(zip(maps, picks, strict=True)):
        k = len(pick)
        size = np.bincount(mp, weights=fine_size, minlength=k).astype(np.int64)
        counts = None
        if fine_counts is not None:
            counts = np.zeros((k, len(names)), dtype=np.int64)
            np.add.at(counts, mp, fine_counts)
        parent = np.full(k, -1, dtype=np.int64)
        if level:  # levels nest: every fine cluster of c has c's parent
            parent[mp] = maps[level - 1]
        for c in range(k):
            members = pick[c]
            centre = members[_medoid(xy[members])]
            typical = int(ids[centre])
            name = None
            have = [r for r in members.tolist() if int(ids[r]) in vec]
            if have:
                v = np.stack([vec[int(ids[r])] for r in have])
                mean = v.mean(axis=0)
                mean /= max(float(np.linalg.norm(mean)), 1e-12)
                typical = int(ids[have[int(np.argmax(v @ mean))]])
                if texts is not None:
                    name = prompts[int(np.argmax(texts @ mean))]
            label, purity = None, None
            if counts is not None and counts[c].sum():
                top = int(np.argmax(counts[c]))
                label, purity = names[top], float(counts[c, top] / counts[c].sum())
            name = name or majority_name(label, purity) or f"cluster {c}"
            for col, value in (
                ("level", level),
                ("cluster", c),
                ("name", name),
                ("size", int(size[c])),
                ("label", label),
                ("purity", purity),
                ("x", float(xy[centre, 0])),
                ("y", float(xy[centre, 1])),
                ("typical_id", typical),
                ("parent", int(parent[c])),
            ):
                out[col].append(value)
    return out
