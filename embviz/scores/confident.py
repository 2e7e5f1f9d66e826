"""Label issues by confident learning: per-class thresholds on out-of-fold predicted probabilities.

Northcutt et al.'s rule (cleanlab's ``confident_learning`` filter): class ``j``'s threshold is
the mean probability of ``j`` over the rows labelled ``j`` (how sure the model is, on average,
of its own class). A row is confidently of class ``j`` when ``p_j`` reaches that threshold;
among such classes it takes the most probable. A label is an issue when that class is another
one. Issues are ranked by self-confidence (the probability of the given label), lowest first.
"""

from __future__ import annotations

import numpy as np

from .labels import LabelIssues

__all__ = ["confident_issues", "class_thresholds"]


def class_thresholds(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """``(c,)`` per-class thresholds: mean ``proba[:, j]`` over rows labelled ``j`` with a
    prediction (NaN rows are skipped); inf for a class no such row has (never confident)."""
    labels = np.asarray(labels, dtype=np.int64)
    c = proba.shape[1]
    ok = (labels >= 0) & (labels < c) & np.isfinite(proba).all(axis=1)
    sums = np.zeros(c)
    np.add.at(sums, labels[ok], proba[ok, labels[ok]])
    counts = np.bincount(labels[ok], minlength=c)[:c]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_issues(labels: np.ndarray, proba: np.ndarray) -> LabelIssues:
    """Score every labelled row with a prediction by confident learning.

    Parameters
    ----------
    labels : int class codes ``(n,)``, -1 for unlabelled rows.
    proba : float ``(n, c)`` out-of-fold probabilities over the same codes (columns past a
        code the model never predicts are 0); NaN rows have no prediction.

    Returns a :class:`LabelIssues` whose ``score`` is in [0, 1]: above 0.5 exactly for the rows
    confident learning flags, and within each half ``(1 - p_label) / 2``, so sorting by score
    gives the flagged rows first, least self-confident first; NaN for unlabelled rows and rows
    without a prediction. ``suggested`` is the confident class of a flagged row, else the most
    probable class (-1 without a prediction). ``method`` is ``confident``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    n, c = proba.shape
    has = np.isfinite(proba).all(axis=1)
    p = np.where(has[:, None], proba, 0.0)
    thresholds = class_thresholds(labels, proba)
    above = p >= thresholds[None, :]
    masked = np.where(above, p, -1.0)
    confident = np.where(above.any(axis=1), masked.argmax(axis=1), -1)
    labelled = (labels >= 0) & has
    own = np.where(labelled & (labels < c), p[np.arange(n), np.clip(labels, 0, c - 1)], 0.0)
    flagged = labelled & (confident >= 0) & (confident != labels)
    score = np.where(labelled, (1.0 - own + flagged) / 2.0, np.nan).astype(np.float32)
    suggested = np.where(flagged, confident, np.where(has, p.argmax(axis=1), -1))
    return LabelIssues(score=score, suggested=suggested.astype(np.int64), method="confident")
