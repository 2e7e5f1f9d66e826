"""The report's "Clusters" section: the map's coarsest named clusters with their typical images.

It reads what ``embviz cluster`` stored (:func:`embviz.clusters.read_clusters`) and never
clusters anything itself; a dataset without clusters gets a note saying how to add them.
"""

from __future__ import annotations

import numpy as np

from embviz.errors import DatasetError

from .html import Markup, data_uri, join, tag, void

__all__ = ["MAX_CLUSTERS", "section"]

#: Most clusters shown (the coarsest level has 8 by default).
MAX_CLUSTERS = 32
_NAMED_BY = {
    "label": "majority label and its purity",
    "prompts": "the best matching text prompt",
    "number": "number (the samples have no labels)",
}


def _thumbs(ds, sample_ids: list[int]) -> dict[int, bytes]:
    """``{sample id: thumbnail bytes}`` of the samples that have a thumbnail."""
    from embviz.images import read_thumbnails

    if not ds.has("samples") or "thumb_id" not in ds.table("samples")["columns"]:
        return {}
    rows = ds.read_ids("samples", sample_ids, ["thumb_id"])
    sids = rows.column("id").to_pylist()
    tids = rows.column("thumb_id").to_pylist()
    images = read_thumbnails(ds, tids)
    return {s: images[t] for s, t in zip(sids, tids, strict=True) if t in images}


def section(ds, projection: str | None, notes: list[str]) -> Markup | None:
    """The clusters of ``projection``'s coarsest level as a gallery and a table, largest
    first: name, size (and share), majority label with purity, typical image.

    Returns None (and adds a line to ``notes``) when the projection has no usable clusters.
    """
    from embviz.clusters import clusters_key, read_clusters

    if projection is None:
        return None
    if not ds.has(clusters_key(projection)):
        notes.append(
            f"No clusters on the map: run 'embviz cluster {ds.root} --projection {projection}' "
            "to name them."
        )
        return None
    try:
        frame = read_clusters(ds, projection)
    except DatasetError as exc:
        notes.append(f"Clusters left out: {exc}")
        return None
    levels = sorted(set(frame["level"].tolist()))
    coarse = frame[frame["level"] == levels[0]].sort_values("size", ascending=False)
    coarse = coarse.head(MAX_CLUSTERS)
    total = int(frame.loc[frame["level"] == levels[0], "size"].sum())
    thumbs = _thumbs(ds, [int(i) for i in coarse["typical_id"]])
    meta = ds.meta(clusters_key(projection))
    counts = [int((frame["level"] == lv).sum()) for lv in levels]
    intro = (
        f"Projection {projection}: {len(levels)} levels of "
        f"{', '.join(str(c) for c in counts)} clusters; the coarsest shown, each with its "
        f"most typical image (nearest its mean in the {meta.get('typical_space', 'map')} "
        f"space). Named by {_NAMED_BY.get(meta.get('named_by'), 'number')}."
    )
    figures, rows = [], []
    for r in coarse.itertuples(index=False):
        purity = "" if not np.isfinite(r.purity) else f"{r.purity:.0%}"
        share = r.size / max(total, 1)
        image = thumbs.get(int(r.typical_id))
        pic = (
            void("img", src=data_uri(image), alt=f"sample {r.typical_id}")
            if image
            else tag("div", "no thumbnail", class_="none")
        )
        caption = tag("figcaption", str(r.name), void("br"), f"{r.size:,} points ({share:.0%})")
        figures.append(
            tag("figure", pic, caption, data_cluster=int(r.cluster), data_id=int(r.typical_id))
        )
        cells = [r.cluster, r.name, f"{r.size:,}", f"{share:.1%}", r.label or "", purity]
        cells += [f"{r.typical_id}"]
        rows.append(tag("tr", join(tag("td", c) for c in cells), data_cluster=int(r.cluster)))
    head = ["#", "name", "points", "share", "majority label", "purity", "typical sample"]
    table = tag(
        "table",
        tag("thead", tag("tr", join(tag("th", h) for h in head))),
        tag("tbody", join(rows)),
    )
    return join(
        [
            tag("p", intro, class_="meta"),
            tag("div", join(figures), class_="gallery clusters"),
            table,
        ]
    )
