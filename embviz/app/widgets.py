"""Browser-side explorer widgets: a category legend, an image grid, the selection grid and the detail panel."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import panel as pn
import param
from panel.custom import JSComponent

__all__ = ["DetailPanel", "ImageGrid", "Legend", "SelectionGrid", "label_counts"]

# Everything from user data reaches the DOM through textContent/setAttribute in the ESM below,
# and through html.escape in the Python-built HTML; nothing is loaded from outside the page.

_LEGEND_CSS = """
.embviz-legend { font: 13px/1.3 system-ui, sans-serif; color: #222; }
.embviz-legend-title { font-weight: 600; margin: 0 0 4px; }
.embviz-legend-list { max-height: var(--embviz-legend-max, 360px); overflow: auto;
  display: flex; flex-direction: column; gap: 1px; }
.embviz-legend-item { display: flex; align-items: center; gap: 6px; width: 100%;
  padding: 2px 4px; border: 0; border-radius: 3px; background: none; font: inherit;
  color: inherit; text-align: left; cursor: pointer; user-select: none; }
.embviz-legend-item:hover { background: #eef1f5; }
.embviz-legend-swatch { flex: none; width: 11px; height: 11px; border-radius: 2px; }
.embviz-legend-name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.embviz-legend-count { flex: none; color: #666; font-variant-numeric: tabular-nums; }
.embviz-legend-item.is-hidden { opacity: 0.4; }
.embviz-legend-item.is-hidden .embviz-legend-name { text-decoration: line-through; }
"""

_LEGEND_ESM = """
export function render({ model }) {
  const root = document.createElement("div");
  root.className = "embviz-legend";
  const title = document.createElement("div");
  title.className = "embviz-legend-title";
  const list = document.createElement("div");
  list.className = "embviz-legend-list";
  list.setAttribute("role", "list");
  root.append(title, list);
  const fmt = new Intl.NumberFormat("en-US");

  function paintHidden() {
    const hidden = new Set(model.hidden.map(String));
    for (const item of list.children) {
      const off = hidden.has(item.getAttribute("data-name"));
      item.classList.toggle("is-hidden", off);
      item.setAttribute("aria-pressed", String(!off));
    }
  }
  function build() {
    title.textContent = model.title;
    title.hidden = !model.title;
    list.replaceChildren(...model.items.map((entry) => {
      const item = document.createElement("button");
      item.type = "button";
      item.className = "embviz-legend-item";
      item.setAttribute("data-name", String(entry.name));
      const swatch = document.createElement("span");
      swatch.className = "embviz-legend-swatch";
      swatch.style.backgroundColor = entry.color;
      const name = document.createElement("span");
      name.className = "embviz-legend-name";
      name.textContent = String(entry.name);
      name.setAttribute("title", String(entry.name));
      const count = document.createElement("span");
      count.className = "embviz-legend-count";
      count.textContent = entry.count == null ? "" : fmt.format(entry.count);
      item.append(swatch, name, count);
      return item;
    }));
    paintHidden();
  }
  // Python owns the toggle/isolate rules; a double-click arrives as click, click, dblclick,
  // and the two toggles cancel out before the isolate is applied.
  for (const action of ["click", "dblclick"]) {
    list.addEventListener(action, (event) => {
      const item = event.target.closest(".embviz-legend-item");
      if (item) model.send_msg({ action, name: item.getAttribute("data-name") });
    });
  }
  model.on(["items", "title"], build);
  model.on("hidden", paintHidden);
  build();
  return root;
}
"""

_GRID_CSS = """
.embviz-grid { display: grid; gap: 6px; font: 12px/1.25 system-ui, sans-serif; color: #222;
  grid-template-columns: repeat(var(--embviz-columns, 4), minmax(0, var(--embviz-thumb, 96px))); }
.embviz-grid-item { display: flex; flex-direction: column; align-items: center; gap: 2px;
  padding: 3px; border: 1px solid #d8dde3; border-radius: 4px; background: #fff;
  font: inherit; color: inherit; cursor: pointer; min-width: 0; }
.embviz-grid-item:hover { border-color: #8aa4c8; }
.embviz-grid-item.is-selected { border-color: #2f6fd1; box-shadow: 0 0 0 2px #2f6fd155; }
.embviz-grid-item.is-marked { background: #fff4d6; border-color: #d99a00; }
.embviz-grid-item img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #f3f4f6;
  image-rendering: auto; }
.embviz-grid-label, .embviz-grid-caption { max-width: 100%; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
.embviz-grid-caption { color: #666; font-variant-numeric: tabular-nums; }
"""

_GRID_ESM = """
export function render({ model }) {
  const root = document.createElement("div");
  root.className = "embviz-grid";

  function paintSelected() {
    const selected = String(model.selected_id);
    const marked = new Set(model.marked.map(String));
    for (const card of root.children) {
      const id = card.getAttribute("data-id");
      card.classList.toggle("is-selected", id === selected);
      card.classList.toggle("is-marked", marked.has(id));
      card.setAttribute("aria-pressed", String(marked.has(id)));
    }
  }
  function layout() {
    root.style.setProperty("--embviz-columns", String(Math.max(1, model.columns)));
    root.style.setProperty("--embviz-thumb", `${Math.max(8, model.thumb_px)}px`);
  }
  function build() {
    root.replaceChildren(...model.items.map((entry) => {
      const label = entry.label == null ? "" : String(entry.label);
      const card = document.createElement("button");
      card.type = "button";
      card.className = "embviz-grid-item";
      card.setAttribute("data-id", String(entry.id));
      card.setAttribute("title", label);
      const img = document.createElement("img");
      img.setAttribute("loading", "lazy");  // before src, or the browser fetches eagerly
      img.setAttribute("alt", label);
      if (entry.src) img.setAttribute("src", String(entry.src));
      const text = document.createElement("span");
      text.className = "embviz-grid-label";
      text.textContent = label;
      card.append(img, text);
      if (entry.caption != null && entry.caption !== "") {
        const caption = document.createElement("span");
        caption.className = "embviz-grid-caption";
        caption.textContent = String(entry.caption);
        card.append(caption);
      }
      return card;
    }));
    paintSelected();
  }
  root.addEventListener("click", (event) => {
    const card = event.target.closest(".embviz-grid-item");
    if (!card) return;
    // Ctrl-, Cmd- or Shift-click marks a card (for tagging some of a selection); a plain
    // click opens it.
    const mark = event.ctrlKey || event.metaKey || event.shiftKey;
    model.send_msg({ action: mark ? "mark" : "click", id: Number(card.getAttribute("data-id")) });
  });
  model.on("items", build);
  model.on("marked", paintSelected);
  model.on(["columns", "thumb_px"], layout);
  model.on("selected_id", paintSelected);
  layout();
  build();
  return root;
}
"""

_PANEL_CSS = """
:host { font: 13px/1.35 system-ui, sans-serif; color: #222; }
.embviz-muted { color: #666; }
.embviz-heading { font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 2px 6px; border-bottom: 1px solid #eceff3; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
th { color: #555; font-weight: 500; white-space: nowrap; width: 1%; }
td.embviz-num { text-align: right; font-variant-numeric: tabular-nums; width: 1%; white-space: nowrap; padding-left: 6px; }
.embviz-bar { height: 8px; background: #8aa4c8; border-radius: 2px; min-width: 1px; }
.embviz-detail-image { display: block; width: 100%; max-height: 480px; object-fit: contain;
  background: #f3f4f6; }
"""


class Legend(JSComponent):
    """Clickable category legend: click toggles an entry, double-click isolates it.

    The browser sends each click to Python, which applies the rule to ``hidden``; the new
    ``hidden`` list syncs back and the entries are redrawn, so Python is the only owner of
    the state and :meth:`toggle` / :meth:`isolate` behave the same from code.
    """

    items = param.List(
        default=[],
        item_type=dict,
        doc='Entries in display order, each {"name": str, "color": "#rrggbb", "count": int}.',
    )
    hidden = param.List(default=[], doc="Names of the entries currently hidden (drawn faded).")
    title = param.String(default="", doc="Heading above the entries; empty shows none.")

    _esm = _LEGEND_ESM
    _stylesheets = [_LEGEND_CSS]

    def __init__(self, **params):
        params.setdefault("sizing_mode", "stretch_width")
        params.setdefault("margin", (5, 10))  # line up with Panel's panes and widgets
        super().__init__(**params)

    def _names(self) -> list:
        return [item["name"] for item in self.items]

    def toggle(self, name) -> None:
        """Hide ``name`` if it is shown, show it if it is hidden."""
        if name in self.hidden:
            self.hidden = [n for n in self.hidden if n != name]
        else:
            self.hidden = [*self.hidden, name]

    def isolate(self, name) -> None:
        """Show only ``name``; if it already is the only entry shown, show all entries again."""
        visible = [n for n in self._names() if n not in self.hidden]
        if visible == [name]:
            self.hidden = []
        else:
            self.hidden = [n for n in self._names() if n != name]

    def _handle_msg(self, data) -> None:
        if not isinstance(data, dict):
            return
        # The browser only knows names as strings: map back to the item's own name value.
        by_text = {str(n): n for n in self._names()}
        name = by_text.get(str(data.get("name")))
        if name is None:
            return
        if data.get("action") == "click":
            self.toggle(name)
        elif data.get("action") == "dblclick":
            self.isolate(name)


class ImageGrid(JSComponent):
    """A grid of thumbnail cards; clicking a card reports its id to Python.

    Each click sets ``clicked`` to the card's id and increments ``clicks`` in one update, so
    ``grid.param.watch(callback, "clicks")`` runs on every click, including a second click
    on the same card. ``selected_id`` follows the last click and can also be set from code.
    """

    items = param.List(
        default=[],
        item_type=dict,
        doc='Cards in display order, each {"id": int, "label": str, "src": url, "caption": str (optional)}.',
    )
    columns = param.Integer(default=4, bounds=(1, None), doc="Number of card columns.")
    thumb_px = param.Integer(
        default=96, bounds=(8, None), doc="Largest width of a card's image in CSS pixels."
    )
    selected_id = param.Integer(default=-1, doc="Id of the highlighted card; -1 highlights none.")
    marked = param.List(default=[], doc="Ids of the cards drawn as marked (ctrl/shift-click).")
    toggled = param.Integer(
        default=-1, doc="Id of the card ctrl/shift-clicked last; re-set on every such click."
    )
    clicked = param.Integer(default=-1, doc="Id of the card clicked last; -1 before any click.")
    clicks = param.Integer(
        default=0, bounds=(0, None), doc="Number of clicks so far; watch it to see every click."
    )

    _esm = _GRID_ESM
    _stylesheets = [_GRID_CSS]
    # Python-only state: the browser reports clicks by message and never needs these back.
    _rename = {"clicked": None, "clicks": None, "toggled": None}

    def __init__(self, **params):
        params.setdefault("sizing_mode", "stretch_width")
        params.setdefault("margin", (5, 10))  # line up with Panel's panes and widgets
        super().__init__(**params)

    def _handle_msg(self, data) -> None:
        if not (isinstance(data, dict) and data.get("action") in ("click", "mark")):
            return
        try:
            card = int(data["id"])
        except (KeyError, TypeError, ValueError):
            return
        if data["action"] == "mark":
            if self.toggled == card:
                self.toggled = -1  # so that watchers run on a repeat
            self.toggled = card
            return
        self.param.update(clicked=card, selected_id=card, clicks=self.clicks + 1)


def _reopen(target: param.Parameterized, sample_id: int) -> None:
    """Set ``target.opened`` so that its watchers run even when the id is the same as before."""
    if target.opened == sample_id:
        target.opened = -1
    target.opened = sample_id


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
        self._grid = ImageGrid()
        self._grid.param.watch(lambda _: _reopen(self, self._grid.clicked), "clicks")
        self._grid.param.watch(self._on_toggle, "toggled")
        self._header = pn.pane.HTML(stylesheets=[_PANEL_CSS], sizing_mode="stretch_width")
        self._counts = pn.pane.HTML(stylesheets=[_PANEL_CSS], sizing_mode="stretch_width")
        self._hint = pn.pane.HTML(
            '<div class="embviz-muted">Box- or lasso-select points on the map to see them here.</div>',
            stylesheets=[_PANEL_CSS],
        )
        self._prev = pn.widgets.Button(label="‹ Previous", css_classes=["embviz-prev"], width=100)
        self._next = pn.widgets.Button(label="Next ›", css_classes=["embviz-next"], width=100)
        self._prev.on_click(lambda _: self.param.update(page=max(0, self.page - 1)))
        self._next.on_click(lambda _: self.param.update(page=min(self.page + 1, self.pages - 1)))
        self._page_text = pn.pane.HTML(stylesheets=[_PANEL_CSS], align="center")
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
        if event.new is None or event.new < 0:
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


class DetailPanel(pn.viewable.Viewer):
    """One sample in full: its image, every field as text, and its nearest neighbours.

    Clicking a neighbour sets ``opened`` to its id, with the same re-firing rule as
    :class:`SelectionGrid`. The close button sets ``visible_detail`` to False, which hides the
    panel; set it back to True to show the panel again.
    """

    sample = param.Dict(
        default={}, doc="Fields of the sample shown (id, label, split, uri, width, height, ...)."
    )
    image_src = param.String(default="", doc="URL of the full-size image.")
    neighbours = param.List(
        default=[],
        item_type=dict,
        doc='Nearest neighbours, each {"id": int, "label": str, "src": url, "distance": float}.',
    )
    opened = param.Integer(
        default=-1,
        doc="Id of the neighbour clicked last; re-set on every click (via -1 on a repeat).",
    )
    visible_detail = param.Boolean(default=True, doc="Whether the panel is shown.")

    def __init__(self, **params):
        super().__init__(**params)
        self._image = pn.pane.HTML(stylesheets=[_PANEL_CSS], sizing_mode="stretch_width")
        self._fields = pn.pane.HTML(stylesheets=[_PANEL_CSS], sizing_mode="stretch_width")
        self._heading = pn.pane.HTML(stylesheets=[_PANEL_CSS], sizing_mode="stretch_width")
        self._grid = ImageGrid(columns=4, thumb_px=72)
        self._grid.param.watch(lambda _: _reopen(self, self._grid.clicked), "clicks")
        self._neighbours_title = pn.pane.HTML(
            '<div class="embviz-heading">Nearest neighbours</div>', stylesheets=[_PANEL_CSS]
        )
        close = pn.widgets.Button(label="Close", css_classes=["embviz-close"], width=80)
        close.on_click(lambda _: setattr(self, "visible_detail", False))
        self._layout = pn.Column(
            pn.Row(self._heading, close, sizing_mode="stretch_width"),
            self._image,
            self._fields,
            self._neighbours_title,
            self._grid,
            css_classes=["embviz-detail"],
            sizing_mode="stretch_width",
            visible=self.param.visible_detail,
        )
        self._show_sample()
        self._show_neighbours()

    @property
    def grid(self) -> ImageGrid:
        """The ImageGrid of neighbours."""
        return self._grid

    @param.depends("sample", "image_src", watch=True)
    def _show_sample(self) -> None:
        label = str(self.sample.get("label", ""))
        sid = self.sample.get("id", "")
        self._heading.object = (
            f'<div class="embviz-heading">{html.escape(label)}'
            f' <span class="embviz-muted">#{html.escape(str(sid))}</span></div>'
        )
        self._image.object = (
            f'<img class="embviz-detail-image" src="{html.escape(self.image_src)}" alt="{html.escape(label)}">'
            if self.image_src
            else ""
        )
        rows = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.sample.items()
        )
        self._fields.object = f'<table class="embviz-detail-fields">{rows}</table>'

    @param.depends("neighbours", watch=True)
    def _show_neighbours(self) -> None:
        self._grid.items = [
            {
                "id": int(nb["id"]),
                "label": str(nb.get("label", "")),
                "src": str(nb.get("src", "")),
                "caption": _distance_text(nb.get("distance")),
            }
            for nb in self.neighbours
        ]
        self._neighbours_title.visible = self._grid.visible = bool(self.neighbours)

    def __panel__(self):
        return self._layout


def _distance_text(distance: float | None) -> str:
    return "" if distance is None else f"d = {float(distance):.3g}"
