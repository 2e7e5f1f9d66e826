"""The predict step: top-k from probabilities, an out-of-fold probe, confident learning, the table."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from embviz.dataset import open_dataset
from embviz.errors import DatasetError
from embviz.predictions import proba_matrix, read_top_k, summarize
from embviz.scores import confident_issues
from embviz.scores.probe import probe_proba


def _blobs(n: int, *, dim: int = 16, classes: int = 5, seed: int = 0, scale: float = 0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = np.arange(n) % classes
    return (centres[y] + rng.normal(scale=scale, size=(n, dim))).astype(np.float32), y


def test_top_k_follows_the_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = [f"c{i}" for i in range(7)]
    labels = [names[i % 7] for i in range(49)] + [None]
    t = summarize(np.arange(50) + 100, proba, names, labels, k=3).to_pandas()
    order = np.argsort(-proba, axis=1)
    for i, row in t.iterrows():
        assert list(row.top_labels) == [names[j] for j in order[i, :3]]
        np.testing.assert_allclose(row.top_probs, proba[i, order[i, :3]], rtol=1e-6)
        assert row.predicted_label == names[order[i, 0]]
        assert row.confidence == pytest.approx(proba[i, order[i, 0]], rel=1e-6)
        assert row.margin == pytest.approx(proba[i, order[i, 0]] - proba[i, order[i, 1]], rel=1e-5)
        h = -(proba[i] * np.log(proba[i])).sum() / np.log(7)
        assert row.entropy == pytest.approx(h, rel=1e-5) and 0 <= row.entropy <= 1
    assert t.correct.iloc[:49].tolist() == [labels[i] == t.predicted_label[i] for i in range(49)]
    assert pd.isna(t.correct.iloc[49])  # no label: neither right nor wrong
    with pytest.raises(ValueError, match="3 class names for 7"):
        summarize(np.arange(50), proba, names[:3])


def test_probe_predicts_each_sample_with_a_model_that_never_saw_it():
    from sklearn.base import clone

    from embviz.scores import probe as probe_mod

    x, y = _blobs(600, seed=1)
    labels = y.copy()
    labels[550:] = -1  # unlabelled: predicted by the model fitted on every label
    found = probe_proba(x, labels, folds=4, seed=0)
    assert set(np.unique(found.fold[:550])) == {0, 1, 2, 3} and (found.fold[550:] == -1).all()
    assert found.accuracy > 0.9 and np.isfinite(found.proba).all()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    base = probe_mod._model(550, x.shape[1], 4, 0)
    for f in range(4):
        held = np.flatnonzero(found.fold == f)
        train = np.flatnonzero((found.fold >= 0) & (found.fold != f))
        assert not np.intersect1d(held, train).size
        model = clone(base).fit(xn[train], labels[train])  # the fold model, refitted
        np.testing.assert_allclose(model.predict_proba(xn[held]), found.proba[held], atol=1e-5)


def test_confident_learning_flags_planted_flips_and_ranks_them_first():
    x, y = _blobs(1000, seed=2)
    labels = y.copy()
    rng = np.random.default_rng(3)
    flips = rng.choice(1000, 50, replace=False)
    labels[flips] = (y[flips] + rng.integers(1, 5, 50)) % 5
    found = probe_proba(x, labels, folds=5, seed=0)
    issues = confident_issues(labels, found.proba)
    flagged = np.flatnonzero(issues.score > 0.5)
    # Confident learning is conservative: what it flags is nearly all planted (measured 42 of
    # 42 here), and it flags most of them (42 of 50).
    assert np.isin(flagged, flips).mean() >= 0.9 and np.isin(flips, flagged).mean() >= 0.75
    top = np.argsort(-issues.score)[:50]
    assert np.isin(top, flips).mean() >= 0.9  # precision at N = planted
    assert (issues.suggested[flips] == y[flips]).mean() >= 0.9  # the true class is suggested


def test_predict_step_on_the_demo(demo_dataset, tmp_path):
    from embviz.pipeline.predict import predict
    from embviz.pipeline.score import score

    root = tmp_path / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache"))
    # The demo recipe runs predict already: compute again (force) to check the step itself.
    r = predict(root, embedding="efficientnet_lite0.blocks.5", force=True, progress=False)
    assert r.rows == 5000 and r.classes == 10
    assert r.accuracy > 0.85  # out-of-fold probe accuracy on the demo's digits: reported
    ds = open_dataset(root)
    assert ds.meta("predictions")["source"] == "probe"
    t = ds.read_pandas("predictions")
    s = ds.read_pandas("samples", columns=["id", "label"])
    assert t.id.tolist() == s.id.tolist()
    confusion = pd.crosstab(s.label, t.predicted_label)
    assert confusion.to_numpy().sum() == len(s)  # every sample in one cell
    assert np.trace(confusion.to_numpy()) / len(s) == pytest.approx(r.accuracy, abs=1e-3)
    assert t.correct.mean() == pytest.approx(r.accuracy, abs=1e-3)
    top = read_top_k(ds, int(s.id[0]))
    assert len(top) == 10 and top[0][0] == t.predicted_label[0]
    assert [p for _, p in top] == sorted([p for _, p in top], reverse=True)
    proba = proba_matrix(ds, s.id.to_numpy(), [str(d) for d in range(10)])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    assert predict(root, embedding="efficientnet_lite0.blocks.5").reused
    # The score step takes the predictions' probabilities: confident learning.
    assert score(root, embedding="efficientnet_lite0.blocks.5").label_method == "confident"


def test_predict_refuses_what_it_cannot_do(tmp_path, demo_dataset):
    from embviz.pipeline.predict import predict

    with pytest.raises(ValueError, match="unknown prediction source 'logits'"):
        predict(demo_dataset, source="logits")
    with pytest.raises(ValueError, match="folds must be >= 2"):
        predict(demo_dataset, folds=1)
    with pytest.raises(DatasetError, match="no embedding table"):
        predict(demo_dataset, embedding="nope")
