"""What a page sends that the server refuses: values a widget cannot take (a choice no menu
offers, a number past a bound, text where a number goes) and messages Bokeh cannot read.

Panel and Bokeh refuse both already, but log each with a full traceback at ERROR level: a page
sending them on purpose (300 a second get through the throttle) writes megabytes of log a
minute and buries real errors. Here each refusal is one WARNING line, at most
:data:`REFUSALS_PER_MINUTE` a minute per process (the rest counted in the next line). An error
raised inside embviz's own code is never a refusal: it is logged in full, as before.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

__all__ = ["REFUSALS_PER_MINUTE", "install", "is_refusal", "on_exception", "quiet_closed_pages"]

#: Refusal lines logged a minute, per process; those past it are counted, not written.
REFUSALS_PER_MINUTE = 20
#: How much of a refused value or message a log line quotes.
QUOTE_CHARS = 160

log = logging.getLogger("embviz.app.guard")
_lock = threading.Lock()
_window = [0.0, 0, 0]  # [start of the minute, lines logged in it, refusals left out]


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is a page's value or message refused by Panel, param or Bokeh, rather
    than an error of our own: no frame of its traceback is embviz's code."""
    if not isinstance(exc, (ValueError, TypeError, KeyError, LookupError)):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and not any("/embviz/" in f.filename.replace("\\", "/") for f in frames)


def _refused(what: str, exc: BaseException | str) -> None:
    now = time.monotonic()
    with _lock:
        if now - _window[0] >= 60:
            _window[:] = [now, 0, _window[2]]
        if _window[1] >= REFUSALS_PER_MINUTE:
            _window[2] += 1
            return
        _window[1] += 1
        left_out, _window[2] = _window[2], 0
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    more = f" ({left_out:,} more refused before, not logged)" if left_out else ""
    log.warning("refused %s from a page: %.*s%s", what, QUOTE_CHARS, text, more)


def on_exception(exc: BaseException) -> None:
    """Panel's ``exception_handler`` for the explorer's sessions: a refused value is one
    warning line; any other exception is logged with its traceback."""
    if is_refusal(exc):
        _refused("a value", exc)
    else:
        log.error("error in a session's callback", exc_info=exc)


class _QuietRefusals(logging.Filter):
    """Records of Bokeh's "error handling message" (a message it could not apply: one line
    instead) and Panel's "Callback failed" (a value a widget refused: :func:`on_exception`
    writes its line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        message = msg.startswith("error handling message")
        if not (message or msg.startswith("Callback failed for object named")):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_refusal(exc):
            return True  # raised in our code (an event handler): keep the whole record
        if message:
            _refused("a message", exc)
        return False


class _ClosedPages(logging.Filter):
    """asyncio's "Task exception was never retrieved" for a write to a page that had closed
    (Panel drops its pending writes with the closed session's document without reading their
    errors): a page leaving, not a server error, so one INFO line like Bokeh's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if type(exc).__name__ in ("WebSocketClosedError", "StreamClosedError"):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a write to a page that had closed was dropped (%s)",
                (type(exc).__name__,),
                None,
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install() -> None:
    """Log refusals as single lines (idempotent; a handler the user set is kept)."""
    import panel as pn

    if pn.config.exception_handler is None:
        pn.config.exception_handler = on_exception
    for name in ("bokeh.server.protocol_handler", "panel.reactive"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietRefusals) for f in logger.filters):
            logger.addFilter(_QuietRefusals())
    quiet_closed_pages()


def quiet_closed_pages() -> logging.Filter:
    """Log asyncio's reports of writes to closed pages as one INFO line (idempotent); returns
    the filter (on the ``asyncio`` logger)."""
    logger = logging.getLogger("asyncio")
    found = [f for f in logger.filters if isinstance(f, _ClosedPages)]
    if found:
        return found[0]
    f = _ClosedPages()
    logger.addFilter(f)
    return f
