"""The ``score`` step: writes the scores table and reuses it, survives interruption, runs from the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from embviz.dataset import Dataset, open_dataset, vectors_to_table
from embviz.errors import DatasetError
from embviz.samples import read_sample_columns


@pytest.fixture
def toy(tmp_path):
    """330 samples in 3 classes with an 8-D embedding ``toy.pooled``; ids 1000..1329.

    Rows 300-309 are byte copies of rows 0-9 (same content hash, same vector), rows 310-319
    near copies of rows 10-19 (vector nudged 0.01), rows 320-329 unlabelled; rows 0-14 of
    class c0 carry label c1 (flipped).
    """
    n = 330
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=3.0, size=(3, 8)).astype(np.float32)
    y = np.arange(n) % 3
    x = centres[y] + rng.normal(size=(n, 8)).astype(np.float32)
    x[300:310], y[300:310] = x[0:10], y[0:10]
    x[310:320] = x[10:20] + 0.01
    y[310:320] = y[10:20]
    labels = np.array([f"c{v}" for v in y], dtype=object)
    flips = np.flatnonzero(y[:300] == 0)[:15]
    labels[flips] = "c1"
    labels[320:] = None
    hashes = [f"h{i}" for i in range(n)]
    hashes[300:310] = hashes[0:10]
    ids = np.arange(n) + 1000
    ds = Dataset.create(tmp_path / "toy", name="toy")
    w = ds.writer("samples")
    w.write_part(
        0, pa.table({"id": ids[:200], "label": labels[:200], "content_hash": hashes[:200]})
    )
    w.write_part(
        1, pa.table({"id": ids[200:], "label": labels[200:], "content_hash": hashes[200:]})
    )
    w.commit()
    w = ds.writer("embeddings/toy.pooled")
    w.write_part(0, vectors_to_table(ids, x))
    w.commit(meta={"model": "toy", "layer": "pooled"})
    return ds, flips


def test_score_step_writes_a_scores_table_and_reuses_it(toy):
    from embviz.pipeline.score import score

    ds, flips = toy
    r = score(ds, k=8, clusters=3, progress=False)  # runs the index step first
    assert not r.reused and r.rows == 330 and r.embedding == "toy.pooled" and r.k == 8
    assert r.clusters == 3 and r.pixel_check is False  # no thumbnails in this dataset
    assert r.exact_groups == 10 and r.near_groups == 10 and r.duplicates == 40
    assert r.label_method == "knn+classifier" and r.near_threshold > 0
    ds = open_dataset(ds.root)
    entry = ds.table("scores")
    assert entry["rows"] == 330 and [p["rows"] for p in entry["partitions"]] == [200, 130]
    assert entry["columns"] == {
        "id": "int64",
        "outlier_score": "float",
        "uniqueness": "float",
        "label_issue_score": "float",
        "suggested_label": "string",
        "duplicate_group": "int64",
        "duplicate_kind": "string",
        "cluster": "string",
    }
    cols = read_sample_columns(
        ds, ["label", "label_issue_score", "suggested_label", "duplicate_group", "duplicate_kind"]
    ).to_pandas()
    assert cols["id"].tolist() == list(range(1000, 1330))
    issue = cols["label_issue_score"]
    assert issue[320:].isna().all() and issue[:320].notna().all()
    top = set(issue.sort_values(ascending=False).index[:15])
    assert len(top & set(flips)) >= 12
    assert (cols["suggested_label"][flips] == "c0").mean() >= 0.9
    group, kind = cols["duplicate_group"], cols["duplicate_kind"]
    for i in range(10):
        assert group[i] == group[300 + i] >= 0 and kind[i] == kind[300 + i] == "exact"
        assert group[10 + i] == group[310 + i] >= 0 and kind[310 + i] == "near"
    assert (group[20:300] == -1).all() and kind[20:300].isna().all()
    clusters = read_sample_columns(ds, ["cluster", "outlier_score"]).to_pandas()
    assert set(clusters["cluster"]) == {"0", "1", "2"}
    assert clusters["outlier_score"].between(0, 1).all()
    steps = ds.manifest["steps"]
    assert [s["step"] for s in steps] == ["index", "score"]
    assert steps[-1]["params"]["k"] == 8 and steps[-1]["result"]["exact_groups"] == 10

    again = score(ds, k=8, clusters=3, progress=False)
    assert again.reused and again.exact_groups == 10
    assert open_dataset(ds.root).table("scores")["dir"] == entry["dir"]
    forced = score(ds, k=8, clusters=3, force=True, progress=False)
    assert not forced.reused and open_dataset(ds.root).table("scores")["dir"] != entry["dir"]
    other = score(ds, k=8, clusters=2, progress=False)  # another option: recomputed
    assert not other.reused and other.clusters == 2


def test_an_interrupted_score_run_leaves_the_previous_table(toy, monkeypatch):
    from embviz.dataset import TableWriter
    from embviz.pipeline.score import score

    ds, _ = toy
    score(ds, k=5, clusters=3, progress=False)
    before = open_dataset(ds.root).table("scores")

    def killed(self, meta=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(TableWriter, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        score(ds, k=5, clusters=4, progress=False)
    after = open_dataset(ds.root)  # validates the manifest and that every file exists
    assert after.table("scores") == before
    assert read_sample_columns(after, ["cluster"]).num_rows == 330
    assert not list(ds.root.glob(".scores.staging*"))


def test_score_step_knn_only_and_a_fixed_threshold(toy):
    from embviz.pipeline.score import score

    ds, _ = toy
    r = score(ds, k=5, label_method="knn", near_threshold=0.0, progress=False)
    assert r.label_method == "knn" and r.near_threshold == 0.0
    assert r.exact_groups == 10 and r.near_groups == 0  # 0.01 nudges are above 0


def test_score_step_names_an_unknown_embedding(toy):
    from embviz.pipeline.score import score

    ds, _ = toy
    with pytest.raises(DatasetError, match=r"nope\.pooled.*toy\.pooled"):
        score(ds, embedding="nope.pooled", progress=False)


def test_cli_score(toy, capsys):
    from embviz.pipeline.cli import main

    ds, _ = toy
    assert main(["-q", "score", str(ds.root), "-k", "6", "--clusters", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 330 and out["clusters"] == 4 and out["k"] == 6
    assert main(["-q", "score", str(ds.root), "--embedding", "nope.pooled"]) == 2
    err = capsys.readouterr().err
    assert "embviz score: error" in err and "nope.pooled" in err and "toy.pooled" in err


@pytest.mark.slow
def test_score_step_on_the_real_demo(demo_dataset, tmp_path):
    """The real pipeline on real images: the demo's digits, EfficientNet-Lite0 blocks.5."""
    from embviz.pipeline.score import score

    root = tmp_path / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache"))
    r = score(root, embedding="efficientnet_lite0.blocks.5", force=True, progress=False)
    assert r.rows == 5000 and r.clusters == 20 and r.pixel_check is True
    ds = open_dataset(root)
    # The demo recipe runs the predict step first: its out-of-fold probe, confident learning.
    assert r.label_method == ("confident" if ds.has("predictions") else "knn+classifier")
    cols = read_sample_columns(
        ds, ["label", "label_issue_score", "suggested_label", "outlier_score", "cluster"]
    ).to_pandas()
    assert cols["label_issue_score"].notna().all()  # every digit has a label
    # The classifier and the neighbours agree with most labels ...
    assert (cols["suggested_label"] == cols["label"]).mean() >= 0.85
    # ... and the highest label-issue scores are where they disagree.
    top = cols.sort_values("label_issue_score", ascending=False).head(100)
    assert (top["suggested_label"] != top["label"]).mean() >= 0.8
    assert cols["cluster"].nunique() == 20
    # Clusters follow the digits: each cluster's commonest label covers most of it.
    purity = cols.groupby("cluster")["label"].agg(lambda s: s.value_counts().iloc[0] / len(s))
    assert purity.mean() >= 0.6
