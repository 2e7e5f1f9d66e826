"""How a representation changes along a series: how far points jump, map quality per member.

Three measures, all scale-free so members of a series (checkpoints, layers) compare directly:

- :func:`jump` / :func:`series_jump`: how far each sample moves between two 2D layouts, in
  units of its own neighbourhood size in the first one ("it moved 0.4 neighbourhoods").
- :func:`quality`: k-NN label accuracy in the embedding and in the map (does this member
  separate the classes, and does the map keep it?) and the map's trustworthiness.
- :func:`procrustes`: the rotation, reflection, scale and shift that lay one layout over
  another, so independent projections can be compared and animated.

:func:`series_quality` reads what ``embviz reduce --series`` stored per member and
:func:`quality_curve` draws it with HoloViews. numpy, scikit-learn, scipy and HoloViews are
imported inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Similarity",
    "jump",
    "procrustes",
    "quality",
    "quality_curve",
    "series_jump",
    "series_quality",
]

#: Most rows :func:`quality` hands to ``sklearn.manifold.trustworthiness`` (quadratic memory).
TRUST_ROWS = 2000


@dataclass(frozen=True)
class Similarity:
    """A similarity transform ``y = scale * (x - source_mean) @ rotation + target_mean``
    (``rotation`` orthogonal: it may reflect)."""

    rotation: np.ndarray  #: (dims, dims) orthogonal matrix
    scale: float  #: uniform scale factor
    source_mean: np.ndarray  #: (dims,) centre of the moving layout
    target_mean: np.ndarray  #: (dims,) centre of the fixed layout

    def apply(self, coords: np.ndarray) -> np.ndarray:
        """``coords`` (n, dims) moved by this transform, as float32."""
        x = np.asarray(coords, dtype=np.float64)
        y = self.scale * (x - self.source_mean) @ self.rotation + self.target_mean
        return y.astype(np.float32)


def procrustes(moving: np.ndarray, fixed: np.ndarray, *, scale: bool = True) -> Similarity:
    """The similarity transform that best lays ``moving`` over ``fixed`` (least squares).

    Parameters
    ----------
    moving, fixed : (n, dims) coordinates of the same n samples, rows aligned (the shared ids).
    scale : also fit a uniform scale (else rotation, reflection and shift only).

    Returns a :class:`Similarity`; ``.apply(moving)`` is the aligned layout, and it applies
    as well to any other points of ``moving``'s map (the rows outside a fitted sample).
    """
    from scipy.linalg import orthogonal_procrustes

    a = np.asarray(moving, dtype=np.float64)
    b = np.asarray(fixed, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(
            f"procrustes: need two (n, dims) arrays with n >= 2, got {a.shape}, {b.shape}"
        )
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    a0, b0 = a - mu_a, b - mu_b
    rotation, sv_sum = orthogonal_procrustes(a0, b0)
    norm = float((a0**2).sum())
    s = float(sv_sum) / norm if scale and norm > 0 else 1.0
    return Similarity(rotation=rotation, scale=s, source_mean=mu_a, target_mean=mu_b)


def _neighbour_scale(coords: np.ndarray, k: int) -> np.ndarray:
    """Each row's mean distance to its k nearest other rows."""
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(int(k), coords.shape[0] - 1))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    return dist[:, 1:].mean(axis=1)


def jump(a: np.ndarray, b: np.ndarray, *, k: int = 10) -> np.ndarray:
    """How far each sample moves from layout ``a`` to layout ``b``, in neighbourhoods.

    The displacement ``|b_i - a_i|`` divided by sample i's mean distance to its ``k`` nearest
    neighbours in ``a``: 1.0 means it moved as far as its neighbourhood is wide, whatever the
    map's units. Align the layouts first (:func:`procrustes`) when they come from independent
    fits. Duplicated points (zero neighbourhood) are measured against the layout's median
    neighbourhood instead.

    Parameters
    ----------
    a, b : (n, dims) coordinates of the same samples, rows aligned.
    k : neighbours that define the neighbourhood size.

    Returns (n,) float64.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"jump: layouts must have the same (n, dims) shape, got {a.shape}, {b.shape}"
        )
    if a.shape[0] < 2:
        return np.zeros(a.shape[0])
    scale = _neighbour_scale(a, k)
    positive = scale[scale > 0]
    floor = float(np.median(positive)) if positive.size else 1.0
    scale = np.where(scale > 0, scale, floor)
    return np.linalg.norm(b - a, axis=1) / scale


def series_jump(layouts: list[np.ndarray], *, k: int = 10) -> list[float]:
    """The median :func:`jump` between each pair of consecutive layouts (``len - 1`` values)."""
    return [float(np.median(jump(a, b, k=k))) for a, b in zip(layouts, layouts[1:], strict=False)]


def _knn_accuracy(X: np.ndarray, y: np.ndarray, *, k: int, seed: int) -> float | None:
    """5-fold cross-validated accuracy of a k-NN classifier (None when it cannot be measured)."""
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    folds = 5
    if len(np.unique(y)) < 2 or y.shape[0] < 2 * folds:
        return None
    k = max(1, min(int(k), y.shape[0] * (folds - 1) // folds - 1))
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(KNeighborsClassifier(n_neighbors=k), X, y, cv=cv)
    return float((pred == y).mean())


def quality(
    vectors: np.ndarray,
    coords: np.ndarray,
    labels: Any,
    *,
    k: int = 10,
    sample: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """How well one member separates its classes, and how well its map keeps its neighbours.

    Parameters
    ----------
    vectors : (n, d) embedding rows.
    coords : (n, dims) their map coordinates, rows aligned.
    labels : (n,) class of each row, or None; rows whose label is None, NaN or empty are left
        out of the accuracies.
    k : neighbours of the classifier and of trustworthiness.
    sample : most labelled rows the accuracies use (a seeded random sample); 5-fold
        cross-validated k-NN accuracy costs about 1 s for 5,000 rows of 1,280 dimensions.
    seed : seeds the samples and the folds.

    Returns ``{"knn_embedding", "knn_map", "trustworthiness", "k", "rows", "classes"}``:
    the accuracies (None without labels or with fewer than 2 classes), sklearn's
    trustworthiness of the map on at most :data:`TRUST_ROWS` rows, and the labelled rows and
    classes the accuracies used.
    """
    from sklearn.manifold import trustworthiness

    X = np.asarray(vectors, dtype=np.float32)
    Y = np.asarray(coords, dtype=np.float32)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"quality: vectors {X.shape} and coords {Y.shape} must have the same rows")
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"knn_embedding": None, "knn_map": None, "k": int(k), "rows": 0}
    out["classes"] = 0
    if labels is not None:
        lab = np.asarray(labels, dtype=object)
        has = np.array([v is not None and v == v and str(v) != "" for v in lab], dtype=bool)
        rows = np.flatnonzero(has)
        if rows.size > sample:
            rows = np.sort(rng.choice(rows, size=sample, replace=False))
        y = np.array([str(v) for v in lab[rows]], dtype=object)
        out["rows"], out["classes"] = int(rows.size), len(set(y.tolist()))
        out["knn_embedding"] = _knn_accuracy(X[rows], y, k=k, seed=seed)
        out["knn_map"] = _knn_accuracy(Y[rows], y, k=k, seed=seed)
    trust = np.arange(X.shape[0])
    if trust.size > TRUST_ROWS:
        trust = np.sort(rng.choice(trust, size=TRUST_ROWS, replace=False))
    nk = max(1, min(int(k), trust.size // 2 - 1))
    out["trustworthiness"] = (
        float(trustworthiness(X[trust], Y[trust], n_neighbors=nk))
        if nk >= 1 and trust.size > 3
        else None
    )
    return out


def series_quality(ds, series_name: str) -> list[dict[str, Any]]:
    """Per member of projection series ``series_name`` (as ``embviz reduce --series`` stored it):
    ``{"index", "member", "table", "knn_embedding", "knn_map", "trustworthiness", "jump"}``
    in order. Raises :class:`~embviz.errors.DatasetError` when the series is missing."""
    from .series import series_members

    rows = []
    for m in series_members(ds, series_name, kind="projections"):
        meta = ds.meta(m.key)
        q = meta.get("quality") or {}
        rows.append(
            {
                "index": m.index,
                "member": m.member,
                "table": m.key,
                "knn_embedding": q.get("knn_embedding"),
                "knn_map": q.get("knn_map"),
                "trustworthiness": q.get("trustworthiness"),
                "jump": meta.get("jump"),
            }
        )
    return rows


#: The measures :func:`quality_curve` draws: (row key, legend label, colour). The first three
#: lie in [0, 1] and share a panel; the jump, in neighbourhoods, has its own.
CURVES = (
    ("knn_embedding", "k-NN accuracy, embedding", "#1f77b4"),
    ("knn_map", "k-NN accuracy, 2D map", "#ff7f0e"),
    ("trustworthiness", "trustworthiness", "#2ca02c"),
    ("jump", "median jump from the previous member", "#7f7f7f"),
)


def quality_curve(ds, series_name: str, *, backend: str | None = None):
    """The quality of each member of projection series ``series_name``, drawn with HoloViews.

    x is the member (``"<index>: <label>"``, in series order). Two panels of ``hv.Curve *
    hv.Scatter`` overlays with legends: k-NN accuracy in the embedding and in the map and the
    map's trustworthiness (all in [0, 1]: "which epoch / which layer separates the classes"),
    and the median jump from the previous member in neighbourhoods (above 1: points moved
    further than their neighbourhood is wide). A measure a member lacks (no labels; the first
    member's jump) is left out of its curve.

    Parameters
    ----------
    ds : the dataset (:class:`~embviz.dataset.Dataset`).
    series_name : a projection series (``<embedding series>.<method><dims>d``).
    backend : the HoloViews backend the styling is for (``bokeh``, ``matplotlib``; its plotting
        module must be loaded); default the current one, Bokeh (the app's) when none is loaded.

    Returns an ``hv.Layout`` of the two overlays.
    """
    import holoviews as hv

    if backend is None:
        if not hv.Store.renderers:
            import holoviews.plotting.bokeh  # noqa: F401  (the app's backend)
        backend = hv.Store.current_backend
    rows = series_quality(ds, series_name)
    labels = [f"{r['index']}: {r['member']}" for r in rows]
    x = hv.Dimension("member", label="member")
    panels = []
    for keys, y, ylim in (
        (CURVES[:3], hv.Dimension("value", label="accuracy, trustworthiness"), (0, 1.02)),
        (CURVES[3:], hv.Dimension("jump", label="median jump (neighbourhoods)"), (0, None)),
    ):
        layers = []
        for key, name, colour in keys:
            points = [
                (lab, float(r[key]))
                for lab, r in zip(labels, rows, strict=True)
                if r[key] is not None
            ]
            if points:
                style = {"color": colour, "backend": backend}
                layers.append(hv.Curve(points, x, y, label=name).opts(**style))
                layers.append(hv.Scatter(points, x, y, label=name).opts(**style))
        if not layers:  # e.g. a single-member series has no jump
            layers.append(hv.Curve([(lab, np.nan) for lab in labels], x, y, label="none"))
        overlay = hv.Overlay(layers).opts(
            title=f"{series_name}: {y.name if y.name == 'jump' else 'quality'} per member",
            backend=backend,
        )
        panels.append(overlay.redim.range(**{y.name: ylim}))
    return hv.Layout(panels).cols(2)
