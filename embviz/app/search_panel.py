"""The search panel: samples similar to the open one, to the grid's, to an uploaded image, or to text."""

from __future__ import annotations

import threading

import numpy as np
import panel as pn
import param

from .notice import Notice
from .session import Session
from .widgets.markup import Markup

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "SearchPanel"]

#: Largest image a page may upload to "similar to an image", in bytes. Bigger uploads are
#: refused with a message before anything is decoded; the server's websocket refuses any
#: message over 20 MB (Bokeh's ``--websocket-max-message-size``), whatever this says.
MAX_UPLOAD_BYTES = 10 * 2**20
#: Most pixels an uploaded image may have (read from its header, before decoding): a
#: decompression bomb is refused without allocating its pixels (25 M pixels: ~75 MB as RGB).
MAX_UPLOAD_PIXELS = 25_000_000
#: Longest upload file name kept for messages (a page can send any name).
_NAME_CHARS = 80


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
        self._uploading = False  # an upload is being embedded
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
        dataset's own model.

        An upload over :data:`MAX_UPLOAD_BYTES`, or one arriving while the previous one is
        still being embedded, is refused with a message; the image is checked (at most
        :data:`MAX_UPLOAD_PIXELS`, decodable) before the model is asked for.
        """
        if len(data) > MAX_UPLOAD_BYTES:
            self._say(
                f"The upload is {len(data) / 2**20:.1f} MB; images of at most "
                f"{MAX_UPLOAD_BYTES // 2**20} MB can be searched.",
                error=True,
            )
            return
        if self._uploading:  # one upload at a time per page: a burst cannot queue up work
            self._say("Still embedding the previous image: upload again when it is done.")
            return
        k = self.k
        self._uploading = True
        self._say("Embedding the uploaded image…")

        def work():
            from embviz.images import decode_image

            decode_image(data, name or "upload", max_pixels=MAX_UPLOAD_PIXELS)
            return self._searcher().by_image(data, k, name=name)

        def done(result) -> None:
            self._uploading = False
            self._show_result(result)

        def fail(exc: BaseException) -> None:
            self._uploading = False
            self._fail(exc)

        self.session.in_background(work, done, fail)

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
        if not event.new:
            return
        if not isinstance(event.new, bytes):  # a list: only a hostile page sends several
            self._say("Upload one image at a time.", error=True)
            return
        name = self._upload.filename
        name = name[:_NAME_CHARS] if isinstance(name, str) and name else None
        self.search_image(event.new, name)

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
