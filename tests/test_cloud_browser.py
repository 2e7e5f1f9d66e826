"""The 3D view on the real MNIST demo in headless chromium (software WebGL): draw, zoom, click."""

from __future__ import annotations

import base64
import contextlib
import io
import re

import numpy as np
import pytest
from conftest import (
    STATUS3D,
    appears,
    deck_canvas,
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


def canvas_of(png: bytes, box: dict) -> np.ndarray:
    """The pixels of ``box`` (the 3D canvas) in a picture of the viewport."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    y0, x0 = int(box["y"]), int(box["x"])
    return img[y0 + 5 : y0 + int(box["height"]) - 5, x0 + 5 : x0 + int(box["width"]) - 5]


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the pixels that differ between two pictures of the canvas."""
    return float((np.abs(a - b).max(axis=2) > 40).mean())


def settled_canvas(page, box: dict, what: str, unlike: np.ndarray | None = None) -> np.ndarray:
    """The canvas once two pictures in a row are the same (and differ from ``unlike``)."""
    last: list[np.ndarray] = []

    def settled():
        now = canvas_of(page.screenshot(), box)
        done = bool(last) and changed(now, last[-1]) < 0.001
        done = done and (unlike is None or changed(now, unlike) > 0.01)
        last[:] = [now]
        return now if done else None

    return wait_until(settled, 60, what, page=page)


def arrangement(picture: np.ndarray) -> np.ndarray:
    """Where the digits lie relative to each other: the centre of each label colour's pixels,
    in units of the whole cloud's spread around its centre (so a camera moving over still
    points barely changes it); NaN for a colour with too few pixels."""
    from embviz.render.raster import category_colors, rgb

    palette = rgb(category_colors(10)).astype(np.int16)
    ys, xs = np.nonzero(picture.max(axis=2) - picture.min(axis=2) > 60)
    gap = np.abs(picture[ys, xs][:, None, :] - palette[None]).max(axis=2)
    label, near = gap.argmin(axis=1), gap.min(axis=1) < 40
    xy = np.column_stack([xs, ys])[near].astype(float)
    z, label = (xy - xy.mean(axis=0)) / xy.std(), label[near]
    centres = [
        z[label == k].mean(axis=0) if (label == k).sum() > 20 else [np.nan] * 2 for k in range(10)
    ]
    return np.array(centres)


def apart(a: np.ndarray, b: np.ndarray) -> float:
    """How far the digits' arrangement moved between two pictures."""
    return float(np.nanmean(np.linalg.norm(arrangement(a) - arrangement(b), axis=1)))


@contextlib.contextmanager
def screencast(page):
    """Every picture the page's compositor makes meanwhile (Chromium's screencast), as PNGs.

    Software WebGL draws a few frames a second while deck.gl moves the points, and a
    screenshot waits for the next frame; the screencast hands over the frames as they come.
    """
    cdp = page.context.new_cdp_session(page)
    frames: list[bytes] = []

    def on_frame(event) -> None:
        frames.append(base64.b64decode(event["data"]))
        cdp.send("Page.screencastFrameAck", {"sessionId": event["sessionId"]})

    cdp.on("Page.screencastFrame", on_frame)
    cdp.send("Page.startScreencast", {"format": "png", "everyNthFrame": 1})
    try:
        yield frames
    finally:
        cdp.send("Page.stopScreencast")
        cdp.detach()


def test_a_new_3d_projection_of_the_same_samples_moves_the_points(browser, demo_server, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_explorer(page, demo_server.url)
    switch_to_3d(page)
    deck_pixels(page, 500, "the 3D canvas to draw the points")
    page.mouse.move(1, 1)  # no hover card or tooltip over the canvas
    box = deck_canvas(page)
    start = settled_canvas(page, box, "the UMAP map to settle")
    assert page.locator(".embviz-animate input").first.is_checked()  # on by default

    # UMAP 3D to PCA 3D of the same 5,000 samples.
    picker = page.locator("select", has=page.locator("option", has_text="pca3d")).first
    with screencast(page) as frames:
        picker.select_option(label="pca3d")
        end = settled_canvas(page, box, "the points to reach the PCA map", unlike=start)
    page.screenshot(path=str(artifacts / "cloud_5_moved.png"))
    pictures = [canvas_of(png, box) for png in frames]
    between = [p for p in pictures if min(changed(p, start), changed(p, end)) > 0.01]
    assert between, (
        f"no picture between the maps among {len(pictures)}: "
        f"{[(round(changed(p, start), 3), round(changed(p, end), 3)) for p in pictures]}"
    )
    # The points themselves move (not only the camera, which moves with them): some picture
    # arranges the digits part of the way from UMAP's arrangement to PCA's. Measured: 0.97
    # apart from start to end; moving pictures 0.73 + 0.36 and 0.85 + 0.13 from start + end,
    # while with the points jumping under a moving camera every picture was >= 1.85 in all.
    whole = apart(start, end)
    steps = [(apart(p, start), apart(p, end)) for p in between]
    assert whole > 0.5 and any(a + b < 1.4 * whole and min(a, b) > 0.1 * whole for a, b in steps), (
        f"the digits never lay between the maps ({whole:.2f} apart): {steps}"
    )
    from PIL import Image

    Image.fromarray(between[len(between) // 2].astype(np.uint8)).save(
        artifacts / "cloud_5_moving.png"
    )
    assert STATUS3D.match(status(page, STATUS3D))
    deck_pixels(page, 500, "the PCA map to draw its points")
    page.close()
    assert not errors, errors
