"""The layer picker in a real browser: the Model tab draws the model's blocks, and a click on a
mapped block switches the map to that layer's projection."""

from __future__ import annotations

import re

import pytest
from conftest import PanelServer, open_explorer, show_tab, wait_until
from test_layer_panel import PREFIX, make_tiny

pytestmark = pytest.mark.browser
READY = re.compile(r"of 120 points in view")


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, mnist_small):
    """``panel serve`` of the tiny dataset (layers pooled and blocks.1 mapped by PCA)."""
    root = tmp_path_factory.mktemp("layers-browser")
    ds = make_tiny(root, mnist_small)
    with PanelServer(ds.root, root / "serve.log") as server:
        yield server


def test_clicking_a_mapped_block_switches_the_map(browser, tiny_server, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_explorer(page, tiny_server.url, ready=READY)
    show_tab(page, "Model")
    panel = page.locator(".embviz-layers")
    panel.get_by_text(re.compile(r"^Layers of timm:test_efficientnet")).wait_for(timeout=60_000)
    canvas = wait_until(
        lambda: panel.locator("canvas").first if panel.locator("canvas").count() else None,
        60,
        "the layer diagram",
        page=page,
    )
    # The session opens on the first map (blocks.1, by name); the picker shows its layer.
    page.get_by_text(re.compile(r"^Showing the map of .*blocks\.1\.$")).wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "layers_1_diagram.png"))

    # The blocks fill the canvas top to bottom, one row each, in the order of the list:
    # conv_stem, bn1, blocks.0-4, conv_head, bn2, pooled, global_pool, classifier.
    rows = 12
    box = canvas.bounding_box()

    def click_row(i: int) -> None:
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] * (i + 0.5) / rows)

    click_row(9)  # pooled: mapped
    wait_until(
        lambda: f"projection={PREFIX}.pooled.pca2d" in page.url,
        30,
        "the map to switch to the pooled layer",
        page=page,
    )
    page.screenshot(path=str(artifacts / "layers_2_switched.png"))

    click_row(4)  # blocks.2: not embedded, so the app offers to embed and map it
    page.get_by_role("button", name="Embed and map this layer").wait_for(timeout=30_000)
    assert f"projection={PREFIX}.pooled.pca2d" in page.url  # the map stays where it was
    page.close()
    assert not errors, errors
