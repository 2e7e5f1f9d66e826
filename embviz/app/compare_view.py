"""The split comparison panel: two groups of a column, their shift as one number, where they
differ on the map, and which clusters hold more of one than of the other."""

from __future__ import annotations

import html
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import panel as pn
import param

from .widgets.markup import Markup

if TYPE_CHECKING:
    from .session import Session

__all__ = ["SplitCompare"]

#: Columns with more groups than this are not offered (ids, file names...).
MAX_GROUPS = 50
#: Clusters listed in the table.
TABLE_ROWS = 12


class SplitCompare(pn.viewable.Viewer):
    """Compare group A with group B of a column (train / test / production, two sources).

    ``compare()`` computes the domain-classifier AUC (:func:`embviz.compare.shift`) and the
    per-cluster counts; ``show_difference`` colours the map by where each group is
    over-represented (a style change: nothing is re-aggregated).
    """

    column = param.Selector(objects=[], doc="Column whose groups are compared (split, source...).")
    a = param.Selector(objects=[], doc="Group A (blue in the difference view).")
    b = param.Selector(objects=[], doc="Group B (red in the difference view).")
    show_difference = param.Boolean(
        default=False, doc="Colour the map by where A or B is over-represented."
    )
    auc = param.Number(default=None, allow_None=True, doc="AUC of the last comparison.")

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        s = session.store
        cols = [c for c, (_, names) in s.categorical.items() if 2 <= len(names) <= MAX_GROUPS]
        cols.sort(key=lambda c: (c != "split", c))
        self.param.column.objects = cols
        self._result = Markup("", css_classes=["embviz-compare-result"])
        if cols:
            self.column = cols[0]
            self._set_groups()

    @param.depends("column", watch=True)
    def _set_groups(self) -> None:
        names = list(self.session.store.categorical[self.column][1])
        names = [n for n in names if n != "(none)"]
        self.param.a.objects = names
        self.param.b.objects = names
        prefer = [n for n in ("train", "test", "val", "prod", "production") if n in names]
        first = prefer[0] if prefer else names[0]
        rest = [n for n in prefer[1:] + names if n != first]
        self.param.update(a=first, b=rest[0] if rest else first)

    @param.depends("show_difference", "a", "b", "column", watch=True)
    def _apply_difference(self) -> None:
        e = self.session
        if self.show_difference and self.a != self.b:
            e.param.update(color_by=self.column, hidden=[], difference=[self.a, self.b])
        elif e.difference:
            e.difference = []

    def _masks(self, store) -> tuple[np.ndarray, np.ndarray]:
        codes, names = store.categorical[self.column]
        names = list(names)
        return codes == names.index(self.a), codes == names.index(self.b)

    def compare(self) -> None:
        """Compute the shift between A and B and the per-cluster counts."""
        if not self.column or self.a == self.b:
            self._result.object = '<div style="color:#b3261e">Choose two different groups.</div>'
            return
        from embviz.compare import cluster_counts, shift, shift_vectors

        e = self.session
        s = e.store
        in_a, in_b = self._masks(s)
        ds, embedding = e.dataset, e.embedding
        ids_a, ids_b = s.ids[in_a], s.ids[in_b]

        def work():
            if embedding in ds.embeddings:
                result = shift(ds, embedding=embedding, ids_a=ids_a, ids_b=ids_b)
            else:  # coordinates given without vectors: compare on the map itself
                xy = np.column_stack([s.x, s.y])
                result = shift_vectors(xy[in_a], xy[in_b], metric="l2")
                result = replace(result, source="map coordinates (no embedding)")
            counts = None
            if "cluster" in s.categorical:
                codes, names = s.categorical["cluster"]
                counts = cluster_counts(in_a, in_b, codes, list(names))
            return result, counts

        self._result.object = '<div class="embviz-muted">Comparing…</div>'
        e.in_background(work, self._show, self._fail)

    def _fail(self, exc: BaseException) -> None:
        self._result.object = (
            f'<div style="color:#b3261e">{html.escape(f"{type(exc).__name__}: {exc}")}</div>'
        )

    def _show(self, done) -> None:
        result, counts = done
        self.auc = result.auc
        a, b = html.escape(str(self.a)), html.escape(str(self.b))
        verdict = (
            "mixed: no shift"
            if result.auc < 0.6
            else "some shift"
            if result.auc < 0.75
            else "clearly apart"
        )
        parts = [
            f"<div><b>Shift AUC {result.auc:.3f}</b> ({verdict})</div>",
            f'<div class="embviz-muted" style="font-size:12px">{result.n_a:,} {a} vs '
            f"{result.n_b:,} {b}; {result.k}-NN domain classifier, "
            f"{html.escape(result.source)}. 0.5 = same distribution, 1.0 = fully apart.</div>",
        ]
        if counts is None:
            parts.append(
                '<div class="embviz-muted" style="font-size:12px">No clusters yet: '
                "run 'embviz score' for per-cluster counts.</div>"
            )
        else:
            rows = "".join(
                f"<tr><td>{html.escape(r['cluster'])}</td><td>{r['a']:,}</td><td>{r['b']:,}</td>"
                f"<td>{100 * r['difference']:+.1f}</td></tr>"
                for r in counts.rows()[:TABLE_ROWS]
            )
            parts.append(
                '<table class="embviz-compare-table" style="font-size:12px;width:100%">'
                f"<tr><th>cluster</th><th>{a}</th><th>{b}</th><th>Δ share %</th></tr>"
                f"{rows}</table>"
            )
        self._result.object = "".join(parts)

    def __panel__(self):
        if not self.param.column.objects:
            return Markup(
                '<div class="embviz-muted">No column with 2 to 50 groups to compare.</div>'
            )
        go = pn.widgets.Button(
            label="Compare", css_classes=["embviz-compare"], sizing_mode="stretch_width"
        )
        go.on_click(lambda _: self.compare())
        return pn.Column(
            pn.widgets.Select.from_param(self.param.column, name="Column"),
            pn.Row(
                pn.widgets.Select.from_param(self.param.a, name="A"),
                pn.widgets.Select.from_param(self.param.b, name="B"),
            ),
            pn.widgets.Checkbox.from_param(
                self.param.show_difference, name="Show where they differ on the map"
            ),
            go,
            self._result,
            sizing_mode="stretch_width",
        )
