"""Which maps a dataset has: its projections by dimension, grouped by embedding, best first."""

from __future__ import annotations

__all__ = ["RANK", "projection_choices", "projection_dims", "unplaced_ids"]

#: Neighbour-preserving maps first: they are what people open the explorer to see.
RANK = {"umap": 0, "pacmap": 1, "tsne": 2, "pca": 3}


def projection_dims(ds, projection: str) -> int:
    """2 or 3: the recorded ``dims`` of ``projection``, else 3 when it has a ``z`` column."""
    entry = ds.table(f"projections/{projection}")
    return int(entry["meta"].get("dims") or (3 if "z" in entry["columns"] else 2))


def projection_choices(ds, dims: int = 2) -> dict[str, dict[str, str]]:
    """Projections with ``dims`` dimensions grouped by source embedding:
    ``{embedding: {label: projection}}``, neighbour-preserving methods (UMAP, PaCMAP, t-SNE)
    before PCA and anything else, maps of a series after the others, then by name."""
    groups: dict[str, dict[str, str]] = {}
    flat = [p for p in ds.projections if projection_dims(ds, p) == dims]
    # Maps in a series (one per checkpoint or layer) after the others: a dataset opens on its
    # main map, not on an untrained checkpoint's.
    flat.sort(
        key=lambda p: (
            RANK.get(ds.meta(f"projections/{p}").get("method"), 4),
            "series" in ds.meta(f"projections/{p}"),
            p,
        )
    )
    for p in flat:
        meta = ds.meta(f"projections/{p}")
        source = str(meta.get("source") or "").removeprefix("embeddings/") or "(given)"
        label = p.removeprefix(source + ".") if p.startswith(source + ".") else p
        groups.setdefault(source, {})[label] = p
    return groups


def unplaced_ids(ds, projection: str):
    """Ids of the samples that are not on ``projection``'s map (their coordinates were not
    finite, or they have no vector in its embedding), as a sorted int64 array."""
    import numpy as np

    samples = ds.read_arrow("samples", columns=["id"]).column("id").to_numpy()
    placed = ds.read_arrow(f"projections/{projection}", columns=["id"]).column("id").to_numpy()
    return np.setdiff1d(samples, placed).astype(np.int64)
