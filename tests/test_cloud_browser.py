"""The 3D view on the real MNIST demo in headless chromium (software WebGL): draw, zoom, click."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

pytestmark = pytest.mark.browser
STATUS3D = re.compile(r"^3D: [\d,]+ of 5,000 points sent")


def deck_canvas(page):
    """The largest visible canvas: deck.gl's (the 2D map's Bokeh canvas is not shown in 3D)."""
    best, area = None, 0
    canvases = page.locator("canvas")
    for i in range(canvases.count()):
        c = canvases.nth(i)
        box = c.bounding_box() if c.is_visible() else None
        if box and box["width"] * box["height"] > area:
            best, area = box, box["width"] * box["height"]
    return best


def drawn_pixels(png: bytes, box) -> np.ndarray:
    """(row, col) of the pixels in ``box`` that are not background (white or near-white)."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    y0, x0 = int(box["y"]), int(box["x"])
    crop = img[y0 + 5 : y0 + int(box["height"]) - 5, x0 + 5 : x0 + int(box["width"]) - 5]
    ys, xs = np.nonzero(crop.max(2) - crop.min(2) > 60)
    return np.column_stack([ys + y0 + 5, xs + x0 + 5])


def status(page) -> str:
    return page.get_by_text(STATUS3D).first.inner_text()


def test_3d_view_draws_resamples_on_zoom_and_opens_detail(browser, demo_server, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(demo_server.url)
    page.get_by_text(re.compile("points in view")).first.wait_for(timeout=90_000)
    page.get_by_role("button", name="3D").first.click()
    page.get_by_text(STATUS3D).first.wait_for(timeout=60_000)
    page.wait_for_timeout(2500)  # deck.gl draws on the next animation frames
    box = deck_canvas(page)
    png = page.screenshot(path=str(artifacts / "cloud_1_overview.png"))
    pixels = drawn_pixels(png, box)
    assert len(pixels) > 500, "the 3D canvas is blank"
    first = status(page)
    assert first.startswith("3D: 5,000 of 5,000")  # the demo fits the budget: all points

    # A view change (wheel zoom) brings a new sample: only the points inside the view.
    cy, cx = np.median(pixels, axis=0)
    page.mouse.move(float(cx), float(cy))
    # Deck.gl reports the view state during its zoom, so an intermediate (still overview) sample
    # may arrive first; keep zooming in until the view holds only part of the cloud.
    zoomed = first
    for _ in range(6):
        for _ in range(3):
            page.mouse.wheel(0, -120)
            page.wait_for_timeout(150)
        for _ in range(40):
            zoomed = status(page)
            if "every point in view" in zoomed:
                break
            page.wait_for_timeout(250)
        if "every point in view" in zoomed:
            break
    assert zoomed != first and "every point in view" in zoomed, zoomed
    page.wait_for_timeout(1500)
    png = page.screenshot(path=str(artifacts / "cloud_2_zoomed.png"))
    pixels = drawn_pixels(png, deck_canvas(page))
    sent = int(zoomed.split()[1].replace(",", ""))
    assert 0 < sent < 5000
    assert len(pixels) > 20, "the zoomed 3D view is blank (it must never flicker to empty)"

    # A click on a point opens the same detail panel as in 2D.
    rng = np.random.default_rng(0)
    opened = False
    for y, x in pixels[rng.permutation(len(pixels))[:40]]:
        page.mouse.click(float(x), float(y))
        page.wait_for_timeout(400)
        if page.locator(".embviz-detail-image").count():
            opened = True
            break
    assert opened, "clicking points in 3D opened no detail"
    page.screenshot(path=str(artifacts / "cloud_3_detail.png"), full_page=True)

    # The points in view fill the same selection grid.
    page.locator(".embviz-select-view button, button.embviz-select-view").first.click()
    items = page.locator(".embviz-grid-item")
    for _ in range(40):
        if items.count():
            break
        page.wait_for_timeout(250)
    assert items.count() > 0
    page.screenshot(path=str(artifacts / "cloud_4_selection.png"), full_page=True)
    page.close()
    assert not errors, errors
