"""Exceptions that tell the user which file, row, column or key is wrong and what to do."""

from __future__ import annotations

__all__ = ["ConfigError", "DatasetError", "EmbvizError", "ExportError", "ModelError", "TagError"]


class EmbvizError(Exception):
    """Base class for every error embviz raises on purpose."""


class DatasetError(EmbvizError):
    """A dataset directory, manifest or table is missing, malformed or inconsistent."""


class ConfigError(EmbvizError):
    """A YAML recipe or settings file has an unknown key, a missing key or a bad value."""


class ModelError(EmbvizError):
    """A model name, layer or reshape strategy cannot be resolved or loaded."""


class TagError(EmbvizError, ValueError):
    """A tag name, tag value, user name or sample id given to the tag store is not valid."""


class ExportError(EmbvizError, ValueError):
    """An export was asked for in an unknown format, or for samples the dataset lacks."""
