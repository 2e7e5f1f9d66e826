"""What a notebook page needs, from the kernel: Panel's JavaScript inline, pages with no CDN links.

A notebook is often offline (or behind a proxy), and its page is served by Jupyter, not by us:
Panel's default loader asks cdn.holoviz.org and cdn.bokeh.org for Bokeh, Panel and deck.gl,
and pydeck's pages ask jsDelivr, unpkg, Mapbox and Bootstrap's CDN. :func:`setup_notebook`
publishes Panel's resources (deck.gl included: Panel bundles it) into the running cell once per
kernel; :func:`offline_page` drops the links a pydeck page keeps even with ``offline=True``.
"""

from __future__ import annotations

import re
import sys

__all__ = ["in_kernel", "offline_page", "setup_notebook"]

#: What this kernel has published into its notebook ("panel", "holoviews").
_LOADED: set[str] = set()
#: Scripts and stylesheets fetched from another host (an OrbitView without a base map needs none).
_REMOTE = re.compile(
    r"<script[^>]*\ssrc=['\"]?https?://[^>]*>\s*</script>\s*"
    r"|<link[^>]*\shref=['\"]?https?://[^>]*>\s*",
    re.IGNORECASE,
)


def in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (not a script, a test or a server)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def setup_notebook(*, holoviews: bool = False, force: bool = False) -> bool:
    """Load Panel into this notebook, inline; with ``holoviews``, show HoloViews objects too.

    Publishes Bokeh's, Panel's and deck.gl's JavaScript and CSS inside the running cell's
    output (about 8 MB, once per kernel), so nothing is fetched from a CDN, and keeps
    ``pn.config.inline`` on, which also inlines the stylesheets of everything displayed later.
    With ``holoviews``, HoloViews objects display as Panel panes on the Bokeh backend (what
    HoloViews' own notebook display builds, without loading the scripts a second time). Does nothing outside a kernel. The explorer, :func:`~embviz.
    app.notebook.points` and :func:`~embviz.app.notebook.deck` call it themselves; call it with
    ``force=True`` after reloading the browser page of a running kernel (the page lost the
    scripts, the kernel still thinks they are loaded). Returns whether it published anything.
    """
    if not in_kernel():
        return False
    import panel as pn

    pn.config.inline = True
    published = False
    if force or "panel" not in _LOADED:
        pn.extension("deckgl", inline=True)
        _LOADED.add("panel")
        published = True
    if holoviews and "holoviews" not in _LOADED:
        _show_holoviews_with_panel()
        _LOADED.add("holoviews")
    return published


def _show_holoviews_with_panel() -> None:
    """Display HoloViews objects in this kernel as Panel panes (Bokeh backend).

    Not ``hv.extension("bokeh")``: that publishes Bokeh, Panel and deck.gl a second time (about
    8 MB; deck.gl's luma.gl then refuses to initialise twice and Bokeh re-registers its models
    under a running explorer), and HoloViews' own output links Panel's stylesheets on its CDN.
    A Panel pane is what HoloViews' notebook display builds anyway; Panel's display inlines them.
    """
    import holoviews as hv
    import panel as pn
    from IPython import get_ipython

    def bundle(obj):
        return pn.panel(obj, backend="bokeh")._repr_mimebundle_()

    get_ipython().display_formatter.mimebundle_formatter.for_type(hv.core.Dimensioned, bundle)


def offline_page(page: str) -> str:
    """``page`` (an HTML page pydeck wrote with ``offline=True``) without the scripts and
    stylesheets it still links on other hosts (Mapbox GL, Bootstrap, Font Awesome, MapLibre
    and deck.gl widget CSS): none draws a point cloud, and each is a failed request offline."""
    return _REMOTE.sub("", page)
