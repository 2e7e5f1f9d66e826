"""The selection grid: a count, the most common labels and a paged image grid of the chosen samples."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import panel as pn
import param

from ._panes import PANEL_CSS, on_grid, open_card
from .grid import ImageGrid
from .markup import Markup

__all__ = ["SelectionGrid", "label_counts"]


def label_counts(labels, top: int = 10) -> tuple[list[tuple[str, int]], int]:
    """Count labels without a Python loop over them.

    Parameters
    ----------
    labels:
        Labels of a selection: list, array, ``pd.Series`` or ``pd.Categorical``.
    top:
        How many of the most frequent labels to return.

    Returns
    -------
    ``([(label, count), ...], more)``: the ``top`` labels by descending count (ties by label),
    and how many distinct labels were left out.
    """
    counts = pd.Series(labels, copy=False).value_counts(dropna=False, sort=False)
    counts = counts[counts > 0]  # a Categorical also reports its unused categories
    counts.index = counts.index.map(lambda v: "(missing)" if pd.isna(v) else str(v))
    counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    shown = counts.iloc[:top]
    return list(zip(shown.index, shown.to_numpy().tolist(), strict=True)), len(counts) - len(shown)


def _counts_html(pairs: Sequence[tuple[str, int]], more: int) -> str:
    if not pairs:
        return ""
    peak = max(n for _, n in pairs)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        f'<td><div class="embviz-bar" style="width:{100 * n / peak:.1f}%"></div></td>'
        f'<td class="embviz-num">{n:,}</td></tr>'
        for name, n in pairs
    )
    tail = f'<div class="embviz-muted">+{more:,} more</div>' if more else ""
    return f'<table class="embviz-label-counts">{rows}</table>{tail}'


def _no_thumb(sample_id: int) -> str:
    return ""


class SelectionGrid(pn.viewable.Viewer):
    """The points selected on the map: a count, the most common labels and a paged image grid.

    Only the current page's cards go to the browser; the label counts are computed over the
    whole selection with pandas. Clicking a card sets ``opened`` to its id (passing through
    -1 when the same id is clicked again, so watchers run every time; ignore -1).
    Set ``ids`` and ``labels`` together with ``grid.param.update(ids=..., labels=...)``.
    """

    ids = param.ClassSelector(
        class_=(np.ndarray, list, tuple),
        default=np.zeros(0, dtype=np.int64),
        doc="Selected sample ids in display order; a new value goes back to the first page.",
    )
    labels = param.ClassSelector(
        class_=(np.ndarray, list, tuple, pd.Series, pd.Categorical, pd.Index),
        default=None,
        allow_None=True,
        doc="Label of each selected sample, aligned with ids; None hides the label counts.",
    )
    captions = param.ClassSelector(
        class_=(np.ndarray, list, tuple),
        default=None,
        allow_None=True,
        doc="A short text under each card (a score, a distance), aligned with ids; None: none.",
    )
    page = param.Integer(default=0, bounds=(0, None), doc="Current page, counted from 0.")
    page_size = param.Integer(default=12, bounds=(1, None), doc="Cards per page.")
    thumb_url = param.Callable(
        default=_no_thumb,
        doc="Maps a sample id to its thumbnail URL, e.g. /embviz/thumb/<key>/<id>.",
    )
    opened = param.Integer(
        default=-1, doc="Id of the card clicked last; re-set on every click (via -1 on a repeat)."
    )
    title = param.String(default="Selection", doc="Heading shown above the count.")
    noun = param.String(default="selected", doc="Word after the count: 'selected', 'results'.")
    marked = param.List(
        default=[], doc="Ids marked with ctrl/shift-click, on any page; cleared by new ids."
    )

    def __init__(self, **params):
        super().__init__(**params)
        self._grid = ImageGrid(css_classes=["embviz-image-grid"])
        self._grid.param.watch(lambda _: open_card(self, self._grid), "clicks")
        self._grid.param.watch(self._on_toggle, "toggled")
        self._header = Markup(stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
        self._counts = Markup(stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
        self._hint = Markup(
            '<div class="embviz-muted">Box- or lasso-select points on the map to see them here.</div>',
            stylesheets=[PANEL_CSS],
        )
        self._prev = pn.widgets.Button(label="‹ Previous", css_classes=["embviz-prev"], width=100)
        self._next = pn.widgets.Button(label="Next ›", css_classes=["embviz-next"], width=100)
        self._prev.on_click(lambda _: self.param.update(page=max(0, self.page - 1)))
        self._next.on_click(lambda _: self.param.update(page=min(self.page + 1, self.pages - 1)))
        self._page_text = Markup(stylesheets=[PANEL_CSS], align="center")
        self._pager = pn.Row(self._prev, self._page_text, self._next)
        self._layout = pn.Column(
            self._header,
            self._counts,
            self._hint,
            self._pager,
            self._grid,
            css_classes=["embviz-selection"],
            sizing_mode="stretch_width",
        )
        self._on_selection()

    @property
    def grid(self) -> ImageGrid:
        """The ImageGrid showing the current page (its ``items`` are that page's cards only)."""
        return self._grid

    @property
    def pages(self) -> int:
        """Number of pages; at least 1, even for an empty selection."""
        return max(1, math.ceil(len(self.ids) / self.page_size))

    def _on_toggle(self, event) -> None:
        if event.new is None or event.new < 0 or not on_grid(self._grid, event.new):
            return
        self.toggle_mark(int(event.new))

    def toggle_mark(self, sample_id: int) -> None:
        """Mark ``sample_id`` or take its mark away."""
        marked = [i for i in self.marked if i != sample_id]
        if len(marked) == len(self.marked):
            marked.append(sample_id)
        self.marked = marked

    @param.depends("marked", watch=True)
    def _paint_marks(self) -> None:
        self._grid.marked = list(self.marked)
        self._show_header()

    @param.depends("ids", "labels", "captions", watch=True)
    def _on_selection(self) -> None:
        if self.marked:
            self.marked = []
        n = len(self.ids)
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(
                f"SelectionGrid: {len(self.captions):,} captions for {n:,} ids; they must align."
            )
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(
                f"SelectionGrid: {len(self.labels):,} labels for {n:,} ids; they must align. "
                "Set both at once with grid.param.update(ids=..., labels=...)."
            )
        self._show_header()
        pairs, more = label_counts(self.labels) if self.labels is not None and n else ([], 0)
        self._counts.object = _counts_html(pairs, more)
        self._counts.visible = bool(pairs)
        self._hint.visible = n == 0
        self._pager.visible = self._grid.visible = n > 0
        if self.page != 0:
            self.page = 0  # the page watcher redraws
        else:
            self._show_page()

    @param.depends("title", "noun", watch=True)
    def _show_header(self) -> None:
        self._header.object = (
            f'<div class="embviz-heading">{html.escape(self.title)}</div>'
            f"<div><b>{len(self.ids):,}</b> {html.escape(self.noun)}"
            + (f" · <b>{len(self.marked):,}</b> marked" if self.marked else "")
            + "</div>"
        )

    @param.depends("page", "page_size", "thumb_url", watch=True)
    def _show_page(self) -> None:
        if self.page >= self.pages:
            self.page = self.pages - 1
            return
        start = self.page * self.page_size
        ids = np.asarray(self.ids[start : start + self.page_size]).tolist()
        if self.labels is None:
            labels = [""] * len(ids)
        else:
            labels = [
                str(v) for v in pd.Series(self.labels, copy=False).iloc[start : start + len(ids)]
            ]
        captions = (
            [""] * len(ids)
            if self.captions is None
            else [str(c) for c in self.captions[start : start + len(ids)]]
        )
        self._grid.items = [
            {"id": int(i), "label": lab, "src": self.thumb_url(int(i)), "caption": cap}
            for i, lab, cap in zip(ids, labels, captions, strict=True)
        ]
        self._page_text.object = (
            f'<span class="embviz-muted">page {self.page + 1:,} / {self.pages:,}</span>'
        )
        self._prev.disabled = self.page == 0
        self._next.disabled = self.page >= self.pages - 1

    def __panel__(self):
        return self._layout
