"""Files shipped inside the package (demo recipe, report settings example, app entry), by name."""

from __future__ import annotations

from pathlib import Path

from embviz.errors import ConfigError

__all__ = ["PRESETS", "explorer_app", "preset"]

#: Shipped YAML files (the repository's ``config/``, installed as ``embviz.presets``) by name.
PRESETS = {"demo": "demo.yaml", "reports": "reports.yaml"}


def _shipped(package: str, name: str) -> Path:
    """The path of ``name`` inside ``package``, which must be installed as plain files."""
    from importlib.resources import files

    found = files(package) / name
    # A wheel or an editable install gives plain files; a zipped install would not, and Panel
    # needs a real path for the app entry, so it is refused here rather than half-working.
    if not isinstance(found, Path) or not found.is_file():
        raise FileNotFoundError(
            f"{package}/{name} is not a file on disk ({found}); reinstall embviz from a wheel "
            "or with 'pip install -e .'"
        )
    return found


def preset(name: str) -> Path:
    """The path of the shipped YAML file ``name``: ``demo`` (the demo recipe) or ``reports``
    (an example of report schedule settings). Raises :class:`~embviz.errors.ConfigError`
    with the valid names."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return _shipped("embviz.presets", PRESETS[name])


def explorer_app() -> Path:
    """The path of the explorer's Panel entry script (the repository's ``apps/explorer.py``),
    for ``panel serve PATH --plugins embviz.app.routes --args DATASET``."""
    return _shipped("embviz.apps", "explorer.py")
