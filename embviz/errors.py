"""Exceptions that tell the user which file, row, column or key is wrong and what to do."""

from __future__ import annotations

__all__ = ["ConfigError", "DatasetError", "EmbvizError", "ModelError"]


class EmbvizError(Exception):
    """Base class for every error embviz raises on purpose."""


class DatasetError(EmbvizError):
    """A dataset directory, manifest or table is missing, malformed or inconsistent."""


class ConfigError(EmbvizError):
    """A YAML recipe or settings file has an unknown key, a missing key or a bad value."""


class ModelError(EmbvizError):
    """A model name, layer or reshape strategy cannot be resolved or loaded."""
