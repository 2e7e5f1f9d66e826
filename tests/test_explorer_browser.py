"""The 2D explorer on the real MNIST demo in a real browser: zoom, hover, select, page, detail, legend.

Each state is saved as a screenshot in ``artifacts/``. The server is conftest's ``demo_server``
(``panel serve apps/explorer.py``); every wait is on a condition of the page (conftest's
``wait_until`` and Playwright's own waits).
"""

from __future__ import annotations

import io
import json
import re
import urllib.parse

import numpy as np
import pytest
from conftest import (
    DEMO_STATUS,
    appears,
    drag_select,
    in_view,
    map_box,
    open_explorer,
    selected_count,
    status,
    wait_until,
    wheel_zoom,
)

pytestmark = pytest.mark.browser
#: The map's default sprite_limit: views with at most this many points draw their images.
SPRITE_LIMIT = 400


@pytest.fixture
def page(browser, demo_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    yield page
    page.close()
    assert not errors, errors


def loaded(locator) -> bool:
    return any(
        locator.nth(i).evaluate("i => i.complete && i.naturalWidth > 0")
        for i in range(locator.count())
    )


def coloured_pixels(png: bytes, box) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    x0, y0 = int(box["x"]), int(box["y"])
    crop = img[y0 + 30 : y0 + int(box["height"]) - 5, x0 + 5 : x0 + int(box["width"]) - 5]
    px = crop.reshape(-1, 3)
    # A pixel holding one point is drawn with the lowest alpha: a light tint of its colour
    # (orange over white at alpha 60 is (255, 225, 198)), still 30 apart from grey.
    return px[(px.max(1) - px.min(1)) > 30]


def drawn(page, box) -> np.ndarray:
    """The coloured pixels of the map once the first raster of the 5,000 points is shown."""

    def pixels():
        px = coloured_pixels(page.screenshot(), box)
        return px if len(px) > 2000 else None

    return wait_until(pixels, what="the raster of the points", page=page)


def _saturated(png: bytes) -> np.ndarray:
    """Pixels of a screenshot that are coloured (points), not grey, black or white (text such
    as the cluster names, the background)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return (rgb.max(axis=2) - rgb.min(axis=2)) > 60


def points_near(page, cx: float, cy: float) -> list[tuple[float, float]]:
    """Page coordinates of the map's coloured pixels (drawn points), nearest ``(cx, cy)`` first."""
    box = map_box(page)
    ys, xs = np.nonzero(_saturated(page.screenshot()))
    inside = (xs > box["x"] + 10) & (xs < box["x"] + box["width"] - 10)
    inside &= (ys > box["y"] + 40) & (ys < box["y"] + box["height"] - 10)
    xs, ys = xs[inside], ys[inside]
    order = np.argsort((xs - cx) ** 2 + (ys - cy) ** 2)
    return [(float(xs[i]), float(ys[i])) for i in order]


def zoom_to_few_points(page, limit: int = 3000):
    """Wheel-zoom on the densest part of the map until at most ``limit`` points are in view."""
    box = map_box(page)
    png = page.screenshot()

    x0, y0 = int(box["x"]), int(box["y"])
    crop = _saturated(png)[
        y0 + 40 : y0 + int(box["height"]) - 10, x0 + 10 : x0 + int(box["width"]) - 10
    ]
    ys, xs = np.nonzero(crop)
    cx, cy = x0 + 10 + float(np.median(xs)), y0 + 40 + float(np.median(ys))
    for _ in range(8):
        if in_view(wheel_zoom(page, cx, cy)) <= limit:
            break

    def with_tooltips() -> str | None:
        text = status(page)
        return text if "with tooltips" in text else None

    return cx, cy, wait_until(with_tooltips, what="tooltips in the status line", page=page)


def test_explore_zoom_hover_select_page_detail(page, demo_server, artifacts):
    thumbs: list[str] = []
    page.on("request", lambda r: thumbs.append(r.url) if "/embviz/thumb/" in r.url else None)
    open_explorer(page, demo_server.url)
    box = map_box(page)
    drawn(page, box)
    page.screenshot(path=str(artifacts / "explorer_1_overview.png"))
    assert in_view(status(page)) == 5000

    # A wheel zoom re-renders: fewer points in view, the URL carries the new view. The map
    # draws the images at the points once the view holds at most its sprite_limit (400).
    cx, cy, text = zoom_to_few_points(page, limit=SPRITE_LIMIT)
    page.screenshot(path=str(artifacts / "explorer_2_zoomed.png"))
    assert 0 < in_view(text) <= SPRITE_LIMIT
    view = json.loads(urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["view"][0])
    assert len(view) == 4 and view[1] > view[0]
    # Zoomed in that far, the images themselves are drawn at the points (sprites).
    wait_until(lambda: thumbs, what="a thumbnail request for the sprites", page=page)

    # Hovering a point shows its thumbnail in the tooltip.
    tip = page.locator(".embviz-tip img")
    found = False
    for x, y in points_near(page, cx, cy)[:60:3]:
        page.mouse.move(x, y)
        if tip.count() and tip.first.is_visible():
            found = True
            break
    assert found, "no tooltip appeared over the zoomed-in points"
    wait_until(lambda: loaded(tip), what="the tooltip's thumbnail to load", page=page)
    assert "/embviz/thumb/" in tip.first.get_attribute("src")
    page.screenshot(path=str(artifacts / "explorer_3_hover.png"))

    # Box selection fills the grid (12 per page) with label counts.
    box = map_box(page)
    corner = (box["x"] + box["width"] - 20, box["y"] + box["height"] - 20)
    middle = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    drag_select(page, "Box Select", [(box["x"] + 20, box["y"] + 40), middle, corner])
    items = page.locator(".embviz-grid-item")
    wait_until(lambda: items.count() > 0, what="the grid to fill", page=page)
    n_box = selected_count(page)
    assert n_box > 12
    assert items.count() == 12
    assert page.locator(".embviz-label-counts").first.is_visible()
    page.screenshot(path=str(artifacts / "explorer_4_box_selection.png"), full_page=True)

    # Paging shows the next 12.
    def shown_ids() -> set[str]:
        return {items.nth(i).get_attribute("data-id") for i in range(items.count())}

    first_ids = shown_ids()
    assert len(first_ids) == 12
    page.locator(".embviz-next button, button.embviz-next").first.click()
    page.get_by_text(re.compile(r"page 2 / \d+")).first.wait_for(timeout=10_000)
    wait_until(
        lambda: (ids := shown_ids()) and not (first_ids & ids),
        what="the second page's cards",
        page=page,
    )
    page.screenshot(path=str(artifacts / "explorer_5_page_2.png"), full_page=True)

    # A lasso selection (a triangle inside the box) selects a different, smaller set.
    triangle = [(0.25, 0.25), (0.75, 0.25), (0.5, 0.8), (0.26, 0.3)]
    points = [(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy) for fx, fy in triangle]
    drag_select(page, "Lasso Select", points, steps=8)
    wait_until(lambda: selected_count(page) != n_box, what="the lasso selection", page=page)
    n_lasso = selected_count(page)
    assert 0 < n_lasso < n_box
    page.screenshot(path=str(artifacts / "explorer_6_lasso.png"), full_page=True)

    # Clicking a grid image opens the detail panel: full image, fields, neighbours.
    items.first.click()
    detail = page.locator(".embviz-detail-image")
    detail.first.wait_for(timeout=20_000)
    wait_until(lambda: loaded(detail), what="the detail image to load", page=page)
    assert "/embviz/image/" in detail.first.get_attribute("src")
    page.get_by_text("neighbours in").first.wait_for(timeout=10_000)
    page.screenshot(path=str(artifacts / "explorer_7_detail.png"), full_page=True)


def test_tap_on_map_opens_detail(page, demo_server, artifacts):
    open_explorer(page, demo_server.url)
    cx, cy, _ = zoom_to_few_points(page, limit=600)
    page.get_by_title("Pan").first.click()
    # Tap on the drawn points nearest the zoom centre until one opens.
    detail = page.locator(".embviz-detail-image")
    for x, y in points_near(page, cx, cy)[:40:5]:
        page.mouse.click(x, y)
        if appears(detail, 2000):
            break
    assert detail.count(), "a click on a point opened no detail"
    page.screenshot(path=str(artifacts / "explorer_8_tap_detail.png"), full_page=True)
    wait_until(lambda: re.search(r"[?&]sample=\d+", page.url), what="sample= in the URL", page=page)


def test_legend_click_hides_a_class_and_url_reproduces_the_view(
    page, demo_server, artifacts, browser
):
    open_explorer(page, demo_server.url)
    box = map_box(page)
    before = drawn(page, box)
    from embviz.render.raster import category_colors

    # Points are drawn with some transparency over white: compare colours by the direction in
    # which they darken white, which blending leaves unchanged. Digit "1" has the 2nd colour.
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in category_colors(10)])
    ink = lambda px: (255 - px) / np.linalg.norm(255 - px, axis=1, keepdims=True).clip(1)  # noqa: E731

    def near(px):
        cos = ink(px.astype(float)) @ ink(palette.astype(float)).T
        return int(((cos.argmax(1) == 1) & (cos.max(1) > 0.99)).sum())

    def without_ones(p, b):
        """The coloured pixels of ``p`` once the new frame without digit 1 is shown."""
        px = coloured_pixels(p.screenshot(), b)
        return px if len(px) > len(before) * 0.5 and near(px) < near(before) / 10 else None

    assert near(before) > 100
    page.locator('.embviz-legend-item[data-name="1"]').click()
    page.locator('.embviz-legend-item[data-name="1"].is-hidden').wait_for(timeout=10_000)
    page.wait_for_function("() => location.search.includes('hide=')", timeout=20_000)
    # The new frame arrives over the websocket: wait for the picture to lose digit 1's colour
    # (and only that: hiding one class must not empty the map).
    wait_until(lambda: without_ones(page, box), what="a frame without digit 1", page=page)
    page.screenshot(path=str(artifacts / "explorer_9_legend_hidden.png"))

    # The URL holds the state: a new page opened on it shows the same hidden class and view.
    link = page.url
    other = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        open_explorer(other, link, DEMO_STATUS)
        other.locator('.embviz-legend-item[data-name="1"].is-hidden').wait_for(timeout=20_000)
        other_box = map_box(other)
        wait_until(
            lambda: without_ones(other, other_box), what="the linked view's frame", page=other
        )
    finally:
        other.close()
