"""The demo's training run in a real browser: play its series of checkpoint maps, watch the
points move, end on the last checkpoint's static map."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
from conftest import DEMO_STATUS, map_box, open_explorer, wait_until
from PIL import Image

pytestmark = pytest.mark.browser

MOVING = re.compile(r"^moving to ")


#: The demo's aligned maps of its CNN's checkpoints, untrained first.
MEMBERS = [f"cnn-epoch-{e:03d}.pooled.umap2d" for e in range(5)]


def _map_pixels(page) -> np.ndarray:
    box = map_box(page)
    png = page.screenshot(
        clip={
            "x": box["x"] + 5,
            "y": box["y"] + 35,
            "width": box["width"] - 10,
            "height": box["height"] - 40,
        }
    )
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _settled(page, what: str) -> np.ndarray:
    """The map's pixels once two screenshots 0.5 s apart agree (no frame arriving)."""
    last = [None]

    def same():
        now = _map_pixels(page)
        prev, last[0] = last[0], now
        page.wait_for_timeout(500)
        return now if prev is not None and np.array_equal(prev, now) else None

    return wait_until(same, 60, what, page=page)


#: In the page: note in ``window.__embvizMembers`` each member the caption (``el``) names, as
#: its text changes (the caption's bold text, inside its shadow roots).
_NOTE_MEMBERS = """(el) => {
  const bold = (node) => {
    const found = node.querySelector && node.querySelector("b");
    if (found) return found;
    for (const child of node.querySelectorAll ? node.querySelectorAll("*") : []) {
      if (child.shadowRoot) { const b = bold(child.shadowRoot); if (b) return b; }
    }
    return node.shadowRoot ? bold(node.shadowRoot) : null;
  };
  const seen = (window.__embvizMembers = []);
  const note = () => {
    const b = bold(el);
    const text = b ? b.textContent.trim() : "";
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  };
  note();
  const watch = (node) => new MutationObserver(note).observe(node, {
    subtree: true, childList: true, characterData: true, attributes: true });
  watch(el);
  if (el.shadowRoot) watch(el.shadowRoot);
  el.querySelectorAll("*").forEach((c) => c.shadowRoot && watch(c.shadowRoot));
  if (el.shadowRoot) el.shadowRoot.querySelectorAll("*").forEach((c) => c.shadowRoot && watch(c.shadowRoot));
}"""


def test_playing_a_series_moves_the_points_and_ends_on_the_static_map(
    browser, demo_server, artifacts
):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_explorer(page, f"{demo_server.url}?projection={MEMBERS[0]}")
    player = page.locator(".embviz-series-player")
    player.wait_for(timeout=60_000)
    page.locator(".embviz-series-caption").get_by_text("1 of 5 checkpoints").wait_for(
        timeout=30_000
    )
    # The series' quality curve (k-NN accuracy, trustworthiness, jumps per checkpoint) is drawn.
    page.locator(".embviz-series-curve canvas").first.wait_for(timeout=60_000)
    first = _settled(page, "the first member's map")

    # Play: the points move (frames of the motion differ from both ends), then the last member.
    statuses: list[str] = []
    frames: list[np.ndarray] = []
    caption = page.locator(".embviz-series-caption")
    # The page itself notes each member its caption names, as it changes: looking from here
    # (a screenshot a look while the points move) missed members shown briefly on a loaded
    # machine.
    caption.element_handle().evaluate(_NOTE_MEMBERS)
    player.locator("button.play").click()
    # The first motion of a fresh server may wait for its kernels (warming up beside it).
    wait_until(lambda: page.get_by_text(MOVING).count() > 0, 90, "the motion", page=page)
    deadline = time.monotonic() + 120
    while not (caption.get_by_text("5 of 5").count() and not page.get_by_text(MOVING).count()):
        assert time.monotonic() < deadline, "the series did not play to its end"
        # The status may change between the look and the read: the read does not wait for it.
        moving = page.get_by_text(MOVING).all_inner_texts()
        if moving:
            statuses.append(moving[0])
            frames.append(_map_pixels(page))
        else:
            page.wait_for_timeout(100)
    seen = page.evaluate("() => window.__embvizMembers")
    # The members in order, from the first to the last (a loaded server may skip one: the
    # fresh clone beside a soak showed 000, 002, 003, 004).
    assert seen == sorted(set(seen)) and seen[0] == "epoch-000" and seen[-1] == "epoch-004", seen
    assert len(seen) >= 3, seen
    wait_until(lambda: f"projection={MEMBERS[-1]}" in page.url, 30, "the URL", page=page)
    page.get_by_text(DEMO_STATUS).first.wait_for(timeout=30_000)
    last = _settled(page, "the last member's map")
    page.screenshot(path=str(artifacts / "series_1_played.png"))
    assert statuses, "no frame of the motion was seen"
    moving = [f for f in frames if not np.array_equal(f, first) and not np.array_equal(f, last)]
    assert moving, f"the map did not move between members ({len(frames)} frames seen)"
    assert not np.array_equal(first, last)

    # The static map of the last member (drawn without motion: back to the first member and
    # forward again with "move the points" off) is the picture the motion ended on.
    page.locator(".embviz-animate input").click()
    player.locator("button.first").click()
    page.locator(".embviz-series-caption").get_by_text("1 of 5 checkpoints").wait_for(
        timeout=30_000
    )
    _settled(page, "the first member's map again")
    player.locator("button.last").click()
    page.locator(".embviz-series-caption").get_by_text("5 of 5 checkpoints").wait_for(
        timeout=30_000
    )
    assert not page.get_by_text(MOVING).count()
    static = _settled(page, "the static map of the last member")
    page.screenshot(path=str(artifacts / "series_2_static.png"))
    differ = np.abs(static - last).max(axis=2) > 40
    assert differ.mean() < 0.0005, f"{differ.mean():.4f} of the map's pixels differ"
    page.close()
    assert not errors, errors
