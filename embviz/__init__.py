"""embviz: explore neural-network embeddings of image datasets at tens of millions of points.

Importing this package is cheap: torch, transformers, umap and panel load only in the
functions and subpackages that need them.
"""

from .config import Recipe, load_recipe
from .dataset import Dataset, open_dataset
from .errors import ConfigError, DatasetError, EmbvizError, ModelError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Dataset",
    "DatasetError",
    "EmbvizError",
    "ModelError",
    "Recipe",
    "__version__",
    "load_recipe",
    "open_dataset",
]
