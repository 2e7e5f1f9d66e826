"""Score histograms that filter the map: drag across a range of confidence, margin, entropy or a
label-issue score, and the map keeps only the samples in it.

Each histogram is a HoloViews ``Histogram`` with a ``BoundsX`` stream (an x-only box select):
a selected range becomes the session's numeric filter of that column (the same filter the
View tab's range sliders set), a reset removes it. Counts come from the map's own columns,
on an evenly spread sample for very large maps (see :mod:`embviz.app.filters`).
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param

from .session import Session

__all__ = ["SCORE_COLUMNS", "ScoreHistograms"]

#: Columns shown, in this order, when the map has them (predictions, then label scores).
SCORE_COLUMNS = ("confidence", "margin", "entropy", "label_issue_score")
#: Bars per histogram.
BINS = 40


class ScoreHistograms(pn.viewable.Viewer):
    """Histograms of the map's score columns; a dragged range filters the map."""

    columns = param.List(default=[], doc="Score columns of the map with a histogram.")

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.columns = [c for c in SCORE_COLUMNS if c in session.store.numeric]
        self._layout = pn.Column(sizing_mode="stretch_width", css_classes=["embviz-score-plots"])
        self._streams: dict[str, object] = {}

    @property
    def available(self) -> bool:
        """Whether the map has any score column to draw."""
        return bool(self.columns)

    def show(self) -> None:
        """Build the histograms (HoloViews loads here) the first time they are shown."""
        if self._streams or not self.columns:
            return
        plots = []
        for name in self.columns:
            plot = self._histogram(name)
            if plot is not None:
                plots.append(plot)
        self._layout.objects = plots

    def _histogram(self, name: str):
        import holoviews as hv

        values = np.asarray(self.session.store.numeric[name])
        sample = _spread_sample(values)
        finite = sample[np.isfinite(sample)]
        if not len(finite) or finite.min() == finite.max():
            return None
        counts, edges = np.histogram(finite, bins=BINS)
        hist = hv.Histogram((edges, counts), kdims=[name], vdims=["samples"]).opts(
            tools=["xbox_select", "hover"],
            active_tools=["xbox_select"],
            default_tools=["reset"],
            toolbar="right",
            height=130,
            responsive=True,
            color="#8aa4c8",
            line_color=None,
            title=f"{name}: drag a range to filter the map",
            fontsize={"title": "9pt"},
        )
        stream = hv.streams.BoundsX(source=hist, boundsx=None)
        stream.add_subscriber(lambda boundsx, n=name: self._selected(n, boundsx))
        self._streams[name] = stream
        return pn.pane.HoloViews(hist, backend="bokeh", sizing_mode="stretch_width")

    def _selected(self, name: str, boundsx) -> None:
        if boundsx is None or not all(np.isfinite(boundsx)):
            self.session.set_filter(name, [])
            return
        lo, hi = sorted(float(v) for v in boundsx)
        self.session.set_filter(name, [lo, hi])

    def select_range(self, name: str, lo: float, hi: float) -> None:
        """Filter the map to ``lo <= name <= hi``, as a drag over that histogram does."""
        self.show()
        if name not in self._streams:
            raise KeyError(f"no histogram of {name!r}; the map has {self.columns}")
        self._streams[name].event(boundsx=(lo, hi))

    def __panel__(self):
        return self._layout


def _spread_sample(values: np.ndarray) -> np.ndarray:
    """``values``, or for very long columns contiguous blocks spread evenly over them (the
    filter panel's rule: few pages of a memory-mapped column are read)."""
    from .filters import SAMPLE_BLOCK, SAMPLE_ROWS

    if len(values) <= SAMPLE_ROWS:
        return values
    starts = np.linspace(0, len(values) - SAMPLE_BLOCK, SAMPLE_ROWS // SAMPLE_BLOCK, dtype=np.int64)
    return np.concatenate([values[a : a + SAMPLE_BLOCK] for a in starts])
