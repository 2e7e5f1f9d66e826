"""embviz: explore neural-network embeddings of image datasets at tens of millions of points.

Importing this package is cheap: torch, transformers, umap and panel load only in the
functions and subpackages that need them.
"""

from .config import Recipe, load_recipe
from .dataset import Dataset, open_dataset
from .errors import ConfigError, DatasetError, EmbvizError, ModelError

__version__ = "0.1.0"


def open(path) -> Dataset:  # noqa: A001 - embviz.open(path) reads like the file API it mirrors
    """Open and validate the dataset at ``path``; ``embviz.explore(ds)`` shows it."""
    return open_dataset(path)


#: Names served by the app on first use: they pull in Panel, HoloViews or pydeck. This is the
#: one place the library names ``embviz.app`` (the app sits above it; nothing else looks up).
_APP = {
    "Explorer": "embviz.app.explorer",
    "deck": "embviz.app.notebook",
    "explore": "embviz.app.notebook",
    "points": "embviz.app.notebook",
}


def __getattr__(name: str):
    module = _APP.get(name)
    if module is None:
        raise AttributeError(f"module 'embviz' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


__all__ = [
    "ConfigError",
    "Dataset",
    "DatasetError",
    "EmbvizError",
    "Explorer",
    "ModelError",
    "Recipe",
    "__version__",
    "deck",
    "explore",
    "load_recipe",
    "open",
    "open_dataset",
    "points",
]
