"""The 3D panel: a session's point cloud in deck.gl with a hover card beside it."""

from __future__ import annotations

import html

import panel as pn

from .session import Session
from .widgets.markup import Markup

__all__ = ["CloudPanel"]


class CloudPanel(pn.viewable.Viewer):
    """The session's 3D projection, down-sampled to a point budget per view on the server.

    Built when the 3D view is first opened (deck.gl loads only then); follows the session's
    colouring, hidden categories and filters.
    """

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.cloud = None
        self.hover_card = Markup("", width=150, css_classes=["embviz-hover-card"])
        self._layout = pn.Row(sizing_mode="stretch_both")
        session.on_detach(self._detach)
        session.param.watch(
            self._restyle, ["color_by", "hidden", "filters", "projection", "tags_version"]
        )

    def show(self) -> None:
        """Build (or rebuild for a new projection or budget) and draw the cloud."""
        from .cloud_view import CloudView

        s = self.session
        store = s.store3d
        if store is None:
            return
        if self.cloud is None or self.cloud.store is not store or self.cloud.budget != s.budget3d:
            self.cloud = CloudView(
                store,
                budget=s.budget3d,
                on_update=self._on_update,
                on_tap=lambda row: row is not None and s.open(int(store.ids[row])),
                on_hover=lambda row: setattr(self.hover_card, "object", self._card(store, row)),
            )
            self.cloud.mask = s.mask_for(store)
            self._colour()
            self._layout.objects = [self.cloud.pane, self.hover_card]
        self.cloud.doc = s.doc
        self.cloud.refresh(wait=self.cloud.doc is None)

    def _card(self, store, row: int | None) -> str:
        """HTML of the card for one point (escaped: data reaches the page only as text)."""
        if row is None:
            return ""
        sid = int(store.ids[row])
        lines = [f"id {sid}"] + [
            f"{name}: {names[codes[row]]}" for name, (codes, names) in store.categorical.items()
        ]
        src = self.session.thumb_url(sid)
        img = f'<img src="{html.escape(src)}" style="max-width:128px">' if src else ""
        text = "<br>".join(html.escape(line) for line in lines)
        return f"{img}<div style='font-size:12px'>{text}</div>"

    def _detach(self) -> None:
        if self.cloud is not None:
            self.cloud.doc = None

    def _colour(self) -> None:
        mode, col = self.session.color_mode()
        hidden = frozenset(self.session.hidden) if mode == "category" else frozenset()
        store = self.cloud.store
        known = col in store.categorical or col in store.numeric
        self.cloud.color_by(col if known else None, hidden=hidden)

    def _restyle(self, *_events) -> None:
        if self.cloud is None or self.session.dims != "3D":
            return
        if self.cloud.store is not self.session.store3d:
            self.show()
            return
        self.cloud.mask = self.session.mask_for(self.cloud.store)
        self._colour()
        self.cloud.refresh(wait=self.cloud.doc is None)

    def _on_update(self, update) -> None:
        kind = "every point in view" if update.in_view else "stratified sample"
        self.session.status = (
            f"3D: {len(update.rows):,} of {self.cloud.store.n:,} points sent ({kind}) · "
            f"update {1000 * update.seconds:.0f} ms · {update.nbytes / 1024:.0f} KB"
        )

    def select_in_view(self) -> None:
        """Select every visible point inside the current 3D view (not only the sample)."""
        if self.cloud is not None:
            rows = self.cloud.rows_in_view()
            self.session.show(self.cloud.store.ids[rows])

    def __panel__(self):
        return self._layout
