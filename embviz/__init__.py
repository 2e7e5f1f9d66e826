"""embviz: explore neural-network embeddings of image datasets at tens of millions of points.

Importing this package is cheap: torch, transformers, umap and panel load only in the
functions and subpackages that need them.
"""

from .config import Recipe, load_recipe
from .dataset import Dataset, open_dataset
from .errors import ConfigError, DatasetError, EmbvizError, ModelError

__version__ = "0.1.0"


def open(path) -> Dataset:  # noqa: A001 - embviz.open(path) reads like the file API it mirrors
    """Open and validate the dataset at ``path``; ``embviz.open(path).explore()`` shows it."""
    return open_dataset(path)


def __getattr__(name: str):
    # Explorer pulls in Panel and Bokeh: load it only when asked for.
    if name == "Explorer":
        from embviz.app.explorer import Explorer

        return Explorer
    raise AttributeError(f"module 'embviz' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "Dataset",
    "DatasetError",
    "EmbvizError",
    "Explorer",
    "ModelError",
    "Recipe",
    "__version__",
    "load_recipe",
    "open",
    "open_dataset",
]
