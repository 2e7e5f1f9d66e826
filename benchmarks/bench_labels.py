"""Label-issue precision on planted flips in the MNIST demo: the old blend against confident learning.

A flipped label does not change the image, so the demo's embedding and neighbours are reused
and only the labels are planted: ``random`` flips send 5% of the digits to a random other
class; ``systematic`` flips swap look-alike pairs (4<->9, 3<->5, 1<->7), the hard case (a
whole class drifts towards another). For each, the precision among the top N scores (N = the
number planted) of the score step's former method (neighbour vote + cross-validated probe,
averaged) and of the ``predict`` step's out-of-fold probe with confident learning.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

#: Look-alike digit pairs of the systematic flips.
PAIRS = (("4", "9"), ("3", "5"), ("1", "7"))


def _demo(work: Path) -> Path:
    given = os.environ.get("EMBVIZ_DEMO_DATASET")
    if given:
        return Path(given)
    out = work / "labels-demo"
    if not (out / "dataset" / "manifest.json").exists():
        from embviz.config import load_recipe
        from embviz.pipeline.build import build
        from embviz.pipeline.demo import DEMO_RECIPE

        recipe = load_recipe(DEMO_RECIPE)
        recipe.source.path = str(out / "images")
        build(recipe, dataset=out / "dataset", progress=False)
    return out / "dataset"


def _plant(labels: np.ndarray, names: list[str], kind: str, n: int, rng) -> np.ndarray:
    """Rows whose label code is changed in place (``labels`` is modified)."""
    if kind == "random":
        rows = rng.choice(len(labels), n, replace=False)
        for r in rows:
            others = [c for c in range(len(names)) if c != labels[r]]
            labels[r] = rng.choice(others)
        return rows
    code = {v: i for i, v in enumerate(names)}
    partner = {}
    for a, b in PAIRS:
        partner[code[a]], partner[code[b]] = code[b], code[a]
    pool = np.flatnonzero(np.isin(labels, list(partner)))
    rows = rng.choice(pool, n, replace=False)
    labels[rows] = [partner[int(c)] for c in labels[rows]]
    return rows


def _precision(score: np.ndarray, planted: np.ndarray) -> float:
    top = np.argsort(-np.nan_to_num(score, nan=-1.0), kind="stable")[: len(planted)]
    return float(np.isin(top, planted).mean())


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """``labels.issue_precision_at_n`` per flip kind and method, ``labels.probe_accuracy``
    (out-of-fold, on the clean labels) and ``labels.seconds`` per method."""
    from embviz import scores as sc
    from embviz.dataset import open_dataset
    from embviz.pipeline.index import neighbour_matrix
    from embviz.scores.probe import probe_proba

    ds = open_dataset(_demo(work))
    embedding = "efficientnet_lite0.blocks.5"
    samples = ds.read_pandas("samples", columns=["id", "label"])
    ids = samples["id"].to_numpy()
    names = sorted(samples["label"].astype(str).unique())
    clean = np.searchsorted(names, samples["label"].astype(str).to_numpy()).astype(np.int64)
    vid, vecs = ds.read_vectors(f"embeddings/{embedding}")
    vectors = vecs[sc.neighbour_rows(ids, vid)]
    nbr, dist = neighbour_matrix(ds, embedding, ids, k=10)
    n = max(10, len(ids) // 20)  # 5% of the rows, 250 of the demo's 5,000
    records: list[dict] = []

    def add(name: str, value: float, unit: str, **params) -> None:
        records.append({"name": name, "params": params, "value": value, "unit": unit})

    base = probe_proba(vectors, clean, seed=0, predict_unlabelled=False)
    add("labels.probe_accuracy", base.accuracy, "fraction", embedding=embedding, rows=len(ids))
    for kind in ("random", "systematic"):
        labels = clean.copy()
        planted = _plant(labels, names, kind, n, np.random.default_rng(1))
        t0 = time.perf_counter()
        blend = sc.label_issues(labels, nbr, dist, vectors=vectors, method="classifier")
        t_blend = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe = probe_proba(vectors, labels, seed=0, predict_unlabelled=False)
        proba = np.full((len(labels), len(names)), np.nan, dtype=np.float32)
        rows = probe.fold >= 0
        proba[rows] = 0.0
        proba[np.ix_(rows, probe.classes)] = probe.proba[rows]
        confident = sc.confident_issues(labels, proba)
        t_cl = time.perf_counter() - t0
        flagged = int((confident.score > 0.5).sum())
        for method, score, secs in (
            ("knn+probe blend", blend.score, t_blend),
            ("confident learning", confident.score, t_cl),
        ):
            add(
                "labels.issue_precision_at_n",
                _precision(score, planted),
                "fraction",
                flips=kind,
                method=method,
                n=n,
            )
            add("labels.seconds", secs, "s", flips=kind, method=method)
        add("labels.flagged", flagged, "rows", flips=kind, planted=n)
    return records
