"""Curation scores: planted outliers, label flips and clusters are found (:mod:`embviz.scores`)."""

from __future__ import annotations

import numpy as np
import pytest

from embviz import scores
from embviz.dataset import open_dataset
from embviz.index import NeighbourIndex
from embviz.samples import read_sample_columns


def _blobs(n: int, *, dim: int = 16, classes: int = 5, seed: int = 0):
    """Unit-norm points around ``classes`` random directions, and their class of each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = np.arange(n) % classes
    x = centres[y] + rng.normal(scale=0.25, size=(n, dim))
    return x.astype(np.float32), y


def _neighbours(x: np.ndarray, k: int):
    """Neighbour rows and cosine distances of every row (ids are row numbers)."""
    return NeighbourIndex.build(np.arange(len(x)), x).neighbours(k)


def _top(values: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(-np.where(np.isfinite(values), values, -np.inf), kind="stable")[:n]


# -- outliers and uniqueness -------------------------------------------------------------------
def test_planted_outliers_rank_highest():
    x, _ = _blobs(2000)
    rng = np.random.default_rng(1)
    far = rng.normal(size=(20, 16)).astype(np.float32) * 3  # anywhere: off every blob
    x = np.concatenate([x, far])
    nbr, dist = _neighbours(x, 10)
    for method in scores.OUTLIER_METHODS:
        s = scores.outlier_scores(nbr, dist, method=method)
        assert s.dtype == np.float32 and s.min() == 0.0 and s.max() == 1.0
        recall = np.isin(_top(s, 20), np.arange(2000, 2020)).mean()
        assert recall >= (0.9 if method == "knn" else 0.7), (method, recall)


def test_rows_without_neighbours_get_nan():
    nbr = np.array([[1, 2], [0, 2], [0, 1], [-1, -1]])
    dist = np.array([[0.1, 0.2], [0.1, 0.3], [0.2, 0.3], [np.inf, np.inf]], np.float32)
    out = scores.outlier_scores(nbr, dist)
    assert np.isnan(out[3]) and np.isfinite(out[:3]).all()
    u = scores.uniqueness(dist)
    assert np.isnan(u[3]) and u[:3].max() == pytest.approx(1.0)
    np.testing.assert_allclose(
        scores.rank01(np.array([3.0, np.nan, 1.0, 2.0])), [1, np.nan, 0, 0.5]
    )


def test_uniqueness_is_zero_for_a_copy_and_one_for_the_loneliest():
    x, _ = _blobs(300)
    x = np.concatenate([x, x[:1]])  # row 300 copies row 0
    nbr, dist = _neighbours(x, 5)
    u = scores.uniqueness(dist)
    assert u.dtype == np.float32 and u.min() >= 0.0 and u.max() == pytest.approx(1.0)
    # Weights 0.6, 0.3, 0.1: the copy's nearest (weight 0.6) is at distance 0.
    assert u[300] < np.median(u) and u[0] < np.median(u)


# -- label issues ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flipped():
    """1,000 points in 5 classes, 5% of labels flipped, 20 more rows unlabelled."""
    x, y = _blobs(1020, seed=2)
    rng = np.random.default_rng(3)
    labels = y.copy()
    flips = rng.choice(1000, 50, replace=False)
    labels[flips] = (y[flips] + rng.integers(1, 5, 50)) % 5
    labels[1000:] = -1
    nbr, dist = _neighbours(x, 10)
    return x, y, labels, flips, nbr, dist


@pytest.mark.parametrize("method", ["knn", "classifier"])
def test_planted_label_flips_are_found_and_fixed(flipped, method):
    x, y, labels, flips, nbr, dist = flipped
    found = scores.label_issues(labels, nbr, dist, vectors=x, method=method)
    assert found.method == ("knn" if method == "knn" else "knn+classifier")
    s = found.score
    assert s.dtype == np.float32 and np.isnan(s[1000:]).all() and np.isfinite(s[:1000]).all()
    assert np.nanmin(s) >= 0.0 and np.nanmax(s) <= 1.0
    recall = np.isin(flips, _top(s, 50)).mean()
    assert recall >= 0.8, recall
    assert (found.suggested[flips] == y[flips]).mean() >= 0.9
    # Unlabelled rows still get the label their neighbours vote for.
    assert (found.suggested[1000:] == y[1000:]).mean() >= 0.9


def test_a_model_prediction_is_blended_in(flipped):
    x, y, labels, flips, nbr, dist = flipped
    base = scores.label_issues(labels, nbr, dist, method="knn")
    kept = np.setdiff1d(np.arange(1000), flips)
    # A confident model that agrees with the truth keeps the flips on top and lowers the rest ...
    truth = scores.label_issues(
        labels, nbr, dist, method="knn", prediction=y, confidence=np.full(len(y), 0.9)
    )
    assert truth.method == "knn+prediction"
    assert (
        np.isin(flips, _top(truth.score, 50)).mean() >= np.isin(flips, _top(base.score, 50)).mean()
    )
    assert truth.score[kept].mean() < 0.15
    # ... one that agrees with the given labels speaks for them, flips included.
    given = scores.label_issues(labels, nbr, dist, method="knn", prediction=labels)
    assert given.score[flips].mean() < 0.6 * base.score[flips].mean()
    # ... and a prediction alone is evidence for a row with no labelled neighbour.
    alone = scores.label_issues(
        np.array([0, 1]),
        np.full((2, 1), -1),
        np.full((2, 1), np.inf, np.float32),
        prediction=np.array([0, 0]),
    )
    np.testing.assert_allclose(alone.score, [0.0, 1.0])
    assert alone.suggested.tolist() == [0, 0]


def test_unknown_label_method_lists_the_valid_ones(flipped):
    _, _, labels, _, nbr, dist = flipped
    with pytest.raises(ValueError, match="knn, classifier"):
        scores.label_issues(labels, nbr, dist, method="forest")


# -- clusters ----------------------------------------------------------------------------------
def test_clusters_are_found_and_named_largest_first():
    x, y = _blobs(600, classes=4, seed=5)
    x = np.concatenate([x, x[y == 0][:50]])  # class 0 is the largest
    y = np.concatenate([y, np.zeros(50, int)])
    centroids = scores.fit_centroids(x, k=4, seed=0)
    codes, names = scores.cluster_names(scores.assign_clusters(x, centroids), 4)
    assert names == ["0", "1", "2", "3"] and len(np.unique(codes)) == 4
    assert (codes[y == 0] == 0).mean() > 0.95  # the largest cluster is "0"
    # Each cluster is one class.
    purity = np.mean([np.bincount(y[codes == c]).max() / (codes == c).sum() for c in range(4)])
    assert purity > 0.95
    assert scores.cluster_names(np.array([0, 11, -1]), 12)[1][:2] == ["00", "01"]
    assert scores.cluster_names(np.array([0, 11, -1]), 12)[0][2] == -1
    assert [scores.default_clusters(n) for n in (10, 100, 999, 5000, 10**7)] == [1, 2, 19, 20, 20]
    assert len(scores.fit_centroids(x[:3], k=20)) == 3  # capped at the row count


# -- label issues through build ---------------------------------------------------------------
def test_build_runs_index_and_score_with_a_model_prediction(tmp_path):
    from embviz.pipeline.build import build

    x, y = _blobs(200, classes=4, seed=7)
    labels = y.copy()
    labels[:10] = (y[:10] + 1) % 4  # flipped; the model's prediction is the truth
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "meta.csv").write_text(
        "label,prediction,confidence\n"
        + "".join(f"c{a},c{b},0.9\n" for a, b in zip(labels, y, strict=True))
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"dataset: {tmp_path / 'ds'}\n"
        f"source: {{path: {tmp_path / 'v.npy'}, kind: vectors, metadata: {tmp_path / 'meta.csv'}}}\n"
        "index: [{k: 5}]\nscore: {k: 5, clusters: 4}\n"
    )
    built = build(recipe, progress=False)
    assert [type(s).__name__ for s in built.steps] == ["IngestResult", "IndexResult", "ScoreResult"]
    result = built.steps[-1]
    assert result.label_method == "knn+classifier+prediction" and result.embedding == "user"
    assert result.exact_groups == 0 and result.pixel_check is False  # vectors: no hash, no image
    ds = open_dataset(built.dataset)
    assert [s["step"] for s in ds.manifest["steps"]] == ["ingest", "index", "score"]
    cols = read_sample_columns(ds, ["label_issue_score", "suggested_label"]).to_pandas()
    top = cols["label_issue_score"].sort_values(ascending=False).index[:10]
    assert len(set(top) & set(range(10))) >= 9
    assert (cols["suggested_label"][:10] == [f"c{v}" for v in y[:10]]).all()
