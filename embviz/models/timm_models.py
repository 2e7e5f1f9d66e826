"""timm models (``timm:<name>``): pretrained from the Hugging Face hub, or random weights offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import Embedder, seeded

__all__ = ["from_timm_model", "load", "timm_transform"]


def timm_transform(model, image_size: int | None):
    """timm's eval transform for ``model`` (``resolve_data_config``), optionally at ``image_size``."""
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=model)
    if image_size:
        config["input_size"] = (3, int(image_size), int(image_size))
    return create_transform(**config, is_training=False)


def _classifier_name(model) -> str:
    head = model.get_classifier()
    if isinstance(head, tuple | list):  # distilled models return (head, head_dist)
        head = head[0]
    for name, module in model.named_modules():
        if module is head and name:
            return name
    raise ModelError(f"cannot find the classifier module of timm model {type(model).__name__}")


def from_timm_model(
    model,
    *,
    name: str,
    device: str,
    image_size: int | None,
    weights_files=(),
    class_names=None,
) -> Embedder:
    """Wrap a timm ``model``: ``pooled`` is the input of its classifier (timm's pre-logits).

    ``class_names`` name its logits; default ImageNet's when it has 1,000 outputs."""
    if class_names is None and getattr(model, "num_classes", 0) == 1000:
        from .base import imagenet_classes

        class_names = imagenet_classes()
    return Embedder(
        name=name,
        model=model,
        transform=timm_transform(model, image_size),
        device=device,
        pooled_module=_classifier_name(model),
        weights_files=weights_files,
        image_size=image_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1],
        class_names=class_names,
    )


def load(
    model_name: str,
    *,
    name: str,
    device: str = "auto",
    image_size: int | None = None,
    pretrained: bool = True,
    checkpoint: str | None = None,
    **kwargs: Any,
) -> Embedder:
    """Load ``timm:<model_name>``.

    Parameters
    ----------
    model_name:
        Any name ``timm.list_models()`` knows.
    pretrained:
        Download ImageNet weights from the hub (needs internet or a filled cache); False gives
        random weights (benchmarks, tests).
    checkpoint:
        Path of a local checkpoint to load instead (``timm.create_model(checkpoint_path=...)``).
    kwargs:
        Passed to ``timm.create_model`` (e.g. ``num_classes``).
    """
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('.')[0][:6]}*")[:20]
        raise ModelError(
            f"timm has no model {model_name!r}; similar names: {close or 'none'} "
            "(see timm.list_models())"
        )
    try:
        with seeded(0):
            model = timm.create_model(
                model_name,
                pretrained=bool(pretrained) and checkpoint is None,
                checkpoint_path=checkpoint or None,
                **kwargs,
            )
    except Exception as exc:  # hub or file failures come in many types
        hint = " (pretrained weights need internet; use pretrained=False)" if pretrained else ""
        raise ModelError(f"cannot load timm model {model_name!r}: {exc}{hint}") from exc
    files = [Path(checkpoint)] if checkpoint else []
    return from_timm_model(
        model, name=name, device=device, image_size=image_size, weights_files=files
    )
