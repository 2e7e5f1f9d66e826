"""The ``embviz`` command line over a small real image folder, and a recipe through ``build``."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from embviz.dataset import open_dataset
from pipeline.cli import main

TINY = "timm:test_efficientnet?pretrained=false"  # 0.4M-parameter stand-in, seeded random weights


@pytest.fixture
def folder(tmp_path, mnist_small):
    images, labels = mnist_small
    for i in range(80):
        split = "test" if i % 5 == 0 else "train"
        path = tmp_path / "imgs" / split / str(labels[i]) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(path)
    (tmp_path / "imgs" / "train" / "broken.png").write_bytes(b"not a png")
    return tmp_path / "imgs"


def test_ingest_embed_reduce_info(folder, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["-q", "ingest", str(folder), "--out", str(out), "--partition-rows", "30"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 80
    assert main(["layers", TINY, "--image-size", "32"]) == 0
    assert "pooled" in capsys.readouterr().out
    assert (
        main(["-q", "embed", str(out), "--model", TINY, "--image-size", "32", "--name", "tiny"])
        == 0
    )
    capsys.readouterr()
    assert (
        main(["-q", "reduce", str(out), "--method", "pca", "--dims", "3", "--fit-split", "train"])
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tables"]["samples"]["rows"] == 80
    assert info["tables"]["projections/tiny.pooled.pca3d"]["rows"] == 80
    assert info["steps"] == ["ingest", "embed", "reduce"]
    report = json.loads((out / "reports" / "ingest.json").read_text())
    assert [s["path"].endswith("broken.png") for s in report["skipped"]] == [True]


def test_build_runs_a_recipe(folder, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"dataset: {tmp_path / 'built'}\nsource: {{path: {folder}, partition_rows: 40}}\n"
        f"embed: [{{model: '{TINY}', image_size: 32, name: tiny}}]\n"
        "reduce: [{method: pca, dims: 2}, {method: umap, dims: 2, params: {n_neighbors: 10}}]\n"
    )
    assert main(["-q", "build", str(recipe)]) == 0
    ds = open_dataset(tmp_path / "built")
    assert set(ds.projections) == {"tiny.pooled.pca2d", "tiny.pooled.umap2d"}


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json: missing" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: x\nsource: {path: y}\nreduse: []\n")
    assert main(["build", str(bad)]) == 2
    assert "unknown key 'reduse'" in capsys.readouterr().err


def test_rebuild_reuses_every_step(folder, tmp_path):
    from pipeline.build import build

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"dataset: {tmp_path / 'built'}\nsource: {{path: {folder}, partition_rows: 40}}\n"
        f"embed: [{{model: '{TINY}', image_size: 32, name: tiny}}]\n"
        "reduce: [{method: pca, dims: 2}]\n"
    )
    first = build(recipe, progress=False)
    dirs = {k: v["dir"] for k, v in open_dataset(first.dataset).tables.items()}
    second = build(recipe, progress=False)
    assert [getattr(s, "reused", None) for s in second.steps] == [True, True, True]
    assert {k: v["dir"] for k, v in open_dataset(second.dataset).tables.items()} == dirs
    # A new projection parameter recomputes only that projection.
    recipe.write_text(recipe.read_text().replace("dims: 2}", "dims: 2, seed: 1}"))
    third = build(recipe, progress=False)
    assert [s.reused for s in third.steps] == [True, True, False]


def test_force_flag_recomputes(folder, tmp_path, capsys):
    out = tmp_path / "ds"
    main(["-q", "ingest", str(folder), "--out", str(out)])
    assert main(["-q", "ingest", str(folder), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.split("\n}\n")[-2] + "}")["reused"] is True
    assert main(["-q", "ingest", str(folder), "--out", str(out), "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["reused"] is False


def test_synth_command(tmp_path, capsys):
    assert (
        main(
            [
                "-q",
                "synth",
                "--points",
                "20000",
                "--out",
                str(tmp_path / "s"),
                "--partition-rows",
                "5000",
            ]
        )
        == 0
    )
    ds = open_dataset(tmp_path / "s")
    assert ds.table("samples")["rows"] == 20000 and len(ds.projections) == 2
