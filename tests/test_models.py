"""Tests of the model registry, the Embedder (layers, hooks, preprocessing) and reshape strategies."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from embviz.errors import ModelError
from embviz.models import get_embedder, model_slug, parse_model_name

torch = pytest.importorskip("torch")

TINY_TIMM = "timm:test_efficientnet?pretrained=false"


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A 2-layer ViT (32 px, 8 px patches, width 32) saved as a local Hugging Face folder."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def effnet():
    return get_embedder("efficientnet_lite0", device="cpu")


def _images(n=3, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)) for _ in range(n)
    ]


# -- registry -----------------------------------------------------------------------------------
def test_import_is_cheap():
    code = "import sys, embviz.models, embviz.reshape; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["resnet18", "nope:resnet18", "timm:", "", "/no/such/folder"])
def test_unknown_model_lists_valid_names(name):
    with pytest.raises(ModelError) as info:
        get_embedder(name)
    msg = str(info.value)
    for valid in ("efficientnet_lite0", "'timm:'", "'hf:'", "'tv:'"):
        assert valid in msg


def test_parse_model_name_options(tiny_vit):
    assert parse_model_name("timm:resnet18?pretrained=false") == (
        "timm",
        "resnet18",
        {"pretrained": False},
    )
    assert parse_model_name("efficientnet_lite0") == ("efficientnet_lite0", "", {})
    assert parse_model_name(str(tiny_vit))[0] == "hf"
    assert model_slug(f"hf:{tiny_vit}") == model_slug(str(tiny_vit)) == f"hf-{tiny_vit.name}"
    assert model_slug("hf:google/vit-base-patch16-224") == "hf-google-vit-base-patch16-224"


def test_unknown_family_member_names_it():
    with pytest.raises(ModelError, match="timm has no model 'no_such_net'"):
        get_embedder("timm:no_such_net")
    with pytest.raises(ModelError, match="torchvision has no model 'no_such_net'"):
        get_embedder("tv:no_such_net")
    with pytest.raises(ModelError, match="no weights 'BOGUS'"):
        get_embedder("tv:resnet18", weights="BOGUS")


# -- reshape ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "strategy", "expected"),
    [
        ((4, 8, 5, 5), "mean", (4, 8)),
        ((4, 17, 8), "mean", (4, 8)),
        ((4, 8, 5, 5), "flatten", (4, 200)),
        ((4, 8, 6, 6), "avg_pool_2x2", (4, 32)),
        ((4, 8, 6, 6), "avg_pool_3x1", (4, 24)),
        ((4, 17, 8), "avg_pool_2x2", (4, 32)),  # CLS + 4x4 grid of tokens
        ((4, 16, 8), "avg_pool_2x2", (4, 32)),
        ((4, 17, 8), "cls", (4, 8)),
        ((4, 8, 5, 5), lambda x: x.amax(dim=(2, 3)), (4, 8)),
        ((4, 12), "cls", (4, 12)),  # already vectors: unchanged
    ],
)
def test_reshape_shapes(shape, strategy, expected):
    from embviz.reshape import apply_reshape

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = apply_reshape(x, strategy)
    assert tuple(out.shape) == expected
    if len(shape) == 2:
        assert out is x


def test_reshape_values():
    from embviz.reshape import apply_reshape

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.allclose(apply_reshape(x, "mean"), x.mean(dim=(2, 3)))
    pooled = apply_reshape(x, "avg_pool_2x2").reshape(2, 3, 2, 2)
    assert torch.allclose(pooled[:, :, 0, 0], x[:, :, :2, :2].mean(dim=(2, 3)))
    tokens = torch.randn(2, 5, 3)
    assert torch.equal(apply_reshape(tokens, "cls"), tokens[:, 0])


@pytest.mark.parametrize("bad", ["median", "avg_pool_0x2", "avg_pool_2", 3])
def test_unknown_reshape_lists_valid(bad):
    from embviz.reshape import apply_reshape

    with pytest.raises(ModelError, match=r"valid: \['mean', 'flatten', 'cls', 'avg_pool_NxN'\]"):
        apply_reshape(torch.zeros(2, 3, 4, 4), bad)


def test_reshape_errors_name_the_problem():
    from embviz.reshape import apply_reshape

    with pytest.raises(ModelError, match="'cls' takes token outputs"):
        apply_reshape(torch.zeros(2, 3, 4, 4), "cls")
    with pytest.raises(ModelError, match="square grid"):
        apply_reshape(torch.zeros(2, 7, 3), "avg_pool_2x2")
    with pytest.raises(ModelError, match=r"must return \(n, d\)"):
        apply_reshape(torch.zeros(2, 3, 4, 4), lambda x: x)


# -- default model (real ImageNet weights, offline) ----------------------------------------------
def test_effnet_layers_include_pooled(effnet):
    layers = dict(effnet.layers())
    assert effnet.default_layer == "pooled"
    assert layers["pooled"] == (1280,)
    assert layers["conv_head"] == (1280, 7, 7)
    assert layers["classifier"] == (1000,)
    assert len(effnet.weights_sha256) == 64


def test_effnet_classifies_real_photos(effnet):
    from PIL import Image
    from skimage import data

    batch = torch.stack(
        [effnet.preprocess(Image.fromarray(im)) for im in (data.chelsea(), data.coffee())]
    )
    out = effnet.embed_batch(batch, ["classifier", "pooled", "blocks.5"])
    assert out["classifier"].argmax(axis=1).tolist() == [281, 967]
    assert out["pooled"].shape == (2, 1280) and out["pooled"].dtype == np.float32
    assert out["blocks.5"].shape == (2, 192)
    # pooled is the classifier's input: logits are a linear map of it
    head = effnet.model.get_classifier()
    logits = head(torch.from_numpy(out["pooled"])).detach().numpy()
    np.testing.assert_allclose(logits, out["classifier"], rtol=1e-4, atol=1e-4)


def test_effnet_image_size_and_bad_layer(effnet):
    small = get_embedder("efficientnet_lite0", device="cpu", image_size=64)
    (img,) = _images(1)
    assert tuple(small.preprocess(img).shape) == (3, 64, 64)
    assert small.weights_sha256 == effnet.weights_sha256
    with pytest.raises(ModelError, match="has no layer 'blocks.99'"):
        small.embed_batch(small.dummy_batch(1), ["blocks.99"])


def test_effnet_user_weights(tmp_path, effnet):
    path = tmp_path / "mine.pth"
    torch.save(effnet.model.state_dict(), path)
    mine = get_embedder("efficientnet_lite0", device="cpu", weights=path, image_size=64)
    ref = get_embedder("efficientnet_lite0", device="cpu", image_size=64)
    batch = mine.dummy_batch(2)
    np.testing.assert_allclose(
        mine.embed_batch(batch)["pooled"], ref.embed_batch(batch)["pooled"], atol=1e-6
    )
    assert mine.weights_sha256 != ref.weights_sha256  # a different file
    with pytest.raises(ModelError, match="not found"):
        get_embedder("efficientnet_lite0", weights=tmp_path / "missing.pth")


# -- Hugging Face, timm and torchvision families (no network) ------------------------------------
@pytest.mark.parametrize("prefix", ["hf:", ""])
def test_hf_tiny_vit(tiny_vit, prefix):
    emb = get_embedder(f"{prefix}{tiny_vit}", device="cpu")
    layers = dict(emb.layers())
    assert layers["pooled"] == (32,)
    assert layers["layers.0"] == (17, 32)
    batch = torch.stack([emb.preprocess(im) for im in _images(3)])
    assert tuple(batch.shape) == (3, 3, 32, 32)
    out = emb.embed_batch(batch, ["pooled", "layers.0", "layernorm"], reshape="cls")
    assert {k: v.shape for k, v in out.items()} == {
        "pooled": (3, 32),
        "layers.0": (3, 32),
        "layernorm": (3, 32),
    }
    # pooled = CLS token of the final layer norm (the ViT pooler's dense layer is skipped)
    np.testing.assert_allclose(out["pooled"], out["layernorm"], atol=1e-6)
    assert np.isfinite(out["layers.0"]).all() and out["layers.0"].std() > 0
    means = emb.embed_batch(batch, ["layers.0"], reshape="mean")["layers.0"]
    assert not np.allclose(means, out["layers.0"])


def test_hf_image_size_interpolates(tiny_vit):
    emb = get_embedder(f"hf:{tiny_vit}", device="cpu", image_size=48)
    batch = torch.stack([emb.preprocess(im) for im in _images(2)])
    assert tuple(batch.shape) == (2, 3, 48, 48)
    out = emb.embed_batch(batch, ["pooled", "layers.1"], reshape="avg_pool_2x2")
    assert out["pooled"].shape == (2, 32) and out["layers.1"].shape == (2, 128)


def test_hf_missing_folder_content(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot load"):
        get_embedder(str(tmp_path))


def test_timm_random_weights_offline():
    emb = get_embedder("timm:resnet18", device="cpu", pretrained=False, image_size=64)
    again = get_embedder("timm:resnet18?pretrained=false", device="cpu", image_size=64)
    assert emb.weights_sha256 == again.weights_sha256  # seeded random init: repeatable
    assert dict(emb.layers())["pooled"] == (512,)
    out = emb.embed_batch(emb.dummy_batch(2), ["pooled", "layer3"], reshape="avg_pool_2x2")
    assert out["pooled"].shape == (2, 512) and out["layer3"].shape == (2, 1024)


def test_torchvision_random_weights():
    emb = get_embedder("tv:resnet18", device="cpu", weights=None, image_size=64)
    assert tuple(emb.preprocess(_images(1)[0]).shape) == (3, 64, 64)
    out = emb.embed_batch(emb.dummy_batch(2), ["pooled", "layer4"])
    assert out["pooled"].shape == (2, 512) and out["layer4"].shape == (2, 512)
    np.testing.assert_allclose(out["pooled"], out["layer4"], atol=1e-5)  # avgpool of layer4


def test_early_layer_skips_rest_of_forward():
    emb = get_embedder(TINY_TIMM, device="cpu", image_size=32)
    calls = []
    handle = emb.model.get_classifier().register_forward_hook(lambda *a: calls.append(1))
    try:
        emb.embed_batch(emb.dummy_batch(1), ["conv_stem"])
        assert calls == []
        emb.embed_batch(emb.dummy_batch(1), ["conv_stem", "pooled"])
        assert calls == [1]
    finally:
        handle.remove()
