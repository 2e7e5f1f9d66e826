"""Activations: channels ranked by peak x focus, the mosaic in rank order, a vector layer as a strip,
the cache beside the dataset, named errors, and the panel under the detail view (no browser)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from embviz import activations as act
from embviz.dataset import Dataset, vectors_to_table
from embviz.errors import DatasetError, ModelError

MODEL, SIZE, EMBEDDING = "efficientnet_lite0", 128, "efficientnet_lite0.blocks.5"


@pytest.fixture(scope="module")
def model():
    """The real default model at 128 px on the CPU with one torch thread (a single image gains
    nothing from a second one on the shared 2-core machine)."""
    from embviz.models import cached_embedder

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield cached_embedder(MODEL, image_size=SIZE, device="auto")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return Image.fromarray(data.chelsea()).resize((225, 150))


@pytest.fixture
def tiny(tmp_path, photo):
    """Three samples with image files, an embedding made by the default model, a 2D map of it."""
    from skimage import data

    images = [photo, Image.fromarray(data.coffee()).resize((150, 100)), photo.rotate(90)]
    paths = []
    for i, im in enumerate(images):
        paths.append(str(tmp_path / f"img{i}.png"))
        im.save(paths[-1])
    ds = Dataset.create(tmp_path / "ds", name="tiny")
    ids = np.arange(3)
    w = ds.writer("samples")
    w.write_part(0, pa.table({"id": ids, "label": ["cat", "cup", "cat"], "uri": paths}))
    w.commit()
    w = ds.writer(f"embeddings/{EMBEDDING}")
    w.write_part(0, vectors_to_table(ids, np.random.default_rng(0).normal(size=(3, 8))))
    w.commit(meta={"model": MODEL, "layer": "blocks.5", "image_size": SIZE})
    w = ds.writer(f"projections/{EMBEDDING}.umap2d")
    xy = np.random.default_rng(1).normal(size=(3, 2)).astype("f4")
    w.write_part(0, pa.table({"id": ids, "x": xy[:, 0], "y": xy[:, 1]}))
    w.commit(meta={"dims": 2, "method": "umap", "source": f"embeddings/{EMBEDDING}"})
    return ds.reload(), paths


def test_peak_focus_puts_strong_local_channels_first():
    maps = np.zeros((4, 5, 5), np.float32)
    maps[0] = 3.0  # strong everywhere: a flat map that points at nothing
    maps[1, 2, 2] = 3.0  # strong in one cell
    maps[2, 2, 2] = 0.1  # one faint cell
    maps[3] = -1.0  # never fires
    scores = act.peak_focus(maps)
    assert list(np.argsort(-scores)) == [1, 2, 0, 3]
    assert scores[1] == pytest.approx(3.0) and scores[0] == pytest.approx(0.0, abs=1e-6)
    assert scores[3] == 0.0


def test_map_layer_is_ranked_and_tiled_in_rank_order(model, photo):
    acts = act.activations(model, photo, "blocks.5")
    channels, h, w = acts.values.shape
    assert acts.kind == "maps" and acts.shape == (channels, h, w) and h >= 2
    assert acts.values.dtype == np.float32 and sorted(acts.order) == list(range(channels))
    ranked = acts.scores[acts.order]
    assert np.all(np.diff(ranked) <= 0) and ranked[0] > 0
    assert acts.input_size == (SIZE, SIZE) and acts.box[0] > 0  # the centre crop of a wide photo

    picture, cells = act.mosaic(acts, top=20, cols=8, cell=16, gap=2)
    assert cells == [int(c) for c in acts.order[:20]]
    assert picture.size == (8 * 18, 3 * 18) and picture.mode == "RGB"
    pixels = np.asarray(picture).astype(int)
    # Each cell is its channel normalised to its own maximum: the hottest colour shows in each.
    for i, channel in enumerate(cells):
        r, c = divmod(i, 8)
        tile = pixels[r * 18 : r * 18 + 16, c * 18 : c * 18 + 16]
        assert tile.sum(axis=2).max() >= 3 * 250, channel
    assert (pixels[2 * 18 + 1 :, 4 * 18 :] == 255).all()  # no cells past the 20th

    over = act.channel_overlay(photo, acts, cells[0])
    assert over.size == (448, 299) and over.mode == "RGB"
    colour = np.asarray(over).astype(int)
    # Left of the centre crop the model saw nothing: the zero colour (black) only.
    left, right = (round(v * 448 / photo.width) for v in (acts.box[0], acts.box[2]))
    assert colour[:, : left - 1].max() == 0 and colour[:, left + 2 : right - 2].max() > 200


def test_pooled_layer_is_a_vector_strip(model, photo):
    acts = act.activations(model, photo, "pooled")
    assert acts.kind == "vector" and acts.values.shape == (1280,) and acts.shift == 0.0
    assert np.all(np.diff(acts.values[acts.order]) <= 0)
    with pytest.raises(ValueError, match="vector"):
        act.mosaic(acts)


def test_bad_layer_and_missing_image_are_named(model, photo, tiny):
    with pytest.raises(ModelError, match=rf"model '{MODEL}' has no layer 'blocks\.99'"):
        act.activations(model, photo, "blocks.99")
    ds, paths = tiny
    cache = act.ActivationCache(ds, MODEL, image_size=SIZE)
    Path(paths[1]).unlink()
    with pytest.raises(DatasetError, match=rf"sample 1: cannot read its image {paths[1]}"):
        cache.get(1, "blocks.5")
    assert act.dataset_model(ds, EMBEDDING) == (MODEL, SIZE)
    with pytest.raises(DatasetError, match="no model recorded for embedding 'other'"):
        act.dataset_model(ds, "other")


def test_cache_hit_torn_entry_and_no_cache(model, tiny):
    ds, _ = tiny
    cache = act.ActivationCache(ds, MODEL, image_size=SIZE)
    first = cache.get(0, "bn2.act")
    path = cache.path(0, "bn2.act")
    assert path.exists() and path.parent == ds.root / "cache" / "activations"
    again = cache.get(0, "bn2.act")
    assert again.seconds == first.seconds  # read back, not computed
    np.testing.assert_array_equal(again.values, first.values)
    np.testing.assert_array_equal(again.order, first.order)
    assert again.box == first.box and again.shift == first.shift
    assert cache.path(0, "blocks.5") != path != cache.path(2, "bn2.act")
    path.write_bytes(path.read_bytes()[:100])  # torn: computed again and replaced
    fresh = cache.get(0, "bn2.act")
    assert fresh.seconds != first.seconds and path.stat().st_size > 1000
    np.testing.assert_allclose(fresh.values, first.values, atol=1e-5)
    path.unlink()
    cache.get(0, "bn2.act", cache=False)
    assert not path.exists()


def test_panel_shows_the_grid_and_a_tapped_channel_goes_over_the_image(model, tiny):
    import holoviews as hv

    from embviz.app.samples_panel import SamplePanels
    from embviz.app.session import Session

    ds, paths = tiny
    session = Session(ds)  # no document: background work runs at once
    panels = SamplePanels(session)
    panel = panels.activations
    assert not panel.__panel__().visible  # hidden until a sample is open
    session.open(0)
    assert panel.__panel__().visible and panel.plot is None
    panel.run()
    element = panel.plot.object
    assert isinstance(element, hv.RGB)
    assert panel.layer == "bn2.act" == panel.picker.value  # the saliency layer by default
    assert "blocks.5" in panel.picker.options and "pooled" in panel.picker.options
    assert "top 64 of 1,280 channels" in panel.message.object

    panel.select_channel(7)
    assert panels.details.overlay_src.startswith("data:image/png;base64,")
    assert panels.details.overlay_caption.startswith("layer bn2.act, channel 7 (rank ")
    # A tap on the first cell (top left of the image's bounds) overlays the best channel.
    x0, y0, x1, y1 = element.bounds.lbrt()
    taps = [t for t in hv.streams.Stream.registry[element] if isinstance(t, hv.streams.Tap)]
    taps[0].event(x=x0 + 0.5, y=y1 - 0.5)
    best = int(panel.shown.order[0])
    assert panels.details.overlay_caption.startswith(f"layer bn2.act, channel {best} (rank 1,")
    taps[0].event(x=x0 + 1.5, y=y1 - 1.5)  # second row, second column: the 10th best
    tenth = int(panel.shown.order[9])
    assert panels.details.overlay_caption.startswith(f"layer bn2.act, channel {tenth} (rank 10,")

    panel.layer = "pooled"  # the explorer's layer picker: the shown grid follows
    assert isinstance(panel.plot.object, hv.HeatMap)
    assert len(panel.plot.object) == 64 and "neurons" in panel.message.object

    panel.layer = "nope"
    assert "has no layer &#x27;nope&#x27;" in panel.message.object  # escaped, in red
    assert "b00020" in panel.message.object
    panel.layer = "bn2.act"
    session.open(1)
    assert panels.details.overlay_src == "" and not panel.plot.visible
    Path(paths[1]).unlink()
    panel.run()  # the session keeps working: the panel names the missing file
    assert f"cannot read its image {paths[1]}" in panel.message.object
    session.open(2)
    panel.run()
    assert panel.plot.visible and "bn2.act" in panel.message.object
