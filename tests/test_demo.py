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
    checkpoints = {f"cnn-epoch-{e:03d}.pooled" for e in range(5)}
    assert set(ds.embeddings) == {
        "efficientnet_lite0.blocks.5",
        "efficientnet_lite0.pooled",
        *checkpoints,
    }
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
    assert steps[:2] == ["ingest", "train"] and steps.count("embed") == 6
    assert steps.count("reduce") == 5 and steps.count("reduce_series") == 1


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


def test_demo_training_run_learns_and_its_maps_separate_the_digits(demo_dataset):
    """The demo's CNN reaches its test accuracy, and the aligned maps of its checkpoints get
    better at keeping the digits apart from the untrained one to the last."""
    import json

    from embviz.evolution import series_quality

    ds = open_dataset(demo_dataset)
    training = json.loads((ds.root / "checkpoints" / "training.json").read_text())
    accuracy = [e["test_accuracy"] for e in training["epochs"]]
    assert accuracy[-1] >= 0.93, f"test accuracy per epoch {accuracy}"  # 0.964 measured
    assert accuracy[0] < 0.3  # the untrained checkpoint guesses
    rows = series_quality(ds, "cnn-checkpoints.umap2d")
    assert [r["member"] for r in rows] == [f"epoch-{e:03d}" for e in range(5)]
    knn = [r["knn_map"] for r in rows]
    assert knn[-1] > knn[0] + 0.05, f"k-NN accuracy on the map per checkpoint {knn}"
    assert knn[-1] >= 0.95 and all(r["jump"] is not None for r in rows[1:])
