"""The ``embviz`` command line over a small real image folder, and a recipe through ``build``."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from embviz.dataset import open_dataset
from embviz.pipeline.cli import main

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
    from embviz.pipeline.build import build

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


def test_every_step_takes_the_only_embedding_and_says_so(folder, tmp_path, capsys, caplog):
    out = tmp_path / "ds"
    main(["-q", "ingest", str(folder), "--out", str(out)])
    main(["-q", "embed", str(out), "--model", TINY, "--image-size", "32", "--name", "tiny"])
    capsys.readouterr()
    with caplog.at_level("INFO", logger="embviz.pipeline.choose"):
        assert main(["-q", "index", str(out), "-k", "5"]) == 0
        assert main(["-q", "score", str(out), "-k", "5", "--clusters", "3"]) == 0
        assert main(["-q", "reduce", str(out), "--method", "pca"]) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "embviz.pipeline.choose"]
    assert [s.split(":")[0] for s in said] == ["index", "score", "reduce"]  # once each
    for s in said:
        assert "using embedding 'tiny.pooled', the dataset's default" in s and "--embedding" in s


def test_pick_table_is_the_one_rule_for_defaults(tmp_path, caplog):
    from types import SimpleNamespace

    from embviz.errors import DatasetError
    from embviz.pipeline.choose import pick_table

    tables = {"embeddings": ["m.b", "m.a"], "projections": []}
    ds = SimpleNamespace(root=tmp_path, keys=lambda kind: sorted(tables[kind]))
    with caplog.at_level("INFO", logger="embviz.pipeline.choose"):
        assert pick_table(ds, "embeddings", None, step="index") == "m.a"
    assert "(of 2: m.a, m.b)" in caplog.text
    assert pick_table(ds, "embeddings", "embeddings/m.b", step="index") == "m.b"
    with pytest.raises(DatasetError, match=r"available: \['m.a', 'm.b'\]"):
        pick_table(ds, "embeddings", "m.c", step="index")
    with pytest.raises(DatasetError, match="run 'embviz reduce' first"):
        pick_table(ds, "projections", None, step="report")


def test_demo_builds_the_shipped_recipe_with_overrides(tmp_path, monkeypatch, capsys):
    """``embviz demo`` reads the recipe shipped in the package; --out and --limit override it
    (its digits then go beside --out), and nothing is served without --serve."""
    from types import SimpleNamespace

    import embviz.pipeline.build as build_mod

    built = []

    def fake_build(recipe, **kw):
        built.append(recipe)
        return SimpleNamespace(dataset=recipe.dataset, seconds=0.0)

    monkeypatch.setattr(build_mod, "build", fake_build)
    monkeypatch.chdir(tmp_path)  # no config/ here: the recipe must come from the package
    assert main(["-q", "demo"]) == 0
    assert (built[-1].name, built[-1].dataset, built[-1].source.limit) == (
        "mnist-demo",
        "data/demo",
        5000,
    )
    assert main(["-q", "demo", "--out", "elsewhere/d", "--limit", "40"]) == 0
    recipe = built[-1]
    assert (recipe.dataset, recipe.source.path, recipe.source.limit) == (
        "elsewhere/d",
        "elsewhere/d-images",
        40,
    )
    mine = tmp_path / "mine.yaml"
    mine.write_text("dataset: mine\nname: mine\nsource: {path: imgs}\n")
    assert main(["-q", "demo", "--recipe", str(mine)]) == 0
    assert built[-1].name == "mine"
    assert "demo dataset ready: mine" in capsys.readouterr().out


def test_serve_prints_the_panel_command_it_runs(tmp_path, capsys):
    import shlex

    from embviz.pipeline.packaged import explorer_app

    argv = ["serve", "a", "b", "--port", "7001", "--prefix", "/team", "--reports", "r.yaml"]
    assert main([*argv, "--allow-websocket-origin", "example.org", "--print-command"]) == 0
    cmd = shlex.split(capsys.readouterr().out)
    assert cmd[:5] == ["panel", "serve", str(explorer_app()), "--plugins", "embviz.app.routes"]
    assert explorer_app().name == "explorer.py" and explorer_app().is_file()
    assert cmd[cmd.index("--prefix") + 1] == "/team" and cmd[cmd.index("--port") + 1] == "7001"
    assert "example.org" in cmd and "localhost:7001" in cmd
    assert cmd[cmd.index("--args") :] == ["--args", "a", "b", "--reports", "r.yaml"]


def test_preset_prints_the_shipped_files(tmp_path, capsys):
    from embviz.config import load_recipe, load_report_settings

    assert main(["preset", "reports"]) == 0
    settings = tmp_path / "reports.yaml"
    settings.write_text(capsys.readouterr().out)
    assert load_report_settings(settings).cron
    assert main(["preset", "demo", "--path"]) == 0
    assert load_recipe(capsys.readouterr().out.strip()).name == "mnist-demo"
    with pytest.raises(SystemExit):
        main(["preset", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_demo_digits_follow_a_new_limit(tmp_path):
    """``embviz demo --limit`` into a folder written with another limit keeps no old digits."""
    from embviz.pipeline.demo import write_mnist_folder

    folder = tmp_path / "digits"
    write_mnist_folder(folder, limit=30)
    (folder / "train" / "mine.txt").write_text("x")
    write_mnist_folder(folder, limit=20)
    assert len(list(folder.rglob("*.png"))) == 20
    assert not (folder / "train" / "mine.txt").exists()  # its own split folders start over
    write_mnist_folder(folder, limit=20)  # finished with these options: kept as it is
    assert len(list(folder.rglob("*.png"))) == 20
