"""Tests of the embed step: vectors for every sample, aligned partitions, resume after SIGKILL, Dask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from embviz.dataset import Dataset, open_dataset
from embviz.errors import DatasetError, ModelError
from embviz.pipeline.embed import embed, list_layers

pytest.importorskip("torch")

TINY = "timm:test_efficientnet?pretrained=false"  # 0.4M random (seeded) weights
FAST = {"model": TINY, "image_size": 32, "batch_size": 16, "progress": False}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pngs(tmp_path_factory, mnist_small):
    """200 real MNIST digits as PNG files, with their labels."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    images, labels = mnist_small
    pick = np.arange(0, 400, 2)[:200]  # every other digit: all ten classes
    paths = []
    for i in pick:
        path = folder / f"{i:04d}.png"
        Image.fromarray(images[i]).save(path)
        paths.append(str(path))
    return paths, [str(v) for v in labels[pick]]


def make_dataset(root: Path, paths, labels, *, parts: int = 4) -> Dataset:
    """A dataset whose samples table lists ``paths`` in ``parts`` equal partitions."""
    import pyarrow as pa

    ds = Dataset.create(root)
    writer = ds.writer("samples")
    for i, chunk in enumerate(np.array_split(np.arange(len(paths)), parts)):
        n = len(chunk)
        writer.write_part(
            i,
            pa.table(
                {
                    "id": pa.array(chunk, pa.int64()),
                    "uri": pa.array([paths[j] for j in chunk], pa.string()),
                    "label": pa.array([labels[j] for j in chunk], pa.string()),
                    "split": pa.array(["train"] * n, pa.string()),
                    "width": pa.array([28] * n, pa.int32()),
                    "height": pa.array([28] * n, pa.int32()),
                    "content_hash": pa.array([f"h{j}" for j in chunk], pa.string()),
                    "thumb_id": pa.array(chunk, pa.int64()),
                }
            ),
        )
    writer.commit()
    return open_dataset(root)


@pytest.fixture
def dataset(tmp_path, pngs):
    return make_dataset(tmp_path / "ds", *pngs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pngs):
    """``(ids, vectors)`` of an uninterrupted local run with the tiny model."""
    ds = make_dataset(tmp_path_factory.mktemp("ref") / "ds", *pngs)
    result = embed(ds, **FAST)
    return ds.read_vectors(result.tables[0])


def test_embed_writes_aligned_float32_vectors(dataset, pngs, reference):
    result = embed(dataset, layers=["pooled", "blocks.2"], reshape="mean", **FAST)
    assert result.tables == [
        "embeddings/timm-test_efficientnet-pretrained-false.pooled",
        "embeddings/timm-test_efficientnet-pretrained-false.blocks.2",
    ]
    assert result.rows == 200 and result.failed == []
    assert (result.partitions_done, result.partitions_skipped) == (4, 0)
    assert result.images_per_second > 0
    ds = open_dataset(dataset.root)
    sample_ids = ds.read_arrow("samples", columns=["id"]).column("id").to_numpy()
    shapes = dict(list_layers(TINY, image_size=32))
    dims = (shapes["pooled"][0], shapes["blocks.2"][0])  # (n, C, H, W) -> mean -> C
    for key, dim in zip(result.tables, dims, strict=True):
        ids, vectors = ds.read_vectors(key)
        assert vectors.dtype == np.float32 and vectors.shape == (200, dim)
        assert np.isfinite(vectors).all()
        np.testing.assert_array_equal(ids, sample_ids)
        for i in range(4):  # partition i of the embeddings = partition i of samples
            part_ids, _ = ds.read_vectors(key, partitions=[i])
            samples_i = ds.read_arrow("samples", columns=["id"], partitions=[i])
            np.testing.assert_array_equal(part_ids, samples_i.column("id").to_numpy())
        meta = ds.meta(key)
        assert meta["model"] == TINY and meta["dim"] == dim and meta["reshape"] == "mean"
        assert meta["image_size"] == 32 and meta["device"] == "cpu"
        assert len(meta["weights_sha256"]) == 64
    # the same model and parameters give the same pooled vectors as the reference run
    np.testing.assert_allclose(ds.read_vectors(result.tables[0])[1], reference[1], atol=1e-5)
    step = ds.manifest["steps"][-1]
    assert step["step"] == "embed" and step["result"]["rows"] == 200
    assert step["params"]["layers"] == ["pooled", "blocks.2"]


def test_rerun_after_commit_reuses_and_force_replaces(dataset):
    first = embed(dataset, name="digits", **FAST)
    same = embed(dataset, name="digits", **FAST)
    assert same.reused and same.partitions_done == 0
    again = embed(dataset, name="digits", force=True, **FAST)
    assert first.tables == same.tables == again.tables == ["embeddings/digits.pooled"]
    assert not again.reused and again.partitions_done == 4
    ds = open_dataset(dataset.root)
    assert ds.embeddings == ["digits.pooled"]
    assert len(list((dataset.root / "embeddings").iterdir())) == 1  # old version removed


def test_corrupt_and_missing_images_are_skipped_and_reported(tmp_path, pngs):
    paths, labels = list(pngs[0][:40]), list(pngs[1][:40])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    paths[3] = str(bad)
    paths[25] = str(tmp_path / "gone.png")
    ds = make_dataset(tmp_path / "ds", paths, labels, parts=2)
    result = embed(ds, **FAST)
    assert [f["id"] for f in result.failed] == [3, 25]
    assert "broken.png" in result.failed[0]["error"] and "gone.png" in result.failed[1]["uri"]
    assert result.rows == 38
    ids, vectors = open_dataset(ds.root).read_vectors(result.tables[0])
    assert 3 not in ids and 25 not in ids and len(ids) == len(vectors) == 38
    assert open_dataset(ds.root).meta(result.tables[0])["failed"] == 2


def test_partition_with_no_good_image_is_written_empty(tmp_path, pngs):
    paths = [str(tmp_path / f"missing{i}.png") for i in range(5)] + list(pngs[0][:5])
    ds = make_dataset(tmp_path / "ds", paths, ["0"] * 10, parts=2)
    result = embed(ds, **{**FAST, "progress": True})
    ds = open_dataset(ds.root)
    assert [p["rows"] for p in ds.table(result.tables[0])["partitions"]] == [0, 5]
    assert ds.read_vectors(result.tables[0])[1].shape == (5, 256)


def test_bad_arguments_name_the_problem(dataset, tmp_path):
    with pytest.raises(ModelError, match="has no layer 'nope'"):
        embed(dataset, layers=["nope"], **FAST)
    with pytest.raises(ModelError, match="unknown reshape strategy 'median'"):
        embed(dataset, reshape="median", **FAST)
    with pytest.raises(ModelError, match="unknown model 'resnet18'"):
        embed(dataset, model="resnet18", progress=False)
    empty = Dataset.create(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no table 'samples'"):
        embed(empty, **FAST)


def test_list_layers():
    layers = dict(list_layers(TINY, image_size=32))
    assert layers["pooled"] == (256,) and layers["conv_head"] == (256, 1, 1)


_CHILD = """
import sys, time
import embviz.pipeline.embed as pe
real = pe._embed_partition
def slow(index, **kw):
    out = real(index, **kw)
    time.sleep(120)  # the parent kills us here, after partition 0 is staged
    return out
pe._embed_partition = slow
pe.embed(sys.argv[1], model={model!r}, image_size=32, batch_size=16, progress=False)
"""


def test_resume_after_sigkill_redoes_only_unfinished_partitions(dataset, reference):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = textwrap.dedent(_CHILD.format(model=TINY))
    proc = subprocess.Popen([sys.executable, "-c", script, str(dataset.root)], env=env, cwd=REPO)
    staging = (
        dataset.root / "embeddings" / ".timm-test_efficientnet-pretrained-false.pooled.staging"
    )
    first = staging / "part-00000.parquet.json"
    try:
        deadline = time.time() + 90
        while not first.exists():
            assert proc.poll() is None, "embed subprocess exited before writing a partition"
            assert time.time() < deadline, "no partition staged within 90 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = staging / "part-00000.parquet"
    before = done.stat()
    assert not (staging / "part-00001.parquet.json").exists()

    result = embed(dataset, **FAST)
    assert (result.partitions_skipped, result.partitions_done) == (1, 3)
    ds = open_dataset(dataset.root)
    committed = ds.root / ds.table(result.tables[0])["dir"] / "part-00000.parquet"
    after = committed.stat()  # the staged file was published as is, not rewritten
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    ids, vectors = ds.read_vectors(result.tables[0])
    np.testing.assert_array_equal(ids, reference[0])
    np.testing.assert_allclose(vectors, reference[1], atol=1e-5)


def test_changed_parameters_discard_staged_partitions(dataset):
    from embviz.dataset import TableWriter

    key = "embeddings/timm-test_efficientnet-pretrained-false.pooled"
    stale = TableWriter(dataset.root, key, fingerprint={"something": "else"})
    import pyarrow as pa

    stale.write_part(0, pa.table({"id": pa.array([0], pa.int64())}))
    result = embed(dataset, **FAST)
    assert (result.partitions_done, result.partitions_skipped) == (4, 0)


@pytest.mark.cluster
def test_local_cluster_matches_local_run(dataset, reference):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        result = embed(dataset, scheduler=client, **FAST)
    assert (result.partitions_done, result.rows) == (4, 200)
    ids, vectors = open_dataset(dataset.root).read_vectors(result.tables[0])
    np.testing.assert_array_equal(ids, reference[0])
    np.testing.assert_allclose(vectors, reference[1], atol=1e-4)


@pytest.mark.slow
def test_real_model_groups_digits(tmp_path, mnist_small):
    """EfficientNet-Lite0 (ImageNet weights) puts same-digit images nearer than other digits.

    ImageNet features are not trained on digits: on these 100 digits (10 per class) 1-NN label
    accuracy measured 0.68 at 112 px (0.63 at 224 px); chance is 0.1.
    """
    from PIL import Image

    images, labels = mnist_small
    pick = np.arange(0, 400, 4)  # 100 digits, all ten classes
    paths = []
    for i in pick:
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(images[i]).save(paths[-1])
    ds = make_dataset(tmp_path / "ds", paths, [str(v) for v in labels[pick]], parts=2)
    result = embed(ds, image_size=112, progress=False)
    assert result.rows == 100 and open_dataset(ds.root).meta(result.tables[0])["dim"] == 1280
    _, X = open_dataset(ds.root).read_vectors(result.tables[0])
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = X @ X.T
    y = labels[pick]
    same = y[:, None] == y[None, :]
    off_diagonal = ~np.eye(len(y), dtype=bool)
    assert sim[same & off_diagonal].mean() > sim[~same].mean() + 0.05  # measured: 0.70 vs 0.58
    np.fill_diagonal(sim, -np.inf)
    accuracy = float(np.mean(y[sim.argmax(axis=1)] == y))
    assert accuracy >= 0.6, accuracy


@pytest.mark.cluster
def test_a_worker_killed_during_embed_on_a_cluster_still_finishes(dataset, reference):
    """A worker process killed (SIGKILL) while it embeds a partition: the scheduler re-runs
    its tasks on the other worker or the restarted one, and the step finishes with every row."""
    import os
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        out: dict = {}
        thread = threading.Thread(
            target=lambda: out.update(result=embed(dataset, scheduler=client, **FAST))
        )
        thread.start()
        killed = None
        deadline = time.time() + 120
        while killed is None and time.time() < deadline and thread.is_alive():
            busy = [w for w, tasks in client.processing().items() if tasks and w in pids]
            if busy:
                killed = pids[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        thread.join(timeout=300)
        assert killed is not None, "no worker was ever busy"
        assert killed not in client.run(os.getpid).values()  # that process is gone
    result = out["result"]
    assert (result.partitions_done, result.rows) == (4, 200)
    ids, vectors = open_dataset(dataset.root).read_vectors(result.tables[0])
    np.testing.assert_array_equal(ids, reference[0])
    np.testing.assert_allclose(vectors, reference[1], atol=1e-4)
