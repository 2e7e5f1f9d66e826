"""The Model tab in Python (no browser) on the demo: confusion counts, and score histograms
whose selected range filters the map."""

from __future__ import annotations

import pytest

from embviz.app.explorer import Explorer
from embviz.dataset import open_dataset
from embviz.samples import read_sample_columns


@pytest.fixture(scope="module")
def explorer(demo_dataset):
    if not open_dataset(demo_dataset).has("predictions"):
        pytest.skip("this demo dataset was built before the predict step; rebuild it")
    return Explorer(demo_dataset)


def test_a_dragged_score_range_filters_the_map(explorer, demo_dataset):
    import holoviews as hv

    ex = explorer
    ex.model.show()
    hist = ex.model.scores
    assert {"confidence", "margin", "entropy"} <= set(hist.columns)
    panes = hist.__panel__().objects
    assert len(panes) == len(hist.columns)
    assert all(isinstance(p.object, hv.Histogram) for p in panes)
    counts = panes[0].object.dimension_values("samples")
    assert counts.sum() == 5000  # every sample in one bar of the confidence histogram

    conf = read_sample_columns(open_dataset(demo_dataset), ["confidence"]).column("confidence")
    conf = conf.to_numpy(zero_copy_only=False)
    hist.select_range("confidence", 0.2, 0.6)
    assert ex.session.filters["confidence"] == [0.2, 0.6]
    want = int(((conf >= 0.2) & (conf <= 0.6)).sum())
    assert 0 < want < 5000
    assert ex.map.last.frame.points == want
    hist._streams["confidence"].event(boundsx=None)  # the plot's reset
    assert "confidence" not in ex.session.filters
    assert ex.map.last.frame.points == 5000


def test_confusion_matrix_sums_to_the_rows_and_a_cell_lists_its_samples(explorer, demo_dataset):
    from embviz.app.model_panel import confusion

    t = read_sample_columns(open_dataset(demo_dataset), ["label", "predicted_label"]).to_pandas()
    counts, rows, cols = confusion(t.label, t.predicted_label)
    assert counts.sum() == len(t) == 5000
    explorer.model.select_cell("4", "4")
    assert explorer.session.grid_title == "Label 4, predicted 4"
    want = counts[rows.index("4"), cols.index("4")]
    assert len(explorer.session.shown_ids) == want > 0


def test_top_k_bars_and_a_clicked_bar_explains_that_class(explorer, demo_dataset):
    import holoviews as hv

    t = read_sample_columns(open_dataset(demo_dataset), ["label", "predicted_label"]).to_pandas()
    wrong = t[t.label != t.predicted_label].iloc[0]
    explorer.session.open(int(wrong.id))
    details = explorer.details
    assert len(details.predictions) == 10
    bars = details.top_k_bars()
    assert isinstance(bars, hv.Bars) and len(bars) == 10
    assert bars.dimension_values("class")[0] == wrong.predicted_label  # most probable first
    assert bars.dimension_values("own").sum() <= 1  # the own label, when in the top-k
    details.picked_class = str(wrong.label)  # as a click on that bar does
    caption = details.overlay_caption
    assert f"class {wrong.label} " in caption and details.overlay_src.startswith("data:image/png")


def test_hover_cards_show_the_top_3_as_bars_once_zoomed_in(demo_dataset):
    ex = Explorer(demo_dataset)
    store = ex.session.store
    x, y = float(store.x[0]), float(store.y[0])
    # More points than get sprites (their cards are sprites'), fewer than get tooltips.
    ex = Explorer(demo_dataset, view=[x - 2.5, x + 2.5, y - 2.5, y + 2.5])
    points = ex.map.last.points
    assert points is not None and 0 < len(points["id"]) <= ex.map.hover_limit
    text = points["text"][0]
    lines = text.split("predicted:\n", 1)[1].splitlines()[:3]
    probs = [float(line.split()[1]) for line in lines]
    assert all(line.startswith(("▇", "░")) for line in lines) and probs == sorted(probs)[::-1]
