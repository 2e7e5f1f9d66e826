"""A grid of thumbnail cards that reports clicks and ctrl/shift-click marks to Python."""

from __future__ import annotations

import param
from panel.custom import JSComponent

__all__ = ["ImageGrid"]

# Everything from user data reaches the DOM through textContent/setAttribute in the ESM below;
# nothing is loaded from outside the page.

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
