"""The 2D explorer on the real MNIST demo in a real browser: zoom, hover, select, page, detail, legend.

Each state is saved as a screenshot in ``artifacts/``. The server is ``panel serve
apps/explorer.py --args DATASET`` (without --plugins: the app installs its image routes).
"""

from __future__ import annotations

import io
import json
import re
import urllib.parse

import numpy as np
import pytest

pytestmark = pytest.mark.browser
STATUS = re.compile(r"of 5,000 points in view")


@pytest.fixture
def page(browser, demo_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    yield page
    page.close()
    assert not errors, errors


def status(page) -> str:
    return page.get_by_text(STATUS).first.inner_text()


def wait_status(page, predicate, timeout_ms=30_000) -> str:
    """Poll the status line until ``predicate(text)`` holds; return the text."""
    waited = 0
    text = ""
    while waited < timeout_ms:
        text = status(page)
        if predicate(text):
            return text
        page.wait_for_timeout(250)
        waited += 250
    raise AssertionError(f"status never matched: {text!r}")


def wait_until(page, check, what: str, timeout_ms: int = 20_000):
    """Poll ``check()`` (Playwright locators pierce Panel's shadow DOM; page JS does not)."""
    waited = 0
    while waited < timeout_ms:
        try:
            value = check()
        except Exception:  # the element may be re-rendered while we look
            value = None
        if value:
            return value
        page.wait_for_timeout(250)
        waited += 250
    raise AssertionError(f"timed out waiting for {what}")


def loaded(locator) -> bool:
    return any(
        locator.nth(i).evaluate("i => i.complete && i.naturalWidth > 0")
        for i in range(locator.count())
    )


def in_view(text: str) -> int:
    return int(text.split(" of ")[0].replace(",", ""))


def plot_box(page):
    return page.locator("canvas").first.bounding_box()


def coloured_pixels(png: bytes, box) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    x0, y0 = int(box["x"]), int(box["y"])
    crop = img[y0 + 30 : y0 + int(box["height"]) - 5, x0 + 5 : x0 + int(box["width"]) - 5]
    px = crop.reshape(-1, 3)
    return px[(px.max(1) - px.min(1)) > 60]


def open_explorer(page, demo_server, query: str = ""):
    page.goto(demo_server.url + query)
    page.get_by_text(STATUS).first.wait_for(timeout=90_000)
    page.wait_for_timeout(500)


def zoom_to_few_points(page, limit: int = 3000):
    """Wheel-zoom on the densest part of the map until at most ``limit`` points are in view."""
    box = plot_box(page)
    png = page.screenshot()
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(int)
    x0, y0 = int(box["x"]), int(box["y"])
    crop = img[y0 + 40 : y0 + int(box["height"]) - 10, x0 + 10 : x0 + int(box["width"]) - 10]
    ys, xs = np.nonzero(crop < 200)
    cx, cy = x0 + 10 + float(np.median(xs)), y0 + 40 + float(np.median(ys))
    page.mouse.move(cx, cy)
    before = status(page)
    for _ in range(8):
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(400)
        text = wait_status(page, lambda t, b=before: t != b)
        before = text
        if in_view(text) <= limit:
            break
    return cx, cy, wait_status(page, lambda t: "with tooltips" in t)


def test_explore_zoom_hover_select_page_detail(page, demo_server, artifacts):
    thumbs: list[str] = []
    page.on("request", lambda r: thumbs.append(r.url) if "/embviz/thumb/" in r.url else None)
    open_explorer(page, demo_server)
    box = plot_box(page)
    overview = page.screenshot(path=str(artifacts / "explorer_1_overview.png"))
    assert in_view(status(page)) == 5000
    assert len(coloured_pixels(overview, box)) > 2000, "the raster of the points did not render"

    # A wheel zoom re-renders: fewer points in view, the URL carries the new view.
    cx, cy, text = zoom_to_few_points(page)
    page.screenshot(path=str(artifacts / "explorer_2_zoomed.png"))
    assert 0 < in_view(text) <= 3000
    view = json.loads(urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["view"][0])
    assert len(view) == 4 and view[1] > view[0]
    # Zoomed in far enough, the images themselves are drawn at the points (sprites).
    page.wait_for_timeout(1000)
    assert thumbs, "no thumbnail was requested for the sprites"

    # Hovering a point shows its thumbnail in the tooltip.
    tip = page.locator(".embviz-tip img")
    found = False
    for dx in range(-240, 241, 16):
        for dy in range(-180, 181, 16):
            page.mouse.move(cx + dx, cy + dy)
            if tip.count() and tip.first.is_visible():
                found = True
                break
        if found:
            break
    assert found, "no tooltip appeared over the zoomed-in points"
    wait_until(page, lambda: loaded(tip), "the tooltip's thumbnail to load")
    assert "/embviz/thumb/" in tip.first.get_attribute("src")
    page.screenshot(path=str(artifacts / "explorer_3_hover.png"))

    # Box selection fills the grid (12 per page) with label counts.
    page.get_by_title("Box Select").first.click()
    box = plot_box(page)
    page.mouse.move(box["x"] + 20, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=6)
    page.mouse.move(box["x"] + box["width"] - 20, box["y"] + box["height"] - 20, steps=6)
    page.mouse.up()
    selected = page.get_by_text(re.compile(r"^[\d,]+ selected$")).first
    items = page.locator(".embviz-grid-item")
    wait_until(page, lambda: items.count() > 0, "the grid to fill")
    n_box = int(selected.inner_text().split()[0].replace(",", ""))
    assert n_box > 12
    assert items.count() == 12
    assert page.locator(".embviz-label-counts").first.is_visible()
    page.screenshot(path=str(artifacts / "explorer_4_box_selection.png"), full_page=True)

    # Paging shows the next 12.
    first_ids = {items.nth(i).get_attribute("data-id") for i in range(12)}
    page.locator(".embviz-next button, button.embviz-next").first.click()
    page.get_by_text(re.compile(r"page 2 / \d+")).first.wait_for(timeout=10_000)
    page.wait_for_timeout(500)
    second_ids = {items.nth(i).get_attribute("data-id") for i in range(items.count())}
    assert second_ids and not (first_ids & second_ids)
    page.screenshot(path=str(artifacts / "explorer_5_page_2.png"), full_page=True)

    # A lasso selection (a triangle inside the box) selects a different, smaller set.
    page.get_by_title("Lasso Select").first.click()
    left, top = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25
    page.mouse.move(left, top)
    page.mouse.down()
    for fx, fy in [(0.75, 0.25), (0.5, 0.8), (0.26, 0.3)]:
        page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=8)
    page.mouse.up()
    box_text = f"{n_box:,} selected"
    wait_until(page, lambda: selected.inner_text() != box_text, "the lasso selection")
    n_lasso = int(selected.inner_text().split()[0].replace(",", ""))
    assert 0 < n_lasso < n_box
    page.screenshot(path=str(artifacts / "explorer_6_lasso.png"), full_page=True)

    # Clicking a grid image opens the detail panel: full image, fields, neighbours.
    items.first.click()
    detail = page.locator(".embviz-detail-image")
    detail.first.wait_for(timeout=20_000)
    wait_until(page, lambda: loaded(detail), "the detail image to load")
    assert "/embviz/image/" in detail.first.get_attribute("src")
    page.get_by_text("neighbours in").first.wait_for(timeout=10_000)
    page.screenshot(path=str(artifacts / "explorer_7_detail.png"), full_page=True)


def test_tap_on_map_opens_detail(page, demo_server, artifacts):
    open_explorer(page, demo_server)
    cx, cy, _ = zoom_to_few_points(page, limit=600)
    page.get_by_title("Pan").first.click()
    # Tap on the drawn sprites near the zoom centre until one opens.
    for dx, dy in [(0, 0), (10, 0), (0, 10), (-10, 0), (0, -10), (20, 20), (-20, -20)]:
        page.mouse.click(cx + dx, cy + dy)
        page.wait_for_timeout(700)
        if page.locator(".embviz-detail-image").count():
            break
    assert page.locator(".embviz-detail-image").count(), "a click on a point opened no detail"
    page.screenshot(path=str(artifacts / "explorer_8_tap_detail.png"), full_page=True)
    assert re.search(r"[?&]sample=\d+", page.url)


def test_legend_click_hides_a_class_and_url_reproduces_the_view(
    page, demo_server, artifacts, browser
):
    open_explorer(page, demo_server)
    box = plot_box(page)
    before = coloured_pixels(page.screenshot(), box)
    from embviz.app.raster import category_colors

    # Points are drawn with some transparency over white: compare colours by the direction in
    # which they darken white, which blending leaves unchanged. Digit "1" has the 2nd colour.
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in category_colors(10)])
    ink = lambda px: (255 - px) / np.linalg.norm(255 - px, axis=1, keepdims=True).clip(1)  # noqa: E731

    def near(px):
        cos = ink(px.astype(float)) @ ink(palette.astype(float)).T
        return int(((cos.argmax(1) == 1) & (cos.max(1) > 0.99)).sum())

    assert near(before) > 100
    page.locator('.embviz-legend-item[data-name="1"]').click()
    page.locator('.embviz-legend-item[data-name="1"].is-hidden').wait_for(timeout=10_000)
    page.wait_for_function("() => location.search.includes('hide=')", timeout=20_000)
    for _ in range(40):  # the new frame arrives over the websocket: poll the picture
        page.wait_for_timeout(500)
        after_png = page.screenshot(path=str(artifacts / "explorer_9_legend_hidden.png"))
        after = coloured_pixels(after_png, box)
        if near(after) < near(before) / 10:
            break
    assert near(after) < near(before) / 10, "hiding '1' left its points on the map"
    assert len(after) > len(before) * 0.5, "hiding one class emptied the map"

    # The URL holds the state: a new page opened on it shows the same hidden class and view.
    link = page.url
    other = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        other.goto(link)
        other.get_by_text(STATUS).first.wait_for(timeout=90_000)
        other.locator('.embviz-legend-item[data-name="1"].is-hidden').wait_for(timeout=20_000)
        for _ in range(40):
            other.wait_for_timeout(500)
            again = coloured_pixels(other.screenshot(), plot_box(other))
            if len(again) > len(before) * 0.5 and near(again) < near(before) / 10:
                break
        assert near(again) < near(before) / 10
    finally:
        other.close()
