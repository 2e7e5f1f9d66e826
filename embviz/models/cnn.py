"""A small CNN for 28x28 grayscale digits (``cnn``): the demo trains it and embeds each epoch's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import Embedder, seeded

__all__ = ["CLASS_NAMES", "MNIST_MEAN", "MNIST_STD", "build_cnn", "load", "load_state", "transform"]

#: The digits, in logit order.
CLASS_NAMES = [str(d) for d in range(10)]
#: Mean and standard deviation of MNIST's pixels (in 0..1), the usual normalisation.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
#: Input side the network was designed for; other sizes work (an adaptive pool keeps fc1's input).
SIDE = 28


def build_cnn():
    """The network, with random weights from torch's current RNG (wrap in :func:`seeded`).

    conv(1->16, 3) + ReLU + max-pool, conv(16->32, 3) + ReLU + max-pool, an adaptive average
    pool to 5x5 (the identity for 28-pixel inputs, so other sizes still fit), flatten,
    ``fc1`` (800->64) + ReLU, whose output is the ``pooled`` embedding, and ``classifier``
    (64->10), the digit logits. About 57k parameters.
    """
    from collections import OrderedDict

    from torch import nn

    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 16, 3)),
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(16, 32, 3)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("fit", nn.AdaptiveAvgPool2d(5)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(32 * 5 * 5, 64)),
                ("relu3", nn.ReLU()),
                ("classifier", nn.Linear(64, len(CLASS_NAMES))),
            ]
        )
    )


def transform(image_size: int | None = None):
    """``PIL RGB image -> float tensor (1, side, side)``: grayscale, resized to ``image_size``
    (default 28), scaled to 0..1 and normalised with MNIST's mean and deviation."""
    from torchvision import transforms as T

    side = int(image_size or SIDE)
    return T.Compose(
        [
            T.Grayscale(num_output_channels=1),
            T.Resize((side, side)),
            T.ToTensor(),
            T.Normalize((MNIST_MEAN,), (MNIST_STD,)),
        ]
    )


def load_state(path: str | Path) -> dict[str, Any]:
    """The cnn state dict in ``path``, checked against the architecture.

    Loaded with ``torch.load(..., weights_only=True)``, so a file can hold tensors but no code.
    Raises :class:`ModelError` naming the file when it is missing, unreadable, corrupt, or the
    state dict of another network (missing or unexpected keys, another tensor shape).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: cnn weight file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path}: cannot load cnn weights ({type(exc).__name__}: {exc})".strip()
        ) from exc
    if not isinstance(state, dict):
        raise ModelError(
            f"checkpoint {path} is not a cnn state dict: it holds a {type(state).__name__}"
        )
    target = build_cnn().state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise ModelError(
            f"checkpoint {path} is not a cnn state dict: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]} (expected {list(target)})"
        )
    for key, ref in target.items():
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(ref.shape):
            found = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise ModelError(
                f"checkpoint {path} is not a cnn state dict: {key!r} has shape {found}, "
                f"the cnn's has {tuple(ref.shape)}"
            )
    return state


def load(
    _model: str = "",
    *,
    name: str = "cnn",
    device: str = "auto",
    image_size: int | None = None,
    weights: str | Path | None = None,
    **options: Any,
) -> Embedder:
    """Load the digit CNN as an :class:`Embedder` (``pooled``: the 64 features before the logits).

    Parameters
    ----------
    weights:
        A state dict file saved from :func:`build_cnn`'s network (``embviz train`` writes one
        per epoch), loaded with ``weights_only=True``; None gives seeded random weights (the
        same in every process: an untrained network).
    image_size:
        Input side in pixels (default 28, the digits' own).
    """
    if options:
        raise ModelError(f"model {name!r}: unknown option {sorted(options)[0]!r}; valid: weights")
    files: list[Path] = []
    with seeded(0):
        model = build_cnn()
    if weights not in (None, "", "none", "None"):
        path = Path(weights)
        model.load_state_dict(load_state(path))
        files = [path]
    return Embedder(
        name=name,
        model=model,
        transform=transform(image_size),
        device=device,
        pooled_module="classifier",
        weights_files=files,
        image_size=image_size or SIDE,
        class_names=CLASS_NAMES,
    )
