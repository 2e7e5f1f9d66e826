"""Step or play through a series of maps (checkpoints of a training run, layers of a network).

The panel shows when the current map belongs to a projection series (:mod:`embviz.series`):
a player over its members (each step moves the points to the next member's map, see
:mod:`embviz.app.motion`), the member shown, and the series' quality curve (k-NN accuracy in the
embedding and on the map, trustworthiness and how far points jumped, per member), so "which
epoch or layer separates the classes" is one glance. Two switches stay on for any map: move the
points when the map changes, and draw the listed samples' trails across the series.
"""

from __future__ import annotations

import html
import logging

import panel as pn
import param

from .session import Session
from .widgets.markup import Markup

__all__ = ["SeriesPanel"]

log = logging.getLogger(__name__)


class SeriesPanel(pn.viewable.Viewer):
    """A player over the current map's series, its quality curve, and the motion switches."""

    interval = param.Integer(
        default=1800,
        bounds=(500, 10_000),
        doc="Milliseconds between members while playing (a step's motion takes about 1.2 s).",
    )

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.player = pn.widgets.Player(
            start=0,
            end=1,
            value=0,
            interval=self.interval,
            loop_policy="once",
            show_loop_controls=False,
            show_value=False,
            visible_buttons=["first", "previous", "play", "pause", "next", "last"],
            css_classes=["embviz-series-player"],
            sizing_mode="stretch_width",
        )
        self.caption = Markup(
            "", css_classes=["embviz-series-caption"], sizing_mode="stretch_width"
        )
        self.curve = pn.Column(sizing_mode="stretch_width", css_classes=["embviz-series-curve"])
        self._series: tuple[str, ...] = ()
        self._syncing = False
        self.player.param.watch(self._step, "value")
        session.param.watch(self._sync, "projection")
        self._parts = pn.Column(
            pn.pane.Markdown("**Series**", margin=(0, 10)),
            self.player,
            self.caption,
            self.curve,
            sizing_mode="stretch_width",
        )
        self._layout = pn.Column(
            self._parts,
            pn.widgets.Checkbox.from_param(
                session.param.animate,
                label="Move the points when the map changes",
                css_classes=["embviz-animate"],
            ),
            pn.widgets.Checkbox.from_param(
                session.param.trails,
                label="Trails of the listed samples across the series",
                css_classes=["embviz-trails"],
            ),
            sizing_mode="stretch_width",
            css_classes=["embviz-series"],
        )
        self._sync()

    @property
    def members(self) -> list:
        """The current series' members (:class:`embviz.series.SeriesMember`), [] when none."""
        return self.session.series()

    def _sync(self, *_events) -> None:
        members = self.members
        self._parts.visible = bool(members)
        if not members:
            return
        index = self.session.series_index()
        self._syncing = True
        try:
            self.player.param.update(end=len(members) - 1, value=max(index, 0))
        finally:
            self._syncing = False
        m = members[max(index, 0)]
        series = m.name
        self.caption.object = (
            f"<b>{html.escape(m.member)}</b> · {m.index + 1} of {m.size} "
            f"{html.escape(m.kind)} · <span style='color:#666'>{html.escape(series)}</span>"
        )
        keys = tuple(x.key for x in members)
        if keys != self._series:
            self._series = keys
            self._draw_curve(series)

    def _draw_curve(self, series: str) -> None:
        try:
            from embviz.evolution import CURVES, quality_curve, series_quality

            rows = series_quality(self.session.dataset, series)
            if not any(r[key] is not None for r in rows for key, _, _ in CURVES):
                self.curve.objects = []  # a series without measures still plays
                return
            import holoviews as hv
            import holoviews.plotting.bokeh  # noqa: F401 - the page's plotting backend

            layout = quality_curve(self.session.dataset, series, backend="bokeh")
            # Narrow: one panel under the other, short titles, legends below, labels slanted.
            titles = ("k-NN accuracy and trustworthiness", "median jump (neighbourhoods)")
            plot = (
                hv.Layout(
                    [
                        o.opts(
                            title=t,
                            height=h,
                            responsive=True,
                            xrotation=40,
                            xlabel="",
                            ylabel="",
                            legend_position="bottom",
                            legend_cols=1,
                        )
                        for o, t, h in zip(layout, titles, (400, 250), strict=False)
                    ]
                )
                .opts(shared_axes=False)
                .cols(1)
            )
        except Exception as exc:  # an unreadable series still plays
            log.warning("no quality curve for series %r: %s", series, exc)
            self.curve.objects = []
            return
        self.curve.objects = [pn.pane.HoloViews(plot, sizing_mode="stretch_width", backend="bokeh")]

    def _step(self, event) -> None:
        if self._syncing:
            return
        s = self.session
        target = s.series_projection(event.new)
        if target != s.projection:
            s.show_projection(target)

    def __panel__(self):
        return self._layout
