"""Exceptions that tell the user which file, row, column or key is wrong and what to do."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatasetError",
    "DiskFullError",
    "EmbvizError",
    "ExportError",
    "ModelError",
    "TagError",
]


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


class DiskFullError(EmbvizError):
    """The disk filled up, or a quota or file-size limit was hit, while embviz wrote ``path``.

    Writes are atomic, so the file (or table) being written was not published: the last good
    version stays. ``reason`` says which limit; ``what`` names what was being written.
    """

    def __init__(self, path: str, reason: str, what: str = "this file"):
        super().__init__(path, reason, what)  # all in args, so it pickles back from Dask workers
        self.path, self.reason, self.what = str(path), reason, what

    def __str__(self) -> str:
        return (
            f"{self.path}: cannot write {self.what}: {self.reason}; nothing half-written was "
            "kept and the last good version is unchanged: free some space (or raise the limit) "
            "and run it again"
        )
