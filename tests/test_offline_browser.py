"""A whole session on the demo in a real browser asks no host but the server for anything.

No web font, no CDN script or stylesheet, no map tiles: the explorer works on a network without
the internet, and opening it tells no third party who looks at which data. Every request and
websocket of the page is recorded through load, zoom, box-select, opening a sample and 3D.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from conftest import (
    deck_pixels,
    drag_select,
    map_box,
    open_explorer,
    switch_to_3d,
    wait_until,
    wheel_zoom,
)

pytestmark = pytest.mark.browser
#: Schemes that never leave the page.
LOCAL_SCHEMES = {"data", "blob", "about"}


def test_a_whole_session_asks_only_the_server(browser, demo_server, artifacts):
    server = urlsplit(demo_server.url).netloc
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    urls: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_explorer(page, demo_server.url)
        box = map_box(page)
        wheel_zoom(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, notches=2)

        corners = [(box["x"] + box["width"] * f, box["y"] + box["height"] * f) for f in (0.1, 0.9)]
        drag_select(page, "Box Select", corners)
        items = page.locator(".embviz-grid-item")
        wait_until(lambda: items.count() > 0, what="the selection grid", page=page)

        items.first.click()
        detail = page.locator(".embviz-detail-image")
        detail.first.wait_for(timeout=20_000)
        wait_until(
            lambda: detail.first.evaluate("i => i.complete && i.naturalWidth > 0"),
            what="the sample's image",
            page=page,
        )

        switch_to_3d(page)
        deck_pixels(page, 500, "the 3D view to draw")
        page.screenshot(path=str(artifacts / "offline_session.png"), full_page=True)
    finally:
        page.close()

    assert not errors, errors
    # The recording saw the session's own traffic: the page, its websocket, images.
    assert any(urlsplit(u).scheme == "ws" for u in urls), urls
    assert any("/embviz/image/" in u for u in urls) and any("/embviz/thumb/" in u for u in urls)
    foreign = sorted(
        {
            u
            for u in urls
            if urlsplit(u).scheme not in LOCAL_SCHEMES and urlsplit(u).netloc != server
        }
    )
    assert not foreign, f"the page asked other hosts than {server}: {foreign}"
