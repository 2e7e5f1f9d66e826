"""The demo's training run: the digit CNN learns the 5,000 real MNIST digits, its checkpoints
embed as a series, and their k-NN accuracy rises from the untrained net to the last epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embviz.dataset import Dataset, open_dataset
from embviz.errors import ConfigError, DatasetError
from embviz.pipeline.embed import embed
from embviz.pipeline.train_demo import TRAINING_FILE, train_cnn
from embviz.series import list_series

pytest.importorskip("torch")

#: Epochs the tests train (the demo trains 4: about 0.96 test accuracy; 2 reach about 0.95).
EPOCHS = 2


def copy_samples(
    src: Path, root: Path, *, split: str | None = None, every: int = 1, part_rows: int = 1000
) -> Dataset:
    """A new dataset at ``root`` whose samples are ``src``'s (its image files, not copies):
    all of them, those of one ``split``, or every ``every``-th row, ``part_rows`` a partition."""
    ds = Dataset.create(root)
    source = open_dataset(src)
    table = source.read_arrow("samples")
    if split is not None:
        import pyarrow.compute as pc

        table = table.filter(pc.equal(table["split"], split))
    table = table.take(np.arange(0, table.num_rows, every))
    writer = ds.writer("samples")
    for i, start in enumerate(range(0, table.num_rows, part_rows)):
        writer.write_part(i, table.slice(start, part_rows))
    writer.commit()
    return open_dataset(root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dataset):
    """The cnn trained on the demo's 5,000 digits (its train split), EPOCHS epochs."""
    ds = copy_samples(demo_dataset, tmp_path_factory.mktemp("train") / "ds")
    return ds, train_cnn(ds, "checkpoints", epochs=EPOCHS, seed=0, progress=False)


def test_trained_cnn_reaches_test_accuracy(trained):
    ds, result = trained
    accuracies = [e["test_accuracy"] for e in result.epochs]
    print(f"test accuracy per epoch: {accuracies}; seconds {[e['seconds'] for e in result.epochs]}")
    assert result.train_rows + result.test_rows == 5000 and result.test_rows > 900
    assert result.test_accuracy >= 0.9, accuracies
    assert accuracies[0] < 0.3  # the untrained, seeded net guesses
    losses = [e["train_loss"] for e in result.epochs[1:]]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.5
    names = [p.name for p in result.checkpoints]
    assert names == [f"epoch-{e:03d}.pt" for e in range(EPOCHS + 1)]
    assert result.out_dir == ds.root / "checkpoints" and not result.reused
    record = json.loads((result.out_dir / TRAINING_FILE).read_text())
    assert record["finished"] and record["options"]["epochs"] == EPOCHS
    import torch

    state = torch.load(result.checkpoints[-1], map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert [s["step"] for s in open_dataset(ds.root).manifest["steps"]] == ["train"]


def test_rerun_is_reused_and_files_kept(trained):
    ds, first = trained
    stamps = [p.stat().st_mtime_ns for p in first.checkpoints]
    again = train_cnn(ds, "checkpoints", epochs=EPOCHS, seed=0, progress=False)
    assert again.reused and again.epochs == first.epochs
    assert [p.stat().st_mtime_ns for p in again.checkpoints] == stamps


def _knn_accuracy(vectors, labels) -> float:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(KNeighborsClassifier(10), vectors, labels, cv=folds).mean())


def test_knn_accuracy_rises_over_the_checkpoints(trained, demo_dataset, tmp_path):
    """Each checkpoint's embedding of the test digits (never trained on), 10-NN accuracy
    cross-validated within them: the classes separate as training goes on."""
    _, result = trained
    test_ds = copy_samples(demo_dataset, tmp_path / "test", split="test")
    out = embed(test_ds, model="cnn", checkpoints=result.out_dir, batch_size=256, progress=False)
    assert out.series == ["cnn-checkpoints"] and len(out.tables) == EPOCHS + 1
    ds = open_dataset(test_ds.root)
    members = list_series(ds)["cnn-checkpoints"]
    assert [m.member for m in members] == [p.stem for p in result.checkpoints]
    labels = ds.read_pandas("samples", columns=["id", "label"]).set_index("id")["label"]
    accuracy = []
    for member in members:
        ids, vectors = ds.read_vectors(member.key)
        assert vectors.shape == (result.test_rows, 64)
        accuracy.append(_knn_accuracy(vectors, labels.loc[ids].to_numpy()))
    print(f"10-NN accuracy per checkpoint: {[round(a, 3) for a in accuracy]}")
    assert accuracy[-1] > accuracy[0] + 0.05, accuracy
    assert accuracy[-1] >= 0.9, accuracy


@pytest.fixture(scope="module")
def small(tmp_path_factory, demo_dataset):
    """300 of the demo's digits (both splits), a quick dataset to train on."""
    return copy_samples(demo_dataset, tmp_path_factory.mktemp("small") / "ds", every=16)


def test_same_seed_same_checkpoints_other_options_retrain(small):
    import torch

    a = train_cnn(small, "a", epochs=1, seed=3, progress=False)
    b = train_cnn(small, "b", epochs=1, seed=3, progress=False)
    for pa, pb in zip(a.checkpoints, b.checkpoints, strict=True):
        sa, sb = (torch.load(p, weights_only=True) for p in (pa, pb))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.epochs[1]["train_loss"] == b.epochs[1]["train_loss"]
    c = train_cnn(small, "a", epochs=2, seed=3, progress=False)  # other options: trains again
    assert not c.reused and [p.name for p in c.checkpoints][-1] == "epoch-002.pt"
    d = train_cnn(small, "a", epochs=1, seed=3, progress=False)  # fewer: no stale epoch-002
    assert sorted(p.name for p in d.out_dir.glob("*.pt")) == ["epoch-000.pt", "epoch-001.pt"]


def test_train_refuses_bad_input(small, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "epoch-001.pt").write_bytes(b"someone else's")
    with pytest.raises(DatasetError, match="training.json"):
        train_cnn(small, foreign, epochs=1, progress=False)
    assert (foreign / "epoch-001.pt").read_bytes() == b"someone else's"
    only_test = copy_samples(small.root, tmp_path / "only-test", split="test")
    with pytest.raises(DatasetError, match="no samples with split 'train'"):
        train_cnn(only_test, epochs=1, progress=False)


def test_recipe_trains_before_embedding_the_checkpoints(tmp_path):
    """``embviz build`` with a train step: ingest, train, then embed every checkpoint."""
    from embviz.config import load_recipe
    from embviz.pipeline.build import build

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"dataset: {tmp_path / 'ds'}\n"
        f"source: {{kind: mnist, path: {tmp_path / 'images'}, limit: 200}}\n"
        "train: {model: cnn, epochs: 1, out: ckpt}\n"
        "embed:\n  - {model: cnn, checkpoints: ckpt, batch_size: 128}\n"
    )
    result = build(recipe, progress=False)
    ds = open_dataset(result.dataset)
    assert [m.member for m in list_series(ds)["cnn-checkpoints"]] == ["epoch-000", "epoch-001"]
    assert [s["step"] for s in ds.manifest["steps"]] == ["ingest", "train", "embed", "embed"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: d\nsource: {path: x}\ntrain: {model: efficientnet_lite0}\n")
    with pytest.raises(ConfigError, match="valid models: \\['cnn'\\]"):
        load_recipe(bad)


def test_cli_train(small, tmp_path, monkeypatch, capsys):
    from embviz.pipeline.cli import main

    monkeypatch.chdir(tmp_path)  # --out is relative to the working directory
    assert main(["-q", "train", str(small.root), "--epochs", "1", "--out", "ck"]) == 0
    printed = capsys.readouterr()
    out = json.loads(printed.out)
    assert Path(out["out_dir"]) == tmp_path / "ck" and len(out["checkpoints"]) == 2
    assert "test accuracy" in printed.err
