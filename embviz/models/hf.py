"""Hugging Face models (``hf:<model id or local folder>``): the vision tower as an Embedder, CLIP-like text towers for text search."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import Embedder, first_tensor, resolve_device

__all__ = ["TextEncoder", "has_text_encoder", "load", "load_text_encoder"]


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


# -- text towers (CLIP-like models) -------------------------------------------------------------
def _model_class(config):
    """The class ``AutoModel`` builds for ``config`` (without loading any weights)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    cls = MODEL_MAPPING[type(config)]
    return cls[0] if isinstance(cls, tuple | list) else cls


def has_text_encoder(model_id: str, *, revision: str | None = None, **_options: Any) -> bool:
    """Whether ``AutoModel`` gives ``model_id`` a ``get_text_features`` (CLIP, SigLIP, ALIGN ...).

    Reads only the configuration (local folder or hub cache); False when it cannot be read.
    """
    from transformers import AutoConfig

    try:
        cls = _model_class(AutoConfig.from_pretrained(model_id, revision=revision))
    except Exception:  # unreadable config, unknown architecture: no text search, not a crash
        return False
    return hasattr(cls, "get_text_features")


class TextEncoder:
    """``list[str] -> float32 ndarray (n, d)``: a CLIP-like model's projected text features, in
    the space of its projected image features (the Embedder's ``pooled`` layer)."""

    def __init__(self, name: str, model, tokenizer, device: str):
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        config = getattr(model.config, "text_config", None) or model.config
        limit = getattr(config, "max_position_embeddings", None) or 77
        self.max_length = int(min(limit, getattr(tokenizer, "model_max_length", limit) or limit))
        # SigLIP was trained on texts padded to the full length; CLIP pools at the end token.
        self.padding: bool | str = "max_length" if "siglip" in model.config.model_type else True
        # A fast tokenizer's padding and truncation settings are shared state: one call at a time.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextEncoder({self.name!r}, device={self.device!r})"

    def __call__(self, texts) -> Any:
        import torch

        texts = [texts] if isinstance(texts, str) else list(texts)
        with self._lock:
            inputs = self.tokenizer(
                texts,
                padding=self.padding,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        wanted = {"input_ids", "attention_mask", "position_ids"}
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in wanted}
        with torch.inference_mode():
            output = self.model.get_text_features(**inputs)
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        return features.detach().float().cpu().numpy()


def load_text_encoder(
    model_id: str,
    *,
    name: str,
    device: str = "auto",
    embedder: Embedder | None = None,
    revision: str | None = None,
    **kwargs: Any,
) -> TextEncoder:
    """The text tower of CLIP-like ``hf:<model_id>`` with its tokenizer.

    Parameters
    ----------
    model_id:
        Hub id or local folder; the folder must hold the tokenizer (``save_pretrained`` of the
        tokenizer or processor) beside the model.
    embedder:
        This model's loaded Embedder: its network is reused (and ``device`` ignored).
    revision, kwargs:
        As for :func:`load`.
    """
    from transformers import AutoModel, AutoTokenizer

    if embedder is not None:
        model, device = embedder.model, embedder.device
    else:
        try:
            model = AutoModel.from_pretrained(model_id, revision=revision, **kwargs)
        except Exception as exc:
            raise ModelError(f"cannot load Hugging Face model {model_id!r}: {exc}") from exc
        device = resolve_device(device)
        model = model.to(device).eval()
    if not hasattr(model, "get_text_features"):
        raise ModelError(
            f"model {name!r} ({type(model).__name__}) has no text tower; text search needs a "
            "CLIP-like model, e.g. hf:openai/clip-vit-base-patch32"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
    except Exception as exc:
        raise ModelError(
            f"cannot load the tokenizer of Hugging Face model {model_id!r}: {exc} (a local "
            "folder needs the tokenizer or processor saved beside the model)"
        ) from exc
    return TextEncoder(name, model, tokenizer, device)
