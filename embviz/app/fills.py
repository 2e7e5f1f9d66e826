"""Pages' deferred parts built one at a time, between the frames and events of everyone else.

A page goes out with its map and first frame; its side column and sample panels
(:meth:`~embviz.app.explorer.Explorer.deferred`) are built once it has loaded. For a crowd that
arrives together (25 people: about 10 s of event-loop time in all) building them all at once
would hold up every pan behind them, so the fills of a process queue here and run one per turn:
after pages stop being opened (or :data:`FILL_WAIT` after they were asked for), with
:data:`GAP` between two fills for frames and events to go through.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["FILL_WAIT", "GAP", "QUIET", "page_opened", "request_fill"]

log = logging.getLogger(__name__)

#: A fill waits while other pages are being opened, at most this many seconds: a crowd's maps
#: first (25 people opening at once keep a process busy for about 5 s), side columns after.
FILL_WAIT = 10.0
#: Pages are being opened when one was built less than this many seconds ago.
QUIET = 0.2
#: Seconds between two fills, for the frames and events queued meanwhile.
GAP = 0.05
#: A fill whose session closed before it ran is given up after this many seconds.
STALL = 3.0

_LOCK = threading.Lock()
_QUEUE: collections.deque = collections.deque()
_STATE = {"running": False, "opened": 0.0, "turn": 0, "started": 0, "advanced": 0}


def page_opened() -> None:
    """Record that a page was just built (fills wait while pages keep being opened)."""
    _STATE["opened"] = time.monotonic()


def request_fill(doc, fill: Callable[[], None]) -> None:
    """Run ``fill`` in ``doc``'s session (under its lock) when its turn comes."""
    with _LOCK:
        _QUEUE.append((doc, fill, time.monotonic()))
        if _STATE["running"]:
            return
        _STATE["running"] = True
    _later(0.0, _step)


def _later(delay: float, fn, *args) -> None:
    from tornado.ioloop import IOLoop

    IOLoop.current().call_later(delay, fn, *args)


def _step() -> None:
    now = time.monotonic()
    with _LOCK:
        if not _QUEUE:
            _STATE["running"] = False
            return
        doc, fill, since = _QUEUE[0]
        if now - _STATE["opened"] < QUIET and now - since < FILL_WAIT:
            wait = True
        else:
            wait = False
            _QUEUE.popleft()
            _STATE["turn"] += 1
            turn = _STATE["turn"]
    if wait:
        _later(QUIET, _step)
        return
    context = doc.session_context
    if context is None or context.destroyed:
        _later(0.0, _step)
        return
    try:
        doc.add_next_tick_callback(lambda: _run(turn, doc, fill))
    except Exception:  # the session went away meanwhile
        _later(0.0, _step)
        return
    _later(STALL, _stalled, turn)


def _run(turn: int, doc, fill) -> None:
    from panel.io.state import set_curdoc

    _STATE["started"] = turn
    try:
        with set_curdoc(doc):
            fill()
    except Exception:  # one page's side column must not stop the others'
        log.exception("building a page's side column failed")
    finally:
        _advance(turn)


def _stalled(turn: int) -> None:
    # The session closed before its fill ran (Bokeh drops its callbacks): go on with the next.
    if _STATE["started"] < turn:
        _advance(turn)


def _advance(turn: int) -> None:
    """Go on to the next fill once per turn (whichever of its end or its stall comes first)."""
    with _LOCK:
        if _STATE["advanced"] >= turn:
            return
        _STATE["advanced"] = turn
    _later(GAP, _step)
