"""Cluster names and density contours over the explorer's map (the demo runs `cluster`)."""

from __future__ import annotations

import pytest

from embviz.app.explorer import Explorer
from embviz.dataset import open_dataset
from embviz.render.store import View


@pytest.fixture(scope="module")
def explorer(demo_dataset):
    ds = open_dataset(demo_dataset)
    if not any(k.startswith("clusters/") for k in ds.tables):
        pytest.skip("this demo dataset was built before the cluster step; rebuild it")
    return Explorer(demo_dataset)


def test_cluster_names_follow_the_zoom_and_contours_toggle(explorer, demo_dataset):
    from embviz.clusters import read_clusters

    ex = explorer
    names = set(read_clusters(open_dataset(demo_dataset), ex.session.projection).name)
    full = ex.map.last.labels
    assert full is not None and len(full["text"]) > 0 and set(full["text"]) <= names
    assert ex.map.last.contours is None  # off by default

    # Zoomed into a quarter of the map: names of finer clusters, all inside the view.
    v = ex.map.last.frame.view
    cx, cy = (v.x0 + v.x1) / 2, (v.y0 + v.y1) / 2
    quarter = View(v.x0, cx, v.y0, cy)
    ex.map_panel.map.refresh(quarter, wait=True)
    zoomed = ex.map.last.labels
    assert zoomed is not None and set(zoomed["text"]) <= names
    assert all(quarter.x0 <= x <= quarter.x1 for x in zoomed["x"])

    ex.session.contours = True
    lines = ex.map.last.contours
    assert lines is not None and len(lines["xs"]) > 0
    ex.session.param.update(contours=False, cluster_labels=False)
    assert ex.map.last.labels is None and ex.map.last.contours is None
    ex.session.cluster_labels = True
