"""Series of maps in a :class:`~embviz.app.session.Session`: step through checkpoints or layers.

A mixin, so the session stays the one owner of its state (``projection``, ``embedding``,
``animate``, ``trails``) while its module stays small. A projection series is a set of aligned
maps of the same samples, one per checkpoint or layer (``embviz reduce --series``, see
:mod:`embviz.series`); the session finds the one the current map belongs to, moves between its
members, and keeps both pickers (embedding and projection) in step.
"""

from __future__ import annotations

import param

__all__ = ["SeriesActions"]


class SeriesActions(param.Parameterized):
    """Series of a session's maps (mixed into :class:`~embviz.app.session.Session`)."""

    animate = param.Boolean(
        default=True,
        doc="Move the points when the map changes to another map of the same samples (a series "
        "step, UMAP to t-SNE ...) instead of switching at once.",
    )
    trails = param.Boolean(
        default=False,
        doc="Draw the paths of the listed samples (the selection) across the current series.",
    )

    #: the map :meth:`show_projection` is moving to, while the pickers change
    _wanted_projection: str | None = None

    def series(self) -> list:
        """The members (:class:`embviz.series.SeriesMember`, in order) of the projection series
        the current map belongs to; [] when it belongs to none."""
        from embviz.series import list_series

        for members in list_series(self._ds, "projections").values():
            if any(m.key == f"projections/{self.projection}" for m in members):
                return members
        return []

    def series_index(self) -> int:
        """Position of the current map in its series (-1 when it is in none)."""
        for m in self.series():
            if m.key == f"projections/{self.projection}":
                return m.index
        return -1

    def series_projection(self, index: int) -> str:
        """The projection name of member ``index`` of the current series (clipped to it)."""
        members = self.series()
        if not members:
            raise ValueError(f"map {self.projection!r} belongs to no series")
        m = members[min(max(int(index), 0), len(members) - 1)]
        return m.key.split("/", 1)[1]

    def show_projection(self, projection: str) -> None:
        """Draw ``projection`` (of any embedding): the embedding picker follows, and the map
        changes once (moving its points when :attr:`animate` is on and the samples match)."""
        embedding = next(
            (e for e, choices in self._groups.items() if projection in choices.values()), None
        )
        if embedding is None:
            raise ValueError(f"no 2D projection {projection!r}; have {self._ds.projections}")
        if embedding == self.embedding:
            self.projection = projection
            return
        # The embedding's pickers change first; the map they choose is this one, so it
        # changes once (the embedding's own first map is never drawn).
        self._wanted_projection = projection
        try:
            self.embedding = embedding
        finally:
            self._wanted_projection = None
        self.projection = projection
