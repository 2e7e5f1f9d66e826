"""Sources a renderer asks for an aggregate before it reads the rows itself: a registry.

A source answers some aggregates faster or elsewhere (a pyramid of precomputed counts, a Dask
cluster) and returns None for the rest; factories registered here give each new
:class:`~embviz.render.raster.Renderer` its sources, so the app never wires them by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

    from .store import PointStore, View

__all__ = ["AggregateSource", "default_sources", "register_source"]

Mode = Literal["category", "numeric", "density"]


class AggregateSource(Protocol):
    """Something that can answer some aggregates of a store faster or elsewhere (a pyramid of
    precomputed counts, a Dask cluster); it returns None for what it cannot answer, and the
    renderer then aggregates the store's rows in this process."""

    def aggregate(
        self,
        view: View,
        width: int,
        height: int,
        *,
        mode: Mode,
        color_by: str | None,
        mask: np.ndarray | None,
        hidden_codes: tuple[int, ...],
    ):
        """The same aggregate :meth:`Renderer.aggregate` would build, or None."""


#: Factories ``(store) -> AggregateSource | None`` every new :class:`Renderer` consults, by
#: priority (see :func:`register_source`): ``name -> (priority, factory)``.
_SOURCE_FACTORIES: dict[str, tuple[int, Callable[[PointStore], AggregateSource | None]]] = {}


def register_source(
    name: str,
    factory: Callable[[PointStore], AggregateSource | None] | None,
    *,
    priority: int = 50,
) -> None:
    """Make every :class:`Renderer` built from now on ask ``factory(store)`` for a source
    (``None`` removes the factory registered under ``name``). Lower ``priority`` is asked
    first: cheap local answers (a pyramid, 10) before remote ones (a Dask cluster, 50)."""
    if factory is None:
        _SOURCE_FACTORIES.pop(name, None)
    else:
        _SOURCE_FACTORIES[name] = (priority, factory)


def default_sources(store: PointStore) -> list[AggregateSource]:
    """The sources the registered factories give for ``store``, lowest priority first."""
    ranked = sorted(_SOURCE_FACTORIES.values(), key=lambda pf: pf[0])
    found = (factory(store) for _, factory in ranked)
    return [s for s in found if s is not None]
