"""Each session's incoming websocket messages, bounded per connection: a flood waits, not others.

Tornado reads a websocket's next message only once the handling of the last one has finished,
so pausing one connection's handling pauses only that connection: its messages back up in its
own socket (and in the sender), while every other session's events and frames go on. Each
connection gets a token bucket of :data:`RATE` fragments a second (a Bokeh message is three or
more fragments) with :data:`BURST` to spare: a page's load sends a burst of size updates, a
person panning sends 10-30 events a second, a hostile page thousands.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["BURST", "RATE", "TokenBucket", "install"]

#: Fragments a second one websocket may send, sustained.
RATE = 300.0
#: Fragments a websocket may send at once before the rate applies.
BURST = 300.0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; :meth:`take` says how long to wait."""

    def __init__(self, rate: float = RATE, burst: float = BURST):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> float:
        """Take one token; the seconds to wait before the message it pays for is handled."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def _handler_class():
    from panel.io.server import WSHandler

    class ThrottledWSHandler(WSHandler):
        """Panel's websocket handler, handling at most :data:`RATE` fragments a second."""

        def open(self, *args, **kwargs):
            self.bucket = TokenBucket()
            return super().open(*args, **kwargs)

        async def on_message(self, fragment):
            wait = self.bucket.take()
            if wait > 0:
                await asyncio.sleep(wait)
            await super().on_message(fragment)

    return ThrottledWSHandler


def install() -> None:
    """Serve every app's websocket with the throttled handler (before the server starts: the
    routes plugin calls this when ``panel serve`` reads its routes)."""
    from bokeh.server.urls import per_app_patterns

    for i, (pattern, handler) in enumerate(per_app_patterns):
        if pattern == r"/ws" and handler.__name__ != "ThrottledWSHandler":
            per_app_patterns[i] = (pattern, _handler_class())
