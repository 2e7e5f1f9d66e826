"""A linear probe on an embedding: logistic regression, with out-of-fold probabilities for every labelled row.

The ``predict`` step's probe source and the label-issue scores both use it (one copy). A
labelled row's probabilities always come from the fold model that was fitted without it (the
out-of-sample probabilities confident learning needs); an unlabelled row's from a model fitted
on every labelled row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PROBE_C", "PROBE_DIMS", "ProbeResult", "fit_probe", "probe_proba"]

#: Inverse regularisation (strong: on the planted MNIST flips C=0.01-0.03 found 92% of them,
#: sklearn's default C=1 86%), and the width above which vectors are PCA-reduced first (keeps
#: 200K x 1280-D fits to minutes).
PROBE_C = 0.03
PROBE_DIMS = 128


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe_proba` fitted.

    Attributes
    ----------
    classes : int64 ``(c,)`` the label codes the probe predicts (those with >= ``folds`` rows).
    proba : float32 ``(n, c)`` probabilities over ``classes``; NaN rows where no vector.
    fold : int8 ``(n,)`` the fold whose held-out model predicted the row; -1 for rows predicted
        by the model fitted on every labelled row (unlabelled rows, rows of rare classes).
    accuracy : out-of-fold accuracy on the labelled rows of ``classes``.
    """

    classes: np.ndarray
    proba: np.ndarray
    fold: np.ndarray
    accuracy: float


def _model(rows: int, width: int, folds: int, seed: int):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list = [StandardScaler()]
    # No more components than the smallest training fold has rows.
    dims = min(PROBE_DIMS, rows * (folds - 1) // folds - 1)
    if width > dims >= 2:
        steps.insert(0, PCA(dims, random_state=seed))
    return make_pipeline(*steps, LogisticRegression(C=PROBE_C, max_iter=300))


def probe_proba(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    predict_unlabelled: bool = True,
    valid: np.ndarray | None = None,
) -> ProbeResult | None:
    """Fit the probe and give every row class probabilities (see the module docstring).

    Parameters
    ----------
    vectors : ``(n, d)`` embedding rows (cosine geometry: rows are L2-normalised first).
    labels : int class codes ``(n,)``, -1 for unlabelled rows.
    folds : stratified folds; classes with fewer labelled rows are left out of the probe.
    seed : seeds the folds and the PCA.
    predict_unlabelled : also fit on every labelled row and predict the others (one more fit).
    valid : bool ``(n,)``, rows that have a vector (default: all).

    Returns None when fewer than two classes have ``folds`` labelled rows.
    """
    import warnings

    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    usable = (labels >= 0) & valid
    counts = np.bincount(labels[usable], minlength=1)
    classes = np.flatnonzero(counts >= folds)
    if len(classes) < 2:
        return None
    rows = np.flatnonzero(usable & np.isin(labels, classes))
    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = np.searchsorted(classes, labels[rows])
    proba = np.full((n, len(classes)), np.nan, dtype=np.float32)
    fold = np.full(n, -1, dtype=np.int8)
    base = _model(len(rows), x.shape[1], folds, seed)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    # One BLAS thread: these small products gain nothing from more, and on a busy machine
    # OpenBLAS's spinning threads made a 5,000-row fit 40x slower. A few lbfgs iterations short
    # of convergence barely move the probabilities.
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for f, (train, test) in enumerate(cv.split(rows, y)):
            model = clone(base).fit(x[rows[train]], y[train])
            proba[rows[test]] = model.predict_proba(x[rows[test]])
            fold[rows[test]] = f
        rest = np.flatnonzero(valid & (fold < 0))
        if predict_unlabelled and len(rest):
            model = clone(base).fit(x[rows], y)
            proba[rest] = model.predict_proba(x[rest])
    accuracy = float((proba[rows].argmax(axis=1) == y).mean())
    return ProbeResult(classes=classes, proba=proba, fold=fold, accuracy=accuracy)


def fit_probe(
    vectors: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0
) -> tuple[object, np.ndarray]:
    """``(fitted sklearn pipeline, class codes)``: the probe fitted on every labelled row of the
    classes :func:`probe_proba` predicts (what predicts its unlabelled rows; saliency explains
    it). Its input is L2-normalised vectors. Raises ValueError when fewer than two classes have
    ``folds`` labelled rows."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels[labels >= 0], minlength=1)
    classes = np.flatnonzero(counts >= folds)
    if len(classes) < 2:
        raise ValueError(f"a probe needs two classes with {folds} labelled rows each")
    rows = np.flatnonzero(np.isin(labels, classes))
    x = np.asarray(vectors[rows], dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    model = _model(len(rows), x.shape[1], folds, seed)
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, np.searchsorted(classes, labels[rows]))
    return model, classes
