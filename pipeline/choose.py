"""How a step picks its inputs: the dataset, and its embedding or projection table (said aloud)."""

from __future__ import annotations

import logging
from pathlib import Path

from embviz.dataset import Dataset, open_dataset
from embviz.errors import DatasetError

__all__ = ["as_dataset", "pick_table"]

log = logging.getLogger(__name__)

#: What to run when a dataset has no table of a kind yet.
_MAKE = {
    "embeddings": "run 'embviz embed' first or pass vectors to 'embviz ingest'",
    "projections": "run 'embviz reduce' first",
}


def as_dataset(dataset: str | Path | Dataset) -> Dataset:
    """``dataset`` itself when it is an open :class:`~embviz.dataset.Dataset`, else opened."""
    return dataset if isinstance(dataset, Dataset) else open_dataset(dataset)


def pick_table(
    ds: Dataset, kind: str, name: str | None, *, step: str, what: str | None = None
) -> str:
    """The name (without ``<kind>/``) of the ``kind`` table a step uses.

    Parameters
    ----------
    ds : the dataset.
    kind : ``embeddings`` or ``projections``.
    name : the table asked for (with or without the ``<kind>/`` prefix); None takes the
        dataset's default, the first name in sorted order (the only one when there is one),
        and logs which it took so a person running the command sees it.
    step : the step asking (``index``, ``score`` ...), for the messages.
    what : how the messages call the table (default ``embedding`` / ``projection``).

    Raises :class:`~embviz.errors.DatasetError` when the dataset has no such table, naming the
    ones it has.
    """
    if kind not in _MAKE:
        raise ValueError(f"unknown table kind {kind!r}; valid: {', '.join(_MAKE)}")
    noun = kind.removesuffix("s")
    what = what or noun
    names = ds.keys(kind)
    if name is None:
        if not names:
            raise DatasetError(f"{ds.root}: no {kind} tables; {_MAKE[kind]}")
        chosen = names[0]
        others = f" (of {len(names)}: {', '.join(names)})" if len(names) > 1 else ""
        log.info(
            "%s: using %s %r, the dataset's default%s; pass --%s to choose",
            step,
            what,
            chosen,
            others,
            noun,
        )
        return chosen
    chosen = name.removeprefix(f"{kind}/")
    if chosen not in names:
        raise DatasetError(
            f"{ds.root}: no {what} table '{kind}/{chosen}'; available: {names or 'none'}"
        )
    return chosen
