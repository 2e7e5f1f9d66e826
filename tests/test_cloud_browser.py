"""The 3D view on the real MNIST demo in headless chromium (software WebGL): draw, zoom, click."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import (
    STATUS3D,
    appears,
    deck_pixels,
    open_explorer,
    status,
    switch_to_3d,
    wait_until,
)

pytestmark = pytest.mark.browser
#: A sample of only the points inside a zoomed-in view (fewer than all 5,000).
PART_IN_VIEW = re.compile(r"^3D: (?!5,000 )[\d,]+ of 5,000 points sent \(every point in view\)")


def zoom_3d(page, x: float, y: float) -> str:
    """Wheel-zoom the 3D view at (x, y) until a sample holds part of the cloud; its status.

    Deck.gl reports the view state during its zoom, so an intermediate (still overview) sample
    may arrive first: zoom in three notches at a time, each time waiting for such a sample.
    """
    page.mouse.move(x, y)
    for _ in range(6):
        for _ in range(3):
            page.mouse.wheel(0, -120)
        if appears(page.get_by_text(PART_IN_VIEW), 10_000):
            return status(page, STATUS3D)
    pytest.fail(f"zooming in never sent part of the cloud: {status(page, STATUS3D)!r}")


def test_3d_view_draws_resamples_on_zoom_and_opens_detail(browser, demo_server, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_explorer(page, demo_server.url)
    first = switch_to_3d(page)
    pixels = deck_pixels(page, 500, "the 3D canvas to draw the points")
    page.screenshot(path=str(artifacts / "cloud_1_overview.png"))
    assert first.startswith("3D: 5,000 of 5,000")  # the demo fits the budget: all points

    # A view change (wheel zoom) brings a new sample: only the points inside the view.
    cy, cx = np.median(pixels, axis=0)
    zoomed = zoom_3d(page, float(cx), float(cy))
    sent = int(zoomed.split()[1].replace(",", ""))
    assert 0 < sent < 5000
    # The zoomed view draws its sample (the previous one stays until it comes: never blank).
    pixels = deck_pixels(page, 20, "the zoomed 3D view to draw")
    page.screenshot(path=str(artifacts / "cloud_2_zoomed.png"))

    # A click on a point opens the same detail panel as in 2D.
    rng = np.random.default_rng(0)
    detail = page.locator(".embviz-detail-image")
    for y, x in pixels[rng.permutation(len(pixels))[:40]]:
        page.mouse.click(float(x), float(y))
        if appears(detail, 1500):
            break
    assert detail.count(), "clicking points in 3D opened no detail"
    page.screenshot(path=str(artifacts / "cloud_3_detail.png"), full_page=True)

    # The points in view fill the same selection grid.
    page.locator(".embviz-select-view button, button.embviz-select-view").first.click()
    items = page.locator(".embviz-grid-item")
    wait_until(lambda: items.count() > 0, what="the grid of the points in view", page=page)
    page.screenshot(path=str(artifacts / "cloud_4_selection.png"), full_page=True)
    page.close()
    assert not errors, errors
