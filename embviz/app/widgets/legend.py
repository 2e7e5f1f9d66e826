"""A clickable category legend whose hidden entries Python owns (click toggles, double-click isolates)."""

from __future__ import annotations

import param
from panel.custom import JSComponent

__all__ = ["Legend"]

# Everything from user data reaches the DOM through textContent/setAttribute in the ESM below;
# nothing is loaded from outside the page.

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
