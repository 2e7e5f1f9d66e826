"""Work off a session's event loop: the render and task pools, one-off jobs, the single-flight loop.

Bokeh runs every session of a server on one event loop, so nothing slow may run there: frames
and 3D samples go to the render pool, one-off actions (search, comparison, export, saliency)
to a small task pool of their own so they never queue behind frames, and results come back
on the document's thread with ``doc.add_next_tick_callback``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import Any

__all__ = ["Coalescer", "in_background", "one_torch_thread", "render_pool", "task_pool"]

log = logging.getLogger(__name__)

_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(name: str, workers: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            pool = _POOLS[name] = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"embviz-{name}"
            )
        return pool


def render_pool() -> ThreadPoolExecutor:
    """The process-wide render pool, one thread per core (Datashader's kernels release the GIL)."""
    return _pool("render", max(1, os.cpu_count() or 1))


def task_pool() -> ThreadPoolExecutor:
    """The process-wide pool of one-off actions (search, compare, export, saliency): half the
    cores, at least two, apart from the render pool so a long action never delays a frame."""
    return _pool("task", max(2, (os.cpu_count() or 2) // 2))


def one_torch_thread() -> None:
    """Run torch's work (saliency, activations) on one thread.

    The task pool shares the cores with frame rendering: measured on 2 loaded cores, Grad-CAM
    of the default model took 0.14 s on one torch thread and 2.5 s on two (threads spinning
    against each other and the renderer; ``make bench``'s ``insight.saliency_seconds``).
    The setting is process-wide: a server process runs no batch steps, and a notebook that
    explains and then embeds in the same kernel embeds on one thread too (set
    ``torch.set_num_threads`` back for speed there).
    """
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def in_background(
    doc,
    work: Callable[[], Any],
    done: Callable[[Any], None],
    fail: Callable[[Exception], None],
    *,
    pool: Callable[[], Executor] | None = None,
) -> None:
    """Run ``work`` off the session's event loop, then ``done(result)`` (or ``fail(exc)``) on it.

    Parameters
    ----------
    doc : the session's Bokeh document; None (notebooks, tests) runs everything at once.
    work : the slow part (loading a model for an uploaded image, reading vectors).
    done, fail : called on the document's thread with the result, or the exception ``work``
        raised (reported to the user, never raised into the page).
    pool : returns the executor to run on; default :func:`task_pool`.
    """
    if doc is None:
        try:
            result = work()
        except Exception as exc:  # reported to the user, never raised into the page
            fail(exc)
            return
        done(result)
        return

    def job() -> None:
        try:
            result = work()
        except Exception as exc:
            doc.add_next_tick_callback(partial(fail, exc))
            return
        doc.add_next_tick_callback(partial(done, result))

    (pool or task_pool)().submit(job)


class Coalescer:
    """One owner's single-flight loop: at most one job in flight, later requests coalesced.

    ``compute(request)`` runs on ``pool``; ``apply(result)`` runs on the document's thread.
    A request submitted while a job runs replaces any request still waiting (only the latest
    view matters), so a burst of view changes costs two computations, not one per change.
    Callbacks queued before the browser connects may run out of order: a result older than
    the one applied is dropped, so the last request always wins. Without a document
    (:attr:`doc` None: notebooks, tests) requests run synchronously.

    Parameters
    ----------
    compute : request -> result, on a pool thread; an exception is logged and the loop goes on.
    apply : result -> None, on the document's thread.
    pool : returns the executor to run on; default :func:`render_pool`.
    name : what a job is, for the log (``"render"`` logs ``render failed: ...``).
    """

    def __init__(
        self,
        compute: Callable[[Any], Any],
        apply: Callable[[Any], None],
        *,
        pool: Callable[[], Executor] = render_pool,
        name: str = "job",
    ):
        self.compute = compute
        self.apply = apply
        self.pool = pool
        self.name = name
        self.doc = None  #: the session's Bokeh document, set by the owner once it is served
        self._lock = threading.Lock()
        # Synchronous runs (no document: notebooks, tests) one at a time: JupyterLab sends
        # browser events to a kernel subshell thread while a cell may run on the main one.
        self._run_lock = threading.RLock()
        self._busy = False
        self._pending: tuple[int, Any] | None = None
        self._issued = 0  # requests issued
        self._shown = 0  # issue number of the result applied last

    @property
    def busy(self) -> bool:
        """Whether a job is in flight (or waiting to start)."""
        with self._lock:
            return self._busy

    def _next(self) -> int:
        with self._lock:
            self._issued += 1
            return self._issued

    def run(self, request) -> Any:
        """Compute and apply ``request`` now on the calling thread (the document's); return the
        result. It is newer than every request issued before, so none of those replaces it."""
        with self._run_lock:
            seq = self._next()
            result = self.compute(request)
            self._deliver(seq, result)
            return result

    def submit(self, request) -> Any | None:
        """Compute ``request`` in the pool and apply it on the document's thread; returns None.

        Without a document it runs synchronously (:meth:`run`) and returns the result.
        """
        if self.doc is None:
            return self.run(request)
        seq = self._next()
        with self._lock:
            if self._busy:
                self._pending = (seq, request)  # coalesce: only the latest request matters
                return None
            self._busy = True
        self.pool().submit(self._job, seq, request)
        return None

    def _job(self, seq: int, request) -> None:
        try:
            result = self.compute(request)
            doc = self.doc
            if doc is not None:  # None: the page closed meanwhile, the result is dropped
                doc.add_next_tick_callback(partial(self._deliver, seq, result))
        except Exception as exc:  # a failed job or a closed session must not stop the loop
            log.exception("%s failed: %s", self.name, exc)
        with self._lock:
            nxt, self._pending = self._pending, None
            if nxt is None:
                self._busy = False
        if nxt is not None:
            self.pool().submit(self._job, *nxt)

    def _deliver(self, seq: int, result) -> None:
        if seq < self._shown:
            return
        self._shown = seq
        self.apply(result)
