"""The served explorer page in a real browser: it shows a rendered image of the points."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from conftest import drag_select, map_box, show_tab, wait_until

from embviz.dataset import Dataset

pytestmark = pytest.mark.browser
#: A label that runs script if any view interpolates it into HTML unescaped.
HOSTILE = '<img src=x onerror="window.__xss=1">class 2'
#: Metadata, split and tag values built the same way.
HOSTILE_META = '<svg onload="window.__xss=2">caption</svg>'
HOSTILE_SPLIT = '"><img src=x onerror="window.__xss=3">prod'
HOSTILE_NOTE = '<img src=x onerror="window.__xss=4">note'


@pytest.fixture
def small_dataset(tmp_path):
    """Three well-separated labelled blobs with a 2D projection."""
    rng = np.random.default_rng(0)
    n = 3000
    label = rng.integers(0, 3, n)
    ds = Dataset.create(tmp_path / "blobs", name="blobs")
    w = ds.writer("samples")
    names = ["class 0", "class 1", HOSTILE]
    w.write_part(
        0,
        pa.table(
            {
                "id": np.arange(n),
                "label": [names[i] for i in label],
                "split": np.where(np.arange(n) % 2 == 0, "train", HOSTILE_SPLIT),
                "caption": [HOSTILE_META] * n,
                "uri": [f"/data/{HOSTILE_META}/{i}.png" for i in range(n)],
            }
        ),
    )
    w.commit()
    xy = rng.normal(size=(n, 2)) * 0.4 + np.array([[0, 0], [5, 0], [0, 5]])[label]
    w = ds.writer("projections/blobs.umap2d")
    w.write_part(
        0, pa.table({"id": np.arange(n), "x": xy[:, 0].astype("f4"), "y": xy[:, 1].astype("f4")})
    )
    w.commit(meta={"dims": 2})
    return ds.root


def saturated_pixels(page) -> np.ndarray | None:
    """The page's saturated pixels once the raster of the points shows (over 2,000 of them)."""
    from PIL import Image

    img = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    pixels = np.asarray(img).reshape(-1, 3).astype(int)
    saturated = pixels[(pixels.max(1) - pixels.min(1)) > 80]
    return saturated if len(saturated) > 2000 else None


def test_page_shows_rendered_points(browser, serve_app, small_dataset, artifacts):
    url = serve_app(small_dataset)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    legend = page.locator(".embviz-legend-name")
    legend.filter(has_text="class 1").first.wait_for(timeout=150_000)
    saturated = wait_until(lambda: saturated_pixels(page), what="the raster", page=page)
    page.screenshot(path=str(artifacts / "app_overview.png"))
    # The hostile label shows as text in the legend, and hovering its points (3,000 points:
    # tooltips are on at full view) runs nothing.
    assert legend.filter(has_text=HOSTILE).first.is_visible()
    box = map_box(page)
    tips = page.locator(".embviz-tip")
    seen = 0
    for fx in np.linspace(0.05, 0.95, 25):
        for fy in np.linspace(0.05, 0.95, 25):
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            seen += tips.count() > 0
    assert seen, "no tooltip over 3,000 points"
    assert page.evaluate("window.__xss") is None
    page.close()
    assert not errors, errors
    # The three categories are drawn in distinct saturated colours by the server-side raster.
    assert len({tuple(p // 32) for p in saturated}) >= 3


def test_hostile_values_show_as_text_in_grid_detail_tags_and_compare(
    browser, serve_app, small_dataset, artifacts
):
    import re

    url = serve_app(small_dataset)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.locator(".embviz-legend-name").filter(has_text="class 1").first.wait_for(timeout=150_000)
    # Box-select the top-left blob (the hostile class sits at (0, 5), above class 0 at (0, 0)):
    # the grid's cards carry the hostile label as text.
    box = map_box(page)
    corners = [
        (box["x"] + box["width"] * 0.04, box["y"] + 50),  # below the toolbar
        (box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25),
        (box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5),
    ]
    drag_select(page, "Box Select", corners, steps=4)
    labels = page.locator(".embviz-grid-label")
    labels.first.wait_for(timeout=30_000)
    texts = [labels.nth(i).inner_text() for i in range(labels.count())]
    assert HOSTILE in texts, texts
    # The detail panel shows every field, the hostile ones as text.
    card = page.locator(".embviz-grid-item").filter(has_text=HOSTILE).first
    card.click()
    fields = page.locator(".embviz-detail-fields")
    fields.first.wait_for(timeout=30_000)
    text = fields.first.inner_text()
    assert HOSTILE_META in text and f"/data/{HOSTILE_META}/" in text
    # A note holding markup is stored and shown as text (the detail lists the open sample's tags).
    show_tab(page, "Curate")
    page.locator(".embviz-tag select").first.select_option("note")
    page.locator(".embviz-tag-value input").first.fill(HOSTILE_NOTE)
    page.locator(".embviz-tag-value input").first.press("Enter")
    # The choices and the click travel over one websocket, in order: the server applies the
    # choices before it handles the click.
    page.locator(".embviz-apply-to button", has_text="open sample").first.click()
    page.locator(".embviz-add-tag button").first.click()
    message = page.locator(".embviz-curate-message div").last
    wait_until(lambda: "Tagged" in message.inner_text(), what="the tag message", page=page)
    assert HOSTILE_NOTE in message.inner_text()
    # Compare the two splits: the group names appear in the result as text.
    compare = page.locator(".embviz-compare button").first
    if not compare.is_visible():  # the "Compare groups" card starts collapsed
        page.get_by_text("Compare groups").first.click()
    compare.click()
    result = page.locator(".embviz-compare-result")
    page.get_by_text(re.compile("Shift AUC")).first.wait_for(timeout=60_000)
    assert HOSTILE_SPLIT in " ".join(result.locator("div").all_inner_texts())
    page.screenshot(path=str(artifacts / "app_hostile_values.png"), full_page=True)
    assert page.evaluate("window.__xss") is None
    page.close()
    assert not errors, errors
