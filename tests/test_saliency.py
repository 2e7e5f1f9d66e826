"""Saliency: Grad-CAM points at the object (pointing game), EigenCAM needs no gradient, a probe
head equals its sklearn pipeline and is explained through the backbone, ViT tokens make a grid."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embviz import saliency as sal
from embviz.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model():
    """The default model on the CPU, with one torch thread: a single image's forward and
    backward gain nothing from a second one, and on the shared 2-core machine intra-op threads
    spinning against other processes made a forward 30x slower (2.0 s against 0.07 s)."""
    from embviz.models import get_embedder

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield get_embedder(device="cpu")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return Image.fromarray(data.chelsea())  # 451 x 300: the model's centre crop cuts its sides


def _bench():
    path = ROOT / "benchmarks" / "bench_insight.py"
    spec = importlib.util.spec_from_file_location("bench_insight", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gradcam_maximum_lands_on_pasted_photos(model):
    # The benchmark's game, all 50 placements (about 0.1 s each with one thread).
    share, per_photo = _bench().pointing_game(model, n=50, seed=0)
    print(f"pointing game: {share:.2f} of 50 placements; per photo {per_photo}")
    assert share >= 0.8, per_photo


def test_gradcam_map_covers_the_centre_crop_and_overlays_there(model, photo):
    top = sal.saliency(model, photo)
    assert top.method == "gradcam" and top.layer == "bn2.act" == sal.default_target_layer(model)
    assert top.cam.dtype == np.float32 and top.cam.shape == (224, 224)
    assert top.cam.min() >= 0 and top.cam.max() == pytest.approx(1.0)
    # timm's eval transform: shorter side to 256, centre crop 224 -> x from 93.75 to 356.25
    assert top.box == pytest.approx((93.75, 18.75, 356.25, 281.25))
    assert 281 <= top.target <= 287  # ImageNet's cats (tabby, tiger cat, Egyptian cat ...)
    other = sal.saliency(model, photo, target=top.target + 10)
    assert other.target == top.target + 10 and other.score < top.score
    assert not np.allclose(other.cam, top.cam)  # Grad-CAM is class-specific

    shown = sal.overlay(photo, top, alpha=0.5)
    assert shown.size == photo.size and shown.mode == "RGB"
    pixels, source = np.asarray(shown, dtype=float), np.asarray(photo, dtype=float)
    # Left of the crop the model saw nothing: the photo dimmed by the map's (black) zero colour.
    assert np.abs(pixels[:, :90] - source[:, :90] * 0.5).max() <= 1
    assert np.abs(pixels[:, 100:350] - source[:, 100:350] * 0.5).max() > 50
    assert sal.overlay(photo, top.cam, size=(120, 80)).size == (120, 80)


def test_eigencam_needs_no_backward_pass(model, photo, monkeypatch):
    def no_backward(*args, **kwargs):
        raise AssertionError("EigenCAM ran a backward pass")

    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    eigen = sal.saliency(model, photo, method="eigencam")
    assert eigen.cam.shape == (224, 224) and np.isfinite(eigen.cam).all()
    assert eigen.cam.min() >= 0 and eigen.cam.max() == pytest.approx(1.0) and eigen.cam.std() > 0.05
    with pytest.raises(AssertionError, match="backward"):
        sal.saliency(model, photo, method="gradcam")


def test_unknown_method_layer_or_target_is_named(model, photo):
    with pytest.raises(ValueError, match=r"'scorecam'.*\['gradcam', 'eigencam'\]"):
        sal.saliency(model, photo, method="scorecam")
    with pytest.raises(ModelError, match=r"no layer 'nope'.*conv_stem"):
        sal.saliency(model, photo, layer="nope")
    with pytest.raises(ModelError, match=r"layer 'pooled'.*\(1280,\).*bn2\.act"):
        sal.saliency(model, photo, layer="pooled")
    for bad in (1000, -1):
        with pytest.raises(ModelError, match=f"target class {bad}"):
            sal.saliency(model, photo, target=bad)


def _probe(width: int, classes: int, seed: int = 0):
    """A probe pipeline as embviz.scores.probe builds it, fitted on tiny random rows."""
    from embviz.scores.probe import _model

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, width)).astype(np.float32)
    y = np.arange(60) % classes
    return _model(60, width, 5, seed).fit(x / np.linalg.norm(x, axis=1, keepdims=True), y)


@pytest.mark.parametrize(
    ("width", "classes", "pca"), [(64, 3, True), (16, 3, False), (16, 2, False)]
)
def test_probe_head_logits_equal_the_sklearn_pipeline(model, width, classes, pca):
    pipe = _probe(width, classes)
    linear = sal.probe_linear(pipe)
    assert ("pca_components" in linear) is pca
    head = sal.probe_module(model, "blocks.5", "mean", linear)
    rows = np.random.default_rng(1).normal(size=(7, width)).astype(np.float32) * 3
    got = head.logits(torch.from_numpy(rows)).detach().numpy()
    want = pipe.decision_function(rows / np.linalg.norm(rows, axis=1, keepdims=True))
    if classes == 2:  # one score z -> columns (-z/2, z/2): softmax == predict_proba
        assert np.allclose(got[:, 1] - got[:, 0], want, atol=1e-4)
    else:
        assert np.allclose(got, want, atol=1e-4)
    probs = torch.softmax(torch.from_numpy(got), 1).numpy()
    assert np.allclose(
        probs, pipe.predict_proba(rows / np.linalg.norm(rows, axis=1, keepdims=True)), atol=1e-5
    )


def test_gradcam_through_a_probe_head(model, photo):
    pipe = _probe(dict(model.layers())["blocks.5"][0], 3)
    head = sal.probe_module(model, "blocks.5", "mean", sal.probe_linear(pipe))
    # backbone + probe as one module gives the pipeline's scores on the embed step's vector
    vector = model.embed_images([photo], ["blocks.5"], "mean")["blocks.5"]
    logits = head(model.prepare(photo)[None]).detach().numpy()
    assert np.allclose(logits, pipe.decision_function(vector / np.linalg.norm(vector)), atol=1e-4)

    probed = sal.saliency(model, photo, head=head, target=2)
    assert probed.target == 2 and probed.layer == "blocks.5"  # the last map the probe reads
    assert np.isfinite(probed.cam).all() and probed.cam.max() == pytest.approx(1.0)
    assert probed.score == pytest.approx(pipe.predict_proba(vector / np.linalg.norm(vector))[0, 2])
    with pytest.raises(ModelError, match="runs after the probe's 'blocks.5'"):
        sal.saliency(model, photo, head=head, layer="bn2.act")
    pooled = sal.probe_module(model, "pooled", "mean", sal.probe_linear(_probe(1280, 2)))
    assert sal.saliency(model, photo, head=pooled).layer == "bn2.act"


def test_concurrent_cams_and_embeds_do_not_mix(model, photo):
    flipped = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    alone = [sal.saliency(model, im).cam for im in (photo, flipped)]
    vector = model.embed_images([photo], ["bn2.act"])["bn2.act"]
    got, errors = {}, []

    def work(key, fn):
        try:
            got[key] = fn()
        except Exception as exc:  # reported below
            errors.append(exc)

    jobs = [(i, lambda im=im: sal.saliency(model, im).cam) for i, im in enumerate([photo, flipped])]
    jobs.append(("embed", lambda: model.embed_images([photo], ["bn2.act"])["bn2.act"]))
    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert np.allclose(got[0], alone[0], atol=1e-5) and np.allclose(got[1], alone[1], atol=1e-5)
    assert np.allclose(got["embed"], vector, atol=1e-5)


def test_vit_tokens_become_a_grid(model):
    from embviz.models import get_embedder

    tokens = torch.arange(2 * 197 * 4, dtype=torch.float32).reshape(2, 197, 4)
    grid = sal.vit_reshape(tokens)
    assert grid.shape == (2, 4, 14, 14)
    assert torch.equal(grid[:, :, 0, 0], tokens[:, 1])  # CLS dropped, patches row by row
    assert torch.equal(grid[:, :, 13, 13], tokens[:, 196])
    assert sal.vit_reshape(torch.zeros(1, 5 + 196, 4)).shape == (1, 4, 14, 14)  # registers

    vit = get_embedder("timm:vit_tiny_patch16_224?pretrained=false", device="cpu")
    assert sal.default_target_layer(vit) == "blocks.11.norm1"
    for method in sal.METHODS:
        out = sal.saliency(vit, Image.new("RGB", (240, 200), (90, 140, 60)), method=method)
        assert out.cam.shape == (224, 224) and np.isfinite(out.cam).all()
