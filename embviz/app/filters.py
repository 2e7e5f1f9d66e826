"""The filter panel: categories as multi-choice lists with their counts, numbers as range sliders
over the values' histogram. Every change goes to the session, which owns the filters."""

from __future__ import annotations

import html
import threading
import weakref

import numpy as np
import panel as pn

from .session import NOT_COLOURS, Session
from .widgets.markup import Markup

__all__ = ["FilterPanel", "category_counts", "histogram_svg", "summarize"]

#: Categorical columns with more values than this get no filter widget (they still colour).
MAX_CHOICES = 200
#: Bars in a numeric filter's histogram.
BINS = 40
#: Numeric columns longer than this are histogrammed on a sample of evenly spread blocks.
SAMPLE_ROWS = 1_000_000
#: Rows per block of that sample: contiguous blocks read few pages of a memory-mapped column
#: (a strided sample reads every page: 160 MB more resident for four columns of 10M rows).
SAMPLE_BLOCK = 16_384
#: Rows counted at a time (bounds the temporary int64 copy np.bincount makes).
COUNT_CHUNK = 4_000_000

#: Summaries by column: a weak reference to the column and its summary. The column is not held:
#: a live tag column is replaced at every tag write (one byte per point), and a summary that
#: kept it would keep every version of it.
_SUMMARIES: dict[int, tuple[weakref.ref, object]] = {}
_LOCK = threading.Lock()


def _summary(column: np.ndarray, compute):
    """``compute(column)``, once per column array per process while the column lives (sessions
    share the columns; the summary of a column nobody holds any more is dropped)."""
    with _LOCK:
        hit = _SUMMARIES.get(id(column))
        if hit is not None and hit[0]() is column:  # the same array, not a reused id
            return hit[1]
    value = compute(column)
    try:
        ref = weakref.ref(column)
    except TypeError:  # not weakly referenceable: computed each time, never kept
        return value
    with _LOCK:
        for key in [k for k, (r, _) in _SUMMARIES.items() if r() is None]:
            del _SUMMARIES[key]
        _SUMMARIES[id(column)] = (ref, value)
    return value


def category_counts(codes: np.ndarray, n: int) -> np.ndarray:
    """Rows per category code (``n`` categories), counted in chunks."""
    counts = np.zeros(n, dtype=np.int64)
    for a in range(0, len(codes), COUNT_CHUNK):
        counts += np.bincount(codes[a : a + COUNT_CHUNK], minlength=n)[:n]
    return counts


def _range_and_histogram(values: np.ndarray):
    if len(values) <= SAMPLE_ROWS:
        sample = np.asarray(values)
    else:
        starts = np.linspace(
            0, len(values) - SAMPLE_BLOCK, SAMPLE_ROWS // SAMPLE_BLOCK, dtype=np.int64
        )
        sample = np.concatenate([values[a : a + SAMPLE_BLOCK] for a in starts])
    finite = sample[np.isfinite(sample)]
    if not len(finite) or finite.min() == finite.max():
        return None
    lo, hi = float(finite.min()), float(finite.max())
    return lo, hi, histogram_svg(finite, lo, hi)


def histogram_svg(values: np.ndarray, lo: float, hi: float, *, width: int = 260) -> str:
    """A small inline SVG bar chart of ``values`` between ``lo`` and ``hi`` (no text in it)."""
    counts, _ = np.histogram(values, bins=BINS, range=(lo, hi))
    top = counts.max() or 1
    bar = width / BINS
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{28 - 28 * c / top:.1f}" width="{bar * 0.9:.1f}" '
        f'height="{28 * c / top:.1f}"/>'
        for i, c in enumerate(counts)
        if c
    )
    return (
        f'<svg class="embviz-histogram" width="{width}" height="28" '
        f'style="fill:#8aa4c8;display:block">{rects}</svg>'
    )


def summarize(store) -> None:
    """Compute the filter summaries of ``store``'s columns now (each once per process), so the
    filter panels of its sessions find them: call off the event loop (the warm-up, a tag
    write's build). At 50M points they take ~1-2 s, which the first page's side column spent
    on the event loop, its own first frame waiting behind it."""
    for codes, names in store.categorical.values():
        if len(names) <= MAX_CHOICES:
            _options(codes, names)
    for name, values in store.numeric.items():
        if name not in NOT_COLOURS:
            _summary(values, _range_and_histogram)


def _options(codes: np.ndarray, names: list[str]) -> dict[str, str]:
    """A category filter's options: ``"name (count)" -> name``."""
    counts = _summary(codes, lambda c: category_counts(c, len(names)))
    # Bokeh's MultiChoice (Choices.js) renders option labels as HTML: escape them.
    return {f"{html.escape(n)} ({c:,})": n for n, c in zip(names, counts, strict=True)}


class FilterPanel(pn.viewable.Viewer):
    """Filter widgets for the columns of the session's map, rebuilt when the map changes."""

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self._layout = pn.Column(sizing_mode="stretch_width", css_classes=["embviz-filters"])
        self._built_for = None
        self._made: dict[tuple[str, int], list] = {}
        self._build()
        session.param.watch(self._build, ["projection", "tags_version"])

    def _build(self, *_events) -> None:
        store = self.session.store
        if store is self._built_for:
            return
        self._built_for = store
        # A column whose values are the same array keeps its widget (a new tag column must not
        # rebuild every filter on the page, nor reset what a person is choosing); a category
        # column with new values (the tag column, at every tag write) keeps its widget too, with
        # new options: no widget, page model and watchers made (and left to the garbage
        # collector) per write and session.
        made: dict[tuple[str, int], list] = {}
        by_name = {key[0]: ws for key, ws in self._made.items()}
        for name, (codes, names) in store.categorical.items():
            if len(names) <= MAX_CHOICES:
                key = (name, id(codes))
                made[key] = self._made.get(key) or self._recount(
                    by_name.get(name), name, codes, names
                )
        for name, values in store.numeric.items():
            if name not in NOT_COLOURS:
                key = (name, id(values))
                made[key] = self._made.get(key) or self._number(name, values)
        self._made = made
        self._layout.objects = [w for ws in made.values() for w in ws]

    def _recount(self, old: list | None, name: str, codes: np.ndarray, names: list[str]) -> list:
        """``old`` (the widgets of column ``name``) showing the new ``codes`` and ``names``, or a
        new widget when there is no category widget to reuse."""
        if not old or not isinstance(old[0], pn.widgets.MultiChoice):
            return [self._category(name, codes, names)]
        chosen = self.session.filters.get(name, [])
        old[0].param.update(options=_options(codes, names), value=[v for v in chosen if v in names])
        return old

    def _category(self, name: str, codes: np.ndarray, names: list[str]):
        chosen = self.session.filters.get(name, [])
        w = pn.widgets.MultiChoice(
            label=name,
            placeholder="all",
            options=_options(codes, names),
            value=[v for v in chosen if v in names],
            sizing_mode="stretch_width",
            css_classes=["embviz-filter-category"],
        )
        w.param.watch(lambda e, n=name: self.session.set_filter(n, list(e.new)), "value")
        return w

    def _number(self, name: str, values: np.ndarray) -> list:
        summary = _summary(values, _range_and_histogram)
        if summary is None:
            return []
        lo, hi, svg = summary
        cur = self.session.filters.get(name) or [lo, hi]
        w = pn.widgets.RangeSlider(
            label=name,
            start=lo,
            end=hi,
            value=(max(lo, float(cur[0])), min(hi, float(cur[1]))),
            step=(hi - lo) / 200,
            sizing_mode="stretch_width",
            css_classes=["embviz-filter-range"],
        )
        w.param.watch(
            lambda e, n=name, a=lo, b=hi: self.session.set_filter(
                n, [] if e.new == (a, b) else [float(e.new[0]), float(e.new[1])]
            ),
            "value_throttled",
        )
        return [w, Markup(svg, margin=(0, 10))]

    @property
    def widgets(self) -> list:
        """The filter widgets shown (one per column, a histogram after each range)."""
        return list(self._layout.objects)

    def __panel__(self):
        return self._layout
