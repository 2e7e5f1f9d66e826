"""Many people on one running explorer server: websocket sessions that pan and zoom, every frame timed.

Each :class:`Person` is what a browser tab is to the server: it opens a Bokeh session over the
websocket (``ACK``, ``PULL-DOC-REQ``, ``DocumentReady``), then sends the map the same
``rangesupdate`` event BokehJS sends after a pan or zoom and waits for the frame to come back.
It speaks the Bokeh protocol directly instead of using ``bokeh.client``, which handles each
incoming message one coroutine deeper than the last (so a session receiving hundreds of frames
slows down quadratically) and decodes every patch into a full client-side document. Here one
asyncio loop drives every person; a frame is matched to its request by the view it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from embviz.render.store import View

__all__ = ["LoadResult", "Person", "doc_objects", "run_people", "run_sync", "walk"]


@dataclass
class LoadResult:
    """What the people saw: every frame's round trip and the frames that never came."""

    latencies: list[float] = field(default_factory=list)
    first_frames: list[float] = field(default_factory=list)
    lost: int = 0
    samples: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the frame latencies in seconds (``inf`` when none came)."""
        return float(np.percentile(self.latencies, q)) if self.latencies else float("inf")

    def summary(self) -> dict:
        """Frames, frames lost, p50/p95/max frame seconds, the slowest first frame and the p95."""
        return {
            "frames": len(self.latencies),
            "lost": self.lost,
            "p50_frame_seconds": round(self.percentile(50), 3),
            "p95_frame_seconds": round(self.percentile(95), 3),
            "max_frame_seconds": round(max(self.latencies, default=float("inf")), 3),
            "first_frame_seconds": round(max(self.first_frames, default=float("inf")), 3),
            "first_frame_p95_seconds": round(self.opening(95), 3),
        }

    def opening(self, q: float) -> float:
        """The ``q``-th percentile of the seconds from connecting to the first frame, over the
        people who opened the page at once (``inf`` when none did)."""
        return float(np.percentile(self.first_frames, q)) if self.first_frames else float("inf")


def walk(extent: View, rng: np.random.Generator, count: int) -> list[View]:
    """A walk of pans and zooms between the whole of ``extent`` and 1/64 of its width."""
    x0, x1, y0, y1 = extent.x0, extent.x1, extent.y0, extent.y1
    w, h = x1 - x0, y1 - y0
    out = []
    cx, cy, scale = (x0 + x1) / 2, (y0 + y1) / 2, 1.0
    for i in range(count):
        scale = float(np.clip(scale * rng.choice([0.5, 0.7, 1.0, 1.4, 2.0]), 1 / 64, 1.0))
        cx = float(np.clip(cx + rng.normal(0, 0.15) * w * scale, x0, x1))
        cy = float(np.clip(cy + rng.normal(0, 0.15) * h * scale, y0, y1))
        # Never the same view twice in a row: an identical frame changes nothing in the
        # document, so the server would send nothing and the request could not be timed.
        nudge = w * scale * 1e-6 * (i + 1)
        out.append(
            View(
                cx - w * scale / 2 + nudge,
                cx + w * scale / 2 + nudge,
                cy - h * scale / 2,
                cy + h * scale / 2,
            )
        )
    return out


def _find_map(doc: dict) -> tuple[str, str, View]:
    """The map figure's id, its raster source's id and its initial view, from a document's JSON."""
    stack: list = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        attrs = node.get("attributes")
        if node.get("type") == "object" and isinstance(attrs, dict):
            events = (attrs.get("subscribed_events") or {}).get("entries", [])
            if "rangesupdate" in events and attrs.get("renderers"):
                source = attrs["renderers"][0]["attributes"]["data_source"]
                xr, yr = attrs["x_range"]["attributes"], attrs["y_range"]["attributes"]
                view = View(xr["start"], xr["end"], yr["start"], yr["end"])
                return node["id"], source["id"], view
        stack.extend(node.values())
    raise ValueError("the document holds no map figure (no model subscribes to rangesupdate)")


def doc_objects(doc: dict) -> Iterator[dict]:
    """Every model written out in full in a document's (or a message's) JSON."""
    stack: list = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("type") == "object" and "id" in node and "attributes" in node:
                yield node
            stack.extend(node.values())


def _holds_frame(doc: dict, source_id: str) -> bool:
    """Whether the map's raster source (id ``source_id``) in a document's JSON holds a frame."""
    for node in doc_objects(doc):
        if node["id"] == source_id and isinstance(node["attributes"], dict):
            data = node["attributes"].get("data") or {}
            entries = dict(data.get("entries", [])) if isinstance(data, dict) else {}
            return bool(entries.get("url"))
    return False


class Person:
    """One websocket session of the explorer app at ``url`` (``http://host:port/explorer``).

    ``arguments`` become the page's query string (e.g. ``{"dataset": "mnist"}``); ``headers``
    go with the websocket upgrade (e.g. a login cookie). ``timeout`` is how long a frame may take
    before it counts as lost.
    """

    def __init__(
        self,
        url: str,
        *,
        arguments: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ):
        self.url = url
        self.arguments = dict(arguments or {})
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.view: View | None = None
        #: the page's document as the server sent it (JSON), once :meth:`open` has run
        self.document: dict | None = None
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._waiting: tuple[float, asyncio.Future] | None = None
        self._msgid = 0

    # -- the protocol -----------------------------------------------------------------------
    async def _read(self):
        while True:
            fragment = await self._ws.read_message()
            if fragment is None:
                return None
            message = await self._receiver.consume(fragment)
            if message is not None:
                return message

    async def _send(self, msgtype: str, content: dict) -> None:
        self._msgid += 1
        header = {"msgid": f"load{self._msgid}", "msgtype": msgtype}
        for part in (header, {}, content):
            await self._ws.write_message(json.dumps(part))

    async def _event(self, name: str, values: list) -> None:
        await self._send(
            "PATCH-DOC",
            {
                "events": [
                    {
                        "kind": "MessageSent",
                        "msg_type": "bokeh_event",
                        "msg_data": {
                            "type": "event",
                            "name": name,
                            "values": {"type": "map", "entries": values},
                        },
                    }
                ]
            },
        )

    async def _listen(self) -> None:
        """Read every message; resolve the pending request when the map's new frame arrives."""
        while True:
            message = await self._read()
            if message is None:
                if self._waiting is not None and not self._waiting[1].done():
                    self._waiting[1].set_exception(ConnectionError("the server closed the session"))
                return
            self._check(message)

    def _check(self, message) -> None:
        """Resolve the pending request if ``message`` brings the map's frame for it."""
        if message.msgtype != "PATCH-DOC" or self._waiting is None:
            return
        for event in message.content.get("events", []):
            if event.get("model", {}).get("id") != self._raster or "data" not in event:
                continue
            data = dict(event["data"].get("entries", []))
            x = data.get("x")
            x0, fut = self._waiting
            # Match the frame to the request by its left edge: a frame for an earlier,
            # timed-out request must not be counted as this one.
            if (
                x0 is not None
                and isinstance(x, list)
                and x
                and abs(x[0] - x0) > 1e-9 * (1 + abs(x0))
            ):
                continue
            if not fut.done():
                fut.set_result(time.perf_counter())

    # -- what a person does -----------------------------------------------------------------
    async def open(self, *, first_frame: float | None = None) -> float:
        """Connect and load the page's document; seconds until its first frame arrived
        (waited for at most ``first_frame`` seconds, default :attr:`timeout`)."""
        from urllib.parse import urlencode

        from bokeh.protocol import Protocol
        from bokeh.protocol.receiver import Receiver
        from bokeh.util.token import generate_jwt_token, generate_session_id
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        t0 = time.perf_counter()
        ws_url = self.url.replace("http", "ws", 1).rstrip("/") + "/ws"
        if self.arguments:
            ws_url += "?" + urlencode(self.arguments)
        token = generate_jwt_token(generate_session_id())
        self._receiver = Receiver(Protocol())
        self._ws = await websocket_connect(
            HTTPRequest(
                ws_url,
                headers=self.headers,
                connect_timeout=self.timeout,
                request_timeout=self.timeout,
            ),
            subprotocols=["bokeh", token],
            max_message_size=2**30,
        )
        ack = await self._read()
        if ack is None or ack.msgtype != "ACK":
            raise ConnectionError(f"{self.url}: expected ACK, got {ack and ack.msgtype}")
        await self._send("PULL-DOC-REQ", {})
        early = []  # the session may push its first frame before the document's reply
        while (reply := await self._read()) is not None and reply.msgtype != "PULL-DOC-REPLY":
            early.append(reply)
        if reply is None:
            raise ConnectionError(f"{self.url}: the server closed the session before its document")
        self.document = reply.content["doc"]
        self._figure, self._raster, self.view = _find_map(self.document)
        if _holds_frame(self.document, self._raster):  # the page came with its first frame
            self._reader = asyncio.ensure_future(self._listen())
            await self._event("document_ready", [])
            return time.perf_counter() - t0
        # The first frame is the one the page load renders, whatever its view.
        fut = asyncio.get_running_loop().create_future()
        self._waiting = (None, fut)
        for message in early:
            self._check(message)
        self._reader = asyncio.ensure_future(self._listen())
        await self._event("document_ready", [])
        # A server that renders no first frame still serves pans and zooms.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(fut), self.timeout if first_frame is None else first_frame
            )
        self._waiting = None
        return time.perf_counter() - t0

    async def frame(self, view: View) -> float:
        """Pan or zoom to ``view``; seconds until its frame arrived (``inf`` when lost)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting = (view.x0, fut)
        t0 = time.perf_counter()
        ref = {"id": self._figure}
        await self._event(
            "rangesupdate",
            [["model", ref], ["x0", view.x0], ["x1", view.x1], ["y0", view.y0], ["y1", view.y1]],
        )
        try:
            t1 = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            return float("inf")
        finally:
            self._waiting = None
        self.view = view
        return t1 - t0

    async def close(self) -> None:
        """Close the websocket: the server discards the session once it notices."""
        if self._ws is not None:
            self._ws.close()
        if self._reader is not None:
            # The reader ends when the server has answered the close; then the socket is shut.
            try:
                await asyncio.wait_for(self._reader, 10)
            except (TimeoutError, ConnectionError):
                self._reader.cancel()


async def run_people(
    url: str,
    *,
    sessions: int,
    seconds: float,
    think: float = 0.5,
    seed: int = 0,
    monitor: Callable[[], float] | None = None,
    **person: object,
) -> LoadResult:
    """``sessions`` people pan and zoom the map at ``url`` for ``seconds``, then leave.

    Each waits ``think`` seconds after a frame before the next move. ``monitor`` is called
    every half second while everyone is connected (e.g. the server's resident memory); its
    values are in ``LoadResult.samples``. ``person`` goes to :class:`Person`.
    """
    people = [Person(url, **person) for _ in range(sessions)]
    result = LoadResult()
    rng = np.random.default_rng(seed)

    async def drive(p: Person, views: Sequence[View]) -> None:
        for view in views:
            if time.perf_counter() >= deadline:
                return
            try:
                latency = await p.frame(view)
            except ConnectionError:  # the server dropped this person: the rest is lost
                result.lost += 1
                return
            if np.isfinite(latency):
                result.latencies.append(latency)
            else:
                result.lost += 1
            await asyncio.sleep(think)

    async def watch() -> None:
        while monitor is not None:
            result.samples.append(monitor())
            await asyncio.sleep(0.5)

    watcher = None
    try:
        result.first_frames = list(await asyncio.gather(*(p.open() for p in people)))
        # More moves than anyone can make in time (each takes at least ``think``).
        walks = [walk(p.view, rng, int(seconds / max(think, 0.05)) + 1) for p in people]
        deadline = time.perf_counter() + seconds
        watcher = asyncio.ensure_future(watch())
        await asyncio.gather(*(drive(p, w) for p, w in zip(people, walks, strict=True)))
        if monitor is not None:
            result.samples.append(monitor())
    finally:  # everyone leaves, also when someone could not get in
        if watcher is not None:
            watcher.cancel()
        await asyncio.gather(*(p.close() for p in people))
    return result


def run_sync(coro):
    """Run coroutine ``coro`` to the end on an event loop in a thread of its own; its result.

    Works where this thread already runs a loop (Jupyter, Playwright's sync API), where
    ``asyncio.run`` refuses.
    """
    import threading

    box: dict = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="embviz-loadtest")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
