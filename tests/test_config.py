"""The YAML loader: the shipped recipes load, and bad keys fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from embviz.config import load_recipe
from embviz.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_recipe_loads():
    recipes = sorted((ROOT / "config").glob("*.yaml"))
    assert recipes
    demo = load_recipe(ROOT / "config" / "demo.yaml")
    assert demo.source.kind == "mnist" and demo.embed[0].model == "efficientnet_lite0"
    assert {(r.method, r.dims) for r in demo.reduce} >= {("umap", 2), ("umap", 3), ("pca", 2)}
    assert [i.embedding for i in demo.index] == ["efficientnet_lite0.blocks.5"]
    assert demo.score is not None and demo.score.embedding == "efficientnet_lite0.blocks.5"


def test_index_and_score_entries(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "dataset: d\nsource: {path: x}\nindex: [{embedding: e, k: 20}]\n"
        "score: {k: 15, clusters: 8, near_threshold: 0, pixel_check: false}\n"
    )
    recipe = load_recipe(path)
    assert recipe.index[0].embedding == "e" and recipe.index[0].k == 20
    assert recipe.score.k == 15 and recipe.score.clusters == 8
    assert recipe.score.near_threshold == 0 and recipe.score.pixel_check is False
    assert recipe.score.embedding is None and recipe.score.label_method == "auto"
    path.write_text("dataset: d\nsource: {path: x}\n")
    assert load_recipe(path).score is None and load_recipe(path).index == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dataset: d\nsource: {path: x}\nembedd: []\n", "unknown key 'embedd'"),
        ("dataset: d\nsource: {path: x, colour: 1}\n", r"source: unknown key 'colour'"),
        (
            "dataset: d\nsource: {path: x}\nreduce: [{method: umap, dims: two}]\n",
            r"reduce\[0\]: dims: expected int",
        ),
        (
            "dataset: d\nsource: {path: x}\nscore: {k: 10, colour: 1}\n",
            r"score: unknown key 'colour' in ScoreConfig",
        ),
        ("dataset: d\nsource: {path: x}\nindex: [{k: ten}]\n", r"index\[0\]: k: expected int"),
        ("dataset: d\nsource: {path: x}\nscore: [1]\n", r"score: expected a mapping"),
        ("source: {path: x}\n", "missing required key 'dataset'"),
        ("dataset: d\nsource: [1]\n", "expected a mapping"),
        ("dataset: [\n", "invalid YAML"),
    ],
)
def test_bad_recipe_names_the_key(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_recipe(path)
    assert str(path) in str(err.value)
