"""torchvision models (``tv:<name>``): ``weights="DEFAULT"`` (needs internet) or ``weights=None``."""

from __future__ import annotations

from typing import Any

from ..errors import ModelError
from .base import Embedder, seeded

__all__ = ["load"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _transform(weights, image_size: int | None):
    from torchvision.transforms._presets import ImageClassification

    if weights is not None and not image_size:
        return weights.transforms()
    crop = int(image_size or 224)
    if weights is not None:
        preset = weights.transforms()
        return ImageClassification(
            crop_size=crop,
            resize_size=round(crop * preset.resize_size[0] / preset.crop_size[0]),
            mean=preset.mean,
            std=preset.std,
            interpolation=preset.interpolation,
        )
    return ImageClassification(
        crop_size=crop, resize_size=round(crop / 0.875), mean=_MEAN, std=_STD
    )


def _last_linear(model) -> str:
    """Name of the final Linear layer: its input is the pooled pre-logits feature vector."""
    import torch

    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not names:
        raise ModelError(f"torchvision model {type(model).__name__} has no Linear classifier")
    return names[-1]


def load(
    model_name: str,
    *,
    name: str,
    device: str = "auto",
    image_size: int | None = None,
    weights: Any = "DEFAULT",
    **kwargs: Any,
) -> Embedder:
    """Load ``tv:<model_name>`` with ``torchvision.models.get_model``.

    Parameters
    ----------
    weights:
        ``"DEFAULT"`` (downloads ImageNet weights: needs internet or a filled cache), a weights
        enum name such as ``"IMAGENET1K_V2"``, or None for random weights.
    kwargs:
        Passed to ``get_model``.
    """
    import torchvision.models as tvm

    if model_name not in tvm.list_models():
        raise ModelError(
            f"torchvision has no model {model_name!r}; valid names: {sorted(tvm.list_models())}"
        )
    weight_obj = None
    if weights not in (None, "", "none", "None"):
        enum = tvm.get_model_weights(model_name)
        try:
            weight_obj = weights if isinstance(weights, enum) else enum[str(weights)]
        except KeyError:
            raise ModelError(
                f"torchvision model {model_name!r} has no weights {weights!r}; valid: "
                f"{['DEFAULT', None, *[w.name for w in enum]]}"
            ) from None
    try:
        with seeded(0):
            model = tvm.get_model(model_name, weights=weight_obj, **kwargs)
    except Exception as exc:
        raise ModelError(
            f"cannot load torchvision model {model_name!r} with weights {weights!r}: {exc}"
            " (pretrained weights need internet; use weights=None for random ones)"
        ) from exc
    return Embedder(
        name=name,
        model=model,
        transform=_transform(weight_obj, image_size),
        device=device,
        pooled_module=_last_linear(model),
        image_size=image_size or 224,
        class_names=weight_obj.meta.get("categories") if weight_obj is not None else None,
    )
