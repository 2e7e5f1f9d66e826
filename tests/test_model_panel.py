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
