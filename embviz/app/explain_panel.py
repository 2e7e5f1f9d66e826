"""The explain controls under the detail panel: a saliency map of the open sample, on demand.

Pick a method (Grad-CAM, EigenCAM) and a class (the top prediction, the sample's label, or any
class of its top-k), press Explain: the map is computed on the task pool (never the event loop;
:class:`~embviz.explain.Explainer` caches it beside the dataset) and laid over the detail
image, its opacity on a slider, the method, layer and class named under it.
"""

from __future__ import annotations

import base64
import html

import panel as pn

from .session import Session
from .widgets import DetailPanel
from .widgets.markup import Markup

__all__ = ["TOP", "ExplainPanel"]

#: The class choice that explains the top prediction.
TOP = "top prediction"


class ExplainPanel(pn.viewable.Viewer):
    """Saliency for the session's open sample, drawn over ``details``' image."""

    def __init__(self, session: Session, details: DetailPanel, **params):
        from embviz.saliency import METHODS

        super().__init__(**params)
        self.session = session
        self.details = details
        self.available = session.dataset.has("predictions")
        self.method = pn.widgets.Select(label="Saliency", options=list(METHODS), width=110)
        self.target = pn.widgets.Select(label="Class", options=[TOP], width=140)
        self.opacity = pn.widgets.FloatSlider(
            label="Opacity", start=0.0, end=1.0, step=0.05, value=0.6, width=120
        )
        self.button = pn.widgets.Button(label="Explain", css_classes=["embviz-explain"], width=90)
        self.message = Markup("", css_classes=["embviz-explain-message"])
        self.button.on_click(lambda _: self.run())
        self.opacity.param.watch(lambda e: setattr(details, "overlay_opacity", e.new), "value")
        session.param.watch(self._opened, "detail")
        details.param.watch(self._bar_clicked, "picked_class")
        self._layout = pn.Column(
            pn.Row(self.method, self.target, self.opacity, self.button),
            self.message,
            visible=self.available and session.detail >= 0,
            sizing_mode="stretch_width",
            css_classes=["embviz-explain-panel"],
        )
        if session.detail >= 0:  # built after a sample was opened (panels are built lazily)
            self._opened()

    def _opened(self, *_events) -> None:
        sid = self.session.detail
        self.details.param.update(overlay_src="", overlay_caption="")
        self.message.object = ""
        self._layout.visible = self.available and sid >= 0
        if not self._layout.visible:
            return
        own = str(self.details.sample.get("label", ""))
        top = [str(p["label"]) for p in self.details.predictions]
        self.target.options = list(dict.fromkeys([TOP, *([own] if own in top else []), *top]))
        self.target.value = TOP

    def _bar_clicked(self, event) -> None:
        """A click on a top-k bar explains that class."""
        if event.new and event.new in self.target.options:
            self.target.value = event.new
            self.run()

    def run(self) -> None:
        """Compute (or fetch) the map for the open sample with the chosen method and class."""
        sid = self.session.detail
        if sid < 0 or not self.available:
            return
        method = self.method.value
        label = None if self.target.value == TOP else str(self.target.value)
        self.button.disabled = True
        self.message.object = "computing the map…"

        def work():
            from embviz.explain import explainer_for

            from .work import one_torch_thread

            one_torch_thread()
            return explainer_for(self.session.dataset).explain(sid, method=method, label=label)

        def done(found) -> None:
            self.button.disabled = False
            if self.session.detail != sid:
                return  # another sample was opened meanwhile
            uri = "data:image/png;base64," + base64.b64encode(found.png).decode("ascii")
            caption = (
                f"{found.method} · layer {found.layer} · class {found.label} "
                f"(p = {found.score:.2f})" + (" · cached" if found.cached else "")
            )
            self.details.param.update(
                overlay_src=uri, overlay_caption=caption, overlay_opacity=self.opacity.value
            )
            self.message.object = ""

        def fail(exc: Exception) -> None:
            self.button.disabled = False
            self.message.object = f'<span style="color:#b00020">{html.escape(str(exc))}</span>'

        self.session.in_background(work, done, fail)

    def __panel__(self):
        return self._layout
