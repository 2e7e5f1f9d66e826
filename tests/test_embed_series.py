"""``embed`` over a series of checkpoints (and of layers): ordered tables with series meta,
reuse and resume, every member checked before anything is written, and the command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_train import copy_samples

from embviz.dataset import open_dataset
from embviz.errors import ConfigError, ModelError
from embviz.models import get_embedder, parse_model_name
from embviz.pipeline.cli import main
from embviz.pipeline.embed import embed
from embviz.pipeline.embed_series import checkpoint_members, natural_key
from embviz.pipeline.train_demo import train_cnn
from embviz.series import list_series, series_members

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
FAST = {"model": "cnn", "batch_size": 64, "progress": False}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, demo_dataset):
    """Three real checkpoints of the cnn (untrained, 1 and 2 epochs on 300 digits)."""
    ds = copy_samples(demo_dataset, tmp_path_factory.mktemp("ck") / "ds", every=16)
    return train_cnn(ds, epochs=2, seed=0, progress=False).checkpoints


@pytest.fixture
def ds(tmp_path, demo_dataset):
    """200 of the demo's digits in 4 partitions: nothing embedded yet."""
    return copy_samples(demo_dataset, tmp_path / "ds", every=25, part_rows=50)


def _folder(tmp_path: Path, ckpts, names) -> Path:
    """A folder holding the checkpoints as ``names``, with files that are not members."""
    folder = tmp_path / "run"
    folder.mkdir()
    for src, name in zip(ckpts, names, strict=True):
        shutil.copy(src, folder / name)
    (folder / "training.json").write_text("{}")
    (folder / ".epoch-0.pt.x1.tmp").write_bytes(b"half written")
    return folder


def test_folder_series_in_natural_order(ds, ckpts, tmp_path):
    folder = _folder(tmp_path, ckpts, ["epoch-2.pt", "epoch-10.pt", "epoch-1.pt"])
    result = embed(ds, checkpoints=folder, **FAST)
    names = ["epoch-1", "epoch-2", "epoch-10"]
    assert result.tables == [f"embeddings/cnn-{n}.pooled" for n in names]
    assert result.series == ["cnn-checkpoints"] and not result.reused
    assert result.rows == 200 and result.partitions_done == 12
    fresh = open_dataset(ds.root)
    members = series_members(fresh, "cnn-checkpoints")
    assert [(m.member, m.index, m.size, m.kind) for m in members] == [
        (n, i, 3, "checkpoints") for i, n in enumerate(names)
    ]
    sample_ids = fresh.read_arrow("samples", columns=["id"]).column("id").to_numpy()
    vectors = {}
    for member, src in zip(members, [ckpts[2], ckpts[0], ckpts[1]], strict=True):
        ids, vectors[member.member] = fresh.read_vectors(member.key)
        np.testing.assert_array_equal(ids, sample_ids)
        meta = fresh.meta(member.key)
        assert meta["dim"] == 64 and meta["weights_sha256"] == _sha(src)
    assert not np.allclose(vectors["epoch-1"], vectors["epoch-2"])
    # The table holds what the checkpoint's model gives for these images.
    emb = get_embedder(f"cnn?weights={folder / 'epoch-10.pt'}", device="cpu")
    from embviz.images import open_image

    uris = fresh.read_arrow("samples", columns=["uri"], partitions=[0])["uri"].to_pylist()
    direct = emb.embed_images([open_image(u) for u in uris])["pooled"]
    np.testing.assert_allclose(vectors["epoch-10"][: len(uris)], direct, atol=1e-5)


def _sha(path) -> str:
    from embviz.models.base import sha256_file

    return sha256_file(path)


def test_list_keeps_its_order_and_rerun_is_reused(ds, ckpts):
    given = [str(ckpts[2]), str(ckpts[0])]
    first = embed(ds, checkpoints=given, series="late-early", **FAST)
    assert first.tables == ["embeddings/cnn-epoch-002.pooled", "embeddings/cnn-epoch-000.pooled"]
    again = embed(ds, checkpoints=given, series="late-early", **FAST)
    assert again.reused and again.partitions_done == 0 and again.tables == first.tables
    members = list_series(open_dataset(ds.root))["late-early"]
    assert [m.member for m in members] == ["epoch-002", "epoch-000"]
    # Relative paths are inside the dataset folder; a shorter run takes the series over.
    local = ds.root / "ck"
    local.mkdir()
    shutil.copy(ckpts[0], local / "epoch-000.pt")
    third = embed(ds, checkpoints=["ck/epoch-000.pt"], series="late-early", **FAST)
    assert third.reused  # the same weights and samples: only the series meta changes
    members = list_series(open_dataset(ds.root))["late-early"]
    assert [(m.member, m.size) for m in members] == [("epoch-000", 1)]


_CHILD = """
import sys, time
import embviz.pipeline.embed as pe
real = pe._embed_partition
def slow(index, **kw):
    out = real(index, **kw)
    if "epoch-001" in kw["model"] and index == 1:
        time.sleep(120)  # the parent kills us here: member 1 half done
    return out
pe._embed_partition = slow
pe.embed(sys.argv[1], model="cnn", checkpoints=sys.argv[2:], batch_size=16, progress=False)
"""


def test_killed_run_redoes_only_unfinished_partitions(ds, ckpts, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [str(p) for p in ckpts]
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD), str(ds.root), *args], env=env, cwd=REPO
    )
    marker = ds.root / "embeddings" / ".cnn-epoch-001.pooled.staging" / "part-00001.parquet.json"
    try:
        deadline = time.time() + 90
        while not marker.exists():
            assert proc.poll() is None, "embed subprocess exited before member 1 was half done"
            assert time.time() < deadline, "member 1 not half done within 90 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert open_dataset(ds.root).embeddings == ["cnn-epoch-000.pooled"]
    assert list_series(open_dataset(ds.root)) == {}  # incomplete: not offered
    result = embed(ds, checkpoints=args, **FAST)  # ds was opened before the run: reloaded
    # member 0 reused (4), member 1 keeps partitions 0 and 1, member 2 runs whole
    assert (result.partitions_skipped, result.partitions_done) == (4 + 2, 2 + 4)
    assert len(series_members(open_dataset(ds.root), "cnn-checkpoints")) == 3


def _other_arch(path: Path) -> Path:
    import torch

    from embviz.models.cnn import build_cnn

    state = build_cnn().state_dict()
    state["fc1.weight"] = torch.zeros(32, 800)  # another Linear size
    state["fc1.bias"] = torch.zeros(32)
    torch.save(state, path)
    return path


def _efficientnet(path: Path) -> Path:
    from embviz.models.effnet_lite0 import weights_path

    return weights_path()


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda p: p, "cnn weight file not found"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)) and p, "cannot load"),
        (_other_arch, "is not a cnn state dict: 'fc1.weight' has shape"),
        (_efficientnet, "is not a cnn state dict: missing keys"),
    ],
    ids=["missing", "corrupt", "other-linear", "efficientnet"],
)
def test_bad_member_names_it_and_writes_nothing(ds, ckpts, tmp_path, make, expect):
    bad = make(tmp_path / "bad-one.pt")
    before = json.loads((ds.root / "manifest.json").read_text())
    with pytest.raises(ModelError) as err:
        embed(ds, checkpoints=[ckpts[0], bad, ckpts[1]], **FAST)
    message = str(err.value)
    assert f"checkpoint 1 {Path(bad).stem!r}" in message and str(bad) in message
    assert expect in message
    assert json.loads((ds.root / "manifest.json").read_text()) == before
    assert not (ds.root / "embeddings").exists()


def test_member_resolution(tmp_path, ckpts):
    assert sorted(["e-10", "e-2", "E-1"], key=natural_key) == ["E-1", "e-2", "e-10"]
    members = checkpoint_members("hf:org/vit", ["main", "v1.0"], tmp_path)
    assert [parse_model_name(m.model)[2] for m in members] == [
        {"revision": "main"},
        {"revision": "v1.0"},
    ]
    plus = tmp_path / "a b+c.pt"
    shutil.copy(ckpts[0], plus)
    (member,) = checkpoint_members("cnn", ["a b+c.pt"], tmp_path)
    assert parse_model_name(member.model)[2] == {"weights": str(plus)}
    (member,) = checkpoint_members("timm:resnet18?pretrained=false", [plus], tmp_path)
    assert parse_model_name(member.model)[2] == {"pretrained": False, "checkpoint": str(plus)}
    with pytest.raises(ModelError, match="torchvision models"):
        checkpoint_members("tv:resnet18", [plus], tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no checkpoint files"):
        checkpoint_members("cnn", "empty", tmp_path)
    twice = tmp_path / "x"
    twice.mkdir()
    shutil.copy(plus, twice / "a b+c.pt")
    with pytest.raises(ModelError, match="more than once"):
        checkpoint_members("cnn", [plus, twice / "a b+c.pt"], tmp_path)


def test_several_layers_of_checkpoints_form_a_series_per_layer(ds, ckpts):
    result = embed(ds, checkpoints=ckpts[:2], layers=["fc1", "conv2"], series="run", **FAST)
    assert result.series == ["run-fc1", "run-conv2"] and len(result.tables) == 4
    fresh = open_dataset(ds.root)
    for layer in ("fc1", "conv2"):
        members = series_members(fresh, f"run-{layer}")
        assert [m.key for m in members] == [
            f"embeddings/cnn-epoch-000.{layer}",
            f"embeddings/cnn-epoch-001.{layer}",
        ]


def test_predict_cannot_ride_a_series(ds, ckpts):
    with pytest.raises(ConfigError, match="predictions table"):
        embed(ds, checkpoints=ckpts, predict=True, **FAST)


def test_several_layers_form_a_layers_series(ds):
    result = embed(ds, layers=["fc1", "pooled", "conv2"], **FAST)
    assert result.series == ["cnn-layers"]
    members = series_members(open_dataset(ds.root), "cnn-layers")
    assert [(m.member, m.kind) for m in members] == [
        ("fc1", "layers"),
        ("pooled", "layers"),
        ("conv2", "layers"),
    ]
    again = embed(ds, layers=["conv2", "fc1"], **FAST)  # reused tables, a new series
    assert again.reused
    fresh = open_dataset(ds.root)
    assert [m.member for m in series_members(fresh, "cnn-layers")] == ["conv2", "fc1"]
    assert "series" not in fresh.meta("embeddings/cnn.pooled")
    assert embed(ds, layers=["pooled"], **FAST).series == []


def test_cli_embed_checkpoints(ds, ckpts, tmp_path, monkeypatch, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for src in ckpts[:2]:
        shutil.copy(src, tmp_path / src.name)
    cmd = [sys.executable, "-m", "embviz.pipeline.cli", "-q", "embed", str(ds.root)]
    cmd += ["--model", "cnn", "--batch-size", "64"]
    proc = subprocess.run(
        [*cmd, "--checkpoints", "epoch-001.pt,epoch-000.pt", "--series", "back"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["series"] == ["back"] and len(out["tables"]) == 2
    members = series_members(open_dataset(ds.root), "back")
    assert [m.member for m in members] == ["epoch-001", "epoch-000"]
    monkeypatch.chdir(tmp_path)  # the same command line in this process: relative paths
    status = main(["-q", *cmd[4:], "--checkpoints", "epoch-000.pt,nowhere.pt"])
    err = capsys.readouterr().err
    assert status == 2 and "checkpoint 1 'nowhere'" in err and str(tmp_path / "nowhere.pt") in err


def test_cnn_model(ckpts):
    """The ``cnn`` model: seeded random weights by default, a state dict file by ``weights``,
    grayscale 28-pixel inputs (other sizes fit), the digits as classes."""
    import torch

    a, b = (get_embedder("cnn", device="cpu") for _ in range(2))
    assert a.weights_sha256 == b.weights_sha256  # seeded: the same untrained net everywhere
    assert a.class_names == [str(d) for d in range(10)]
    assert dict(a.layers())["pooled"] == (64,) and a.dummy_batch(2).shape == (2, 1, 28, 28)
    trained = get_embedder(f"cnn?weights={ckpts[-1]}", device="cpu", image_size=36)
    assert trained.dummy_batch(1).shape == (1, 1, 36, 36)
    vectors, logits = trained.embed_batch(trained.dummy_batch(3), logits=True)
    assert vectors["pooled"].shape == (3, 64) and logits.shape == (3, 10)
    state = torch.load(ckpts[-1], weights_only=True)
    assert trained.weights_sha256 != a.weights_sha256 and len(state) == 8
    with pytest.raises(ModelError, match="unknown option 'pretrained'"):
        get_embedder("cnn?pretrained=true")
