"""The predict step's ``head`` source: a classifier's own logits, named, over a dataset's images."""

from __future__ import annotations

import numpy as np
import pytest
from test_embed import make_dataset

from embviz.errors import ModelError

TINY = "timm:test_efficientnet?pretrained=false"  # 1,000 random (seeded) logits: ImageNet's names
FAST = {"model": TINY, "image_size": 32, "batch_size": 16, "progress": False}


@pytest.fixture(scope="module")
def digits(tmp_path_factory, mnist_small):
    """40 real MNIST digits as PNG files, in a 2-partition dataset."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    images, labels = mnist_small
    paths = []
    for i in range(0, 400, 10):
        path = folder / f"{i:04d}.png"
        Image.fromarray(images[i]).save(path)
        paths.append(str(path))
    labs = [str(v) for v in labels[::10]]
    return make_dataset(tmp_path_factory.mktemp("ds") / "ds", paths, labs, parts=2), paths


def test_top_k_agrees_with_the_models_own_logits(digits):
    import torch

    from embviz.images import open_image
    from embviz.models import get_embedder
    from embviz.pipeline.predict import predict

    ds, paths = digits
    r = predict(ds, source="head", **FAST)
    assert r.source == "head" and r.rows == 40 and r.classes == 1000 and r.failed == 0
    assert ds.meta("predictions")["source"] == "head"
    t = ds.read_pandas("predictions")
    assert t.correct.isna().all()  # digits are no ImageNet class: neither right nor wrong
    emb = get_embedder(TINY, image_size=32)
    for row in (0, 17, 39):
        x = torch.stack([emb.prepare(open_image(paths[row]))])
        logits = emb.logits(x)[0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = np.argsort(-p)[:10]
        assert list(t.top_labels[row]) == [emb.class_names[i] for i in order]
        np.testing.assert_allclose(t.top_probs[row], p[order], rtol=1e-4, atol=1e-6)
    assert predict(ds, source="head", **FAST).reused


def test_class_names_file_must_match_the_logits(digits, tmp_path):
    from embviz.pipeline.predict import predict

    ds, _ = digits
    short = tmp_path / "classes.txt"
    short.write_text("cat\ndog\n")
    with pytest.raises(ModelError, match=r"classes.txt: 2 class names, but model .* 1000 logits"):
        predict(ds, source="head", class_names=short, force=True, **FAST)
    named = tmp_path / "classes.json"
    named.write_text(str([f"c{i}" for i in range(1000)]).replace("'", '"'))
    predict(ds, source="head", class_names=named, force=True, **FAST)
    assert ds.read_pandas("predictions").predicted_label.str.fullmatch(r"c\d+").all()


def test_a_model_without_a_head_is_named(digits):
    from embviz.pipeline.predict import predict

    ds, _ = digits
    with pytest.raises(ModelError, match="has no classification head"):
        predict(ds, source="head", **{**FAST, "model": TINY + "&num_classes=0"})


def test_embed_with_predict_writes_the_heads_predictions_from_the_same_pass(digits, tmp_path):
    """``embed --predict``: the embedding and the head's top-k from one forward pass per batch,
    equal to what ``predict --source head`` writes; a rerun reuses both."""
    import json
    import shutil

    from embviz.dataset import open_dataset
    from embviz.pipeline.cli import main
    from embviz.pipeline.embed import embed
    from embviz.pipeline.predict import predict

    ds, _ = digits
    predict(ds, source="head", force=True, **FAST)
    alone = ds.read_pandas("predictions")
    copy = tmp_path / "copy"
    shutil.copytree(ds.root, copy, ignore=shutil.ignore_patterns("predictions*"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["tables"]["predictions"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    other = open_dataset(copy)
    assert not other.has("predictions")
    r = embed(other, predict=True, force=True, **FAST)
    assert not r.reused and r.rows == 40
    other.reload()
    both = other.read_pandas("predictions")
    assert other.meta("predictions")["source"] == "head"
    assert list(both.predicted_label) == list(alone.predicted_label)
    np.testing.assert_allclose(np.stack(both.top_probs), np.stack(alone.top_probs), atol=1e-5)
    argv = [other.root.as_posix(), "--model", TINY, "--image-size", "32", "--batch-size", "16"]
    assert main(["-q", "embed", *argv, "--predict"]) == 0  # reused: nothing runs again
    assert embed(other, predict=True, **FAST).reused
