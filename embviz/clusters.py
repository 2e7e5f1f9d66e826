"""Named clusters of a 2D map: read them, colour by them, and place their names on a view.

``embviz cluster`` (:mod:`embviz.pipeline.cluster`) writes the table ``clusters/<projection>``:
one row per point of the projection, in its row order and partitions, with the point's cluster
at each level (``cluster_l0`` coarse ... ``cluster_l2`` fine, int32, numbered largest first),
and in the table's ``meta`` one record per cluster (level, number, name, size, majority label
and purity, centre, most typical sample, parent). This module reads both and decides which
names a view shows.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import numpy as np

from .errors import DatasetError

__all__ = [
    "COLUMNS",
    "MIN_SPACING_PX",
    "cluster_columns",
    "cluster_labels",
    "clusters_key",
    "label_boxes",
    "level_column",
    "majority_name",
    "read_clusters",
]

log = logging.getLogger(__name__)

#: Columns of :func:`read_clusters`' frame, in order.
COLUMNS = (
    "level",
    "cluster",
    "name",
    "size",
    "label",
    "purity",
    "x",
    "y",
    "typical_id",
    "parent",
)
#: A view shows the finest level whose centres lie at least this far apart on screen (median
#: distance of each centre to its nearest neighbour, in pixels): about one short name's width
#: (``"7 - 92%"`` at 12 px is ~55 px), so most of the level's names fit and the no-overlap rule
#: drops the rest. On the demo's full view that is the 32-cluster level.
MIN_SPACING_PX = 60.0
#: Longest name drawn on the map; longer ones (prompts) are cut with an ellipsis.
MAX_TEXT = 28


def clusters_key(projection: str) -> str:
    """The table key of a projection's clusters: ``clusters/<projection>``."""
    return f"clusters/{projection}"


def level_column(level: int) -> str:
    """The per-point column holding level ``level``'s cluster numbers: ``cluster_l<level>``."""
    return f"cluster_l{level}"


def majority_name(label: str | None, purity: float | None) -> str | None:
    """A cluster's name from its majority label: ``"7 - 92%"`` (None without a label)."""
    if label is None or purity is None or not np.isfinite(purity):
        return None
    return f"{label} - {purity:.0%}"


def _checked(ds, projection: str) -> dict[str, Any]:
    """The clusters table's meta for ``projection``; errors name what is missing or stale."""
    from .projections import projection_dims

    flat = [p for p in ds.projections if projection_dims(ds, p) == 2]
    if projection not in ds.projections:
        raise DatasetError(
            f"{ds.root}: no projection {projection!r}; 2D projections: {flat or 'none'}"
        )
    if projection_dims(ds, projection) != 2:
        raise DatasetError(
            f"{ds.root}: projection {projection!r} is 3D; clusters are made on 2D maps: {flat}"
        )
    key = clusters_key(projection)
    if not ds.has(key):
        raise DatasetError(
            f"{ds.root}: projection {projection!r} has no clusters; run "
            f"'embviz cluster {ds.root} --projection {projection}'"
        )
    meta = ds.meta(key)
    if meta.get("projection_dir") != ds.table(f"projections/{projection}")["dir"]:
        raise DatasetError(
            f"{ds.root}: table {key!r} was made from an older version of projection "
            f"{projection!r}; run 'embviz cluster {ds.root} --projection {projection}' again"
        )
    return meta


def _records(ds, projection: str):
    """The per-cluster records (a pyarrow Table) written beside the table's partitions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = _checked(ds, projection)
    key = clusters_key(projection)
    path = ds.root / ds.table(key)["dir"] / str(meta.get("summary") or "clusters.parquet")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DatasetError(f"{path}: cannot read the clusters of table {key!r} ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: no column {missing[0]!r}; rerun 'embviz cluster --force'")
    return table.select(list(COLUMNS))


def read_clusters(ds, projection: str):
    """The clusters of a 2D projection as a pandas DataFrame, one row per cluster.

    Columns (:data:`COLUMNS`): ``level`` (0 = coarsest), ``cluster`` (number within its level,
    0 = largest; the value of ``cluster_l<level>`` on its points), ``name`` (the best text
    prompt with a CLIP-like model, else the majority label with its purity, ``"7 - 92%"``,
    else ``"cluster 3"``), ``size`` (points), ``label`` (majority label, None without labels),
    ``purity`` (its share of the labelled points, NaN without), ``x``, ``y`` (the centre in map
    coordinates: a medoid of the cluster's points, so always on a point, never in the hole of
    a ring), ``typical_id`` (the sample nearest the cluster's mean; meta ``typical_space`` says
    whether in the embedding or on the map) and ``parent`` (the cluster one level coarser
    holding it, -1 at level 0). Sorted by level, then cluster.

    Parameters
    ----------
    ds : an open :class:`~embviz.dataset.Dataset`.
    projection : a 2D projection's name (``ds.projections``).

    Raises :class:`~embviz.errors.DatasetError` naming the projection when it does not exist,
    is 3D, has no clusters yet or was rebuilt since they were made.
    """
    frame = _records(ds, projection).to_pandas()
    frame["purity"] = frame["purity"].astype(float)
    return frame.sort_values(["level", "cluster"], kind="stable").reset_index(drop=True)


def cluster_columns(
    ds, projection: str, ids: np.ndarray
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """The cluster levels as category columns aligned with ``ids``, for colouring a map.

    Returns ``{"cluster_l0": (codes, names), ...}`` in the shape of
    :attr:`embviz.render.store.PointStore.categorical`: names are ``"03 7 - 92%"`` (the
    number keeps them unique and in size order), ``(none)`` for ids without a cluster. Empty
    when the projection has no clusters table or it is stale (logged, never raised: a map
    still opens).
    """
    key = clusters_key(projection)
    if not ds.has(key):
        return {}
    try:
        records = _records(ds, projection).to_pydict()
    except DatasetError as exc:
        log.info("no cluster columns: %s", exc)
        return {}
    levels = int(ds.meta(key).get("levels", 0))
    columns = [level_column(i) for i in range(levels)]
    table = ds.read_arrow(key, columns=["id", *columns])
    cids = table.column("id").to_numpy()
    ids = np.asarray(ids, dtype=np.int64)
    if len(cids) == len(ids) and np.array_equal(cids, ids):
        rows = None  # the step writes rows in the projection's order: no join
    else:
        top = int(max(cids.max(initial=-1), ids.max(initial=-1))) + 1
        where = np.full(top, -1, dtype=np.int64)
        where[cids] = np.arange(len(cids))
        rows = where[ids]
    out = {}
    level_of = np.asarray(records.get("level", []), dtype=np.int64)
    for level, column in enumerate(columns):
        mine = np.flatnonzero(level_of == level)
        number = np.asarray(records["cluster"], dtype=np.int64)[mine]
        names = [records["name"][i] for i in mine]
        k = int(number.max(initial=-1)) + 1
        width = len(str(max(k - 1, 0)))
        text = [f"cluster {i}" for i in range(k)]
        for i, name in zip(number.tolist(), names, strict=True):
            text[i] = f"{i:0{width}d} {name}"
        codes = table.column(column).to_numpy().astype(np.int32)
        if rows is not None:
            codes = np.where(rows >= 0, codes[np.maximum(rows, 0)], -1)
        if (codes < 0).any():
            codes = np.where(codes < 0, k, codes)
            text.append("(none)")
        dtype = np.int8 if len(text) < 2**7 else np.int16 if len(text) < 2**15 else np.int32
        out[column] = (codes.astype(dtype), text)
    return out


# -- names on a view ------------------------------------------------------------------------------
class _Levels:
    """A clusters frame as per-level numpy arrays (what :func:`cluster_labels` needs, once)."""

    def __init__(self, clusters):
        level = clusters["level"].to_numpy()
        self.levels = []
        for lv in np.unique(level):
            pick = np.flatnonzero(level == lv)
            size = clusters["size"].to_numpy()[pick]
            order = np.argsort(-size, kind="stable")  # largest first: they get their place
            pick = pick[order]
            text = [_short(str(t)) for t in clusters["name"].to_numpy()[pick]]
            self.levels.append(
                (
                    clusters["x"].to_numpy(dtype=np.float64)[pick],
                    clusters["y"].to_numpy(dtype=np.float64)[pick],
                    size[order].astype(np.float64),
                    text,
                    np.array([len(t) for t in text], dtype=np.float64),
                )
            )


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


_PREPARED: dict[int, tuple[weakref.ref, _Levels]] = {}
_PREPARED_LOCK = threading.Lock()


def _prepared(clusters) -> _Levels:
    """:class:`_Levels` of a frame, built once per frame object (frames are read-only here)."""
    key = id(clusters)
    with _PREPARED_LOCK:
        hit = _PREPARED.get(key)
        if hit is not None and hit[0]() is clusters:
            return hit[1]
    prepared = _Levels(clusters)
    with _PREPARED_LOCK:
        _PREPARED[key] = (weakref.ref(clusters, lambda _, k=key: _PREPARED.pop(k, None)), prepared)
    return prepared


def _spacing_px(x: np.ndarray, y: np.ndarray) -> float:
    """Median distance from each point to its nearest other point (inf for one point)."""
    if len(x) < 2:
        return float("inf")
    d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
    np.fill_diagonal(d2, np.inf)
    return float(np.sqrt(np.median(d2.min(axis=1))))


def _half_box(font: np.ndarray, chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half width and half height in pixels of names ``chars`` long in ``font`` px text."""
    return (0.6 * font * chars + 4.0) / 2, (1.3 * font + 4.0) / 2


def label_boxes(labels: dict[str, list], view, width: int, height: int) -> np.ndarray:
    """The screen boxes ``(n, 4)``: ``left, right, top, bottom`` in pixels, of the names
    :func:`cluster_labels` returned for ``view`` on a ``width`` x ``height`` plot (the text
    box estimate it placed them with)."""
    x, y = np.asarray(labels["x"], float), np.asarray(labels["y"], float)
    px = (x - view.x0) * width / (view.x1 - view.x0)
    py = (view.y1 - y) * height / (view.y1 - view.y0)
    chars = np.array([len(t) for t in labels["text"]], dtype=float)
    half_w, half_h = _half_box(np.asarray(labels["size"], float), chars)
    return np.column_stack([px - half_w, px + half_w, py - half_h, py + half_h])


def cluster_labels(
    clusters,
    view,
    width: int,
    height: int,
    *,
    font_px: int = 12,
    spacing_px: float = MIN_SPACING_PX,
) -> dict[str, list]:
    """The cluster names to draw on ``view``: columns ``x``, ``y`` (data coordinates, the
    text's centre), ``text`` and ``size`` (font size in pixels).

    The level is chosen by zoom: the finest one whose centres lie at least ``spacing_px``
    apart on screen (median nearest-neighbour distance), else the coarsest, so zooming in
    brings more and finer names. Only clusters whose centre is in ``view`` are considered;
    they are placed largest first, each with a text box estimated from its length (0.6 em per
    character, 1.3 em high, 4 px padding), and a name whose box would overlap one already
    placed or leave the plot is left out: no two names ever overlap. Bigger clusters get up
    to 30 % bigger text. About 0.3 ms for 168 clusters (the frame's per-level arrays are
    prepared once and reused while the same frame object is passed).

    Parameters
    ----------
    clusters : the frame of :func:`read_clusters` (treated as read-only).
    view : the visible rectangle, a :class:`~embviz.render.store.View` (``x0, x1, y0, y1``).
    width, height : the plot's size in pixels.
    font_px : font size of the smallest names.
    spacing_px : see above.
    """
    empty: dict[str, list] = {"x": [], "y": [], "text": [], "size": []}
    if clusters is None or len(clusters) == 0 or width <= 0 or height <= 0:
        return empty
    span_x, span_y = float(view.x1 - view.x0), float(view.y1 - view.y0)
    if not (span_x > 0 and span_y > 0):
        return empty
    sx, sy = width / span_x, height / span_y
    levels = _prepared(clusters).levels
    chosen = levels[0]
    for lv in levels[1:]:
        if _spacing_px(lv[0] * sx, lv[1] * sy) >= spacing_px:
            chosen = lv
    x, y, size, text, chars = chosen
    inside = np.flatnonzero((x >= view.x0) & (x <= view.x1) & (y >= view.y0) & (y <= view.y1))
    if not len(inside):
        return empty
    px, py = (x[inside] - view.x0) * sx, (view.y1 - y[inside]) * sy
    font = np.round(font_px * (1.0 + 0.3 * np.sqrt(size[inside] / size.max())))
    half_w, half_h = _half_box(font, chars[inside])
    fits = (px - half_w >= 0) & (px + half_w <= width) & (py - half_h >= 0)
    fits &= py + half_h <= height
    placed: list[int] = []
    boxes = np.empty((len(inside), 4))  # x0, x1, y0, y1 of the placed boxes, in order
    for i in np.flatnonzero(fits).tolist():  # already largest first
        box = (px[i] - half_w[i], px[i] + half_w[i], py[i] - half_h[i], py[i] + half_h[i])
        b = boxes[: len(placed)]
        if (
            len(placed)
            and (
                (b[:, 0] < box[1]) & (b[:, 1] > box[0]) & (b[:, 2] < box[3]) & (b[:, 3] > box[2])
            ).any()
        ):
            continue
        boxes[len(placed)] = box
        placed.append(i)
    rows = inside[placed]
    return {
        "x": x[rows].tolist(),
        "y": y[rows].tolist(),
        "text": [text[r] for r in rows.tolist()],
        "size": font[placed].astype(int).tolist(),
    }
