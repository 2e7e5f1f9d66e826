"""The model tab in a real browser: the confusion matrix lists a cell's samples, the detail shows top-k."""

from __future__ import annotations

import re

import pytest
from conftest import open_explorer, show_tab, wait_until

from embviz.dataset import open_dataset
from embviz.samples import read_sample_columns

pytestmark = pytest.mark.browser
CELL = re.compile(r"^Label (\S+), predicted (\S+)$")


def test_confusion_cell_fills_the_grid_and_the_detail_shows_top_k(
    browser, demo_server, demo_dataset, artifacts
):
    ds = open_dataset(demo_dataset)
    if not ds.has("predictions"):
        pytest.skip("this demo dataset was built before the predict step; rebuild it")
    cols = read_sample_columns(ds, ["label", "predicted_label"]).to_pandas()
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_explorer(page, demo_server.url)
    show_tab(page, "Model")
    panel = page.locator(".embviz-model")
    panel.get_by_text(re.compile(r"accuracy [\d.]+% over 5,000 labelled")).wait_for(timeout=60_000)
    canvas = wait_until(
        lambda: panel.locator("canvas").first if panel.locator("canvas").count() else None,
        what="the confusion matrix",
        page=page,
    )
    # Per-class scores: one row per digit.
    assert panel.locator(".embviz-class-scores tr").count() == 11

    # A click on the matrix lists that cell's samples: the grid says which cell and how many.
    # The diagonal cell of digit 4: the plot's frame spans about 18-97% of the canvas's width
    # (the label axis on the left) and 3-82% of its height (the predicted axis below).
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.535, box["y"] + box["height"] * 0.386)
    title = page.get_by_text(CELL).first
    title.wait_for(timeout=30_000)
    label, predicted = CELL.match(title.inner_text()).groups()
    want = int(((cols.label == label) & (cols.predicted_label == predicted)).sum())
    count = page.get_by_text(re.compile(r"^[\d,]+ samples in this cell$")).first
    wait_until(lambda: count.count() > 0, what="the cell's count", page=page)
    assert int(count.inner_text().split()[0].replace(",", "")) == want
    page.screenshot(path=str(artifacts / "model_1_confusion.png"))

    assert want > 0, f"clicked an empty cell ({label}, {predicted}), not the diagonal"

    # Opening one of them shows the probe's top-k as HoloViews bars.
    page.locator(".embviz-grid-item").first.click()
    bars = page.locator(".embviz-top-k canvas").first
    wait_until(lambda: bars.count() and bars.bounding_box(), what="the top-k bars", page=page)
    page.screenshot(path=str(artifacts / "model_2_top_k.png"))

    # Explain: a Grad-CAM map of the probe's decision (the top prediction), computed in the
    # background, lies over the image with its method, layer and class named. (A click on a bar
    # does the same for that class through the bars' Tap stream: tests/test_model_panel.py.)
    page.locator(".embviz-explain button").first.click()
    caption = page.get_by_text(re.compile(r"^gradcam · layer \S+ · class \S+ \(p = [\d.]+\)"))
    caption.first.wait_for(timeout=180_000)
    heat = page.locator("img.embviz-overlay").first
    wait_until(
        lambda: heat.evaluate("i => i.complete && i.naturalWidth > 0"),
        what="the saliency map to load",
        page=page,
    )
    page.screenshot(path=str(artifacts / "model_3_saliency.png"))
    page.close()
    assert not errors, errors
