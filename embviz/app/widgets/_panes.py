"""What the Python-built panels share: the stylesheet of their HTML panes and the click re-firing rule."""

from __future__ import annotations

import param

# User text reaches these panes only through html.escape.
PANEL_CSS = """
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
.embviz-detail-stack { position: relative; }
.embviz-detail-stack .embviz-overlay { position: absolute; inset: 0; height: 100%;
  background: transparent; mix-blend-mode: screen; pointer-events: none; }
"""


def on_grid(grid, card) -> bool:
    """Whether ``card`` is the id of one of ``grid``'s cards (a hostile page can send any id)."""
    return any(item["id"] == card for item in grid.items)


def open_card(target: param.Parameterized, grid) -> None:
    """Open the card ``grid`` reports clicked on ``target`` (see :func:`reopen`), if it is one
    of the grid's cards."""
    if on_grid(grid, grid.clicked):
        reopen(target, grid.clicked)


def reopen(target: param.Parameterized, sample_id: int) -> None:
    """Set ``target.opened`` so that its watchers run even when the id is the same as before."""
    if target.opened == sample_id:
        target.opened = -1
    target.opened = sample_id
