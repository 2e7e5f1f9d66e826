"""Class-activation maps (Grad-CAM, EigenCAM) for one image, through a model's own classifier or a linear probe.

The methods come from the ``grad-cam`` package (``pytorch_grad_cam``); this module picks the layer
to explain, turns transformer tokens into a grid, wraps backbone plus probe as one torch module,
serialises CAMs per model (they hook the shared network) and colours the map over the photo.
Measured on 2 CPU cores (``benchmarks/bench_insight.py``): EfficientNet-Lite0 at 224 px takes
about 0.1 s from file to overlay, and its Grad-CAM maximum lands on the object in a pointing game.
"""

from __future__ import annotations

import functools
import importlib
import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelError
from .models.base import POOLED, first_tensor

if TYPE_CHECKING:
    from .models.base import Embedder

__all__ = [
    "METHODS",
    "Saliency",
    "default_target_layer",
    "overlay",
    "probe_linear",
    "probe_module",
    "saliency",
    "vit_reshape",
]

#: Method name -> ``pytorch_grad_cam`` class, imported on first use. ScoreCAM is left out: it
#: runs one forward pass per channel of the layer (1,280 for EfficientNet-Lite0), minutes on a CPU.
_REGISTRY = {"gradcam": "pytorch_grad_cam:GradCAM", "eigencam": "pytorch_grad_cam:EigenCAM"}
METHODS = tuple(_REGISTRY)
#: Methods that need no backward pass (EigenCAM: first principal component of the activations).
_GRADIENT_FREE = frozenset({"eigencam"})
#: Last names of the pre-attention norm of a transformer block: timm (``blocks.N.norm1``), HF
#: ViT/DeiT (``encoder.layer.N.layernorm_before``), HF CLIP (``layers.N.layer_norm1``).
_VIT_NORMS = ("norm1", "layernorm_before", "layer_norm1")

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class Saliency:
    """One class-activation map and what it explains.

    Attributes
    ----------
    cam : float32 ``(H, W)`` in [0, 1], at the model's input size (the crop the model saw).
    target : the class explained (an index into the model's or the head's outputs).
    score : the softmax probability of ``target``.
    method : a name from :data:`METHODS`.
    layer : the module whose activations were weighted.
    seconds : wall time of the call (preprocessing included).
    box : ``(left, top, right, bottom)`` in the original image's pixels: the region the model
        saw (its resize and centre crop), which ``cam`` covers; :func:`overlay` uses it.
    """

    cam: np.ndarray
    target: int
    score: float
    method: str
    layer: str
    seconds: float
    box: tuple[float, float, float, float]


def vit_reshape(tensor):
    """Transformer tokens ``(n, tokens, C)`` -> a map ``(n, C, h, w)`` for CAM methods.

    The grid is the largest square that fits; the tokens before it (CLS, distillation or
    register tokens) are dropped. 4-D maps pass through.
    """
    if tensor.ndim == 4:
        return tensor
    if tensor.ndim != 3:
        raise ModelError(f"vit_reshape takes (n, tokens, C) tokens, got {tuple(tensor.shape)}")
    n, tokens, channels = tensor.shape
    side = math.isqrt(tokens)
    grid = tensor[:, tokens - side * side :]
    return grid.transpose(1, 2).reshape(n, channels, side, side)


def _model_of(embedder: Embedder, head) -> Any:
    return embedder.model if head is None else head


def default_target_layer(embedder: Embedder, *, before: str | None = None) -> str:
    """The module Grad-CAM hooks by default.

    CNNs: the last module (in ``named_modules`` order) whose output is a map ``(n, C, H, W)``
    with ``H, W >= 2`` (EfficientNet-Lite0: ``bn2.act``, the 7x7 map before global pooling).
    ViTs, recognised by a pre-attention norm after the last such map (the patch embedding's
    conv): the last block's ``norm1`` (timm) / ``layernorm_before`` (Hugging Face ViT), whose
    tokens :func:`vit_reshape` turns into a grid, as the ``grad-cam`` docs advise (the final
    norm's tokens get no gradient from a CLS-token classifier except through CLS).

    Parameters
    ----------
    embedder : the loaded model (its :meth:`~embviz.models.base.Embedder.layers` shapes decide).
    before : a layer name: only modules up to and including it count (a probe reading
        ``blocks.5`` gets no gradient from later modules). ``pooled`` or None: no limit.
    """
    shapes = embedder.layers()
    names = [n for n, _ in shapes]
    stop = len(shapes)
    if before not in (None, POOLED):
        embedder.check_layers([before])
        if before in names:
            stop = names.index(before) + 1
    maps = [i for i, (_, s) in enumerate(shapes[:stop]) if len(s) == 3 and min(s[1:]) >= 2]
    norms = [
        i
        for i, (n, s) in enumerate(shapes[:stop])
        if len(s) == 2 and n.rsplit(".", 1)[-1] in _VIT_NORMS
    ]
    if norms and (not maps or norms[-1] > maps[-1]):
        return names[norms[-1]]
    if maps:
        return names[maps[-1]]
    raise ModelError(
        f"model {embedder.name!r} has no layer with a spatial map or token grid"
        + (f" up to {before!r}" if before else "")
        + "; pass layer= (see 'embviz layers')"
    )


def _check_layer(embedder: Embedder, layer: str) -> bool:
    """Raise unless ``layer`` outputs a map or tokens; True when it outputs tokens."""
    embedder.check_layers([layer])
    shape = dict(embedder.layers()).get(layer)
    if layer == POOLED or shape is None or len(shape) not in (2, 3):
        good = [n for n, s in embedder.layers() if len(s) == 3 and min(s[1:]) >= 2][-8:]
        raise ModelError(
            f"model {embedder.name!r}, layer {layer!r} (output {shape}) is not a spatial map "
            f"(C, H, W) or a token grid (tokens, C); some that are: {good}"
        )
    return len(shape) == 2


def probe_linear(pipeline) -> dict[str, np.ndarray]:
    """The arrays of a fitted probe pipeline (``[PCA] -> StandardScaler -> LogisticRegression``,
    as :mod:`embviz.scores.probe` builds it) for :func:`probe_module`.

    Returns ``{"pca_mean", "pca_components"}`` (when there is a PCA), ``"scaler_mean"``,
    ``"scaler_scale"``, ``"coef"`` ``(c, k)`` and ``"intercept"`` ``(c,)``, all float64 copies;
    a binary probe has one row of ``coef``. Raises ValueError for other steps or a whitening PCA.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    out: dict[str, np.ndarray] = {}
    for name, step in pipeline.steps:
        if isinstance(step, PCA) and not step.whiten:
            out["pca_mean"] = np.array(step.mean_, dtype=np.float64)
            out["pca_components"] = np.array(step.components_, dtype=np.float64)
        elif isinstance(step, StandardScaler):
            k = step.n_features_in_
            mean, scale = step.mean_, step.scale_
            out["scaler_mean"] = np.zeros(k) if mean is None else np.array(mean, np.float64)
            out["scaler_scale"] = np.ones(k) if scale is None else np.array(scale, np.float64)
        elif isinstance(step, LogisticRegression):
            out["coef"] = np.array(step.coef_, dtype=np.float64)
            out["intercept"] = np.array(step.intercept_, dtype=np.float64)
        else:
            raise ValueError(
                f"probe step {name!r} ({type(step).__name__}) is not a PCA without whitening, "
                "a StandardScaler or a LogisticRegression"
            )
    if "coef" not in out:
        raise ValueError("the probe pipeline has no LogisticRegression step")
    return out


class _Stop(Exception):
    """Raised from a hook once the probe's layer is captured: the rest of forward is not needed."""


def _call_backbone(model, x):
    """``model`` on pixels ``x`` as its family expects (HF: keyword, image towers of CLIP)."""
    if not type(model).__module__.startswith("transformers."):
        return model(x)
    import inspect

    if hasattr(model, "get_image_features"):
        return model.get_image_features(pixel_values=x)
    if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
        return model(pixel_values=x, interpolate_pos_encoding=True)
    return model(pixel_values=x)


@functools.cache
def _torch_modules() -> tuple[type, type]:
    """The two torch module classes, defined on first use so importing this module stays cheap."""
    import torch

    class Logits(torch.nn.Module):
        """The model's own classifier output as a plain ``(n, classes)`` tensor."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            """Logits of ``x``."""
            out = first_tensor(_call_backbone(self.model, x))
            if out is None or out.ndim != 2:
                raise ModelError("the model's output is not (n, classes) logits; use a probe head")
            return out

    class ProbeHead(torch.nn.Module):
        """Backbone plus linear probe as one module: ``forward(x)`` returns the probe's logits."""

        def __init__(self, model, hook_module, layer: str, reshape, linear: dict):
            super().__init__()
            self.model, self.layer, self.reshape = model, layer, reshape
            self._hook_module = hook_module
            for key in ("pca_mean", "pca_components", "scaler_mean", "scaler_scale"):
                if key in linear:
                    self.register_buffer(key, torch.as_tensor(linear[key], dtype=torch.float32))
            self.register_buffer("coef", torch.as_tensor(linear["coef"], dtype=torch.float32))
            self.register_buffer(
                "intercept", torch.as_tensor(linear["intercept"], dtype=torch.float32)
            )
            self.has_pca = "pca_components" in linear
            self.has_scaler = "scaler_mean" in linear

        def logits(self, features):
            """Probe logits of feature rows ``(n, d)`` (L2-normalised here, as the probe was fitted).

            Equals the pipeline's ``decision_function``; a binary probe's single score ``z``
            becomes the two columns ``(-z/2, z/2)``, whose softmax is its ``predict_proba``.
            """
            v = features.float()
            v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if self.has_pca:
                v = (v - self.pca_mean) @ self.pca_components.T
            if self.has_scaler:
                v = (v - self.scaler_mean) / self.scaler_scale
            z = v @ self.coef.T + self.intercept
            return torch.cat([-z / 2, z / 2], dim=1) if z.shape[1] == 1 else z

        def forward(self, x):
            """Probe logits ``(n, classes)`` of images ``x``, differentiable back to the pixels."""
            from .reshape import apply_reshape

            captured = {}

            def keep(value):
                captured["x"] = first_tensor(value)
                raise _Stop

            if self.layer == POOLED:
                handle = self._hook_module.register_forward_pre_hook(lambda m, i: keep(i))
            else:
                handle = self._hook_module.register_forward_hook(lambda m, i, o: keep(o))
            try:
                _call_backbone(self.model, x)
            except _Stop:
                pass
            finally:
                handle.remove()
            if "x" not in captured:
                raise ModelError(f"layer {self.layer!r} produced no tensor in a forward pass")
            features = captured["x"].flatten(1) if self.layer == POOLED else captured["x"]
            return self.logits(apply_reshape(features, self.reshape))

    return Logits, ProbeHead


def _pooled_module(model):
    """The classifier whose input is the ``pooled`` layer: timm's, else the last Linear (torchvision)."""
    import torch

    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        head = head[0] if isinstance(head, tuple | list) else head
        if isinstance(head, torch.nn.Module) and not isinstance(head, torch.nn.Identity):
            return head
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if linear and not type(model).__module__.startswith("transformers."):
        return linear[-1]
    raise ModelError(
        f"cannot find the classifier that feeds 'pooled' in {type(model).__name__}; "
        "fit the probe on a named layer instead"
    )


def probe_module(embedder: Embedder, layer: str, reshape: Any, linear: dict):
    """Backbone and linear probe as ONE torch module (class ``ProbeHead``), for :func:`saliency`'s ``head``.

    Its ``forward(x)`` runs ``embedder.model`` with a hook that captures ``layer`` (with the
    autograd graph: no ``inference_mode``), stops the forward pass there, reduces the output
    with ``reshape`` exactly as the embed step did (:func:`embviz.reshape.apply_reshape`),
    L2-normalises the rows and applies the probe as torch algebra.

    Parameters
    ----------
    embedder : the model the embedding was computed with.
    layer : the embedded layer the probe was fitted on (``pooled`` or a module name).
    reshape : the embedding's reshape strategy (``mean`` ...).
    linear : the probe's arrays, from :func:`probe_linear`. Output column ``i`` is the probe's
        class ``i`` (``ProbeResult.classes[i]`` for :func:`embviz.scores.probe.probe_proba`).
    """
    embedder.check_layers([layer])
    modules = dict(embedder.model.named_modules())
    hook = _pooled_module(embedder.model) if layer == POOLED else modules[layer]
    _, probe_head = _torch_modules()
    return probe_head(embedder.model, hook, layer, reshape, linear).to(embedder.device)


def _crop_box(transform, width: int, height: int) -> tuple[float, float, float, float]:
    """The region of a ``width`` x ``height`` image that ``transform`` keeps, in its pixels.

    Follows torchvision's ``Resize`` / ``CenterCrop`` (timm's eval transforms) and the
    ``ImageClassification`` preset (torchvision weights); anything else (Hugging Face
    processors, which resize the whole image) counts as keeping all of it.
    """
    from torchvision import transforms as T
    from torchvision.transforms._presets import ImageClassification

    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    w, h, ox, oy, sx, sy = float(width), float(height), 0.0, 0.0, 1.0, 1.0

    def resize(size):
        nonlocal w, h, sx, sy
        size = [size] if isinstance(size, int) else list(size)
        if len(size) == 1:
            nw, nh = (size[0] * w / h, size[0]) if w > h else (size[0], size[0] * h / w)
        else:
            nh, nw = size
        sx, sy, w, h = sx * nw / w, sy * nh / h, float(nw), float(nh)

    def crop(size):
        nonlocal w, h, ox, oy
        size = [size] if isinstance(size, int) else list(size)
        ch, cw = (size[0], size[0]) if len(size) == 1 else size
        ox, oy = ox + round((w - cw) / 2) / sx, oy + round((h - ch) / 2) / sy
        w, h = float(cw), float(ch)

    for step in steps:
        if isinstance(step, T.Resize):
            resize(step.size)
        elif isinstance(step, T.CenterCrop):
            crop(step.size)
        elif isinstance(step, ImageClassification):
            resize(step.resize_size)
            crop(step.crop_size)
    return (ox, oy, ox + w / sx, oy + h / sy)


def _lock(model) -> threading.Lock:
    with _LOCKS_GUARD:
        if model not in _LOCKS:
            _LOCKS[model] = threading.Lock()
        return _LOCKS[model]


def _cam_class(method: str):
    if method not in _REGISTRY:
        raise ValueError(f"unknown saliency method {method!r}; valid: {list(METHODS)}")
    module, _, name = _REGISTRY[method].partition(":")
    return getattr(importlib.import_module(module), name)


def saliency(
    embedder: Embedder,
    image,
    *,
    target: int | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    head=None,
) -> Saliency:
    """A class-activation map of ``image`` for one class.

    Parameters
    ----------
    embedder : the model (default model, ``timm:``, ``tv:``, ``hf:``).
    image : a PIL RGB image (decode files with :func:`embviz.images.open_image`).
    target : the class index to explain (a top-k class, the labelled class ...); None: the top
        class of the output. EigenCAM's map does not depend on it (its first principal
        component is class-agnostic), only the reported ``score`` does.
    method : ``gradcam`` (gradient-weighted, class-specific) or ``eigencam`` (no gradients).
    layer : the module to explain; default :func:`default_target_layer` (for a probe head: the
        last map up to the probe's layer). Token outputs are turned into a grid with
        :func:`vit_reshape`.
    head : a torch module to explain instead of the model's own classifier, e.g. a
        :func:`probe_module`; needed for Hugging Face models, which load without a classifier.

    Raises
    ------
    ValueError : an unknown method (the message lists the valid ones).
    ModelError : an unknown layer, or one without a spatial map; a target out of range.
    """
    import torch

    started = time.perf_counter()
    cam_class = _cam_class(method)
    _, probe_head = _torch_modules()
    if head is None and type(embedder.model).__module__.startswith("transformers."):
        raise ModelError(
            f"model {embedder.name!r} loads without a classifier; explain a probe: "
            "saliency(..., head=probe_module(embedder, layer, reshape, linear))"
        )
    if layer is None:
        layer = default_target_layer(
            embedder, before=head.layer if isinstance(head, probe_head) else None
        )
    tokens = _check_layer(embedder, layer)
    model = head if head is not None else _torch_modules()[0](embedder.model)
    x = embedder.prepare(image).unsqueeze(0).to(embedder.device)
    gradients = method not in _GRADIENT_FREE
    targets = None if target is None else [_Target(int(target))]
    with _lock(embedder.model):
        params = [p for p in model.parameters() if p.requires_grad]
        # Gradients flow from the input, not the weights: no weight gradients are computed or
        # left behind on the shared model, which halves the backward pass.
        for p in params:
            p.requires_grad_(False)
        cam = cam_class(
            model=model,
            target_layers=[dict(embedder.model.named_modules())[layer]],
            reshape_transform=vit_reshape if tokens else None,
        )
        try:
            with torch.enable_grad() if gradients else torch.no_grad():
                maps = cam(input_tensor=x.requires_grad_(gradients), targets=targets)
            logits = cam.outputs.detach().float()
        finally:
            cam.activations_and_grads.release()
            for p in params:
                p.requires_grad_(True)
    chosen = int(logits[0].argmax()) if target is None else int(target)
    score = float(torch.softmax(logits[0], dim=0)[chosen])
    return Saliency(
        cam=np.nan_to_num(maps[0].astype(np.float32)).clip(0.0, 1.0),
        target=chosen,
        score=score,
        method=method,
        layer=layer,
        seconds=time.perf_counter() - started,
        box=_crop_box(embedder.transform, *image.size),
    )


class _Target:
    """``pytorch_grad_cam`` target: one class's logit, with an error naming the valid range."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, output):
        if not 0 <= self.index < output.shape[-1]:
            raise ModelError(f"target class {self.index} is out of range 0..{output.shape[-1] - 1}")
        return output[..., self.index]


@functools.cache
def _palette() -> np.ndarray:
    """colorcet's ``fire`` (perceptually uniform, black -> red -> yellow -> white) as a (256, 3) LUT."""
    import colorcet

    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colorcet.fire], np.uint8)


def overlay(image, cam, *, alpha: float = 0.5, size: tuple[int, int] | None = None, box=None):
    """The map coloured (colorcet ``fire``) and blended over the image, as a PIL RGB image.

    Parameters
    ----------
    image : the PIL image the map was computed for.
    cam : a :class:`Saliency` (its map is placed over its ``box``, the region the model saw) or
        a float array in [0, 1] covering ``box``.
    alpha : weight of the colour (0: the photo only, 1: the map only).
    size : ``(width, height)`` of the result; default the image's size.
    box : ``(left, top, right, bottom)`` of an array ``cam`` in the image's pixels; default the
        whole image. Pixels outside it (cropped away by the model) get the map's zero colour.
    """
    from PIL import Image

    if isinstance(cam, Saliency):
        cam, box = cam.cam, cam.box
    width, height = size or image.size
    left, top, right, bottom = box or (0.0, 0.0, float(image.size[0]), float(image.size[1]))
    kx, ky = width / image.size[0], height / image.size[1]
    area = (round(left * kx), round(top * ky), round(right * kx), round(bottom * ky))
    heat = Image.fromarray(np.asarray(cam, dtype=np.float32))
    heat = heat.resize(
        (max(area[2] - area[0], 1), max(area[3] - area[1], 1)), Image.Resampling.BILINEAR
    )
    full = np.zeros((height, width), dtype=np.float32)
    x0, y0 = max(area[0], 0), max(area[1], 0)
    part = np.asarray(heat)[y0 - area[1] : height - area[1], x0 - area[0] : width - area[0]]
    full[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]] = part
    colour = _palette()[(np.clip(full, 0.0, 1.0) * 255).astype(np.uint8)].astype(np.float32)
    photo = np.asarray(image.convert("RGB").resize((width, height)), dtype=np.float32)
    return Image.fromarray((photo * (1 - alpha) + colour * alpha).round().astype(np.uint8))
