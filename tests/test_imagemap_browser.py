"""The image map on the real MNIST demo in a real browser: switch to images, zoom, hover, select.

The server is conftest's ``demo_server``; each state is saved as a screenshot in
``artifacts/``; every wait is on a condition of the page.
"""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from conftest import (
    DEMO_STATUS,
    drag_select,
    in_view,
    map_box,
    open_explorer,
    selected_count,
    show_tab,
    status,
    wait_until,
    wheel_zoom,
)

pytestmark = pytest.mark.browser
CELLS = re.compile(r"([\d,]+) cells, ([\d,]+) images")


@pytest.fixture
def page(browser, demo_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.close()
    assert not errors, errors


def image_frame(page, test, what: str) -> str:
    """The status line once it reports an image-map frame for which ``test(status)`` holds."""

    def ready() -> str | None:
        text = status(page)
        return text if CELLS.search(text) and test(text) else None

    return wait_until(ready, what=what, page=page)


def _geometry(payload):
    """The final selection geometry inside a Bokeh message the page sent, or None (Bokeh
    sends a dict as ``{"type": "map", "entries": [[key, value], ...]}``)."""
    if isinstance(payload, dict) and payload.get("type") == "map":
        payload = {k: v for k, v in payload.get("entries", [])}
    if isinstance(payload, dict):
        if payload.get("final") is True and isinstance(payload.get("geometry"), dict):
            geometry = payload["geometry"]
            return dict(geometry.get("entries", [])) if "entries" in geometry else geometry
        payload = list(payload.values())
    if isinstance(payload, list):
        for item in payload:
            found = _geometry(item)
            if found is not None:
                return found
    return None


def test_switch_to_images_zoom_hover_and_select_under_images(
    page, demo_server, demo_dataset, artifacts
):
    from embviz.app.session import Session
    from embviz.render.store import View, load_store

    sent: list = []

    def on_socket(ws):
        def keep(data):
            if isinstance(data, str) and "geometry" in data:
                with contextlib.suppress(ValueError):
                    sent.append(json.loads(data))

        ws.on("framesent", keep)

    page.on("websocket", on_socket)
    open_explorer(page, demo_server.url)
    show_tab(page, "View")
    page.locator(".embviz-map-mode button", has_text="images").first.click()
    text = image_frame(page, lambda t: True, "an image-map frame")
    cells = int(CELLS.search(text).group(1).replace(",", ""))
    assert cells > 20 and in_view(text) == 5000
    page.screenshot(path=str(artifacts / "imagemap_1_images.png"))

    # Zooming in keeps the image map (above the sprite limit) and shows more of the points'
    # images per point in view.
    box = map_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    wheel_zoom(page, cx, cy, notches=2)
    image_frame(page, lambda t: 400 < in_view(t) < 5000, "a zoomed image-map frame")
    page.screenshot(path=str(artifacts / "imagemap_2_zoomed.png"))

    # Hovering an image shows the card of its representative with its thumbnail.
    tip = page.locator(".embviz-tip img")
    found = False
    for dy in range(-240, 241, 40):
        for dx in range(-360, 361, 40):
            page.mouse.move(cx + dx, cy + dy)
            if tip.count() and tip.first.is_visible():
                found = True
                break
        if found:
            break
    assert found, "no card appeared over the images"
    wait_until(
        lambda: tip.first.evaluate("i => i.complete && i.naturalWidth > 0"),
        what="the card's thumbnail to load",
        page=page,
    )
    assert "/embviz/thumb/" in tip.first.get_attribute("src")
    page.screenshot(path=str(artifacts / "imagemap_3_hover.png"))

    # A box over the images selects every point under it, not only the representatives.
    box = map_box(page)
    start = (box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    end = (box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.75)
    drag_select(page, "Box Select", [start, end])
    wait_until(lambda: selected_count(page) > 0, what="the selection", page=page)
    geom = wait_until(lambda: _geometry(sent[::-1]), what="the box's geometry", page=page)
    store = load_store(demo_dataset, Session(demo_dataset).projection)
    x0, x1 = sorted((geom["x0"], geom["x1"]))
    y0, y1 = sorted((geom["y0"], geom["y1"]))
    expected = store.count_in(View(x0, x1, y0, y1))
    shown = int(CELLS.search(status(page, DEMO_STATUS)).group(1).replace(",", ""))
    assert selected_count(page) == expected > shown
    page.screenshot(path=str(artifacts / "imagemap_4_selected.png"), full_page=True)
