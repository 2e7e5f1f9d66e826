"""Each session's incoming websocket messages, bounded per connection: a flood waits, not others.

Tornado reads a websocket's next message only once the handling of the last one has finished,
so pausing one connection's handling pauses only that connection: its messages back up in its
own socket (and in the sender), while every other session's events and frames go on. Each
connection gets a token bucket of :data:`RATE` fragments a second (a Bokeh message is three or
more fragments) with :data:`BURST` to spare: a page's load sends a burst of size updates, a
person panning sends 10-30 events a second, a hostile page thousands.

Fragments are not all alike (a range update costs ~1 ms of the event loop, a 100,000-vertex
lasso ~200 ms), so each connection also has a budget of event-loop time: handling its messages
(reading, applying, answering: the CPU time of the loop's thread) may take :data:`LOOP_SHARE`
of every second, with
:data:`LOOP_BURST` seconds to spare; past it, its next message waits until the time is earned
back. A person panning uses ~0.02 s a second; a page sending as fast as the server answers
would otherwise take the loop from everyone else.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["BURST", "LOOP_BURST", "LOOP_SHARE", "RATE", "TokenBucket", "install", "paced"]

#: Fragments a second one websocket may send, sustained.
RATE = 300.0
#: Fragments a websocket may send at once before the rate applies.
BURST = 300.0
#: Seconds of event-loop time one websocket's messages may take per second, sustained.
LOOP_SHARE = 0.1
#: Seconds of event-loop time a websocket may take at once before its share applies.
LOOP_BURST = 1.0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; :meth:`take` says how long to wait."""

    def __init__(self, rate: float = RATE, burst: float = BURST):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; the seconds to wait before what they pay for is handled (the
        bucket may go into debt: a cost known only afterwards is taken then, with ``wait``
        answering for the next)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= cost
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def wait(self) -> float:
        """The seconds until the bucket is out of debt (0 when it is not in debt)."""
        return self.take(0.0)


async def paced(fragments: TokenBucket, loop_time: TokenBucket, handle) -> None:
    """Await ``handle()`` once ``fragments`` has a token and ``loop_time`` is out of debt, then
    charge ``loop_time`` with the CPU seconds the event loop's thread spent meanwhile.

    CPU time, not wall time: on a loaded server a message waits for the interpreter lock and
    the cores, and charging that wait would throttle every page when the server is busy (a
    person's 20 events a second would read as a flood).
    """
    wait = max(fragments.take(), loop_time.wait())
    if wait > 0:
        await asyncio.sleep(wait)
    started = time.thread_time()
    try:
        await handle()
    finally:
        loop_time.take(time.thread_time() - started)


def _handler_class():
    from panel.io.server import WSHandler

    class ThrottledWSHandler(WSHandler):
        """Panel's websocket handler, handling at most :data:`RATE` fragments a second and
        :data:`LOOP_SHARE` seconds of event-loop time a second."""

        def open(self, *args, **kwargs):
            self.bucket = TokenBucket()
            self.loop_time = TokenBucket(rate=LOOP_SHARE, burst=LOOP_BURST)
            return super().open(*args, **kwargs)

        async def on_message(self, fragment):
            handle = super().on_message
            await paced(self.bucket, self.loop_time, lambda: handle(fragment))

    return ThrottledWSHandler


def install() -> None:
    """Serve every app's websocket with the throttled handler (before the server starts: the
    routes plugin calls this when ``panel serve`` reads its routes)."""
    from bokeh.server.urls import per_app_patterns

    for i, (pattern, handler) in enumerate(per_app_patterns):
        if pattern == r"/ws" and handler.__name__ != "ThrottledWSHandler":
            per_app_patterns[i] = (pattern, _handler_class())
