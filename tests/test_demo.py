"""End to end with the real default model on the 5,000 real MNIST digits: the demo recipe."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from embviz.dataset import open_dataset

pytestmark = pytest.mark.slow

UMAP2D = "efficientnet_lite0.blocks.5.umap2d"


def knn_accuracy(coords, labels, k=10):
    """k-NN label accuracy over shuffled folds (rows are Hilbert-sorted: unshuffled folds are regions)."""
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_score(KNeighborsClassifier(k), coords, labels, cv=folds).mean()


def _labelled(ds, projection):
    labels = ds.read_pandas("samples", columns=["id", "label"]).set_index("id")["label"]
    proj = ds.read_pandas(f"projections/{projection}")
    coords = proj[[c for c in ("x", "y", "z") if c in proj]].to_numpy()
    return proj["id"].to_numpy(), coords, labels.loc[proj["id"]].to_numpy()


def test_demo_dataset_is_complete(demo_dataset):
    ds = open_dataset(demo_dataset)
    assert ds.table("samples")["rows"] == 5000
    samples = ds.read_pandas("samples")
    assert set(samples["label"]) == {str(d) for d in range(10)}
    assert set(samples["split"]) == {"train", "test"}
    assert samples["content_hash"].notna().all()
    assert set(ds.embeddings) == {"efficientnet_lite0.blocks.5", "efficientnet_lite0.pooled"}
    meta = ds.meta("embeddings/efficientnet_lite0.pooled")
    assert meta["dim"] == 1280 and len(meta["weights_sha256"]) == 64
    ids, vectors = ds.read_vectors("efficientnet_lite0.pooled")
    assert (
        vectors.dtype == np.float32 and vectors.shape == (5000, 1280) and np.isfinite(vectors).all()
    )
    assert sorted(ids.tolist()) == list(range(5000))
    for name in (UMAP2D, "efficientnet_lite0.blocks.5.umap3d", "efficientnet_lite0.blocks.5.pca2d"):
        entry = ds.table(f"projections/{name}")
        assert entry["rows"] == 5000 and entry["meta"]["curve"] == "hilbert"
        assert all("bounds" in p for p in entry["partitions"])
    steps = [s["step"] for s in ds.manifest["steps"]]
    assert steps[0] == "ingest" and steps.count("embed") == 1 and steps.count("reduce") == 5


def test_demo_umap_keeps_digit_classes_apart(demo_dataset):
    ds = open_dataset(demo_dataset)
    ids, xy, labels = _labelled(ds, UMAP2D)
    assert xy.shape == (5000, 2) and np.isfinite(xy).all()
    acc = knn_accuracy(xy, labels)
    assert acc >= 0.8, f"10-NN label accuracy in 2D is {acc:.3f}"
    vec_ids, vectors = ds.read_vectors("efficientnet_lite0.blocks.5")
    order = np.argsort(vec_ids)[np.searchsorted(np.sort(vec_ids), ids)]
    trust = trustworthiness(vectors[order], xy, n_neighbors=10)
    assert trust >= 0.9, f"trustworthiness {trust:.3f}"


def test_demo_3d_projection_also_separates(demo_dataset):
    ds = open_dataset(demo_dataset)
    _, xyz, labels = _labelled(ds, "efficientnet_lite0.blocks.5.umap3d")
    assert xyz.shape == (5000, 3)
    assert knn_accuracy(xyz, labels) >= 0.8
