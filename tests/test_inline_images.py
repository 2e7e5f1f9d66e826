"""Images inside the data (the notebook's mode) on the real MNIST demo: data URIs, within budget."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

import embviz
from embviz.app.session import Session
from embviz.render.overlay import IMAGE_BUDGET, SPRITE_LIMIT
from embviz.render.store import View

WEBP = "data:image/webp;base64,"


def decode(src: str) -> Image.Image:
    assert src.startswith(WEBP), src[:40]
    img = Image.open(io.BytesIO(base64.b64decode(src[len(WEBP) :])))
    img.load()
    return img


def dense_view(store, limit: int) -> View:
    """A square around the densest point holding at most ``limit`` points (and some)."""
    cx, cy = float(np.median(store.x)), float(np.median(store.y))
    e = store.extent
    half = max(e.x1 - e.x0, e.y1 - e.y0) / 2
    while half > 1e-6:
        view = View(cx - half, cx + half, cy - half, cy + half)
        if store.count_in(view) <= limit:
            return view
        half *= 0.8
    raise AssertionError("no view small enough")


@pytest.fixture(scope="module")
def explorer(demo_dataset):
    return embviz.explore(demo_dataset)


def test_the_notebook_explorer_sends_images_as_data_uris(explorer):
    s = explorer.session
    assert s.images == "inline" and s.has_images
    view = dense_view(s.store, SPRITE_LIMIT)
    s.view = [view.x0, view.x1, view.y0, view.y1]
    res = explorer.map.last
    assert res.request.view == view
    sprites = res.sprites["thumb"]
    assert 0 < len(sprites) == res.images <= s.store.count_in(view)
    for src in sprites[:20]:
        assert decode(src).size[0] > 0
    assert not any("/embviz/" in t for t in sprites + res.points["thumb"])
    assert res.bytes <= IMAGE_BUDGET
    assert f"{res.images:,} images" in s.status and "KB" in s.status


def test_grid_detail_and_neighbours_are_inline(explorer, demo_dataset):
    s = explorer.session
    samples = embviz.open(demo_dataset).read_pandas("samples", columns=["id", "width", "height"])
    ids = samples["id"].to_numpy()[:30]
    explorer.select(ids)
    assert len(explorer.selected) == 30
    assert all(s.thumb_url(int(i)).startswith(WEBP) for i in ids[:12])
    detail = s.describe(int(ids[0]))
    big = decode(detail["image"])  # the original image re-encoded (not the thumbnail, no URL)
    assert big.size == (samples["width"][0], samples["height"][0])
    assert all(n["src"].startswith(WEBP) for n in detail["neighbours"])


def test_a_server_session_keeps_route_urls(demo_dataset):
    s = Session(demo_dataset)
    assert s.images == "routes"
    assert s.thumb_url(0).startswith("/embviz/thumb/")
    assert s.image_url(0).startswith("/embviz/image/")
    with pytest.raises(ValueError):
        Session(demo_dataset, images="cdn")


def test_thumbnail_batches_match_single_reads(explorer, demo_dataset):
    s = explorer.session
    ids = np.array([3, 1, 3, 10**12, 2])  # repeated, unknown and out-of-order ids
    batch = s.thumb_urls(ids)
    assert batch[3] == "" and batch[0] == batch[2]
    assert batch == [s.thumb_url(int(i)) for i in ids]
