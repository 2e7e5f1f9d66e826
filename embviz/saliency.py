"""Class-activation maps (Grad-CAM, EigenCAM) of one image, through a model's classifier or a linear probe.

The methods are ``grad-cam``'s (``pytorch_grad_cam``). Here: the layer, token grids, backbone
plus probe as one torch module, CAMs on a private copy of the network (their hooks never meet
the embedder's own forward passes), map cells put back on their receptive fields, colours.
"""

from __future__ import annotations

import functools
import importlib
import inspect
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

__all__ = ["METHODS", "Saliency", "default_target_layer", "overlay", "probe_linear"]
__all__ += ["alignment", "crop_box", "network", "probe_module", "saliency", "vit_reshape"]

#: Method name -> ``pytorch_grad_cam`` class (imported on first use). EigenCAM (the first
#: principal component of the activations) needs no backward pass. ScoreCAM is left out: one
#: forward pass per channel of the layer (1,280 for EfficientNet-Lite0) is minutes on a CPU.
_REGISTRY = {"gradcam": "GradCAM", "eigencam": "EigenCAM"}
METHODS = tuple(_REGISTRY)
#: Last names of a transformer block's pre-attention norm: timm ``blocks.N.norm1``, Hugging Face
#: ViT ``encoder.layer.N.layernorm_before``, CLIP ``layers.N.layer_norm1``.
_VIT_NORMS = ("norm1", "layernorm_before", "layer_norm1")


@dataclass(frozen=True)
class Saliency:
    """One class-activation map and what it explains.

    Attributes
    ----------
    cam : float32 ``(H, W)`` in [0, 1] at the model's input size (the crop the model saw).
    target : the class explained (an index into the classifier's or the head's outputs).
    score : the softmax probability of ``target``.
    method : a name from :data:`METHODS`.
    layer : the module whose activations were weighted.
    seconds : wall time of the call, preprocessing included.
    box : ``(left, top, right, bottom)`` in the original image's pixels: the region the model
        saw (after its resize and centre crop), which ``cam`` covers.
    """

    cam: np.ndarray
    target: int
    score: float
    method: str
    layer: str
    seconds: float
    box: tuple[float, float, float, float]


def vit_reshape(tensor):
    """Transformer tokens ``(n, tokens, C)`` -> a map ``(n, C, h, w)`` (4-D maps pass through):
    the last square number of tokens; those before (CLS, distillation, registers) are dropped."""
    if tensor.ndim == 4:
        return tensor
    if tensor.ndim != 3:
        raise ModelError(f"vit_reshape takes (n, tokens, C) tokens, got {tuple(tensor.shape)}")
    n, tokens, channels = tensor.shape
    side = math.isqrt(tokens)
    return tensor[:, tokens - side * side :].transpose(1, 2).reshape(n, channels, side, side)


def default_target_layer(embedder: Embedder, *, before: str | None = None) -> str:
    """The module a CAM hooks by default, from ``embedder.layers()`` shapes.

    ViTs (a pre-attention norm with token output): the last block's ``norm1`` (timm) or
    ``layernorm_before`` (Hugging Face), as tokens for :func:`vit_reshape` (the final norm's
    patches get gradient only through CLS). CNNs: the last module whose output is a map
    ``(n, C, H, W)`` with ``H, W >= 2`` (EfficientNet-Lite0: ``bn2.act``, 7x7). ``before``: only modules up to and including this layer count (a probe reading
    ``blocks.5`` sends no gradient to later ones); ``pooled`` or None: all.
    """
    shapes = embedder.layers()
    names = [n for n, _ in shapes]
    if before not in (None, POOLED):
        embedder.check_layers([before])
        shapes = shapes[: names.index(before) + 1] if before in names else shapes
    maps = [i for i, (_, s) in enumerate(shapes) if len(s) == 3 and min(s[1:]) >= 2]
    norms = [i for i, (n, s) in enumerate(shapes) if len(s) == 2 and n.split(".")[-1] in _VIT_NORMS]
    if norms or maps:  # attention's (n, heads, T, d) internals look like maps: norms first
        return names[(norms or maps)[-1]]
    upto = f" up to {before!r}" if before else ""
    raise ModelError(f"model {embedder.name!r} has no map or token layer{upto}; pass layer=")


def probe_linear(pipeline) -> dict[str, np.ndarray]:
    """The float64 arrays of a fitted probe (``[PCA] -> StandardScaler -> LogisticRegression``,
    as :mod:`embviz.scores.probe` builds it) for :func:`probe_module`: ``pca_mean`` and
    ``pca_components`` (if a PCA), ``scaler_mean``, ``scaler_scale``, ``coef`` ``(c, k)`` (one
    row for two classes), ``intercept``. ValueError for other steps or a whitening PCA."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    out: dict[str, np.ndarray] = {}
    for name, step in pipeline.steps:
        if isinstance(step, PCA) and not step.whiten:
            out["pca_mean"], out["pca_components"] = step.mean_, step.components_
        elif isinstance(step, StandardScaler):  # None when with_mean / with_std is off
            out["scaler_mean"] = step.mean_ if step.with_mean else np.zeros(step.n_features_in_)
            out["scaler_scale"] = step.scale_ if step.with_std else np.ones(step.n_features_in_)
        elif isinstance(step, LogisticRegression):
            out["coef"], out["intercept"] = step.coef_, step.intercept_
        else:
            raise ValueError(f"probe step {name!r}: not a PCA (unwhitened), scaler or logistic fit")
    if "coef" not in out:
        raise ValueError("the probe pipeline has no LogisticRegression step")
    return {k: np.array(v, dtype=np.float64) for k, v in out.items()}


class _Stop(Exception):
    """Raised from a hook once the wanted layer ran: the rest of the forward pass is not needed."""


def _run_until(net, module, x, keep, *, pre: bool = False) -> None:
    """Forward ``x`` through ``net`` until ``module``'s input (``pre``) or output goes to ``keep``."""

    def stop(*args):
        keep(first_tensor(args[-1]))
        raise _Stop

    handle = (module.register_forward_pre_hook if pre else module.register_forward_hook)(stop)
    try:
        if not type(net).__module__.startswith("transformers."):
            net(x)
        elif hasattr(net, "get_image_features"):  # CLIP-like: the image tower
            net.get_image_features(pixel_values=x)
        elif "interpolate_pos_encoding" in inspect.signature(net.forward).parameters:
            net(pixel_values=x, interpolate_pos_encoding=True)  # a no-op at the native size
        else:
            net(pixel_values=x)
    except _Stop:
        pass
    finally:
        handle.remove()


@functools.cache
def _probe_head_class() -> type:
    """The ``ProbeHead`` class, defined on first use so importing this module stays cheap."""
    import torch

    class ProbeHead(torch.nn.Module):
        """Backbone plus linear probe as one module: ``forward(x)`` returns the probe's logits."""

        def __init__(self, net, hook_module, layer: str, reshape, linear: dict):
            super().__init__()
            self.net, self.layer, self.reshape, self.hook_module = net, layer, reshape, hook_module
            k = linear["coef"].shape[1]  # missing steps are identities
            eye = {"pca_mean": np.zeros(k), "pca_components": np.eye(k), "scaler_mean": np.zeros(k)}
            for key, value in {**eye, "scaler_scale": np.ones(k), **linear}.items():
                self.register_buffer(key, torch.as_tensor(value, dtype=torch.float32))

        def logits(self, features):
            """Probe logits of feature rows ``(n, d)`` (L2-normalised here, as for the fit): the
            pipeline's ``decision_function``; a binary one's ``z`` gives columns ``(-z/2, z/2)``."""
            v = features.float() / features.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
            v = ((v - self.pca_mean) @ self.pca_components.T - self.scaler_mean) / self.scaler_scale
            z = v @ self.coef.T + self.intercept
            return torch.cat([-z / 2, z / 2], dim=1) if z.shape[1] == 1 else z

        def forward(self, x):
            """Probe logits ``(n, classes)`` of images ``x``, differentiable back to the pixels."""
            from .reshape import apply_reshape

            got, pre = [], self.layer == POOLED  # pooled: the classifier's input
            _run_until(self.net, self.hook_module, x, got.append, pre=pre)
            return self.logits(apply_reshape(got[0].flatten(1) if pre else got[0], self.reshape))

    return ProbeHead


#: embedder.model -> (a private copy without weight gradients, the lock that lets one CAM at a
#: time hook it, its receptive-field shifts); weak keys: a dropped model frees its copy.
_NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NETWORKS_GUARD = threading.Lock()


def network(embedder: Embedder) -> tuple[Any, threading.Lock, dict]:
    """``(private copy of embedder's network, the lock to hold while hooking it, shift cache)``."""
    import copy

    with _NETWORKS_GUARD:
        if embedder.model not in _NETWORKS:
            net = copy.deepcopy(embedder.model).eval().requires_grad_(False)
            _NETWORKS[embedder.model] = (net, threading.Lock(), {})
        return _NETWORKS[embedder.model]


def probe_module(embedder: Embedder, layer: str, reshape: Any, linear: dict):
    """Backbone and linear probe as ONE torch module (``ProbeHead``), for :func:`saliency`'s ``head``.

    ``forward(x)`` runs the embedder's network (its private CAM copy), captures ``layer`` with
    its autograd graph and stops there, reduces it with ``reshape`` as the embed step did
    (:func:`embviz.reshape.apply_reshape`), L2-normalises and applies the probe's ``linear``
    arrays (:func:`probe_linear`). ``layer``: the embedded layer the probe was fitted on,
    ``pooled`` (timm, torchvision: the classifier's input) or a module. Output column ``i`` is
    the probe's class ``i`` (``ProbeResult.classes[i]`` of :mod:`embviz.scores.probe`).
    """
    import torch

    embedder.check_layers([layer])
    net = network(embedder)[0]
    hook = dict(net.named_modules()).get(layer)
    if layer == POOLED and hasattr(net, "get_classifier"):  # the classifier's input; timm's
        hook = net.get_classifier()
    elif layer == POOLED and not type(net).__module__.startswith("transformers."):
        linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]  # as tv.py pools
        hook = linear[-1] if linear else None
    if not isinstance(hook, torch.nn.Module) or isinstance(hook, torch.nn.Identity):
        raise ModelError(f"model {embedder.name!r}: no classifier feeds 'pooled'; name a layer")
    return _probe_head_class()(net, hook, layer, reshape, linear).to(embedder.device)


def alignment(net, layer: str, x) -> float:
    """Pixels to move an upsampled map (down and right) so its cells sit on their receptive fields.

    Upsampling puts cell ``j`` of a stride-``S`` map at ``(j + 0.5) S``; five stride-2 convs
    with symmetric padding centre it at ``32 j``: half a cell (16 px at 224) down and right of
    the truth, enough to miss a 100-px object. The strided convs and pools that run before
    ``layer`` give the centre (two doing the same resolution step, as a ResNet shortcut and its
    block do, count once); ViT patch grids and patchifying stems (ConvNeXt) come out aligned.
    """
    import torch

    kinds = (torch.nn.modules.conv._ConvNd, torch.nn.MaxPool2d, torch.nn.AvgPool2d)
    steps: dict[tuple, tuple] = {}

    def record(module, inputs, output):
        inp, out = first_tensor(inputs), first_tensor(output)
        if not isinstance(module, kinds) or inp is None or out is None or inp.ndim != 4:
            return
        first = lambda v: v[0] if isinstance(v, tuple | list) else v  # noqa: E731 (square kernels)
        k, s, size = first(module.kernel_size), first(module.stride), inp.shape[2]
        d = first(module.dilation) if isinstance(module, torch.nn.Conv2d) else 1
        p = 0 if isinstance(module.padding, str) else first(module.padding)
        if type(module).__name__.endswith("Same"):  # timm's TF padding: the odd pixel after
            p = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0) // 2
        if s > 1:
            steps.setdefault((tuple(inp.shape[2:]), tuple(out.shape[2:])), (s, d * (k - 1) / 2 - p))

    modules = dict(net.named_modules())
    handles = [m.register_forward_hook(record) for m in modules.values()]
    try:
        with torch.inference_mode():
            _run_until(net, modules[layer], x, lambda out: None)
    finally:
        for handle in handles:
            handle.remove()
    stride, centre = 1, 0.0
    for s, offset in steps.values():
        centre, stride = centre + stride * offset, stride * s
    return centre + 0.5 - stride / 2


def crop_box(transform, width: int, height: int) -> tuple[float, float, float, float]:
    """The region of a ``width`` x ``height`` image the model sees, in its pixels: torchvision
    ``Resize``/``CenterCrop`` (timm), ``ImageClassification`` (tv); else (HF) all of it."""
    from torchvision import transforms as T
    from torchvision.transforms._presets import ImageClassification

    w, h, ox, oy, sx, sy = float(width), float(height), 0.0, 0.0, 1.0, 1.0
    for step in transform.transforms if isinstance(transform, T.Compose) else [transform]:
        resize = step.size if isinstance(step, T.Resize) else None
        crop = step.size if isinstance(step, T.CenterCrop) else None
        if isinstance(step, ImageClassification):
            resize, crop = step.resize_size, step.crop_size
        if resize is not None:  # one number: the shorter side; two: (height, width)
            r = [resize] if isinstance(resize, int) else list(resize)
            nw, nh = (w * r[0] / min(w, h), h * r[0] / min(w, h)) if len(r) == 1 else r[::-1]
            sx, sy, w, h = sx * nw / w, sy * nh / h, float(nw), float(nh)
        if crop is not None:
            ch, cw = (([crop] if isinstance(crop, int) else list(crop)) * 2)[-2:]
            ox, oy = ox + round((w - cw) / 2) / sx, oy + round((h - ch) / 2) / sy
            w, h = float(cw), float(ch)
    return (ox, oy, ox + w / sx, oy + h / sy)


def saliency(
    embedder: Embedder,
    image,
    *,
    target: int | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    head=None,
) -> Saliency:
    """A class-activation map of PIL RGB ``image`` for one class of ``embedder``'s model.

    Parameters
    ----------
    target : the class to explain (a top-k class, the labelled class ...); None: the top one.
        EigenCAM's map does not depend on it (its principal component is class-agnostic).
    method : ``gradcam`` (gradient-weighted, class-specific) or ``eigencam`` (no gradients).
    layer : the module to explain; default :func:`default_target_layer` (with a probe head:
        the last map up to the probe's layer). Tokens become a grid (:func:`vit_reshape`).
    head : a :func:`probe_module` of this embedder, explained instead of the model's own
        classifier; needed for Hugging Face models, which load without one.

    Raises ValueError for an unknown method, :class:`~embviz.errors.ModelError` for an unknown
    layer or one without a map, a target out of range, or no classifier and no ``head``.
    """
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    if method not in _REGISTRY:
        raise ValueError(f"unknown saliency method {method!r}; valid: {list(METHODS)}")
    net, lock, shifts = network(embedder)
    if head is not None and not (isinstance(head, _probe_head_class()) and head.net is net):
        raise TypeError("head must be a probe_module(...) built on this embedder")
    if head is None and type(net).__module__.startswith("transformers."):
        raise ModelError(f"model {embedder.name!r} has no classifier; pass head=probe_module(...)")
    layer = layer or default_target_layer(embedder, before=head.layer if head is not None else None)
    embedder.check_layers([layer])
    shapes = dict(embedder.layers())
    names = [n for n, s in shapes.items() if len(s) in (2, 3) and min(s) >= 2]
    if layer == POOLED or layer not in names:
        why = f"output {shapes.get(layer)} is no map (C, H, W) or tokens (T, C); try {names[-6:]}"
        raise ModelError(f"model {embedder.name!r}, layer {layer!r}: {why}")
    order = list(shapes)
    if head is not None and head.layer != POOLED and order.index(layer) > order.index(head.layer):
        raise ModelError(f"layer {layer!r} runs after the probe's {head.layer!r}: no gradient")
    if target is not None and int(target) < 0:
        raise ModelError(f"target class {target} is negative")
    x, grad = embedder.prepare(image).unsqueeze(0).to(embedder.device), method != "eigencam"
    with lock:
        if (layer, x.shape) not in shifts:
            shifts[layer, x.shape] = alignment(net, layer, x)
        cam = getattr(importlib.import_module("pytorch_grad_cam"), _REGISTRY[method])(
            model=head if head is not None else net,
            target_layers=[dict(net.named_modules())[layer]],
            reshape_transform=vit_reshape if len(shapes[layer]) == 2 else None,
        )
        try:  # the weights need no gradient: the input's graph carries it to the layer; one BLAS
            # thread: EigenCAM's SVD took 0.7 s, not 0.2, with two on a busy 2-core machine
            with threadpool_limits(1, "blas"), torch.enable_grad() if grad else torch.no_grad():
                targets = None if target is None else [ClassifierOutputTarget(int(target))]
                maps = cam(input_tensor=x.requires_grad_(grad), targets=targets)
            logits = cam.outputs.detach().float()[0]
        except IndexError as exc:  # the target's logit
            raise ModelError(f"target class {target} is out of range ({exc})") from None
        finally:
            cam.activations_and_grads.release()
    chosen = int(logits.argmax()) if target is None else int(target)
    rows, cols = (np.arange(n) - round(shifts[layer, x.shape]) for n in maps.shape[1:])
    moved = maps[0][np.ix_(rows.clip(0, len(rows) - 1), cols.clip(0, len(cols) - 1))]
    moved = np.nan_to_num(moved.astype(np.float32)).clip(0.0, None)
    return Saliency(
        cam=moved / moved.max() if moved.max() > 0 else moved,
        target=chosen,
        score=float(torch.softmax(logits, dim=0)[chosen]),
        method=method,
        layer=layer,
        seconds=time.perf_counter() - started,
        box=crop_box(embedder.transform, *image.size),
    )


def overlay(image, cam, *, alpha: float = 0.5, size: tuple[int, int] | None = None, box=None):
    """The map in colorcet's ``fire`` (perceptually uniform, black-red-yellow-white) blended
    over the PIL ``image`` it was computed for, as a PIL RGB image.

    ``cam``: a :class:`Saliency` (its map goes over its ``box``) or a float array in [0, 1]
    covering ``box``, ``(left, top, right, bottom)`` in the image's pixels (default: all of
    it); pixels outside it (cropped away) get the zero colour. ``alpha``: weight of the colour
    (0: the photo only). ``size``: ``(width, height)`` of the result, default the image's.
    """
    import colorcet
    from PIL import Image

    if isinstance(cam, Saliency):
        cam, box = cam.cam, cam.box
    width, height = size or image.size
    left, top, right, bottom = box or (0, 0, *image.size)
    kx, ky = width / image.size[0], height / image.size[1]
    x0, y0 = round(left * kx), round(top * ky)
    span = (max(round(right * kx) - x0, 1), max(round(bottom * ky) - y0, 1))
    full = Image.new("F", (width, height), 0.0)  # paste clips what falls outside
    full.paste(Image.fromarray(np.asarray(cam, np.float32)).resize(span, Image.BILINEAR), (x0, y0))
    level = (np.clip(np.asarray(full), 0.0, 1.0) * 255).astype(np.uint8)
    photo = np.asarray(image.convert("RGB").resize((width, height)), dtype=np.float32)
    lut = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colorcet.fire], np.float32)
    blend = photo * (1 - alpha) + lut[level] * alpha
    return Image.fromarray(blend.round().astype(np.uint8))
