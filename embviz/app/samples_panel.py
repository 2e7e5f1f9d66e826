"""The sample panels of a session: the grid of listed samples and the open sample's details."""

from __future__ import annotations

import numpy as np
import panel as pn

from .session import Session
from .widgets import DetailPanel, SelectionGrid

__all__ = ["SamplePanels"]


class SamplePanels(pn.viewable.Viewer):
    """Keeps a :class:`SelectionGrid` and a :class:`DetailPanel` in step with a session.

    The session owns what is listed (``grid_*``), what is marked and what is open; clicking
    a card or a neighbour opens that sample through the session.
    """

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.grid = SelectionGrid(thumb_url=session.thumb_url, title="Selection")
        self.details = DetailPanel(visible_detail=False)
        self.grid.param.watch(self._opened, "opened")
        self.details.param.watch(self._opened, "opened")
        self.grid.param.watch(self._marks_from_grid, "marked")
        session.param.watch(self._list, ["grid_ids", "grid_captions", "grid_title", "grid_noun"])
        session.param.watch(self._marks_to_grid, "marked")
        session.param.watch(self._open, "detail")
        # Built lazily, maybe after a sample was opened: the details show it before the
        # explain panel reads them.
        if session.grid_ids is not None:
            self._list()
        if session.detail >= 0:
            self._open()
        from .explain_panel import ExplainPanel

        # Built after the watcher above: its own runs after the details show the new sample.
        self.explain = ExplainPanel(session, self.details)
        from .activations_panel import ActivationsPanel

        self.activations = ActivationsPanel(session, self.details)

    def _opened(self, event) -> None:
        if event.new is not None and event.new >= 0:
            self.session.open(int(event.new))

    def _marks_from_grid(self, event) -> None:
        if list(event.new) != list(self.session.marked):
            self.session.marked = list(event.new)

    def _marks_to_grid(self, event) -> None:
        if list(event.new) != list(self.grid.marked):
            self.grid.marked = list(event.new)

    def _labels(self, ids: np.ndarray):
        """The label of each listed sample (from the map's store), "(none)" where it has none."""
        import pandas as pd

        store = self.session.store
        col = "label" if "label" in store.categorical else next(iter(store.categorical), None)
        if col is None:
            return None
        rows = store.row_of(ids)
        codes, names = store.categorical[col]
        names = list(names)
        none = names.index("(none)") if "(none)" in names else len(names)
        code = np.where(rows >= 0, codes[np.clip(rows, 0, None)], none)
        if none == len(names) and (rows < 0).any():
            names.append("(none)")
        return pd.Categorical.from_codes(code.astype(np.int64), categories=names)

    def _list(self, *_events) -> None:
        s = self.session
        ids = s.shown_ids
        self.grid.param.update(
            ids=ids,
            labels=self._labels(ids),
            captions=s.grid_captions,
            title=s.grid_title,
            noun=s.grid_noun,
        )

    def _open(self, *_events) -> None:
        sid = self.session.detail
        if sid < 0:
            self.details.visible_detail = False
            return
        shown = self.session.describe(sid)
        self.details.param.update(
            sample=shown["record"],
            image_src=shown["image"],
            neighbours=shown["neighbours"],
            predictions=shown["predictions"],
            visible_detail=True,
        )

    def __panel__(self):
        details = pn.Column(
            self.details, self.explain, self.activations, sizing_mode="stretch_width"
        )
        return pn.Row(self.grid, details, sizing_mode="stretch_width")
