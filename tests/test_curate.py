"""The explorer's curation column on the real demo: similar samples, top-N views, sorting,
tagging from two sessions at once, exports of exactly the grid's samples, and the split
comparison with its difference view."""

from __future__ import annotations

import io
import shutil
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embviz.dataset import open_dataset


@pytest.fixture(scope="module")
def curated(demo_dataset, tmp_path_factory):
    """A copy of the demo (tags are written into it) with a known ``scores`` table."""
    root = tmp_path_factory.mktemp("curate") / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache", "tags", "reports"))
    ds = open_dataset(root)
    ids = ds.read_arrow("samples", columns=["id"]).column("id").to_numpy()
    rng = np.random.default_rng(0)
    group = np.full(len(ids), -1, dtype=np.int64)
    group[:6] = [7, 7, 7, 3, 3, -1]  # a group of three, a group of two
    w = ds.writer("scores")
    w.write_part(
        0,
        pa.table(
            {
                "id": ids,
                "outlier_score": rng.random(len(ids)).astype(np.float32),
                "label_issue_score": rng.random(len(ids)).astype(np.float32),
                "duplicate_group": group,
            }
        ),
    )
    w.commit()
    return root


@pytest.fixture
def explorer(curated):
    import panel as pn  # noqa: F401  (the explorer needs an extension-free Panel)

    from embviz.app.explorer import Explorer

    return Explorer(curated)


def test_top_n_views_rank_by_score_and_group_duplicates(explorer, curated):
    ds = open_dataset(curated)
    scores = ds.read_arrow("scores").to_pandas().set_index("id")
    c = explorer.curator
    assert list(c.param.score.objects)[:2] == ["label_issue_score", "outlier_score"]
    c.show_top("outlier_score", 25)
    expected = scores["outlier_score"].sort_values(ascending=False).index[:25].to_numpy()
    np.testing.assert_array_equal(explorer.grid.ids, expected)
    top = float(scores["outlier_score"].max())
    assert explorer.grid.captions[0] == f"outlier {top:.3f}"
    assert len(explorer.map.highlight_rows) == 25  # outlined on the map

    c.show_top("duplicate_group", 10)
    got = list(explorer.grid.ids)
    assert set(got[:3]) == set(scores.index[:3]) and set(got[3:]) == set(scores.index[3:5])
    assert explorer.grid.captions[0] == "group 7"


def test_sort_the_grid_by_a_score(explorer, curated):
    ids = np.arange(40, 80)
    explorer.select(ids)
    explorer.curator.sort_grid("label_issue_score")
    scores = open_dataset(curated).read_arrow("scores").to_pandas().set_index("id")
    values = scores.loc[explorer.grid.ids, "label_issue_score"].to_numpy()
    assert set(explorer.grid.ids) == set(ids)
    assert (np.diff(values) <= 0).all()


def test_similar_to_the_open_sample_fills_the_grid_nearest_first(explorer):
    explorer.session.detail = 10
    c = explorer.search
    c.k = 30
    c.search_ids([10], what="the open sample")
    assert "error" not in c.message.lower(), c.message
    ids = np.asarray(explorer.grid.ids)
    assert len(ids) == 30 and 10 not in ids
    d = [float(t.split("=")[1]) for t in explorer.grid.captions]
    assert d == sorted(d) and d[0] >= 0
    assert explorer.grid.noun == "results"
    # The demo's digits: most of a digit's nearest samples carry its label.
    labels = explorer.selected["label"].to_numpy()
    own = explorer.session.store.categorical["label"]
    mine = own[1][own[0][explorer.session.store.row_of(np.array([10]))[0]]]
    assert (labels == mine).mean() >= 0.7


def test_two_sessions_tag_at_once_and_every_tag_survives(curated):
    from embviz.app.explorer import Explorer
    from embviz.tags import TagStore

    sessions = [Explorer(curated), Explorer(curated)]
    chunks = [np.arange(1000, 1400), np.arange(1200, 1600)]  # overlapping on 1200..1399
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(e, ids, tag):
        try:
            start.wait()
            for part in np.array_split(ids, 20):
                e.select(part)
                e.curator.param.update(tag="custom", tag_value=tag)
                assert e.curator.add_tag() == len(part), e.curator.message
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(e, ids, f"by-{i}"))
        for i, (e, ids) in enumerate(zip(sessions, chunks, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    store = TagStore(curated)  # a fresh reader: what is on disk
    for i, ids in enumerate(chunks):
        assert set(store.ids(f"by-{i}").tolist()) == set(ids.tolist())


def test_export_holds_exactly_the_grid_samples_and_cleaning_applies_tags(explorer):
    c = explorer.curator
    pick = np.array([5, 77, 3, 901, 42])
    explorer.select(pick)
    c.param.update(export_what="grid samples", export_format="parquet")
    table = pq.read_table(io.BytesIO(c.export_bytes()))
    np.testing.assert_array_equal(table.column("id").to_numpy(), pick)
    c.export_format = "csv"
    assert c._download.filename.endswith("-selection.csv")
    csv_ids = [int(line.split(",")[0]) for line in c.export_bytes().decode().splitlines()[1:]]
    assert sorted(csv_ids) == sorted(pick.tolist())

    # Exclude two of them, relabel one: the cleaned export drops and relabels.
    explorer.select(pick[:2])
    c.param.update(tag="exclude", apply_to="grid")
    assert c.add_tag() == 2
    explorer.session.detail = 3
    c.param.update(tag="relabel", tag_value="seven", apply_to="open sample")
    assert c.add_tag() == 1
    c.param.update(export_what="cleaned dataset", export_format="parquet")
    clean = pq.read_table(io.BytesIO(c.export_bytes())).to_pandas().set_index("id")
    assert 5 not in clean.index and 77 not in clean.index
    assert clean.loc[3, "label"] == "seven" and clean.loc[3, "original_label"] != "seven"
    # The detail panel lists the open sample's tags.
    assert "relabel: seven" in explorer.details.sample["tags"]
    # A relabel without a label is refused with a message, not an exception.
    c.param.update(tag="relabel", tag_value="")
    assert c.add_tag() == 0 and "label" in c.message


def test_compare_splits_reports_auc_and_difference_view(explorer):
    cmp = explorer.compare
    assert cmp.column == "split" and {cmp.a, cmp.b} == {"train", "test"}
    cmp.compare()
    assert cmp.auc is not None and 0.3 < cmp.auc < 0.7  # a random split: no shift
    cmp.show_difference = True
    assert explorer.session.color_by == "split" and explorer.session.difference == [cmp.a, cmp.b]
    explorer.map.refresh(wait=True)
    assert explorer.map.last.frame.counts  # drawn, with per-group counts for the legend
    cmp.show_difference = False
    assert explorer.session.difference == []


def test_ctrl_click_marks_cards_and_tags_only_those(explorer, curated):
    from embviz.tags import TagStore

    explorer.select(np.arange(200, 230))
    grid = explorer.grid
    first_page = [item["id"] for item in grid.grid.items]
    # What the browser sends for ctrl/shift-clicks on two cards, one of them twice (unmarked).
    for card in (first_page[0], first_page[3], first_page[5], first_page[5]):
        grid.grid._handle_msg({"action": "mark", "id": card})
    assert grid.marked == [first_page[0], first_page[3]]
    assert grid.grid.marked == grid.marked  # painted in the browser
    c = explorer.curator
    c.param.update(tag="custom", tag_value="marked-only", apply_to="marked")
    assert c.add_tag() == 2
    assert TagStore(curated).ids("marked-only").tolist() == sorted(grid.marked)
    explorer.select(np.arange(300, 310))  # a new selection clears the marks
    assert grid.marked == []
    assert c.add_tag() == 0 and "marked" in c.message
