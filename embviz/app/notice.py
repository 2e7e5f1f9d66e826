"""A panel's one-line message: what the last action did, or why it failed (shown as text)."""

from __future__ import annotations

import html

import panel as pn
import param

from .widgets.markup import Markup

__all__ = ["Notice"]


class Notice(pn.viewable.Viewer):
    """The message line of a panel; user text reaches the page only escaped."""

    message = param.String(default="", doc="What the last action did, or why it failed.")
    error = param.Boolean(default=False, doc="Whether the message reports a failure.")

    def __init__(self, css_class: str, **params):
        super().__init__(**params)
        self._pane = Markup("", css_classes=[css_class])

    def say(self, text: str, *, error: bool = False) -> None:
        """Show ``text`` (red when ``error``); an empty text clears the line."""
        self.param.update(message=text, error=error)
        colour = "#b3261e" if error else "#333"
        self._pane.object = (
            f'<div style="color:{colour};font-size:12px">{html.escape(text)}</div>' if text else ""
        )

    def fail(self, exc: BaseException) -> None:
        """Show an exception as ``Type: message``."""
        self.say(f"{type(exc).__name__}: {exc}", error=True)

    def __panel__(self):
        return self._pane
