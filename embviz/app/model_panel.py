"""The model panel: a classifier's confusion matrix (click a cell for its samples), per-class
scores, and score histograms whose dragged range filters the map.

It reads the ``predictions`` table the ``predict`` step writes. The matrix is a HoloViews
``HeatMap`` with a ``Tap`` stream (HoloViews is loaded the first time the panel is shown, so a
session that never opens it never pays for it); a click lists that cell's samples in the grid,
which also outlines them on the map.
"""

from __future__ import annotations

import html

import numpy as np
import panel as pn
import param

from .session import Session
from .widgets import PANEL_CSS
from .widgets.markup import Markup

__all__ = ["ModelPanel", "confusion"]


def confusion(labels, predicted) -> tuple[np.ndarray, list[str], list[str]]:
    """``(counts (len(rows), len(cols)), row names = labels, column names = predicted classes)``
    of the samples that have both (sorted names)."""
    labels = np.asarray(labels, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    keep = np.array(
        [a is not None and b is not None for a, b in zip(labels, predicted, strict=True)], bool
    )
    rows = sorted({str(v) for v in labels[keep]})
    cols = sorted({str(v) for v in predicted[keep]})
    r = np.searchsorted(rows, [str(v) for v in labels[keep]])
    c = np.searchsorted(cols, [str(v) for v in predicted[keep]])
    counts = np.zeros((len(rows), len(cols)), dtype=np.int64)
    np.add.at(counts, (r, c), 1)
    return counts, rows, cols


class ModelPanel(pn.viewable.Viewer):
    """A confusion matrix (label x predicted) and per-class precision, recall and count."""

    normalize = param.Boolean(
        default=False, doc="Show each label's row as fractions of its samples, not counts."
    )

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.available = session.dataset.has("predictions") and "label" in session.store.categorical
        self._frame = None  # (ids, labels, predicted) once built
        self._plot = None
        self._table = Markup(stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
        from .score_plots import ScoreHistograms

        self.scores = ScoreHistograms(session)
        self._layout = pn.Column(sizing_mode="stretch_width", css_classes=["embviz-model"])

    def show(self) -> None:
        """Build the panel (reads the predictions, loads HoloViews) the first time it is shown."""
        if self._frame is not None or not self.available:
            return
        from embviz.samples import read_sample_columns

        table = read_sample_columns(self.session.dataset, ["label", "predicted_label"])
        ids = table.column("id").to_numpy()
        labels = table.column("label").cast("string").to_pylist()
        predicted = table.column("predicted_label").cast("string").to_pylist()
        self._frame = (ids, np.asarray(labels, dtype=object), np.asarray(predicted, dtype=object))
        counts, rows, cols = confusion(labels, predicted)
        self._table.object = _class_table(counts, rows, cols)
        import holoviews as hv

        self._tap = hv.streams.Tap(x=None, y=None)
        self._tap.add_subscriber(self._tapped)
        heatmap = hv.DynamicMap(self._heatmap, streams=[self.param.normalize])
        self._tap.source = heatmap
        self._plot = pn.pane.HoloViews(heatmap, backend="bokeh", sizing_mode="stretch_width")
        accuracy = np.trace(counts[:, [cols.index(r) if r in cols else 0 for r in rows]])
        acc = accuracy / max(counts.sum(), 1) if set(rows) <= set(cols) else float("nan")
        meta = self.session.dataset.meta("predictions")
        self._layout.objects = [
            Markup(
                f'<div class="embviz-heading">{html.escape(str(meta.get("source", "")))} on '
                f"{html.escape(str(meta.get('embedding', '')).removeprefix('embeddings/'))}"
                f'</div><div class="embviz-muted">accuracy {acc:.1%} over {counts.sum():,} '
                "labelled samples; click a cell to list its samples</div>",
                stylesheets=[PANEL_CSS],
                sizing_mode="stretch_width",
            ),
            pn.widgets.Checkbox.from_param(self.param.normalize, label="Normalise rows"),
            self._plot,
            self._table,
            self.scores,
        ]
        self.scores.show()

    def _heatmap(self, normalize: bool = False):
        import holoviews as hv

        counts, rows, cols = confusion(self._frame[1], self._frame[2])
        values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
        # Empty cells blank, colours on a log scale: the few mistakes show beside the diagonal.
        data = [
            (c, r, float(values[i, j]) if counts[i, j] else np.nan, int(counts[i, j]))
            for i, r in enumerate(rows)
            for j, c in enumerate(cols)
        ]
        return hv.HeatMap(data, ["predicted", "label"], ["value", "count"]).opts(
            cmap="Blues",
            logz=True,
            clipping_colors={"NaN": "#ffffff"},
            selection_alpha=1.0,
            nonselection_alpha=1.0,  # a clicked cell must not grey out the others
            tools=["hover", "tap"],
            height=300,
            responsive=True,
            xlabel="predicted",
            ylabel="label",
            invert_yaxis=True,
            toolbar=None,
            default_tools=[],
        )

    def _tapped(self, x=None, y=None) -> None:
        if x is None or y is None or self._frame is None:
            return
        ids, labels, predicted = self._frame
        hit = (labels == str(y)) & (predicted == str(x))
        self.session.show(ids[hit], title=f"Label {y}, predicted {x}", noun="samples in this cell")

    def select_cell(self, label: str, predicted: str) -> None:
        """List the samples labelled ``label`` and predicted ``predicted`` (as a click does)."""
        self.show()
        self._tapped(x=predicted, y=label)

    def __panel__(self):
        return self._layout


def _class_table(counts: np.ndarray, rows: list[str], cols: list[str]) -> str:
    """Per class: precision (of the predictions of it), recall (of its samples) and count."""
    lines = []
    for name in sorted(set(rows) | set(cols)):
        i = rows.index(name) if name in rows else None
        j = cols.index(name) if name in cols else None
        hit = counts[i, j] if i is not None and j is not None else 0
        n = counts[i].sum() if i is not None else 0
        predicted = counts[:, j].sum() if j is not None else 0
        precision = f"{hit / predicted:.2f}" if predicted else "-"
        recall = f"{hit / n:.2f}" if n else "-"
        lines.append(
            f"<tr><th>{html.escape(name)}</th><td class='embviz-num'>{precision}</td>"
            f"<td class='embviz-num'>{recall}</td><td class='embviz-num'>{n:,}</td></tr>"
        )
    head = "<tr><th>class</th><th>precision</th><th>recall</th><th>count</th></tr>"
    return f'<table class="embviz-class-scores">{head}{"".join(lines)}</table>'
