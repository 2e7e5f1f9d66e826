"""A hostile page against the grid and the tagging widgets of a live ``panel serve``: card
clicks and marks with ids that are not there, pages past either end, tag names and notes of
1 MB, with control characters or markup, tags on ids the dataset does not hold, and numbers and
choices no widget offers. Each is refused with a message or ignored; another person's frames
keep coming; nothing hostile reaches the tag store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_hostile_session import EVENT_SECONDS, _curate, _open, _texts, _timed_frame, _unhandled

from embviz.app.guard import REFUSALS_PER_MINUTE
from embviz.hostile import HostileSession, find_models
from embviz.loadtest import run_sync

BIG = 10**30
MB_NOTE = "n" * 2**20
MARKUP = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(scope="module")
def served(demo_dataset, tmp_path_factory):
    """``panel serve`` of a copy of the demo that the test may write tags into."""
    from conftest import PanelServer

    root = tmp_path_factory.mktemp("hostile-curate")
    ds = root / "demo"
    shutil.copytree(demo_dataset, ds, ignore=shutil.ignore_patterns("cache", "tags", "reports"))
    with PanelServer(ds, root / "serve.log") as server:
        yield server, ds


async def _answer(s: HostileSession, before: int, i: float) -> str:
    """What the session was told after its event number ``before``: waited for a frame round
    trip at a time, until a panel's message line changed."""
    for k in range(20):
        await _timed_frame(s, i + k / 100)
        if "font-size:12px" in _texts(s.received[before:]):
            break
    return _texts(s.received[before:])


def _widget(sent: dict, css: str) -> str:
    ids = find_models(sent, css_class=css)
    assert len(ids) == 1, (css, ids)
    return ids[0]


def test_hostile_grid_and_tag_inputs_are_refused_and_reach_no_store(served):
    server, dataset = served
    from embviz.tags import TagStore

    async def scenario() -> dict:
        out: dict = {"seconds": [], "answers": {}}
        h = await _open(server.url)
        other = await _open(server.url)
        await _timed_frame(h, 1)
        e = h.extent
        await h.select_box(e.x0, e.x1, e.y0, e.y1)  # the whole map into the grid
        out["seconds"].append(await _timed_frame(h, 2))
        grid = await h.wait_model(css_class="embviz-image-grid")
        nxt = await h.wait_model(css_class="embviz-next")
        prev = await h.wait_model(css_class="embviz-prev")
        # Cards that are not there: clicks and marks with odd ids, and odd messages.
        for data in (
            {"action": "click", "id": "abc"},
            {"action": "click", "id": BIG},
            {"action": "click", "id": -5},
            {"action": "mark", "id": BIG},
            {"action": "mark", "id": -5},
            {"action": "mark", "id": [1, 2]},
            {"action": "mark"},
            {"action": "<script>", "id": 1},
            "not a dict",
            [1, 2, 3],
        ):
            await h.message(grid, data)
        await h.change(grid, "marked", ["x", BIG, None])  # the page's copy is only painted
        # Malformed: a bare {"id": ...} is a reference to a model that does not exist.
        for _ in range(50):
            await h.event("esm_event", [["model", {"id": grid}], ["data", {"id": "nope"}]])
        for _ in range(30):  # past the first page and back past the last
            await h.click(prev)
        for _ in range(3):
            await h.click(nxt)
        out["seconds"].append(await _timed_frame(h, 3))
        out["seconds"].append(await _timed_frame(other, 4))

        cur = await _curate(h)
        tag, value = _widget(cur, "embviz-tag"), _widget(cur, "embviz-tag-value")
        apply_to, add = _widget(cur, "embviz-apply-to"), _widget(cur, "embviz-add-tag")
        # Tags on "marked" (only hostile marks were sent: none counts) and on the open sample
        # (a hostile click opened none).
        for target in (1, 2):
            await h.change(apply_to, "active", target)
            await h.change(tag, "value", "review")
            before = len(h.received)
            await h.click(add)
            out["answers"][f"target {target}"] = await _answer(h, before, 10)
        await h.change(apply_to, "active", 0)  # the grid: every sample of the dataset
        hostile = [
            ("note", MB_NOTE),
            ("note", "ok\x00\x1b[31m"),
            ("note", "\ud800 lone surrogate"),
            ("relabel", "x" * 501),
            ("custom", "<script>alert(1)</script>"),
            ("custom", "a" * 2**20),
            ("custom", "ta\x07g"),
            ("<script>", ""),  # not one of the menu's tags
        ]
        for i, (name, text) in enumerate(hostile):
            await h.change(tag, "value", name)
            await h.change(value, "value", text)
            before = len(h.received)
            await h.click(add)
            out["answers"][f"{name} {text[:20]!r}"] = await _answer(h, before, 20 + i)
            out["seconds"].append(await _timed_frame(other, 30 + i))
        # Markup in a note is text: stored as given, escaped wherever it is shown.
        await h.change(tag, "value", "note")
        await h.change(value, "value", MARKUP)
        before = len(h.received)
        await h.click(add)
        out["answers"]["markup"] = await _answer(h, before, 50)
        # Numbers no widget offers.
        top_n = find_models(cur, name="NumericInput")
        for v in (-5, BIG, "abc", None):
            for model in top_n:
                await h.change(model, "value", v)
        out["seconds"].append(await _timed_frame(h, 60))
        out["seconds"].append(await _timed_frame(other, 61))
        out["page"] = _texts(h.received)
        await h.close()
        await other.close()
        return out

    out = run_sync(scenario())
    assert server.proc.poll() is None, server.log()
    assert all(np.isfinite(s) and s < EVENT_SECONDS for s in out["seconds"]), out["seconds"]
    answers = out["answers"]
    assert "no card is marked" in answers["target 1"], answers["target 1"][-600:]
    assert "no sample is open" in answers["target 2"], answers["target 2"][-600:]
    for key, answer in answers.items():
        if key.startswith(("note", "relabel", "custom", "<script>")):
            assert "b3261e" in answer or "error" in answer.lower(), (key, answer[-600:])
    # Panel sends HTML panes' text escaped once more: the note arrives as "&amp;lt;img ...";
    # markup of ours would arrive as "&lt;img" and a page's value echoed raw as "<img".
    assert "&amp;lt;img src=x" in answers["markup"], answers["markup"][-800:]  # shown as text
    assert "<img src=x" not in out["page"] and "&lt;img src=x" not in out["page"]
    log = Path(server.log_path).read_text()
    problems = _unhandled(log)
    assert not problems, "\n".join(problems)
    refusals = [line for line in log.splitlines() if "refused a " in line]
    assert refusals and len(refusals) <= REFUSALS_PER_MINUTE * 3, len(refusals)  # bounded
    assert max(map(len, refusals)) < 600  # a refused 1 MB value is quoted, not copied
    store = TagStore(dataset)
    counts = store.counts()
    assert set(counts) == {"note"}, counts  # only the markup note went in
    from embviz.dataset import open_dataset

    ids = open_dataset(dataset).read_arrow("samples", columns=["id"]).column("id").to_numpy()
    frame = store.current()
    assert set(frame["id"].tolist()) <= set(ids.tolist())
    assert (frame["value"] == MARKUP).all()


def test_refusals_are_single_lines_at_a_bounded_rate_and_our_errors_stay_whole(caplog):
    import logging

    import param

    from embviz.app import guard
    from embviz.tags import validate_tag

    class W(param.Parameterized):
        n = param.Integer(default=1, bounds=(1, 10))

    def refused() -> BaseException:
        try:
            W().n = -5  # param refuses it: no frame of ours
        except ValueError as exc:
            return exc
        raise AssertionError("param took -5")

    def ours() -> BaseException:
        try:
            validate_tag("<b>")  # raised inside embviz
        except ValueError as exc:
            return exc
        raise AssertionError

    assert guard.is_refusal(refused()) and not guard.is_refusal(ours())
    assert not guard.is_refusal(RuntimeError("x"))
    guard._window[:] = [0.0, 0, 0]
    with caplog.at_level(logging.WARNING, logger="embviz.app.guard"):
        for _ in range(5 * guard.REFUSALS_PER_MINUTE):
            guard.on_exception(refused())
        guard.on_exception(ours())
    lines = [r for r in caplog.records if r.name == "embviz.app.guard"]
    refusals = [r for r in lines if r.levelno == logging.WARNING]
    assert len(refusals) == guard.REFUSALS_PER_MINUTE  # the rest are counted, not written
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in refusals)
    errors = [r for r in lines if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info  # our own error keeps its traceback
    assert guard._window[2] == 4 * guard.REFUSALS_PER_MINUTE


def test_a_write_to_a_closed_page_is_one_info_line_not_an_error(caplog):
    """Panel drops a closed page's pending writes without reading their errors; asyncio then
    reports each as "Task exception was never retrieved" with a traceback. That is a page
    leaving: one INFO line. Other task errors keep their traceback."""
    import asyncio
    import gc
    import logging
    import warnings

    from tornado.websocket import WebSocketClosedError

    from embviz.app import guard

    quiet = guard.quiet_closed_pages()

    async def fails(exc):
        raise exc

    async def leave_unread():
        for exc in (WebSocketClosedError(), RuntimeError("ours")):
            task = asyncio.ensure_future(fails(exc))
            await asyncio.sleep(0.01)
            del task  # never awaited: asyncio logs it when the task is collected
            with warnings.catch_warnings():  # (what earlier tests left unclosed is theirs)
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()

    try:
        with caplog.at_level(logging.INFO, logger="asyncio"):
            run_sync(leave_unread())  # (a loop of its own: the suite's may run one)
    finally:
        logging.getLogger("asyncio").removeFilter(quiet)
    records = [r for r in caplog.records if r.name == "asyncio"]
    closed = [r for r in records if "was dropped" in r.getMessage()]
    assert len(closed) == 1 and closed[0].levelno == logging.INFO and not closed[0].exc_info
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "RuntimeError" in str(errors[0].exc_info)
