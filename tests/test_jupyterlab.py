"""The example notebook in a real JupyterLab and Chromium: run all, zoom to images, select, read back.

JupyterLab runs headless on loopback (``python -m jupyterlab`` of this venv, so its kernels
import this checkout) on a copy of ``examples/explore.ipynb`` with fresh settings, config and
runtime folders. The page may ask no other host for anything and no request may fail: in a
notebook the explorer's images travel as data URIs, never as ``/embviz/thumb`` URLs the Jupyter
server cannot answer, and a frame (PNG + images) stays under ``FRAME_KB``. Each state is saved
in ``artifacts/``; a failure quotes the server's log and the page's traffic.
"""

from __future__ import annotations

import io
import re
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from conftest import (
    DEMO_STATUS,
    deck_pixels,
    in_view,
    selected_count,
    show_tab,
    switch_to_3d,
    wait_until,
)
from labkit import CELLS, KERNEL_STATUS, RUN_NEW_CELL, Lab, PageLog

pytestmark = [pytest.mark.browser, pytest.mark.slow]
#: Views holding at most this many points draw their images (MapPanel's sprite_limit).
SPRITE_LIMIT = 400
#: Most a frame may send to the notebook: its PNG plus the images' data URIs, in KB.
FRAME_KB = 500
#: Kernel start, the imports of Panel, Bokeh, HoloViews and Datashader, the first Numba frame
#: and the 3D deck, on 2 shared cores.
RUN_ALL_S = 300
#: The explorer's cell: the notebook's 2nd code cell (``explorer = embviz.explore(ds)``).
EXPLORER_CELL = 1


@pytest.fixture
def lab(tmp_path, demo_dataset):
    """A running :class:`Lab` on the demo dataset, stopped (kernels included) afterwards."""
    server = Lab(tmp_path, demo_dataset)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


@contextmanager
def explained(lab: Lab, log: PageLog, page, artifacts: Path):
    """Turn a failure into one message with the page's traffic, the server's log tail and a
    screenshot (``jupyterlab_failure.png``)."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as exc:
        with suppress(Exception):  # the page may be gone; the message matters more
            page.screenshot(path=str(artifacts / "jupyterlab_failure.png"), full_page=True)
        pytest.fail(f"{exc}\n--- page ---\n{log}\n--- JupyterLab log ---\n{lab.log()}")


def run_all(page, lab: Lab) -> list[str]:
    """Open the notebook, run every cell and wait until the kernel is done; the cells' errors
    (run-all stops at the first)."""
    page.goto(f"{lab.url}/lab/tree/explore.ipynb?reset&token={lab.token}")

    def kernel_idle() -> bool:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():  # e.g. "Select Kernel": the notebook's kernelspec was not found
            pytest.fail(f"JupyterLab shows a dialog: {dialog.first.inner_text()}")
        return page.evaluate(KERNEL_STATUS) == "idle"

    wait_until(kernel_idle, 120, "the notebook's kernel", page=page)
    page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")

    def finished() -> dict | None:
        info = page.evaluate(CELLS)
        cells = info["cells"]
        if any(c["errors"] for c in cells):  # run-all stops at the first error
            return info
        done = all(c["count"] is not None and "*" not in c["prompt"] for c in cells)
        return info if done and info["kernel"] == "idle" else None

    cells = wait_until(finished, RUN_ALL_S, "every cell to run", page=page)["cells"]
    return [e for c in cells for e in c["errors"]]


def status_of(out) -> str:
    """The explorer's status line ("N of 5,000 points in view ...") in its output ``out``."""
    return out.get_by_text(DEMO_STATUS).first.inner_text()


def map_canvas(out):
    """The largest visible canvas in the explorer's output (the 2D map), or None."""
    canvases = [c for c in out.locator("canvas").all() if c.is_visible()]
    areas = [
        (b["width"] * b["height"], i) for i, c in enumerate(canvases) if (b := c.bounding_box())
    ]
    return canvases[max(areas)[1]] if areas else None


def densest(page, box: dict) -> tuple[float, float]:
    """The page point at the centre of the map's most inked 40-px cell (a cluster, not the gap
    between clusters that a median can fall into)."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L")).astype(int)
    x0, y0 = int(box["x"]) + 10, int(box["y"]) + 40  # past the border and the toolbar
    crop = img[y0 : int(box["y"] + box["height"]) - 10, x0 : int(box["x"] + box["width"]) - 10]
    ys, xs = np.nonzero(crop < 200)
    assert len(ys), "the map shows no points"
    counts, yedges, xedges = np.histogram2d(
        ys, xs, bins=(max(1, crop.shape[0] // 40), max(1, crop.shape[1] // 40))
    )
    iy, ix = np.unravel_index(int(counts.argmax()), counts.shape)
    return x0 + (xedges[ix] + xedges[ix + 1]) / 2, y0 + (yedges[iy] + yedges[iy + 1]) / 2


def zoom_in(page, out, x: float, y: float, limit: int) -> str:
    """Wheel-zoom at (x, y) until at most ``limit`` points are in view; the status line."""
    text = status_of(out)
    for _ in range(12):
        if in_view(text) <= limit:
            return text
        before = text
        page.mouse.move(x, y)
        page.mouse.wheel(0, -120)
        text = wait_until(
            lambda b=before: (t := status_of(out)) != b and t, 60, "a new frame", page=page
        )
    assert in_view(text) <= limit, f"12 wheel notches left {text!r}"
    return text


def loaded(locator) -> bool:
    """Whether any image of ``locator`` finished loading a picture."""
    return any(
        locator.nth(i).evaluate("i => i.complete && i.naturalWidth > 0")
        for i in range(locator.count())
    )


def test_explorer_in_jupyterlab_zoom_images_select_read_back(lab, browser, artifacts, demo_dataset):
    import embviz

    splits = embviz.open(demo_dataset).read_pandas("samples", columns=["split"])["split"]
    n_test = int((splits == "test").sum())
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    log = PageLog(page, urlsplit(lab.url).netloc)
    try:
        with explained(lab, log, page, artifacts):
            # Errors of later cells (points, deck) are asserted last: the explorer comes first.
            log.cells = run_all(page, lab)
            out = page.locator(".jp-CodeCell").nth(EXPLORER_CELL).locator(".jp-OutputArea")
            out.get_by_text(DEMO_STATUS).first.wait_for(timeout=60_000)
            canvas = wait_until(lambda: map_canvas(out), what="the map's canvas", page=page)
            canvas.evaluate("c => c.scrollIntoView({block: 'center'})")  # all of it in view
            # The 3rd cell filtered to the test split from Python: the map shows it.
            wait_until(
                lambda: in_view(status_of(out)) == n_test,
                what=f"the test split ({n_test:,} points) set from Python on the map",
                page=page,
            )
            page.screenshot(path=str(artifacts / "jupyterlab_1_run_all.png"))

            # Zoomed in to at most sprite_limit points, the map draws their images, which
            # arrive in the frame as data URIs within the frame budget.
            box = canvas.bounding_box()
            cx, cy = densest(page, box)
            text = zoom_in(page, out, cx, cy, SPRITE_LIMIT)
            assert in_view(text) > 0, text

            def with_images() -> re.Match | None:
                return re.search(r"· ([\d,]+) images · .*?([\d,]+) KB$", status_of(out))

            found = wait_until(with_images, 30, "'N images' in the status line", page=page)
            page.screenshot(path=str(artifacts / "jupyterlab_2_zoomed.png"))
            images, kb = (int(g.replace(",", "")) for g in found.groups())
            assert images > 0, found.string
            assert kb <= FRAME_KB, found.string

            # Hovering a point shows its image in the tooltip, from a data URI.
            tip = page.locator(".embviz-tip img")
            spots = [(dx, dy) for dx in range(-240, 241, 16) for dy in range(-180, 181, 16)]
            for dx, dy in sorted(spots, key=lambda d: abs(d[0]) + abs(d[1])):
                page.mouse.move(cx + dx, cy + dy)
                if tip.count() and tip.first.is_visible():
                    break
            assert tip.count() and tip.first.is_visible(), "no tooltip over the zoomed-in points"
            wait_until(lambda: loaded(tip), what="the tooltip's image to load", page=page)
            assert tip.first.get_attribute("src").startswith("data:")
            page.screenshot(path=str(artifacts / "jupyterlab_3_hover.png"))

            # A box selection replaces the one the notebook made from Python and fills the
            # grid with loaded images ...
            before = selected_count(out)
            # The notebook may have scrolled since the zoom (outputs grow, the tooltip): bring
            # the map back, pick the tool, then measure where the map is now. A drag from stale
            # coordinates selects the page's text instead of points.
            canvas.evaluate("c => c.scrollIntoView({block: 'center'})")
            out.get_by_title("Box Select").first.click()
            box = canvas.bounding_box()
            bottom = min(box["y"] + box["height"], page.viewport_size["height"]) - 20
            page.mouse.move(box["x"] + 20, box["y"] + 40)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] - 20, bottom, steps=6)
            page.mouse.up()
            shown = wait_until(
                lambda: (n := selected_count(out)) != before and n,
                60,
                f"'N selected' to change from {before}",
                page=page,
            )
            grid = out.locator(".embviz-grid-item img")
            wait_until(lambda: loaded(grid), 60, "a loaded image in the grid", page=page)
            page.screenshot(path=str(artifacts / "jupyterlab_4_selection.png"))

            # ... and Python sees the same selection in a new cell.
            # The cell's value, not a print: pyviz_comms swaps the process-wide sys.stdout while
            # it handles a comm message, and JupyterLab 4.6 handles comms on a kernel subshell
            # thread, so a print racing a map event can land in the explorer's output instead.
            source = '("SELECTED", len(explorer.selected))'
            page.evaluate(RUN_NEW_CELL, source)
            printed = page.locator(".jp-CodeCell").last.locator(".jp-OutputArea-output")
            said = wait_until(
                lambda: re.search(r"'SELECTED', (\d+)", " ".join(printed.all_inner_texts())),
                60,
                "the new cell's value",
                page=page,
            )
            page.screenshot(path=str(artifacts / "jupyterlab_5_read_back.png"))
            assert int(said.group(1)) == shown, f"Python: {said.group(0)}, page: {shown}"

            # Curation works in the notebook too: samples similar to the selection fill the
            # grid (run in the kernel; nothing is written to the shared demo dataset).
            show_tab(page, "Curate")
            out.locator(".embviz-similar-grid button").first.click()
            results = out.get_by_text(re.compile(r"^[\d,]+ results$")).first
            wait_until(lambda: results.count() > 0, 120, "similar samples", page=page)
            grid.first.scroll_into_view_if_needed()  # lazy images load once in view
            wait_until(lambda: loaded(grid), 60, "the results' images", page=page)
            page.screenshot(path=str(artifacts / "jupyterlab_6_similar.png"))

            # The 3D view: deck.gl (loaded inline with Panel) draws the cloud.
            show_tab(page, "View")
            switch_to_3d(page)
            deck_pixels(page, 2000, "the 3D cloud in the notebook")
            page.screenshot(path=str(artifacts / "jupyterlab_7_3d.png"))

            assert not log.cells, "cells failed"
            assert not log.foreign, "the page asked other hosts"
            assert not log.failed, "requests failed"
            assert not log.errors, "console errors"
            assert not log.embviz_routes, "images by URL, not data URIs"
    finally:
        context.close()
