"""The page as a new user sees it: the map takes the window's space, curation cards collapse,
and a server started without the image routes says so on the page."""

from __future__ import annotations

import pytest
from conftest import PanelServer, map_box, open_explorer, show_tab, wait_until

pytestmark = pytest.mark.browser


def test_the_map_uses_the_window_and_curation_cards_collapse(browser, demo_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_explorer(page, demo_server.url)
        box = wait_until(
            lambda: (b := map_box(page)) and b["width"] >= 900 and b["height"] >= 640 and b,
            what="the map at least 900x640",
            page=page,
        )
        # The map grows with the window (responsive width and height).
        page.set_viewport_size({"width": 1800, "height": 1200})
        wait_until(
            lambda: (
                (b := map_box(page))
                and b["width"] > box["width"] + 200
                and b["height"] > box["height"] + 100
            ),
            what="the map to grow with the window",
            page=page,
        )
        show_tab(page, "Curate")
        tag = page.locator(".embviz-tag select").first
        tag.wait_for(state="visible", timeout=30_000)
        page.locator(".card-header", has_text="Tag").first.click()  # collapse the card
        wait_until(lambda: not tag.is_visible(), what="the Tag card to collapse", page=page)
    finally:
        page.close()
    assert not errors, errors


def test_a_server_without_the_image_routes_says_so_on_the_page(browser, demo_dataset, tmp_path):
    with PanelServer(demo_dataset, tmp_path / "serve.log", plugins=False) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            open_explorer(page, server.url)
            warning = page.locator(".embviz-routes-missing").first
            warning.wait_for(timeout=30_000)
            assert "--plugins embviz.app.routes" in warning.inner_text()
        finally:
            page.close()
        assert server.log().count("--plugins embviz.app.routes") == 1  # logged once (on load)
