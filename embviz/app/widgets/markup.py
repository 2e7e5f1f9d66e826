"""An HTML pane whose new content is sent alone, without its stylesheets again.

Panel's HTML pane answers a new ``object`` by re-sending every property of its model, its
stylesheets included, as new stylesheet models. On a server that is wasted bytes on every
status line; in a notebook the re-sent sheets are links to Panel's CDN (only what is displayed
first gets Panel's inline copies), so an offline notebook logs failed requests on each update.
"""

from __future__ import annotations

import panel as pn

__all__ = ["Markup"]


class Markup(pn.pane.HTML):
    """``pn.pane.HTML`` that sends only the changed text when its ``object`` changes.

    Its stylesheets are those given when it was displayed; changing ``stylesheets`` itself still
    updates them (that goes through Panel's ordinary parameter updates).
    """

    def _update(self, ref: str, model) -> None:
        # Panel calls this (PaneBase._update_object) when ``object`` changes on a pane that
        # updates its model in place; the stylesheets have not changed, so they are not sent.
        props = self._get_properties(model.document)
        props.pop("stylesheets", None)
        model.update(**props)
