"""The 3D panel: a session's point cloud in deck.gl with a hover card beside it."""

from __future__ import annotations

import html
import re

import panel as pn
import param
from panel.custom import JSComponent

from .session import Session
from .widgets.markup import Markup

__all__ = ["CloudPanel", "DeckLoader", "deck_scripts"]

#: Panel's DeckGL scripts left out: the base-map libraries (mapbox-gl, maplibre-gl), 2.3 MB of
#: its 4.8 MB. An embedding has no base map: the cloud sets no map style and an OrbitView, and
#: deck.gl draws without a map library when none is on the page.
_BASE_MAPS = re.compile(r"/(mapbox-gl|maplibre-gl)")


def deck_scripts() -> list[str]:
    """The deck.gl scripts the 3D view needs, as URLs on this Panel server relative to the page.

    Panel's DeckGL pane needs deck.gl, its JSON converter, loaders.gl, h3 and the CARTO layers
    as globals before its first view is made; these are the pane's own bundled files (never a
    CDN), in the order they must run.
    """
    from panel.models.deckgl import DeckGLPlot

    # As Panel writes the page's own script tags: an app served below the root reaches
    # "static/" through pn.state.rel_path.
    base = f"{pn.state.rel_path}/" if pn.state.rel_path else ""
    return [base + url for url in DeckGLPlot.__javascript__ if not _BASE_MAPS.search(url)]


_LOADER_ESM = """
export function render({ model }) {
  const note = document.createElement("div");
  note.className = "embviz-deck-loading";
  note.textContent = "Loading the 3D view\\u2026";
  const present = () => window.deck && window.deck.JSONConverter && window.loaders
    && window.CartoLibrary;
  // One load per script per page, shared by every loader on it; in order, as the pane needs.
  const pending = (window.__embvizScripts ||= new Map());
  const load = (src) => {
    if (!pending.has(src)) {
      pending.set(src, new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = src;
        script.async = false;
        script.onload = resolve;
        script.onerror = () => reject(new Error(src));
        document.head.appendChild(script);
      }));
    }
    return pending.get(src);
  };
  (async () => {
    try {
      if (!present()) {
        for (const src of model.urls) await load(src);
      }
      model.send_msg({ loaded: true });
    } catch (err) {
      pending.delete(err.message);  // a later try fetches it again
      note.textContent = "The 3D view could not load " + err.message;
      model.send_msg({ failed: err.message });
    }
  })();
  return note;
}
"""


class DeckLoader(JSComponent):
    """Loads deck.gl into the page when first shown, then tells Python (``ready``).

    The explorer's page leaves deck.gl out (``pn.extension`` without ``"deckgl"``): it is 4.8
    of the page's 10.7 MB and only the 3D view uses it. Shown in place of the 3D view, this
    adds the scripts of :func:`deck_scripts` to the page, one after the other, and reports
    when they ran; a page that already has deck.gl (a notebook, an app that loads the
    extension) reports at once.
    """

    urls = param.List(default=[], item_type=str, doc="Scripts to run in order (page-relative).")
    ready = param.Boolean(
        default=False, doc="True once the page has deck.gl (set from the browser's report)."
    )
    failed = param.String(default="", doc="URL of the script that failed to load, if any.")

    _esm = _LOADER_ESM
    # Python owns these: the browser reports by message and never needs them back.
    _rename = {"ready": None, "failed": None}

    def _handle_msg(self, data) -> None:
        if not isinstance(data, dict):
            return
        if data.get("loaded") is True:
            self.param.update(ready=True, failed="")
        elif isinstance(data.get("failed"), str):
            self.failed = data["failed"]


class CloudPanel(pn.viewable.Viewer):
    """The session's 3D projection, down-sampled to a point budget per view on the server.

    Built when the 3D view is first opened, and in a served page only once the page has
    loaded deck.gl (:class:`DeckLoader`); follows the session's colouring, hidden categories
    and filters.
    """

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.cloud = None
        self._shows: str | None = None  # the 3D projection the cloud shows
        self.hover_card = Markup("", width=150, css_classes=["embviz-hover-card"])
        self.loader: DeckLoader | None = None
        self._layout = pn.Row(sizing_mode="stretch_both")
        session.on_detach(self._detach)
        session.param.watch(
            self._restyle, ["color_by", "hidden", "filters", "projection", "tags_version"]
        )

    def _deck_ready(self) -> bool:
        """Whether the page can draw deck.gl now; else show the loader, which calls
        :meth:`show` again once it can. Pages without a server session (notebooks, tests)
        load deck.gl with the extension."""
        if self.session.doc is None:
            return True
        if self.loader is None:
            self.loader = DeckLoader(urls=deck_scripts(), sizing_mode="stretch_width")
            self.loader.param.watch(self._on_loaded, "ready")
            self.loader.param.watch(self._on_failed, "failed")
        if self.loader.ready:
            return True
        self._layout.objects = [self.loader]
        return False

    def _on_loaded(self, event) -> None:
        if event.new and self.session.dims == "3D":
            self.show()

    def _on_failed(self, event) -> None:
        if event.new:
            self.session.status = f"3D: the page could not load {event.new}"

    def show(self) -> None:
        """Build (or rebuild for a new projection or budget) and draw the cloud; a new projection
        of the same samples moves the points instead when :attr:`Session.animate` is on."""
        from .cloud_view import CloudView

        s = self.session
        store = s.store3d
        if store is None or not self._deck_ready():
            return
        if self._moves_to(store):
            self._move_to(store)
            return
        if self.cloud is None or self.cloud.store is not store or self.cloud.budget != s.budget3d:
            if s.doc is not None:
                from panel.io.state import set_curdoc

                # This page's resources left deck.gl out; the page has it now, and Panel
                # otherwise logs, at each 3D view built, that the extension is missing.
                with set_curdoc(s.doc):
                    pn.extension("deckgl")
            self.cloud = CloudView(
                store,
                budget=s.budget3d,
                on_update=self._on_update,
                # The cloud's store, not this one: the points may move to another map.
                on_tap=lambda row: row is not None and s.open(int(self.cloud.store.ids[row])),
                on_hover=lambda row: setattr(
                    self.hover_card, "object", self._card(self.cloud.store, row)
                ),
            )
            self.cloud.mask = s.mask_for(store)
            self._colour()
            self._layout.objects = [self.cloud.pane, self.hover_card]
        self._shows = s.projection3d
        self.cloud.doc = s.doc
        self.cloud.refresh(wait=self.cloud.doc is None)

    # -- moving to another map of the same samples -------------------------------------------------
    def _moves_to(self, store) -> bool:
        from .cloud_motion import same_samples

        c, s = self.cloud, self.session
        return (
            s.animate
            and c is not None
            and c.store is not store
            and c.budget == s.budget3d
            and c.last is not None
            and same_samples(c.store, store, c.store.ids[c.rows])
        )

    def _move_to(self, store) -> None:
        from embviz.series import series_of

        from .cloud_motion import CloudMotion

        s, cloud = self.session, self.cloud
        old, new = (series_of(s.dataset, f"projections/{p}") for p in (self._shows, s.projection3d))
        aligned = old is not None and new is not None and old.name == new.name
        cloud.doc = s.doc
        motion = CloudMotion(
            cloud,
            store,
            mask=s.mask_for(store),
            color_by=self._colouring(store),
            # An aligned series keeps the place the user looks at, as the 2D map does.
            keep_camera=aligned and bool(cloud.view_state),
        )
        motion.start()
        self._shows = s.projection3d
        names = {v: k for k, v in s.param.projection3d.names.items()}
        label = names.get(s.projection3d, s.projection3d)
        s.status = f"3D: {len(motion.ids):,} of {store.n:,} points sent (moving to {label})"

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

    def _colouring(self, store) -> tuple[str | None, frozenset[str]]:
        """``(column, hidden)`` colouring ``store``'s points as the session colours its map."""
        mode, col = self.session.color_mode()
        hidden = frozenset(self.session.hidden) if mode == "category" else frozenset()
        known = col in store.categorical or col in store.numeric
        return (col if known else None), hidden

    def _colour(self) -> None:
        col, hidden = self._colouring(self.cloud.store)
        self.cloud.color_by(col, hidden=hidden)

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
