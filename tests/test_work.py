"""Work off the event loop: one-off actions never queue behind frames; the single-flight loop."""

from __future__ import annotations

import os
import threading

from conftest import FakeDoc, wait_until

from embviz.app.work import Coalescer, in_background, render_pool, task_pool


def test_actions_run_while_every_render_thread_is_busy():
    release = threading.Event()
    # More blockers than render threads: every render thread is taken, the rest queue.
    blocked = [render_pool().submit(release.wait, 20) for _ in range(2 * (os.cpu_count() or 1))]
    try:
        doc, got = FakeDoc(), []
        in_background(doc, lambda: 6 * 7, got.append, got.append)
        wait_until(lambda: doc.callbacks, 20, "the action's result")
        doc.callbacks.pop()()
        assert got == [42]
        in_background(doc, lambda: 1 / 0, got.append, got.append)
        wait_until(lambda: doc.callbacks, 20, "the action's failure")
        doc.callbacks.pop()()
        assert isinstance(got[-1], ZeroDivisionError)
    finally:
        release.set()
    assert all(f.result(20) for f in blocked)
    assert task_pool() is not render_pool()


def test_without_a_document_everything_runs_at_once():
    got = []
    in_background(None, lambda: "done", got.append, got.append)
    applied = []
    loop = Coalescer(lambda r: r * 2, applied.append)
    assert loop.submit(3) == 6 and loop.run(4) == 8
    assert got == ["done"] and applied == [6, 8] and not loop.busy


def test_requests_during_a_job_are_coalesced_and_the_newest_wins():
    started, release = threading.Event(), threading.Event()
    computed: list[int] = []

    def compute(request: int) -> int:
        computed.append(request)
        if request == 1:
            started.set()
            assert release.wait(20)
        return request

    applied: list[int] = []
    loop = Coalescer(compute, applied.append)
    loop.doc = FakeDoc()
    loop.submit(1)
    assert started.wait(20)
    for request in (2, 3, 4):
        loop.submit(request)  # each replaces the one waiting
    release.set()
    wait_until(lambda: not loop.busy, 20, "the loop to go idle")
    assert computed == [1, 4]
    first, last = loop.doc.callbacks
    last()
    first()  # an older result arriving later is dropped
    assert applied == [4]
    assert loop.run(5) == 5 and applied == [4, 5]
