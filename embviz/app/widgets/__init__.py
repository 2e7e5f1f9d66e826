"""Browser-side explorer widgets: a category legend, an image grid, the selection grid and the detail panel.

One module per widget (:mod:`~embviz.app.widgets.legend`, :mod:`~embviz.app.widgets.grid`,
:mod:`~embviz.app.widgets.selection`, :mod:`~embviz.app.widgets.detail`); this package is their
public face. Everything from user data reaches the DOM through ``textContent`` /
``setAttribute`` in the components' ESM and through ``html.escape`` in the Python-built HTML;
nothing is loaded from outside the page.
"""

from __future__ import annotations

from ._panes import PANEL_CSS
from .detail import DetailPanel
from .grid import ImageGrid
from .legend import Legend
from .selection import SelectionGrid, label_counts

__all__ = ["PANEL_CSS", "DetailPanel", "ImageGrid", "Legend", "SelectionGrid", "label_counts"]
