"""A hostile browser tab: a websocket session that sends the explorer malformed, huge and floods of events.

:class:`HostileSession` opens a session exactly as :class:`embviz.loadtest.Person` does (so the
server cannot tell it from a page), then sends what a page could send, with values no page
would: map events with non-finite or absurd coordinates, lasso polygons of any size, widget
values of any length, uploads of any bytes. It is the client of ``tests/test_hostile_session.py``.

The protocol bits it relies on (Bokeh 3 over the ``/ws`` websocket; each message is three
text fragments: header, metadata, content):

- a UI event is a ``PATCH-DOC`` whose one event is ``{"kind": "MessageSent", "msg_type":
  "bokeh_event", "msg_data": {"type": "event", "name": NAME, "values": {"type": "map",
  "entries": [[key, value], ...]}}}``; the server builds ``bokeh.events`` class NAME with the
  entries as keyword arguments (``rangesupdate``: x0, x1, y0, y1; ``selectiongeometry``:
  geometry, final; ``tap``: x, y, sx, sy; ``button_click``: the button only), and ``model`` is
  ``{"id": ID}`` of the model the event is for;
- a widget change is a ``PATCH-DOC`` event ``{"kind": "ModelChanged", "model": {"id": ID},
  "attr": NAME, "new": VALUE}`` (what BokehJS sends when a property changes in the page);
- a float that JSON cannot carry is ``{"type": "number", "value": "nan" | "+inf" | "-inf"}``
  (Bokeh's own encoding), so NaN and infinities arrive as floats, as a page would send them;
- models are found in the document the server sent on ``PULL-DOC-REPLY``: each model appears
  once in full (``{"type": "object", "name": CLASS, "id": ID, "attributes": {...}}``).
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Callable

from embviz.loadtest import Person, doc_objects

__all__ = ["HostileSession", "encode", "find_models", "number"]


def number(value: float) -> float | dict:
    """``value`` as the Bokeh protocol carries it: NaN and infinities as Bokeh's number records."""
    value = float(value)
    if math.isnan(value):
        return {"type": "number", "value": "nan"}
    if math.isinf(value):
        return {"type": "number", "value": "+inf" if value > 0 else "-inf"}
    return value


def encode(value):
    """``value`` as BokehJS serializes a plain object: dicts as Bokeh map records (a bare
    ``{"id": ...}`` would be read as a reference to a model), NaN and infinities as numbers."""
    if isinstance(value, dict):
        return {"type": "map", "entries": [[k, encode(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, float):
        return number(value)
    return value


def _css(node: dict) -> list[str]:
    css = node["attributes"].get("css_classes") or []
    return [str(c) for c in (css.get("entries", []) if isinstance(css, dict) else css)]


def find_models(
    doc: dict,
    *,
    name: str | None = None,
    css_class: str | None = None,
    where: Callable[[dict], bool] | None = None,
) -> list[str]:
    """Ids of the models in document JSON ``doc`` of class ``name`` (e.g. ``"FileInput"``),
    carrying CSS class ``css_class`` and for which ``where(model_json)`` holds (each optional)."""
    found = []
    for node in doc_objects(doc):
        if name is not None and node.get("name") != name:
            continue
        if css_class is not None and css_class not in _css(node):
            continue
        if where is not None and not where(node):
            continue
        found.append(node["id"])
    return list(dict.fromkeys(found))


class HostileSession(Person):
    """A session of the explorer at ``url`` that sends hostile events (see the module docstring).

    Every send returns as soon as the message is written: whether and how the server answers
    is for the caller to check (:attr:`received` keeps every document change it sent back).
    ``url``, ``arguments`` (the page's query string: hostile URL state goes here), ``headers``
    and ``timeout`` are :class:`~embviz.loadtest.Person`'s.
    """

    def __init__(self, url: str, **person):
        super().__init__(url, **person)
        #: every ``PATCH-DOC`` event the server sent this session, in order
        self.received: list[dict] = []

    def _check(self, message) -> None:
        if message.msgtype == "PATCH-DOC":
            self.received.extend(message.content.get("events", []))
        super()._check(message)

    # -- finding the page's models ----------------------------------------------------------
    def model(self, **query) -> str:
        """The id of the one model :func:`find_models` finds with ``query`` in the page's
        document or the models the server added since; fails otherwise."""
        found = {"doc": self.document or {}, "events": self.received}
        ids = list(dict.fromkeys(find_models(found, **query)))
        if len(ids) != 1:
            raise LookupError(f"{len(ids)} models match {query} in the page's document")
        return ids[0]

    async def wait_model(self, timeout: float = 60.0, **query) -> str:
        """:meth:`model`, waiting up to ``timeout`` seconds for the server to add it (the side
        column is built after the page has loaded)."""
        deadline = time.perf_counter() + timeout
        while True:
            try:
                return self.model(**query)
            except LookupError:
                if time.perf_counter() > deadline:
                    raise
                await asyncio.sleep(0.1)  # the listener appends what the server sends meanwhile

    # -- map events -------------------------------------------------------------------------
    async def ranges(self, x0: float, x1: float, y0: float, y1: float) -> None:
        """Send the map a ``rangesupdate`` (a pan or zoom) with any, even non-finite, edges."""
        ref = {"id": self._figure}
        edges = [["x0", x0], ["x1", x1], ["y0", y0], ["y1", y1]]
        await self._event("rangesupdate", [["model", ref], *[[k, number(v)] for k, v in edges]])

    async def select_box(self, x0: float, x1: float, y0: float, y1: float) -> None:
        """A finished box selection over data coordinates ``x0..x1`` x ``y0..y1``."""
        geometry = {"type": "rect", "sx0": 0, "sx1": 1, "sy0": 0, "sy1": 1}
        geometry |= {
            k: number(v) for k, v in zip(("x0", "x1", "y0", "y1"), (x0, x1, y0, y1), strict=False)
        }
        await self._geometry(geometry)

    async def select_poly(self, xs, ys) -> None:
        """A finished lasso through the data points ``(xs[i], ys[i])`` (any number, any values)."""
        xs, ys = [number(v) for v in xs], [number(v) for v in ys]
        geometry = {"type": "poly", "sx": [0.0] * len(xs), "sy": [0.0] * len(ys), "x": xs, "y": ys}
        await self._geometry(geometry)

    async def _geometry(self, geometry: dict) -> None:
        entries = [[k, v] for k, v in geometry.items()]
        await self._event(
            "selectiongeometry",
            [
                ["model", {"id": self._figure}],
                ["geometry", {"type": "map", "entries": entries}],
                ["final", True],
            ],
        )

    async def tap(self, x: float, y: float) -> None:
        """A click on the map at data point ``(x, y)``."""
        await self._event(
            "tap",
            [["model", {"id": self._figure}], ["x", number(x)], ["y", number(y)]]
            + [["sx", 0.0], ["sy", 0.0]],
        )

    async def flood(self, count: int, *, per_second: float | None = None) -> float:
        """Send ``count`` range updates (views sliding right), at most ``per_second`` a second
        (None: as fast as the socket takes them); the seconds the sending took."""
        v = self.view
        w = v.x1 - v.x0
        t0 = time.perf_counter()
        for i in range(count):
            shift = w * ((i % 97) / 200)
            await self.ranges(v.x0 + shift, v.x1 + shift, v.y0, v.y1)
            if per_second:
                await asyncio.sleep(max(0.0, t0 + (i + 1) / per_second - time.perf_counter()))
        return time.perf_counter() - t0

    # -- widgets ----------------------------------------------------------------------------
    async def change(self, model_id: str, attr: str, value) -> None:
        """Set property ``attr`` of model ``model_id`` to ``value``, as the page does when a
        widget changes (a grid page, a text input, an upload)."""
        await self._send(
            "PATCH-DOC",
            {
                "events": [
                    {"kind": "ModelChanged", "model": {"id": model_id}, "attr": attr, "new": value}
                ]
            },
        )

    async def click(self, button_id: str) -> None:
        """Press the button ``button_id`` (Bokeh's ``button_click`` event)."""
        await self._event("button_click", [["model", {"id": button_id}]])

    async def event(self, name: str, values: list) -> None:
        """Send the Bokeh event ``name`` with ``values`` as given (``[[key, value], ...]``,
        unencoded: a malformed message is the point)."""
        await self._event(name, values)

    async def message(self, model_id: str, data) -> None:
        """Send component ``model_id`` a message from its page script (Panel's ``esm_event``:
        what the image grid sends on a card click or ctrl-click), with any ``data``."""
        await self._event("esm_event", [["model", {"id": model_id}], ["data", encode(data)]])

    async def upload(
        self, model_id: str, data: bytes, *, filename: str = "x.png", mime_type: str = "image/png"
    ) -> None:
        """Upload ``data`` through the FileInput ``model_id``: the name, type and base64 value
        patched in the order BokehJS sends them (the value last: Python reacts to it)."""
        await self.change(model_id, "mime_type", mime_type)
        await self.change(model_id, "filename", filename)
        await self.change(model_id, "value", base64.b64encode(data).decode("ascii"))
