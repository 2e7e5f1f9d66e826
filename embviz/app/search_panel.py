"""The search panel: samples similar to the open one, to the grid's, to an uploaded image, or to text."""

from __future__ import annotations

import threading

import numpy as np
import panel as pn
import param

from .notice import Notice
from .session import Session
from .widgets.markup import Markup

__all__ = ["SearchPanel"]


class SearchPanel(pn.viewable.Viewer):
    """Similarity search over the session's embedding; results fill the grid nearest first.

    The index and the model load in the background when the panel is made, so the first search
    does not wait for them; the text box shows only for models that read text (CLIP-like).
    """

    k = param.Integer(default=100, bounds=(1, 5000), doc="How many samples a search returns.")
    text = param.String(default="", doc="Text to search for (CLIP-like models only).")
    message = param.String(default="", doc="What the last search did, or why it failed.")

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.available = bool(session.dataset.embeddings)
        self._notice = Notice("embviz-search-message")
        self._upload = pn.widgets.FileInput(
            accept="image/*", multiple=False, css_classes=["embviz-upload"]
        )
        self._upload.param.watch(self._on_upload, "value")
        self._text_row = pn.Row(
            pn.widgets.TextInput.from_param(
                self.param.text,
                name="",
                placeholder="text (CLIP models)",
                css_classes=["embviz-search-text-input"],
            ),
            _button("Go", "embviz-search-text", self.search_text),
            visible=False,
        )
        if self.available:
            self._warm_search(session.doc)

    def _warm_search(self, doc) -> None:
        """Load the index and the model in the background, so the first search and upload
        do not wait for them; show the text box once the model is known to read text."""

        def shown(searcher) -> None:
            self._text_row.visible = bool(searcher.supports_text)

        def quiet(exc: BaseException) -> None:  # e.g. vectors with no model: by id still works
            import logging

            logging.getLogger(__name__).info("search warm-up: %s", exc)

        if doc is None:
            return

        def job() -> None:  # its own thread: a torch import must not hold a render thread
            try:
                searcher = self._searcher().warm()
            except Exception as exc:
                quiet(exc)
                return
            if self.session.doc is doc:  # the page may have closed while the model loaded
                doc.add_next_tick_callback(lambda: shown(searcher))

        threading.Thread(target=job, name="embviz-search-warm", daemon=True).start()

    def _searcher(self):
        from embviz.search import searcher

        return searcher(self.session.dataset, self.session.embedding)

    def _show_result(self, result) -> None:
        captions = [f"d = {float(d):.3f}" for d in result.distances]
        self.session.show(result.ids, title=result.query, captions=captions, noun="results")
        self._say(f"{len(result.ids):,} results: {result.query}")

    def search_ids(self, ids, *, what: str) -> None:
        """Fill the grid with the samples most similar to ``ids`` (their centroid)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            self._say(f"Nothing to search from: {what} is empty.", error=True)
            return
        k = self.k
        self._say(f"Searching for samples similar to {what}…")
        self.session.in_background(
            lambda: self._searcher().by_ids(ids, k), self._show_result, self._fail
        )

    def search_image(self, data: bytes, name: str | None = None) -> None:
        """Fill the grid with the samples most similar to an image, embedded with the
        dataset's own model."""
        k = self.k
        self._say("Embedding the uploaded image…")
        self.session.in_background(
            lambda: self._searcher().by_image(data, k, name=name),
            self._show_result,
            self._fail,
        )

    def search_text(self, text: str | None = None) -> None:
        """Fill the grid with the samples that best match ``text`` (CLIP-like models)."""
        text = (text if text is not None else self.text).strip()
        if not text:
            self._say("Type some text to search for.", error=True)
            return
        k = self.k
        self._say("Searching by text…")
        self.session.in_background(
            lambda: self._searcher().by_text(text, k), self._show_result, self._fail
        )

    def _on_upload(self, event) -> None:
        if event.new:
            self.search_image(bytes(event.new), self._upload.filename or None)

    def _say(self, text: str, *, error: bool = False) -> None:
        self._notice.say(text, error=error)
        self.message = text

    def _fail(self, exc: BaseException) -> None:
        self._say(f"{type(exc).__name__}: {exc}", error=True)

    def __panel__(self):
        s = self.session
        return pn.Column(
            self._notice,
            _button(
                "Similar to the open sample",
                "embviz-similar-open",
                lambda: self.search_ids(
                    [s.detail] if s.detail >= 0 else [], what="the open sample"
                ),
            ),
            _button(
                "Similar to the grid's samples",
                "embviz-similar-grid",
                lambda: self.search_ids(s.shown_ids, what="the grid"),
            ),
            Markup('<div style="font-size:12px">…or to an image:</div>'),
            self._upload,
            self._text_row,
            pn.widgets.IntInput.from_param(self.param.k, name="Results"),
            sizing_mode="stretch_width",
        )


def _button(label: str, css: str, action) -> pn.widgets.Button:
    b = pn.widgets.Button(label=label, css_classes=[css], sizing_mode="stretch_width")
    b.on_click(lambda _: action())
    return b
