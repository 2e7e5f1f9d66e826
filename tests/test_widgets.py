"""Explorer widgets: paging, vectorised label counts and escaping in Python; clicks in a browser."""

from __future__ import annotations

import base64
import io
import re
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import wait_until

from embviz.app.widgets import DetailPanel, ImageGrid, Legend, SelectionGrid, label_counts

XSS = "<img src=x onerror=window.__xss=1>"
HIDDEN = re.compile(r"\bis-hidden\b")


def _python_lines(run) -> int:
    """How many lines of Python ``run()`` executes: a loop over n ids runs at least n more."""
    lines = 0

    def tracer(frame, event, arg):
        nonlocal lines
        lines += event == "line"
        return tracer

    previous = sys.gettrace()  # a coverage tracer, if one runs
    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(previous)
    return lines


# -- Python level --------------------------------------------------------------------------------


def test_selection_grid_pages_through_ids():
    grid = SelectionGrid(ids=np.arange(30), thumb_url=lambda i: f"/embviz/thumb/k/{i}")
    assert grid.pages == 3
    assert [it["id"] for it in grid.grid.items] == list(range(12))
    assert grid.grid.items[0]["src"] == "/embviz/thumb/k/0"
    assert grid._prev.disabled and not grid._next.disabled

    grid._next.clicks += 1
    grid._next.clicks += 1
    assert grid.page == 2
    assert [it["id"] for it in grid.grid.items] == list(range(24, 30))
    assert not grid._prev.disabled and grid._next.disabled
    assert "page 3 / 3" in grid._page_text.object

    grid._next.clicks += 1  # already on the last page: stays there
    assert grid.page == 2
    grid.ids = np.arange(100, 105)
    assert grid.page == 0 and grid.pages == 1
    assert [it["id"] for it in grid.grid.items] == list(range(100, 105))
    assert grid._prev.disabled and grid._next.disabled


def test_selection_grid_empty_shows_hint():
    grid = SelectionGrid()
    assert grid._hint.visible and "lasso-select" in grid._hint.object
    assert not grid.grid.visible and grid.grid.items == []
    assert "<b>0</b> selected" in grid._header.object
    grid.ids = [3, 4]
    assert not grid._hint.visible and grid.grid.visible


def test_selection_grid_rejects_misaligned_labels():
    grid = SelectionGrid(ids=np.arange(3))
    with pytest.raises(ValueError, match="2 labels for 3 ids"):
        grid.labels = ["a", "b"]


def test_label_counts_top_ten_and_rest():
    labels = np.repeat([f"c{i}" for i in range(13)], np.arange(13, 0, -1))
    pairs, more = label_counts(labels)
    assert pairs == [(f"c{i}", 13 - i) for i in range(10)]
    assert more == 3
    # Unused categories of a Categorical are not labels of the selection.
    cat = pd.Categorical(["b", "a", "b"], categories=["a", "b", "z"])
    assert label_counts(cat) == ([("b", 2), ("a", 1)], 0)


def test_label_counts_of_a_million_ids_is_vectorised():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 40, 1_000_000)
    labels = np.array([f"class {i}" for i in range(40)], dtype=object)[codes]
    grid = SelectionGrid(thumb_url=lambda i: f"/t/{i}")

    def select(n: int):
        return lambda: grid.param.update(ids=np.arange(n), labels=labels[:n])

    select(1000)()  # the first selection builds templates and imports: not counted
    small, large = _python_lines(select(1000)), _python_lines(select(1_000_000))
    # No Python loop over the ids: a million of them run the same Python as a thousand.
    assert large < small + 1000, f"{small:,} lines for 1,000 ids, {large:,} for 1,000,000"
    expected = np.bincount(codes, minlength=40)
    top = np.argsort(-expected, kind="stable")[:10]
    assert "1,000,000</b> selected" in grid._header.object
    for i in top:
        assert f"<th>class {i}</th>" in grid._counts.object
        assert f"{expected[i]:,}</td>" in grid._counts.object
    assert "+30 more" in grid._counts.object
    # Only the current page travels to the browser.
    assert [it["id"] for it in grid.grid.items] == list(range(12))
    assert [it["label"] for it in grid.grid.items] == list(labels[:12])


def test_legend_toggle_and_isolate():
    legend = Legend(items=[{"name": n, "color": "#123456", "count": 1} for n in "abc"])
    legend._handle_msg({"action": "click", "name": "b"})
    assert legend.hidden == ["b"]
    legend._handle_msg({"action": "click", "name": "b"})
    assert legend.hidden == []
    legend.isolate("a")
    assert legend.hidden == ["b", "c"]
    legend.isolate("a")  # already the only one shown: show everything again
    assert legend.hidden == []
    legend._handle_msg({"action": "click", "name": "not there"})
    assert legend.hidden == []


def test_legend_maps_browser_strings_back_to_names():
    legend = Legend(items=[{"name": 7, "color": "#123456", "count": 1}])
    legend._handle_msg({"action": "click", "name": "7"})
    assert legend.hidden == [7]


def test_image_grid_counts_repeated_clicks():
    grid = ImageGrid(items=[{"id": 5, "label": "x", "src": ""}])
    seen = []
    grid.param.watch(lambda e: seen.append(grid.clicked), "clicks")
    grid._handle_msg({"action": "click", "id": 5})
    grid._handle_msg({"action": "click", "id": 5})
    assert seen == [5, 5] and grid.clicks == 2 and grid.selected_id == 5


def test_opened_refires_for_the_same_id():
    panel = DetailPanel(neighbours=[{"id": 9, "label": "n", "src": "", "distance": 0.5}])
    opened = []
    panel.param.watch(lambda e: opened.append(e.new), "opened")
    panel.grid._handle_msg({"action": "click", "id": 9})
    panel.grid._handle_msg({"action": "click", "id": 9})
    assert [v for v in opened if v != -1] == [9, 9]
    assert panel.grid.items[0]["caption"] == "d = 0.5"


def test_clicks_and_marks_count_only_for_cards_on_the_page():
    """A page can send any id: only the current page's cards open or get marked."""
    panel = SelectionGrid(ids=np.arange(100, 130))  # page 0 shows 100..111
    for card in (10**30, -5, 125, 7):
        panel.grid._handle_msg({"action": "click", "id": card})
        panel.grid._handle_msg({"action": "mark", "id": card})
    assert panel.opened == -1 and panel.marked == []
    panel.grid._handle_msg({"action": "mark", "id": 103})
    panel.grid._handle_msg({"action": "click", "id": 104})
    assert panel.marked == [103] and panel.opened == 104
    detail = DetailPanel(neighbours=[{"id": 9, "label": "n", "src": "", "distance": 0.5}])
    detail.grid._handle_msg({"action": "click", "id": 10**30})
    assert detail.opened == -1  # the neighbours' grid too


def test_python_built_html_is_escaped():
    grid = SelectionGrid(ids=[1, 2], labels=[XSS, "ok"], title=XSS)
    panel = DetailPanel(
        sample={"id": 1, "label": XSS, "uri": 'file:///x"><script>alert(1)</script>', XSS: 1},
        image_src='/embviz/image/k/1" onerror="alert(1)',
    )
    html_out = " ".join(
        [grid._header.object, grid._counts.object, panel._heading.object, panel._image.object]
        + [panel._fields.object]
    )
    assert XSS not in html_out and "<script>" not in html_out
    assert "&lt;img src=x onerror=window.__xss=1&gt;" in html_out
    assert '" onerror="' not in panel._image.object
    assert "<a " not in panel._fields.object  # the uri is text, never a link


# -- in a browser --------------------------------------------------------------------------------


def _png_uri(rgb: tuple[int, int, int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def widgets_page(browser):
    """A served page with a Legend, a 200-entry Legend, a SelectionGrid and a DetailPanel."""
    import panel as pn

    thumbs = [_png_uri((40 * k, 120, 255 - 40 * k)) for k in range(6)]
    sessions: list[dict] = []

    def app():
        names = ["cat", "dog", "bird", XSS]
        legend = Legend(
            title="label",
            items=[
                {"name": n, "color": c, "count": 1234 * (k + 1)}
                for k, (n, c) in enumerate(
                    zip(names, ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3"], strict=True)
                )
            ],
        )
        long_legend = Legend(
            items=[{"name": f"class {k}", "color": "#888888", "count": k} for k in range(200)]
        )
        labels = [XSS if i == 3 else f"digit {i % 10}" for i in range(30)]
        selection = SelectionGrid(
            ids=np.arange(30), labels=labels, thumb_url=lambda i: thumbs[i % len(thumbs)]
        )
        detail = DetailPanel(
            sample={"id": 3, "label": XSS, "split": "train", "uri": "file:///data/3.png"},
            image_src=thumbs[0],
            neighbours=[
                {"id": 7, "label": "digit 7", "src": thumbs[1], "distance": 0.125},
                {"id": 8, "label": "digit 8", "src": thumbs[2], "distance": 0.25},
            ],
        )
        opened: list[int] = []
        selection.param.watch(lambda e: opened.append(e.new), "opened")
        sessions.append(
            dict(legend=legend, long=long_legend, selection=selection, detail=detail, opened=opened)
        )
        return pn.Row(
            pn.Column(legend, long_legend, width=260),
            pn.Column(selection, width=480),
            pn.Column(detail, width=360),
        )

    from conftest import free_port

    port = free_port()
    server = pn.serve(
        {"widgets": app},
        port=port,
        address="127.0.0.1",
        show=False,
        threaded=True,
        websocket_origin=[f"127.0.0.1:{port}"],
    )
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"http://127.0.0.1:{port}/widgets")
        page.wait_for_selector(".embviz-grid-item", timeout=30_000)
        yield page, wait_until(lambda: sessions and sessions[-1], what="the session"), errors
    finally:
        page.close()
        server.stop()


@pytest.mark.browser
def test_widgets_in_browser(widgets_page, artifacts):
    from playwright.sync_api import expect

    page, objs, errors = widgets_page
    legend, selection, detail = objs["legend"], objs["selection"], objs["detail"]

    # Legend: click hides, double-click isolates, double-click again shows everything.
    cat = page.locator(".embviz-legend-item[data-name='cat']")
    cat.click()
    wait_until(lambda: legend.hidden == ["cat"], what="legend.hidden == ['cat']")
    expect(cat).to_have_class(HIDDEN)
    page.locator(".embviz-legend-item[data-name='dog']").dblclick()
    wait_until(lambda: legend.hidden == ["cat", "bird", XSS], what="dog isolated")
    page.locator(".embviz-legend-item[data-name='dog']").dblclick()
    wait_until(lambda: legend.hidden == [], what="all legend entries shown again")
    expect(page.locator(".embviz-legend .is-hidden")).to_have_count(0)
    assert page.locator(".embviz-legend-count").first.inner_text() == "1,234"

    # 200 entries scroll inside the list and a click still answers promptly.
    long_list = page.locator(".embviz-legend-list").nth(1)
    assert long_list.evaluate("el => el.scrollHeight > el.clientHeight")
    item = page.locator(".embviz-legend-item[data-name='class 150']")
    item.click()
    wait_until(lambda: objs["long"].hidden == ["class 150"], 5, "the long legend's click")
    expect(item).to_have_class(HIDDEN)

    # Python-side changes redraw the legend.
    legend.hidden = ["bird"]
    expect(page.locator(".embviz-legend-item[data-name='bird']")).to_have_class(HIDDEN)
    objs["long"].items = objs["long"].items[:5]
    expect(long_list.locator(".embviz-legend-item")).to_have_count(5)

    # Selection grid: paging.
    page.locator(".embviz-next button").click()
    wait_until(lambda: selection.page == 1, what="page 2")
    page.wait_for_selector(".embviz-grid-item[data-id='12']", timeout=5000)
    expect(page.get_by_text("page 2 / 3")).to_be_visible()
    expect(page.locator(".embviz-selection .embviz-grid-item")).to_have_count(12)
    page.locator(".embviz-prev button").click()
    page.wait_for_selector(".embviz-grid-item[data-id='0']", timeout=5000)

    # Clicking a card opens it; clicking the same card again fires again.
    card = page.locator(".embviz-grid-item[data-id='5']")
    card.click()
    wait_until(lambda: objs["opened"][-1:] == [5], what="opened == 5")
    card.click()
    wait_until(lambda: [v for v in objs["opened"] if v != -1] == [5, 5], what="second open of 5")
    expect(card).to_have_class(re.compile(r"\bis-selected\b"))

    # Neighbours in the detail panel open the same way.
    page.locator(".embviz-detail .embviz-grid-item[data-id='8']").click()
    wait_until(lambda: detail.opened == 8, what="detail.opened == 8")

    # User text is shown as text, never run.
    assert page.evaluate("window.__xss") is None
    expect(page.get_by_text(XSS).first).to_be_visible()
    assert page.locator(".embviz-grid-item[data-id='3'] .embviz-grid-label").inner_text() == XSS
    assert page.locator("[data-name*='onerror'] .embviz-legend-name").inner_text() == XSS
    assert page.locator(".embviz-detail-image").count() == 1
    page.screenshot(path=str(artifacts / "widgets.png"), full_page=True)

    # Close hides the detail panel.
    page.locator(".embviz-close button").click()
    wait_until(lambda: not detail.visible_detail, what="detail closed")
    page.wait_for_selector(".embviz-detail-image", state="hidden", timeout=5000)
    assert errors == []
