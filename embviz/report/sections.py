"""The sections of a report as HTML: maps with legends, count tables, galleries, split drift."""

from __future__ import annotations

import numpy as np

from embviz.images import read_thumbnails

from .data import (
    Categories,
    Samples,
    crosstab,
    duplicate_groups,
    reference_split,
    top_rows,
)
from .html import Markup, data_uri, join, tag, void

__all__ = ["counts_table", "drift", "galleries", "legend", "map_figure", "overview", "share_table"]

GALLERY_SIZE = 24  #: images per outlier / label-issue gallery
DUPLICATE_GROUPS = 8  #: largest duplicate groups shown
PER_GROUP = 6  #: images shown per duplicate group
MAX_LEGEND = 60  #: legend entries before the rest are summarised
MAX_ROWS = 500  #: rows of the class x split table before the rest are summarised
MAX_SPLITS = 12  #: splits drawn as density maps and compared
SHIFT_ROWS = 30  #: classes listed in each split-share table


def legend(names: list[str], counts: dict[str, int]) -> Markup:
    """Legend entries in the store's category order, colours from ``category_colors``."""
    from embviz.render.raster import category_colors

    colors = category_colors(len(names))
    shown = range(len(names))
    if len(names) > MAX_LEGEND:
        biggest = np.argsort([-counts.get(n, 0) for n in names], kind="stable")[:MAX_LEGEND]
        shown = sorted(int(i) for i in biggest)
    items = [
        tag(
            "li",
            tag("span", "", class_="swatch", style=f"background:{colors[i]}"),
            f"{names[i]} ({counts.get(names[i], 0):,})",
            data_category=names[i],
        )
        for i in shown
    ]
    rest = len(names) - len(items)
    more = ""
    if rest:
        hidden = sum(counts.get(names[i], 0) for i in set(range(len(names))) - set(shown))
        more = tag("p", f"… and {rest:,} more categories ({hidden:,} points)", class_="note")
    return join([tag("ul", join(items), class_="legend"), more])


def counts_table(labels: Categories, splits: Categories, counts: np.ndarray) -> Markup:
    """Samples per class (rows) and split (columns), with totals; ``data-*`` name each cell."""
    order = np.argsort(-counts.sum(1), kind="stable")[:MAX_ROWS]
    head = tag(
        "thead",
        tag("tr", tag("th", "label"), join(tag("th", s) for s in splits.names), tag("th", "total")),
    )
    body = []
    for i in sorted(int(i) for i in order):
        name = labels.names[i]
        cells = [
            tag("td", f"{int(c):,}", data_label=name, data_split=s)
            for s, c in zip(splits.names, counts[i], strict=True)
        ]
        body.append(
            tag(
                "tr",
                tag("td", name),
                join(cells),
                tag("td", f"{int(counts[i].sum()):,}", data_label=name, data_split="*"),
            )
        )
    totals = counts.sum(0)
    foot = tag(
        "tfoot",
        tag(
            "tr",
            tag("td", "total"),
            join(
                tag("td", f"{int(c):,}", data_label="*", data_split=s)
                for s, c in zip(splits.names, totals, strict=True)
            ),
            tag("td", f"{int(totals.sum()):,}", data_label="*", data_split="*"),
        ),
    )
    note = ""
    if len(labels.names) > MAX_ROWS:
        note = tag(
            "p",
            f"The {MAX_ROWS:,} largest of {len(labels.names):,} classes are listed; totals "
            "count every class.",
            class_="note",
        )
    return join([tag("table", head, tag("tbody", join(body)), foot, id="counts"), note])


def _figure(
    row: int, *, ids, thumb_ids, labels: Categories, thumbs, caption: str, beside=()
) -> Markup:
    sid = int(ids[row])
    tid = int(thumb_ids[row]) if thumb_ids is not None else -1
    image = thumbs.get(tid)
    label = labels.names[labels.codes[row]]
    pic = (
        void("img", src=data_uri(image), alt=f"sample {sid}")
        if image
        else tag("div", "no thumbnail", class_="none")
    )
    if beside:  # saliency overlays (embviz.report.saliency) to the right of the image
        pic = tag("div", pic, join(beside), class_="pics")
    return tag(
        "figure",
        pic,
        tag("figcaption", f"#{sid} · {label}", void("br"), caption),
        data_id=sid,
        class_="explained" if beside else None,
    )


def map_figure(png: bytes, alt: str, keys: Markup | str = "") -> Markup:
    """A rendered map as an inline image, with its legend ``keys`` below."""
    return tag("div", void("img", src=data_uri(png), alt=alt), keys, class_="map")


def overview(ds, projection, store, renderer, width: int, height: int, notes: list[str]):
    """The maps coloured by label and by split with their legends; ``(markup, {column: png})``."""
    pngs: dict[str, bytes] = {}
    if store is None:
        notes.append("No 2D projection: no maps and no split shift (run 'embviz reduce --dims 2').")
        return tag("p", notes[-1], class_="note"), pngs
    maps = []
    for col in ("label", "split"):
        if col not in store.categorical:
            notes.append(f"No categorical {col!r} column to colour the map by.")
            continue
        frame = renderer.render(store.extent, width, height, mode="category", color_by=col)
        pngs[col] = frame.png
        keys = legend(store.categories(col), frame.counts)
        maps.append(
            tag(
                "div", tag("h3", f"by {col}"), map_figure(frame.png, f"map coloured by {col}", keys)
            )
        )
    method = ds.meta(f"projections/{projection}").get("method", "?")
    markup = join(
        [
            tag("p", f"Projection {projection} ({method}), {store.n:,} points.", class_="meta"),
            tag("div", join(maps), class_="maps"),
        ]
    )
    return markup, pngs


def galleries(ds, samples: Samples, notes: list[str]) -> Markup:
    """Top outliers, likely label issues and the largest duplicate groups, each when scored."""
    scores, ids, labels, thumb_ids = samples.scores, samples.ids, samples.labels, samples.thumb_ids
    outliers = issues = None
    dups = None
    if "outlier_score" in scores:
        outliers = top_rows(scores["outlier_score"], GALLERY_SIZE)
    if "label_issue_score" in scores:
        issues = top_rows(scores["label_issue_score"], GALLERY_SIZE)
    if "duplicate_group" in scores:
        group = np.asarray(scores["duplicate_group"])
        if not np.issubdtype(group.dtype, np.integer):
            group = np.where(np.isfinite(group), group, -1).astype(np.int64)
        dups = duplicate_groups(group, top=DUPLICATE_GROUPS, per_group=PER_GROUP)
    picked = [r for r in (outliers, issues) if r is not None]
    picked += [g[2] for g in dups.groups] if dups is not None else []
    rows = np.concatenate(picked) if picked else np.empty(0, np.int64)
    thumbs = read_thumbnails(ds, thumb_ids[rows].tolist()) if thumb_ids is not None else {}

    def fig(row, caption, beside=()):
        return _figure(
            row,
            ids=ids,
            thumb_ids=thumb_ids,
            labels=labels,
            thumbs=thumbs,
            caption=caption,
            beside=beside,
        )

    parts = []
    for key, head, top, what in (
        ("outlier_score", "Top outliers", outliers, "outlier"),
        ("label_issue_score", "Likely label issues", issues, "label issue"),
    ):
        parts.append(tag("h3", head))
        if top is None:
            notes.append(f"No {key!r} scores: {what} gallery left out.")
            parts.append(tag("p", notes[-1], class_="note"))
            continue
        if not len(top):
            parts.append(tag("p", f"Every {key!r} is missing (NaN).", class_="note"))
            continue
        values = np.asarray(scores[key])
        maps: dict[int, list[Markup]] = {}
        if key == "label_issue_score":  # cached maps only: a report never computes one
            from .saliency import overlays

            maps, line = overlays(ds, samples, top, thumbs, notes)
            parts.append(line)
        parts.append(
            tag(
                "div",
                join(fig(int(r), f"{key} {values[r]:.4g}", maps.get(int(ids[r]), ())) for r in top),
                class_="gallery",
                data_section=key,
            )
        )
    parts.append(tag("h3", "Duplicate groups"))
    if dups is None:
        notes.append("No 'duplicate_group' column: duplicate gallery left out.")
        parts.append(tag("p", notes[-1], class_="note"))
    else:
        parts.append(
            tag("p", f"{dups.n_groups:,} groups hold {dups.n_rows:,} samples.", class_="meta")
        )
        for gid, size, members in dups.groups:
            parts.append(
                tag(
                    "div",
                    tag("p", f"group {gid}: {size:,} samples"),
                    tag(
                        "div",
                        join(fig(int(r), f"group {gid}") for r in members),
                        class_="gallery",
                        data_section="duplicate_group",
                        data_group=gid,
                    ),
                    class_="group",
                )
            )
    return join(parts)


#: Neighbours of the split shift's domain classifier.
SHIFT_K = 15


def _map_shift(store, codes: np.ndarray, ref: int, other: int, *, seed: int) -> float | None:
    """The domain-classifier AUC (:func:`embviz.compare.shift_vectors`) of split ``other``
    against ``ref`` on the map's coordinates; None when either has fewer than 4k points."""
    from embviz.compare import shift_vectors

    xy = []
    for code in (ref, other):
        rows = np.flatnonzero(codes == code)
        if len(rows) < 4 * SHIFT_K:
            return None
        xy.append(np.column_stack([store.x[rows], store.y[rows]]))
    return shift_vectors(xy[0], xy[1], k=SHIFT_K, seed=seed, metric="l2").auc


def drift(
    store,
    renderer,
    *,
    groups: list[tuple[str, Categories]],
    splits: Categories,
    counts: np.ndarray,
    width: int,
    height: int,
    seed: int,
    notes: list[str],
) -> tuple[Markup, dict[str, float | None]]:
    """Per-split counts and density maps, the kNN shift of each split from the reference
    (``train``), and the shares of each of ``groups`` (label, cluster) by split."""
    totals = counts.sum(0)
    if len(splits.names) < 2:
        notes.append("Fewer than two splits: no split drift.")
        return tag("p", notes[-1], class_="note"), {}
    ref = reference_split(splits.names, totals)
    shift: dict[str, float | None] = {}
    maps = []
    on_map = {}
    if store is not None and "split" in store.categorical:
        codes, names = store.categorical["split"]
        codes = np.asarray(codes)
        per = np.bincount(codes, minlength=len(names))
        on_map = dict(zip(names, per.tolist(), strict=True))
        chosen = sorted(np.argsort(-per, kind="stable")[:MAX_SPLITS].tolist())
        view, w, h = store.extent, max(width // 2, 16), max(height // 2, 16)
        ref_code = names.index(ref) if ref in names else None
        for code in chosen:
            name = names[code]
            frame = renderer.render(
                view, w, h, mode="density", mask=codes == code, mask_key=("report-split", name)
            )
            maps.append(tag("div", tag("h3", name), map_figure(frame.png, f"density of {name}")))
            if ref_code is not None and code != ref_code:
                shift[name] = _map_shift(store, codes, ref_code, code, seed=seed)
    else:
        notes.append("No split on the map: no density maps or shift numbers.")
    rows = []
    for j, name in enumerate(splits.names):
        auc = shift.get(name)
        rows.append(
            tag(
                "tr",
                tag("td", name),
                tag("td", f"{int(totals[j]):,}"),
                tag("td", f"{100 * totals[j] / max(totals.sum(), 1):.1f} %"),
                tag("td", f"{on_map.get(name, 0):,}"),
                tag(
                    "td",
                    "reference" if name == ref else ("—" if auc is None else f"{auc:.3f}"),
                    data_shift=name,
                ),
            )
        )
    head = tag(
        "thead",
        tag(
            "tr",
            join(
                tag("th", h) for h in ("split", "samples", "share", "on the map", f"shift vs {ref}")
            ),
        ),
    )
    explain = tag(
        "p",
        f"Shift: ROC AUC of a {SHIFT_K}-nearest-neighbour domain classifier on the map's "
        f"coordinates telling the split from {ref} (at most 20,000 points of each): 0.5 = the "
        "split covers the map like the reference, 1.0 = no overlap. — = too few points.",
        class_="meta",
    )
    body = join(
        [
            tag("table", head, tag("tbody", join(rows)), id="splits"),
            explain,
            tag("div", join(maps), class_="maps"),
            join(share_table(col, cats, splits, ref) for col, cats in groups),
        ]
    )
    return body, shift


def share_table(column: str, cats: Categories, splits: Categories, ref: str) -> Markup:
    """Each category's share of every split, the categories whose shares differ most first."""
    counts = crosstab(cats, splits)
    share = 100 * counts / np.maximum(counts.sum(0), 1)
    gap = np.abs(share - share[:, [splits.names.index(ref)]]).max(1)
    order = np.argsort(-gap, kind="stable")[:SHIFT_ROWS]
    head = tag(
        "thead",
        tag(
            "tr",
            tag("th", column),
            join(tag("th", f"% of {s}") for s in splits.names),
            tag("th", f"largest gap vs {ref} (points)"),
        ),
    )
    rows = [
        tag(
            "tr",
            tag("td", cats.names[i]),
            join(tag("td", f"{share[i, j]:.2f} %") for j in range(len(splits.names))),
            tag("td", f"{gap[i]:.2f}"),
        )
        for i in order
    ]
    return join(
        [
            tag("h3", f"Shares of each {column} by split (largest gaps first)"),
            tag("table", head, tag("tbody", join(rows)), class_="shares", data_column=column),
        ]
    )
