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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dataset: d\nsource: {path: x}\nembedd: []\n", "unknown key 'embedd'"),
        ("dataset: d\nsource: {path: x, colour: 1}\n", r"source: unknown key 'colour'"),
        (
            "dataset: d\nsource: {path: x}\nreduce: [{method: umap, dims: two}]\n",
            r"reduce\[0\]: dims: expected int",
        ),
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
