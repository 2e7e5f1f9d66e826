"""``write_report``: one self-contained HTML file about a dataset, and optionally its maps as PNG."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from embviz.dataset import Dataset, open_dataset
from embviz.errors import EmbvizError

from . import sections
from .clusters import section as clusters_section
from .data import choose_projection, crosstab, load_samples
from .evolution import section as evolution_section
from .html import Markup, join, page, tag
from .index import publish

__all__ = ["ReportResult", "write_report"]


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote and what it found."""

    path: str  #: the HTML file
    pngs: tuple[str, ...]  #: the PNG maps written beside it (``png=True``)
    seconds: float  #: wall time
    bytes: int  #: size of the HTML file
    rows: int  #: samples
    points: int  #: points on the map (rows of the projection drawn)
    projection: str | None  #: the projection drawn, None when the dataset has no 2D one
    labels: dict[str, int]  #: samples per class
    splits: dict[str, int]  #: samples per split
    shift: dict[str, float | None]  #: per non-reference split: kNN ROC AUC against it
    sections: tuple[str, ...]  #: sections in the report
    notes: tuple[str, ...]  #: sections left out and why
    timings: dict[str, float] = field(default_factory=dict)  #: seconds per stage


def write_report(
    dataset: str | Path | Dataset,
    out: str | Path,
    *,
    png: bool = False,
    title: str | None = None,
    width: int = 900,
    height: int = 640,
    seed: int = 0,
) -> ReportResult:
    """Write one self-contained HTML report about ``dataset`` to ``out``.

    The page loads nothing from anywhere (images are ``data:`` URIs, styles inline, no
    scripts) and is written atomically. It holds overview maps of the first 2D projection
    (UMAP before PaCMAP, t-SNE, PCA) coloured by label and by split, samples per class and
    split, galleries of the top outliers, duplicate groups and label issues when the samples
    (or a ``scores`` table) carry ``outlier_score`` / ``duplicate_group`` /
    ``label_issue_score``, the map's named clusters (``embviz cluster``), the quality curve of
    each projection series (``embviz reduce --series``), split drift (density maps per split, and per non-train split the
    ROC AUC of a kNN classifier telling it from train on the map), and the manifest.

    Parameters
    ----------
    dataset : dataset directory or an open :class:`~embviz.dataset.Dataset`.
    out : the HTML file to write (its directory is created).
    png : also write the overview maps as ``<stem>-label.png`` and ``<stem>-split.png``.
    title : page title (default ``embviz report: <dataset name>``).
    width, height : size in pixels of the overview maps; density maps are half as big.
    seed : seed of the samples the split-shift classifier is fitted on.

    Returns a :class:`ReportResult`. Raises :class:`~embviz.errors.DatasetError` for a bad
    dataset and :class:`~embviz.errors.EmbvizError` when ``out`` cannot be written.
    """
    started = time.perf_counter()
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    out = Path(out)
    if out.is_dir():
        raise EmbvizError(f"{out}: is a directory; give a file name such as {out / 'report.html'}")
    if width < 16 or height < 16:
        raise ValueError(f"width and height must be at least 16 px, got {width} x {height}")
    timings: dict[str, float] = {}
    notes: list[str] = []
    parts: list[tuple[str, str, Markup]] = []  # (anchor, heading, content)

    tick = time.perf_counter()
    samples = load_samples(ds)
    labels, splits = samples.labels, samples.splits
    counts = crosstab(labels, splits)
    timings["samples"] = time.perf_counter() - tick

    tick = time.perf_counter()
    projection = choose_projection(ds)
    store = renderer = None
    if projection is not None:
        from embviz.render.raster import Renderer
        from embviz.render.store import load_store

        store = load_store(ds, projection)
        renderer = Renderer(store)
    maps, pngs = sections.overview(ds, projection, store, renderer, width, height, notes)
    parts.append(("maps", "Overview maps", maps))
    timings["maps"] = time.perf_counter() - tick

    tick = time.perf_counter()
    clusters = clusters_section(ds, projection, notes)
    if clusters is not None:  # only when 'embviz cluster' ran: names, sizes, typical images
        parts.append(("clusters", "Clusters", clusters))
        timings["clusters"] = time.perf_counter() - tick

    tick = time.perf_counter()
    evolution = evolution_section(ds, notes)
    if evolution is not None:  # only when 'embviz reduce --series' ran: quality per member
        parts.append(("evolution", "How the representation changes", evolution))
        timings["evolution"] = time.perf_counter() - tick

    table = sections.counts_table(labels, splits, counts)
    summary = tag("p", f"{samples.n:,} samples.", class_="meta")
    parts.append(("counts", "Samples per class and split", join([summary, table])))

    tick = time.perf_counter()
    galleries = sections.galleries(ds, samples, notes)
    parts.append(("galleries", "Outliers, duplicates and label issues", galleries))
    timings["galleries"] = time.perf_counter() - tick

    tick = time.perf_counter()
    groups = [("cluster", samples.clusters), ("label", labels)]
    groups = [(c, cats) for c, cats in groups if c in samples.columns]
    drift, shift = sections.drift(
        store,
        renderer,
        groups=groups,
        splits=splits,
        counts=counts,
        width=width,
        height=height,
        seed=seed,
        notes=notes,
    )
    parts.append(("drift", "Split drift", drift))
    timings["drift"] = time.perf_counter() - tick

    tick = time.perf_counter()
    manifest = json.dumps(ds.manifest, indent=2, default=str, ensure_ascii=False)
    parts.append(("manifest", "Manifest", tag("pre", manifest)))
    created = datetime.now(UTC).isoformat(timespec="seconds")
    title = title or f"embviz report: {ds.name}"
    body = tag(
        "main",
        tag("h1", title),
        tag(
            "p",
            f"Dataset {ds.name} ({ds.root}) · {samples.n:,} samples · generated {created} by embviz",
            class_="meta",
        ),
        tag("nav", join(tag("a", head, href=f"#{anchor}") for anchor, head, _ in parts)),
        join(
            tag("section", tag("h2", head), content, id=anchor) for anchor, head, content in parts
        ),
    )
    meta = {"generator": "embviz-report", "embviz-dataset": ds.name, "embviz-created": created}
    text = page(title=title, meta=meta, body=body).encode("utf-8")
    written = []
    try:
        if png:
            for col, data in pngs.items():
                path = out.with_name(f"{out.stem}-{col}.png")
                publish(path, data)
                written.append(str(path))
        publish(out, text)
    except OSError as exc:
        where = exc.filename or out
        raise EmbvizError(f"{where}: cannot write the report ({exc.strerror})") from exc
    timings["write"] = time.perf_counter() - tick
    totals = lambda axis: counts.sum(axis).tolist()  # noqa: E731
    return ReportResult(
        path=str(out),
        pngs=tuple(written),
        seconds=round(time.perf_counter() - started, 3),
        bytes=len(text),
        rows=samples.n,
        points=store.n if store is not None else 0,
        projection=projection,
        labels=dict(zip(labels.names, totals(1), strict=True))
        if "label" in samples.columns
        else {},
        splits=dict(zip(splits.names, totals(0), strict=True))
        if "split" in samples.columns
        else {},
        shift=shift,
        sections=tuple(anchor for anchor, _, _ in parts),
        notes=tuple(notes),
        timings={k: round(v, 3) for k, v in timings.items()},
    )
