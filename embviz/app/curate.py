"""The curation panel: top-N score views, sorting, tagging and export of a session's samples."""

from __future__ import annotations

import html
import io
import re
from typing import TYPE_CHECKING

import numpy as np
import panel as pn
import param

from .notice import Notice
from .widgets.markup import Markup

if TYPE_CHECKING:
    from .session import Session

__all__ = ["SCORE_VIEWS", "Curator"]

#: Score columns offered as "top N" views, with what their high values mean.
SCORE_VIEWS: dict[str, str] = {
    "label_issue_score": "likely label issues",
    "outlier_score": "outliers",
    "uniqueness": "most unique",
    "duplicate_group": "duplicate groups",
}
#: Tags offered in the menu; a custom name can be typed instead.
TAG_CHOICES = ["exclude", "review", "relabel", "note", "custom"]
_NEEDS_VALUE = {"relabel": "the new label", "note": "the note", "custom": "the tag name"}


class Curator(pn.viewable.Viewer):
    """Find, rank, tag and export samples of the explorer it belongs to.

    Every result (similar samples, a top-N view, a sorted selection) fills the explorer's grid
    in rank order and is outlined on the map; tags apply to the grid's samples or to the one
    open in the detail panel and are stored in the dataset at once.
    """

    top_n = param.Integer(default=100, bounds=(1, 100_000), doc="Samples in a top-N view.")
    score = param.Selector(objects=[], doc="Score a top-N view ranks by (highest first).")
    sort_by = param.Selector(objects=[], doc="Column the grid's samples are sorted by.")
    tag = param.Selector(default="exclude", objects=TAG_CHOICES, doc="Tag to add or remove.")
    tag_value = param.String(
        default="", doc="The new label for 'relabel', the text of a 'note', a custom tag's name."
    )
    apply_to = param.Selector(
        default="grid",
        objects=["grid", "marked", "open sample"],
        doc="Which samples a tag applies to: every sample in the grid, the cards marked with "
        "ctrl/shift-click, or the sample open in the detail panel.",
    )
    export_what = param.Selector(
        default="grid samples",
        objects=["grid samples", "cleaned dataset", "tags"],
        doc="What the download holds: the grid's samples, every sample with exclusions and "
        "relabels applied, or the tag list.",
    )
    export_format = param.Selector(
        default="parquet", objects=["parquet", "csv"], doc="File format of the download."
    )
    message = param.String(default="", doc="What the last action did, or why it failed.")

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self._ds = session.dataset
        numeric = list(session.store.numeric)
        scores = [c for c in SCORE_VIEWS if c in numeric]
        self.param.score.objects = scores
        self.param.score.names = {SCORE_VIEWS[c]: c for c in scores}
        if scores:
            self.score = scores[0]
        sortable = ["(grid order)", *scores, *[c for c in numeric if c not in scores]]
        self.param.sort_by.objects = sortable
        self.sort_by = sortable[0]
        self._notice = Notice("embviz-curate-message")
        self._tag_counts = Markup("", css_classes=["embviz-tag-counts"])
        self._download = pn.widgets.FileDownload(
            callback=self._export_file,
            filename=self._filename(),
            label="Download",
            color="primary",
            css_classes=["embviz-download"],
            embed=False,
        )
        self._show_tag_counts()
        session.param.watch(self._show_tag_counts, "tags_version")

    # -- helpers ----------------------------------------------------------------------------
    def _say(self, text: str, *, error: bool = False) -> None:
        self._notice.say(text, error=error)
        self.message = text

    def _fail(self, exc: BaseException) -> None:
        self._say(f"{type(exc).__name__}: {exc}", error=True)

    def _grid_ids(self) -> np.ndarray:
        return self.session.shown_ids

    def _target_ids(self) -> np.ndarray:
        if self.apply_to == "open sample":
            sid = self.session.detail
            return np.array([sid] if sid >= 0 else [], dtype=np.int64)
        if self.apply_to == "marked":
            return np.asarray(self.session.marked, dtype=np.int64)
        return self._grid_ids()

    def tags(self):
        """The dataset's :class:`embviz.tags.TagStore` (shared by every session)."""
        return self.session.tags()

    # -- ranked views -------------------------------------------------------------------------
    def show_top(self, score: str | None = None, n: int | None = None) -> None:
        """Fill the grid with the ``n`` samples scoring highest on ``score`` (duplicate groups:
        the largest groups, members side by side)."""
        from embviz.report.data import top_rows

        score = score or self.score
        n = int(n or self.top_n)
        s = self.session.store
        if score not in s.numeric:
            self._say(
                f"No {score!r} column: run 'embviz score {self._ds.root}' to compute scores.",
                error=True,
            )
            return
        values = s.numeric[score]
        if score == "duplicate_group":
            rows = _duplicate_rows(values, n)
            captions = [f"group {int(values[r])}" for r in rows]
        else:
            rows = top_rows(values, n)
            captions = [f"{score.split('_')[0]} {float(values[r]):.3f}" for r in rows]
        title = f"Top {len(rows):,}: {SCORE_VIEWS.get(score, score)}"
        self.session.show(s.ids[rows], title=title, captions=captions, noun="shown")
        self._say(title)

    def sort_grid(self, column: str | None = None) -> None:
        """Sort the grid's samples by ``column``, highest first (missing values last)."""
        column = column or self.sort_by
        ids = self._grid_ids()
        s = self.session.store
        if column not in s.numeric or not len(ids):
            return
        rows = s.row_of(ids)
        values = np.where(rows >= 0, s.numeric[column][np.clip(rows, 0, None)], np.nan)
        order = np.argsort(np.where(np.isfinite(values), -values, np.inf), kind="stable")
        self.session.show(
            ids[order],
            title=self.session.grid_title,
            captions=[f"{column} {v:.3f}" if np.isfinite(v) else "" for v in values[order]],
            noun=self.session.grid_noun,
        )

    # -- tags ---------------------------------------------------------------------------------
    def _tag_and_value(self) -> tuple[str, str | None]:
        value = self.tag_value.strip()
        if self.tag in _NEEDS_VALUE and not value:
            raise ValueError(f"Type {_NEEDS_VALUE[self.tag]} first.")
        if self.tag == "custom":
            return value, None
        return self.tag, value if self.tag in ("relabel", "note") else None

    def add_tag(self) -> int:
        """Tag the target samples (the grid's, or the open one); returns how many."""
        return self._change_tags(remove=False)

    def remove_tag(self) -> int:
        """Remove the chosen tag from the target samples; returns how many."""
        return self._change_tags(remove=True)

    def _change_tags(self, *, remove: bool) -> int:
        ids = self._target_ids()
        if not len(ids):
            what = {"grid": "the grid is", "marked": "no card is", "open sample": "no sample is"}
            hint = {"marked": " marked (ctrl- or shift-click cards)", "open sample": " open"}
            self._say(
                f"No samples to tag: {what[self.apply_to]}{hint.get(self.apply_to, ' empty')}.",
                error=True,
            )
            return 0
        try:
            tag, value = self._tag_and_value()
            self.session.tag(ids, tag, value, remove=remove)
        except Exception as exc:  # bad tag names or values come back as a message
            self._fail(exc)
            return 0
        what = f"{tag}={value}" if value else tag
        verb = "Removed" if remove else "Tagged"
        self._say(f"{verb} '{what}' {'from' if remove else 'on'} {len(ids):,} samples.")
        return len(ids)

    def _show_tag_counts(self, *_events) -> None:
        try:
            counts = self.tags().counts()
        except Exception:  # a dataset without tags yet, or an unreadable folder
            counts = {}
        self._tag_counts.object = (
            '<div style="font-size:12px;color:#555">'
            + (
                " · ".join(f"{html.escape(str(t))}: {n:,}" for t, n in counts.items())
                or "No tags yet."
            )
            + "</div>"
        )

    # -- export -------------------------------------------------------------------------------
    def _filename(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", self._ds.name).strip("-") or "dataset"
        what = {"grid samples": "selection", "cleaned dataset": "cleaned", "tags": "tags"}
        return f"{stem}-{what[self.export_what]}.{self.export_format}"

    @param.depends("export_what", "export_format", watch=True)
    def _rename(self) -> None:
        self._download.filename = self._filename()

    def export_bytes(self) -> bytes:
        """The download's content for the current choices."""
        from embviz.export import export_samples, export_tags

        fmt = self.export_format
        if self.export_what == "tags":
            return export_tags(self._ds, None, fmt=fmt, tags=self.tags())
        if self.export_what == "cleaned dataset":
            return export_samples(self._ds, None, clean=True, fmt=fmt, tags=self.tags())
        return export_samples(
            self._ds, None, ids=self._grid_ids(), clean=False, fmt=fmt, tags=self.tags()
        )

    def _export_file(self):
        try:
            data = self.export_bytes()
        except Exception as exc:
            self._fail(exc)
            data = b""
        else:
            self._say(f"Exported {self._filename()} ({len(data) / 1024:.0f} KB).")
        return io.BytesIO(data)

    # -- layout -------------------------------------------------------------------------------
    def _button(self, label: str, css: str, action) -> pn.widgets.Button:
        b = pn.widgets.Button(label=label, css_classes=[css], sizing_mode="stretch_width")
        b.on_click(lambda _: action())
        return b

    def __panel__(self):
        hint = Markup(
            '<div style="font-size:12px;color:#666">No scores yet: run <code>embviz score</code> '
            "for outlier, label-issue, uniqueness and duplicate views.</div>",
            visible=not self.param.score.objects,
        )
        ranked = [
            hint,
            pn.Row(
                pn.widgets.Select.from_param(
                    self.param.score, name="Top N by", css_classes=["embviz-score"]
                ),
                pn.widgets.IntInput.from_param(self.param.top_n, name="N", width=80),
            ),
            self._button("Show top N", "embviz-top-n", self.show_top),
            pn.widgets.Select.from_param(
                self.param.sort_by, name="Sort the grid by", css_classes=["embviz-sort-by"]
            ),
            self._button("Sort", "embviz-sort", self.sort_grid),
        ]
        tagging = [
            pn.widgets.Select.from_param(self.param.tag, name="Tag", css_classes=["embviz-tag"]),
            pn.widgets.TextInput.from_param(
                self.param.tag_value,
                name="Label / note / name",
                placeholder="for relabel, note",
                css_classes=["embviz-tag-value"],
            ),
            pn.widgets.RadioButtonGroup.from_param(
                self.param.apply_to, name="Apply to", css_classes=["embviz-apply-to"]
            ),
            pn.Row(
                self._button("Add tag", "embviz-add-tag", self.add_tag),
                self._button("Remove", "embviz-remove-tag", self.remove_tag),
            ),
            self._tag_counts,
        ]
        export = [
            pn.widgets.Select.from_param(
                self.param.export_what, name="Export", css_classes=["embviz-export-what"]
            ),
            pn.widgets.RadioButtonGroup.from_param(
                self.param.export_format, name="Format", css_classes=["embviz-export-format"]
            ),
            self._download,
        ]
        cards = [
            pn.Card(*ranked, title="Rank", sizing_mode="stretch_width"),
            pn.Card(*tagging, title="Tag", sizing_mode="stretch_width"),
            pn.Card(*export, title="Export", sizing_mode="stretch_width"),
        ]
        return pn.Column(self._notice, *cards, sizing_mode="stretch_width")


def _duplicate_rows(group: np.ndarray, n: int) -> np.ndarray:
    """Rows of the largest duplicate groups (group -1 or NaN = none), members side by side,
    at most ``n`` rows."""
    g = np.where(np.isfinite(group), group, -1).astype(np.int64)
    rows = np.flatnonzero(g >= 0)
    if not len(rows):
        return rows
    ids, inverse, counts = np.unique(g[rows], return_inverse=True, return_counts=True)
    size = counts[inverse]
    order = np.lexsort((g[rows], -size))
    rows = rows[order]
    return rows[size[order] >= 2][:n]
