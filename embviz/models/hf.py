"""Hugging Face vision models (``hf:<model id or local folder>``) through AutoModel and AutoImageProcessor."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import Embedder, first_tensor

__all__ = ["load"]


def _size_kwargs(processor, image_size: int | None) -> dict[str, Any]:
    """Call-time size options that make ``processor`` output ``image_size`` squares."""
    if not image_size:
        return {}
    side = int(image_size)
    size = getattr(processor, "size", None) or {}
    keys = set(size.keys()) if hasattr(size, "keys") else set()
    if size and "shortest_edge" in keys and getattr(size, "get", dict().get)("shortest_edge"):
        kwargs: dict[str, Any] = {"size": {"shortest_edge": side}}
    else:
        kwargs = {"size": {"height": side, "width": side}}
    if getattr(processor, "crop_size", None):
        kwargs["crop_size"] = {"height": side, "width": side}
    return kwargs


class _Transform:
    """``PIL image -> (3, H, W)`` tensor through a Hugging Face image processor."""

    def __init__(self, processor, image_size: int | None):
        self.processor = processor
        self.kwargs = _size_kwargs(processor, image_size)

    def __call__(self, image):
        out = self.processor(images=image, return_tensors="pt", **self.kwargs)
        return out["pixel_values"][0].float()


def _pooled(model):
    """``forward output -> (n, d)``: the model's own image embedding.

    CLIP-style models: the projected image features. A BERT-style pooler (a trained or, for
    checkpoints saved from a classifier, random dense + tanh) is skipped for the CLS token of
    the normalised last hidden state; otherwise ``pooler_output``, else the mean of the last
    hidden state over tokens / positions.
    """
    bert_pooler = hasattr(getattr(model, "pooler", None), "dense")

    def pooled(output):
        if not bert_pooler:
            pool = getattr(output, "pooler_output", None)
            if pool is not None:
                return pool.flatten(1)
            if not hasattr(output, "last_hidden_state"):
                tensor = first_tensor(output)
                if tensor is not None and tensor.ndim == 2:
                    return tensor
        hidden = first_tensor(output)
        if hidden.ndim == 3:
            return hidden[:, 0] if bert_pooler else hidden.mean(dim=1)
        if hidden.ndim == 4:
            return hidden.mean(dim=(2, 3))
        return hidden.flatten(1)

    return pooled


def _forward(model, image_size: int | None):
    """``(model, pixel_values) -> output``: image features for CLIP-like models, else ``model(...)``."""
    fn = model.get_image_features if hasattr(model, "get_image_features") else model.forward
    kwargs = {}
    if image_size and "interpolate_pos_encoding" in inspect.signature(fn).parameters:
        kwargs["interpolate_pos_encoding"] = True
    if hasattr(model, "get_image_features"):
        return lambda m, x: m.get_image_features(pixel_values=x, **kwargs)
    return lambda m, x: m(pixel_values=x, **kwargs)


def load(
    model_id: str,
    *,
    name: str,
    device: str = "auto",
    image_size: int | None = None,
    revision: str | None = None,
    **kwargs: Any,
) -> Embedder:
    """Load ``hf:<model_id>``: a hub id (needs internet or a filled cache) or a local folder.

    Parameters
    ----------
    model_id:
        ``google/vit-base-patch16-224``, ``openai/clip-vit-base-patch32``,
        ``facebook/dinov2-small`` ... or a folder written by ``save_pretrained`` holding the
        model and its image processor.
    revision:
        Hub revision (branch, tag or commit) to pin.
    kwargs:
        Passed to ``AutoModel.from_pretrained``.
    """
    from transformers import AutoImageProcessor, AutoModel

    local = Path(model_id).is_dir()
    try:
        processor = AutoImageProcessor.from_pretrained(model_id, revision=revision)
    except Exception as exc:
        raise ModelError(
            f"cannot load the image processor of Hugging Face model {model_id!r}: {exc}"
            + ("" if local else " (hub models need internet or a filled cache)")
        ) from exc
    try:
        model = AutoModel.from_pretrained(model_id, revision=revision, **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load Hugging Face model {model_id!r}: {exc}") from exc
    files = []
    if local:
        folder = Path(model_id)
        files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return Embedder(
        name=name,
        model=model,
        transform=_Transform(processor, image_size),
        device=device,
        pooled_from_output=_pooled(model),
        forward=_forward(model, image_size),
        weights_files=files,
        image_size=image_size or _native_size(model),
    )


def _native_size(model) -> int:
    config = getattr(model, "config", None)
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", None) or 224
    return int(size[0] if isinstance(size, list | tuple) else size)
