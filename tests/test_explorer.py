"""The Explorer component in Python (no browser) on the real MNIST demo: state -> frames."""

from __future__ import annotations

import numpy as np
import pytest

from embviz.app.explorer import Explorer, projection_choices
from embviz.dataset import open_dataset
from embviz.render.store import View, load_store


@pytest.fixture(scope="module")
def explorer(demo_dataset):
    return Explorer(demo_dataset)


def points(ex: Explorer) -> int:
    return ex.map.last.frame.points


def test_opens_on_a_neighbour_preserving_map_of_every_point(explorer, demo_dataset):
    ds = open_dataset(demo_dataset)
    groups = projection_choices(ds)
    assert explorer.session.embedding in groups
    assert ds.meta(f"projections/{explorer.session.projection}")["method"] == "umap"
    assert points(explorer) == 5000
    assert sorted(explorer.legend.items[i]["name"] for i in range(10)) == [
        str(d) for d in range(10)
    ]
    assert sum(item["count"] for item in explorer.legend.items) == 5000
    assert "5,000 of 5,000 points in view" in explorer.session.status


def test_sessions_share_one_copy_of_the_points(explorer, demo_dataset):
    other = Explorer(demo_dataset)
    assert other.session.store is explorer.session.store
    assert load_store(demo_dataset, explorer.session.projection) is explorer.session.store


def test_hidden_classes_filters_and_colouring(demo_dataset):
    ex = Explorer(demo_dataset)
    ex.session.hidden = ["1", "7"]
    ex.map.refresh(wait=True)
    assert points(ex) == 4000
    ex.session.hidden = []
    ex.session.filters = {"split": ["test"]}
    ex.map.refresh(wait=True)
    n_test = int((open_dataset(demo_dataset).read_pandas("samples")["split"] == "test").sum())
    assert points(ex) == n_test < 5000
    ex.session.filters = {}
    ex.session.color_by = "width"
    ex.map.refresh(wait=True)
    assert ex.map.last.frame.mode == "numeric" and ex.map.last.frame.span is not None
    assert not ex.legend.visible
    ex.session.color_by = "density"
    ex.map.refresh(wait=True)
    assert ex.map.last.frame.mode == "density" and points(ex) == 5000


def test_switching_projection_and_embedding(demo_dataset):
    ex = Explorer(demo_dataset)
    ds = open_dataset(demo_dataset)
    groups = projection_choices(ds)
    for embedding, choices in groups.items():
        ex.session.embedding = embedding
        for name in choices.values():
            ex.session.projection = name
            assert ex.session.store is load_store(demo_dataset, name)
            assert points(ex) == 5000
    assert len(groups) >= 2  # the demo maps two layers


def test_view_selection_and_detail(demo_dataset):
    ex = Explorer(demo_dataset)
    e = ex.session.store.extent
    ex.session.view = [e.x0, (e.x0 + e.x1) / 2, e.y0, (e.y0 + e.y1) / 2]
    inside = ex.session.store.count_in(View(*ex.session.view))
    assert points(ex) == inside < 5000
    # Box selection fills the grid; label counts come from the same rows.
    rows = ex.map.select({"type": "rect", "x0": e.x0, "x1": e.x1, "y0": e.y0, "y1": e.y1})
    ex.session.show(ex.session.store.ids[rows])
    assert len(ex.grid.ids) == 5000 and len(ex.grid.grid.items) == 12
    # A tap on a point opens its record, the full-image URL and neighbours in the embedding.
    row = int(rows[0])
    tapped = ex.session.store.nearest(
        float(ex.session.store.x[row]), float(ex.session.store.y[row]), 1e-6
    )
    ex.session.open(int(ex.session.store.ids[tapped]))
    sid = int(ex.session.store.ids[row])
    assert ex.session.detail == sid and ex.details.visible_detail
    assert (
        ex.details.sample["id"] == sid and ex.details.sample["neighbours in"] == "embedding index"
    )  # the demo recipe builds it
    assert ex.details.image_src.endswith(f"/{sid}")
    near = ex.details.neighbours
    assert len(near) == 8 and all(n["id"] != sid for n in near)
    # Neighbours in the embedding mostly share the label (the demo keeps digits apart).
    labels = open_dataset(demo_dataset).read_pandas("samples").set_index("id")["label"]
    agree = np.mean([labels[n["id"]] == labels[sid] for n in near])
    assert agree >= 0.5


def test_python_selection_comes_back_and_shows_on_the_map(demo_dataset):
    import embviz

    ex = embviz.explore(embviz.open(demo_dataset))
    assert isinstance(ex, embviz.Explorer)
    ids = [3, 10, 4000, 17]
    ex.select(ids)
    sel = ex.selected
    assert sel["id"].tolist() == ids
    assert {"label", "split", "uri"} <= set(sel.columns)
    assert len(ex.map.last.highlight["x"]) == len(ids)  # outlined on the full view
    ex.select([])
    assert ex.selected.empty


def test_detail_neighbours_come_from_the_saved_index_once_built(demo_dataset, tmp_path):
    import shutil

    from embviz.pipeline.index import index

    root = tmp_path / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache", "index"))
    ex = Explorer(root)
    ex.session.detail = 42
    assert ex.details.sample["neighbours in"] == "embedding"
    exact = [n["id"] for n in ex.details.neighbours]
    source = open_dataset(root).meta(f"projections/{ex.session.projection}")["source"]
    index(root, embedding=source.removeprefix("embeddings/"), k=10, progress=False)
    ex.session.detail = -1
    ex.session.detail = 42
    assert ex.details.sample["neighbours in"] == "embedding index"
    assert [n["id"] for n in ex.details.neighbours] == exact  # exact index: the same answer


def test_the_side_column_builds_curation_and_sample_panels_only_when_used(demo_dataset):
    """A page's side column (built on the event loop every session shares) makes the View
    tab's controls; the curation panels wait for their tab, the sample panels for a listed or
    opened sample (or a picked layer)."""
    ex = Explorer(demo_dataset)
    side, _below, fill = ex.deferred()
    fill()
    made = lambda: {k for k in ("curator", "compare", "search", "samples") if k in vars(ex)}  # noqa: E731
    assert made() == set()
    tabs = side.objects[0]
    tabs.active = 1  # the Curate tab
    assert {"curator", "compare"} <= made() and "samples" not in made()
    assert len(tabs[1].objects) == 1
    tabs.active = 0
    tabs.active = 1  # built once
    assert len(tabs[1].objects) == 1
    ex.session.detail = int(ex.session.store.ids[0])
    assert "samples" in made()


def test_the_warm_up_counts_the_filters_so_a_side_column_counts_nothing(demo_dataset, monkeypatch):
    """Filter counts and histograms of a big map took 1-2 s of the event loop when the first
    page's side column was built; :func:`embviz.app.filters.summarize` (the warm-up, a tag
    write's build) computes them beforehand, once per column."""
    from embviz.app import filters
    from embviz.render.store import clear_stores

    clear_stores()  # columns of their own: no summary kept from other tests
    ex = Explorer(demo_dataset)
    filters.summarize(ex.session.store)
    computed = []
    counts, histogram = filters.category_counts, filters._range_and_histogram
    monkeypatch.setattr(filters, "category_counts", lambda *a: computed.append(1) or counts(*a))
    monkeypatch.setattr(
        filters, "_range_and_histogram", lambda *a: computed.append(1) or histogram(*a)
    )
    side, _below, fill = ex.deferred()
    fill()
    assert ex.filters.widgets and not computed
    clear_stores()
