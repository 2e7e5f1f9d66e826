"""Per-sample curation scores from an embedding's neighbours: outliers, uniqueness, label issues, clusters.

Every function takes the saved neighbour lists as *row positions* (``nbr`` int64 ``(n, k)``,
-1 where a neighbour is missing) and their distances (``dist`` float32 ``(n, k)``, ``inf``
where missing, nearest first), as :func:`neighbour_rows` turns the ``index`` step's table into.
All work is vectorised numpy (chunked where a step needs ``(n, k, k)`` temporaries), so the
functions run on tens of millions of rows; rows with no neighbour get NaN or -1. Duplicate
groups live in :mod:`embviz.duplicates`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLASSIFIER_BELOW",
    "OUTLIER_METHODS",
    "LabelIssues",
    "assign_clusters",
    "cluster_names",
    "default_clusters",
    "fit_centroids",
    "label_issues",
    "neighbour_rows",
    "outlier_scores",
    "rank01",
    "uniqueness",
    "wants_classifier",
]

#: Rows per chunk where a step builds ``(rows, k, k)`` temporaries.
_CHUNK = 65_536


def neighbour_rows(ids: np.ndarray, neighbour_ids: np.ndarray) -> np.ndarray:
    """Map neighbour sample ids to row positions in ``ids``; -1 for ids not in ``ids`` (or -1).

    ``ids`` are the rows' sample ids in the order the scores are computed (the samples
    table's order); ``neighbour_ids`` any integer array of sample ids.
    """
    ids = np.asarray(ids, dtype=np.int64)
    q = np.asarray(neighbour_ids, dtype=np.int64)
    if len(ids) == 0:
        return np.full(q.shape, -1, dtype=np.int64)
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo <= 4 * len(ids) + 1024:
        # Ids are dense (ingest numbers them 0..n-1): a lookup table beats binary search ~10x.
        table = np.full(hi - lo + 1, -1, dtype=np.int64)
        table[ids - lo] = np.arange(len(ids))
        inside = (q >= lo) & (q <= hi)
        return np.where(inside, table[np.where(inside, q - lo, 0)], -1)
    sorter = np.argsort(ids, kind="stable")
    sorted_ids = ids[sorter]
    at = np.minimum(np.searchsorted(sorted_ids, q), len(ids) - 1)
    return np.where(sorted_ids[at] == q, sorter[at], -1).astype(np.int64)


def rank01(values: np.ndarray) -> np.ndarray:
    """Percentile rank of each value in [0, 1] (ties share their mean rank); NaN stays NaN.

    Spreads any score evenly over a colour scale: 0.99 means "higher than 99% of the rows".
    """
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan, dtype=np.float32)
    ok = np.isfinite(values)
    m = int(ok.sum())
    if m == 1:
        out[ok] = 1.0
    elif m > 1:
        out[ok] = ((rankdata(values[ok]) - 1.0) / (m - 1)).astype(np.float32)
    return out


def _valid(nbr: np.ndarray, dist: np.ndarray) -> np.ndarray:
    return (nbr >= 0) & np.isfinite(dist)


def _mean_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    count = valid.sum(axis=1)
    total = np.where(valid, values, 0.0).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


#: Outlier scores: ``knn`` (mean distance to the k neighbours), ``lof`` (local outlier factor:
#: density relative to the neighbours' densities) and ``blend`` (mean of their ranks).
OUTLIER_METHODS = ("knn", "lof", "blend")


def outlier_scores(nbr: np.ndarray, dist: np.ndarray, *, method: str = "knn") -> np.ndarray:
    """How unusual each row is, as a percentile rank in [0, 1] (1 = the most unusual).

    Parameters
    ----------
    nbr, dist : neighbour rows and distances (see the module docstring).
    method : ``knn`` (default) ranks the mean distance to the k neighbours: it finds points
        far from everything, even a loose group of outliers that are each other's
        neighbours, but ranks every member of a sparse class above a dense one. ``lof`` is the
        local outlier factor (reachability distances, Breunig et al. 2000): density relative to
        the neighbours' densities, fair to sparse classes but blind to outliers whose
        neighbours are outliers too. ``blend`` averages the two ranks. On 50 photo crops
        planted among 5,000 MNIST digits (``benchmarks/bench_curate.py``), k = 10: ``knn``
        put all 50 in its top 50, ``lof`` 33 and ``blend`` 33.

    Returns float32 ``(n,)``; NaN for rows with no neighbour.
    """
    if method not in OUTLIER_METHODS:
        raise ValueError(f"unknown outlier method {method!r}; valid: {list(OUTLIER_METHODS)}")
    valid = _valid(nbr, dist)
    kdist = _mean_valid(dist, valid)
    if method == "knn":
        return rank01(kdist)
    lof = _lof(nbr, dist, valid)
    if method == "lof":
        return rank01(lof)
    both = (rank01(kdist).astype(np.float64) + rank01(lof)) / 2
    return rank01(both)


def _lof(nbr: np.ndarray, dist: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Local outlier factor with k = each row's valid neighbour count."""
    safe = np.where(valid, nbr, 0)
    # k-distance: distance to the farthest valid neighbour.
    kth = np.where(valid, dist, -np.inf).max(axis=1)
    kth = np.where(np.isfinite(kth), kth, np.nan)
    reach = np.maximum(dist, kth[safe])
    mean_reach = _mean_valid(reach, valid & np.isfinite(reach))
    # Exact duplicates make reachability 0; a floor keeps densities finite.
    floor = (
        max(float(np.nanmedian(mean_reach)) * 1e-3, 1e-9) if np.isfinite(mean_reach).any() else 1
    )
    lrd = 1.0 / np.maximum(mean_reach, floor)
    nb_lrd = lrd[safe]
    return _mean_valid(nb_lrd, valid & np.isfinite(nb_lrd)) / lrd


def uniqueness(dist: np.ndarray, *, weights: tuple[float, ...] = (0.6, 0.3, 0.1)) -> np.ndarray:
    """How far each row lies from its nearest neighbours, in [0, 1] (FiftyOne's definition).

    The weighted distance to the first ``len(weights)`` neighbours (nearest weighted most),
    divided by its maximum over the rows: 1 is the loneliest row, 0 an exact duplicate. Unlike
    :func:`outlier_scores` (a rank) it keeps the distances' proportions, so a few far rows
    squeeze the rest towards 0.

    Returns float32 ``(n,)``; NaN for rows with no neighbour.
    """
    m = min(len(weights), dist.shape[1])
    d = dist[:, :m].astype(np.float64)
    w = np.asarray(weights[:m], dtype=np.float64)
    ok = np.isfinite(d)
    wsum = (ok * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(wsum > 0, np.where(ok, d, 0.0) @ w / wsum, np.nan)
    raw = np.maximum(raw, 0.0)  # float32 cosine can dip below 0 for identical vectors
    top = np.nanmax(raw) if np.isfinite(raw).any() else np.nan
    if not top > 0:
        return np.where(np.isfinite(raw), 0.0, np.nan).astype(np.float32)
    return (raw / top).astype(np.float32)


# -- label issues ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelIssues:
    """What :func:`label_issues` found.

    Attributes
    ----------
    score:
        float32 ``(n,)`` in [0, 1]: 1 minus the probability the evidence gives the row's own
        label (0 = everything agrees with the label); NaN for unlabelled rows.
    suggested:
        int64 ``(n,)`` class codes: the label the evidence favours (for unlabelled rows too);
        -1 where there is none (no labelled neighbour, no classifier, no prediction).
    method:
        The evidence used: ``knn``, plus ``+classifier`` and ``+prediction`` when they were.
    """

    score: np.ndarray
    suggested: np.ndarray
    method: str


#: Neighbour vote weights are ``1 / (d + delta)``, ``delta`` this fraction of the median
#: nearest-neighbour distance: an exact duplicate gets a large but finite vote.
_VOTE_DELTA = 0.5
#: Logistic regression's inverse regularisation (strong: on the planted MNIST flips C=0.01-0.03
#: found 92% of them, sklearn's default C=1 86%), and the width above which vectors are
#: PCA-reduced before it (keeps 200K x 1280-D fits to minutes).
_CLASSIFIER_C = 0.03
_CLASSIFIER_DIMS = 128
#: With ``method="auto"``, the most rows the label-issue classifier runs on, and the most
#: rows x classes (its cost grows with both: 200K rows of 10 classes take a few minutes on
#: 2 cores); beyond either the neighbour vote alone runs.
CLASSIFIER_BELOW = 200_000
_CLASSIFIER_CELLS = 4_000_000


def wants_classifier(
    labels: np.ndarray, *, method: str = "auto", classifier_below: int = CLASSIFIER_BELOW
) -> bool:
    """Whether :func:`label_issues` with these options fits its classifier (so needs vectors)."""
    if method != "auto":
        return method == "classifier"
    labels = np.asarray(labels)
    classes = len(np.unique(labels[labels >= 0]))
    return len(labels) <= classifier_below and len(labels) * classes <= _CLASSIFIER_CELLS


def _classifier_proba(
    vectors: np.ndarray, labels: np.ndarray, *, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Cross-validated class probabilities of a logistic regression on the vectors.

    Returns ``(rows, classes, proba (len(rows), len(classes)))`` for the labelled rows of the
    classes with at least ``folds`` members, or None when fewer than two such classes exist.
    Each row's probabilities come from models that never saw it (cleanlab's out-of-sample
    predicted probabilities).
    """
    import warnings

    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    counts = np.bincount(labels[labels >= 0])
    classes = np.flatnonzero(counts >= folds)
    if len(classes) < 2:
        return None
    rows = np.flatnonzero(np.isin(labels, classes))
    x = np.asarray(vectors[rows], dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # cosine geometry
    steps: list = [StandardScaler()]
    # No more components than the smallest training fold has rows.
    dims = min(_CLASSIFIER_DIMS, len(rows) * (folds - 1) // folds - 1)
    if x.shape[1] > dims >= 2:
        steps.insert(0, PCA(dims, random_state=seed))
    model = make_pipeline(*steps, LogisticRegression(C=_CLASSIFIER_C, max_iter=300))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    # One BLAS thread: these small products gain nothing from more, and on a busy machine
    # OpenBLAS's spinning threads made a 5,000-row fit 40x slower.
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        # A few lbfgs iterations short of convergence barely move the probabilities.
        warnings.simplefilter("ignore", ConvergenceWarning)
        proba = cross_val_predict(model, x, labels[rows], cv=cv, method="predict_proba")
    return rows, classes, proba.astype(np.float32)


def label_issues(
    labels: np.ndarray,
    nbr: np.ndarray,
    dist: np.ndarray,
    *,
    vectors: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    method: str = "auto",
    classifier_below: int = CLASSIFIER_BELOW,
    folds: int = 5,
    seed: int = 0,
) -> LabelIssues:
    """Score how likely each row's label is wrong, and suggest the label the evidence favours.

    Up to three sources each give every candidate label a probability; they are averaged, and
    the score is 1 minus the average for the row's own label:

    - the neighbours' vote, weighted by ``1 / (distance + delta)``;
    - with ``vectors`` and ``method="classifier"`` (or ``auto`` with at most
      ``classifier_below`` rows and 4M rows x classes): a logistic regression's
      ``folds``-fold cross-validated probabilities for the labelled rows (each predicted by
      a model trained without it: cleanlab-style self-confidence). It learns from every
      labelled row rather than k neighbours: on 250 label flips planted among 5,150 MNIST
      digits it put 92% of them in the top 5%, the vote alone 84%
      (``benchmarks/bench_curate.py``);
    - with ``prediction`` (a model's predicted class codes): ``confidence`` for the
      predicted class, the rest spread evenly over the other classes.

    Parameters
    ----------
    labels : int class codes ``(n,)``, -1 for unlabelled rows; ``prediction`` uses the same codes.
    nbr, dist : neighbour rows and distances (see the module docstring).
    vectors : ``(n, d)`` embedding rows, for the classifier.
    prediction, confidence : a model's predicted codes (-1 none) and its confidence in [0, 1]
        (NaN or None: 1).
    method : ``auto``, ``knn`` (vote only) or ``classifier`` (also the classifier, any size).
    classifier_below : with ``auto``, the most rows the classifier runs on.
    folds : cross-validation folds; classes with fewer labelled rows get the other sources only.
    seed : seeds the folds.

    Returns a :class:`LabelIssues`.
    """
    if method not in ("auto", "knn", "classifier"):
        raise ValueError(f"unknown label-issue method {method!r}; valid: auto, knn, classifier")
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    top_code = labels.max(initial=-1)
    if prediction is not None:
        prediction = np.asarray(prediction, dtype=np.int64)
        top_code = max(top_code, prediction.max(initial=-1))
        conf = np.ones(n) if confidence is None else np.asarray(confidence, dtype=np.float64)
        conf = np.clip(np.where(np.isfinite(conf), conf, 1.0), 0.0, 1.0)
    n_classes = int(top_code) + 1
    used = ["knn"]

    clf_top = clf_row = col_of = proba = None
    want_clf = wants_classifier(labels, method=method, classifier_below=classifier_below)
    if want_clf and vectors is not None and (labels >= 0).any():
        found = _classifier_proba(vectors, labels, folds=folds, seed=seed)
        if found is not None:
            used.append("classifier")
            rows, classes, proba = found
            col_of = np.full(n_classes, -1, dtype=np.int64)
            col_of[classes] = np.arange(len(classes))
            clf_row = np.full(n, -1, dtype=np.int64)
            clf_row[rows] = np.arange(len(rows))
            clf_top = np.full(n, -1, dtype=np.int64)
            clf_top[rows] = classes[proba.argmax(axis=1)]
    if prediction is not None:
        used.append("prediction")

    d1 = dist[:, 0][np.isfinite(dist[:, 0]) & (dist[:, 0] > 0)] if dist.size else dist[:0, 0]
    delta = _VOTE_DELTA * float(np.median(d1)) if d1.size else 1.0
    score = np.empty(n, dtype=np.float32)
    suggested = np.empty(n, dtype=np.int64)
    for s in range(0, n, _CHUNK):
        sl = slice(s, min(n, s + _CHUNK))
        m = sl.stop - sl.start
        valid = _valid(nbr[sl], dist[sl])
        nb_labels = np.where(valid, labels[np.where(valid, nbr[sl], 0)], -1)
        w = np.where(nb_labels >= 0, 1.0 / (np.maximum(dist[sl], 0.0) + delta), 0.0)
        total = w.sum(axis=1)
        # Candidates: the neighbours' labels, the classifier's and the model's pick, the own label.
        extra = [clf_top[sl]] if clf_top is not None else []
        extra += [prediction[sl]] if prediction is not None else []
        cand = np.concatenate([nb_labels, *[e[:, None] for e in extra], labels[sl, None]], axis=1)
        known = cand >= 0
        vote = ((cand[:, :, None] == nb_labels[:, None, :]) * w[:, None, :]).sum(axis=2)
        has_vote = total > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = np.where(has_vote[:, None], vote / total[:, None], 0.0)
        sources = has_vote.astype(np.float64)
        if proba is not None:
            r = clf_row[sl]
            col = np.where(known, col_of[np.maximum(cand, 0)], -1)
            ok = (r[:, None] >= 0) & (col >= 0)
            prob += np.where(ok, proba[np.maximum(r, 0)[:, None], np.maximum(col, 0)], 0.0)
            sources += r >= 0
        if prediction is not None:
            has_pred = prediction[sl] >= 0
            c = conf[sl, None]
            other = (1.0 - c) / max(n_classes - 1, 1)
            p = np.where(cand == prediction[sl, None], c, other)
            prob += np.where(has_pred[:, None] & known, p, 0.0)
            sources += has_pred
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = np.where(known & (sources[:, None] > 0), prob / sources[:, None], -1.0)
        best = prob.argmax(axis=1)
        best_p = prob[np.arange(m), best]
        suggested[sl] = np.where(best_p > 0, cand[np.arange(m), best], -1)
        own = prob[:, -1]
        labelled = labels[sl] >= 0
        # A labelled row nothing speaks about (no labelled neighbour, no model) is not an issue.
        score[sl] = np.where(labelled, np.where(sources > 0, 1.0 - own, 0.0), np.nan)
    return LabelIssues(
        score=np.clip(score, 0.0, 1.0).astype(np.float32),
        suggested=suggested,
        method="+".join(used),
    )


# -- clusters ----------------------------------------------------------------------------------
def default_clusters(n: int) -> int:
    """The default cluster count for ``n`` rows: 20, fewer below 1,000 rows (one per 50)."""
    return int(min(20, max(1, n // 50)))


def fit_centroids(
    vectors: np.ndarray, *, k: int, metric: str = "cosine", seed: int = 0, niter: int = 20
) -> np.ndarray:
    """k-means centroids of ``vectors`` (faiss; spherical for ``cosine``). ``k`` is capped at n.

    Fit on a sample (a few hundred rows per centroid is plenty) and label every row with
    :func:`assign_clusters`.
    """
    from .index import _faiss, _prepare

    faiss = _faiss()
    x = _prepare(vectors, metric)
    k = int(max(1, min(k, len(x))))
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=metric == "cosine",
        min_points_per_centroid=1,  # no faiss warning on small data sets
        max_points_per_centroid=512,
    )
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32)


def assign_clusters(vectors: np.ndarray, centroids: np.ndarray, *, metric: str = "cosine"):
    """The nearest centroid's number for each row, int64 ``(n,)``."""
    from .index import _faiss, _prepare

    faiss = _faiss()
    x = _prepare(vectors, metric)
    index = faiss.IndexFlatIP(x.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = index.search(x, 1)
    return nearest[:, 0].astype(np.int64)


def cluster_names(codes: np.ndarray, k: int) -> tuple[np.ndarray, list[str]]:
    """Renumber clusters largest first and name them with zero-padded numbers.

    Returns ``(codes, names)``: codes ``(n,)`` with 0 the largest cluster (-1 stays -1) and
    names ``["00", "01", ...]`` (strings, so they sort and read as categories).
    """
    codes = np.asarray(codes, dtype=np.int64)
    size = np.bincount(codes[codes >= 0], minlength=k)
    order = np.argsort(-size, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    width = len(str(max(k - 1, 0)))
    renumbered = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
    return renumbered, [f"{i:0{width}d}" for i in range(k)]
