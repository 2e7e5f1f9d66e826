"""Named clusters: the ``cluster`` step on the demo, their names, label placement, contours."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pyarrow as pa
import pytest
from test_search import clip_dataset, tiny_clip  # noqa: F401 - the tiny offline CLIP fixtures

from embviz.clusters import (
    cluster_labels,
    clusters_key,
    label_boxes,
    level_column,
    read_clusters,
)
from embviz.dataset import Dataset, open_dataset
from embviz.errors import ConfigError, DatasetError, ModelError
from embviz.render.store import View

UMAP = "efficientnet_lite0.blocks.5.umap2d"


@pytest.fixture(scope="module")
def clustered(demo_dataset, tmp_path_factory):
    """A copy of the demo (never the shared one) clustered on every 2D map, and the result."""
    from embviz.pipeline.cluster import cluster

    root = tmp_path_factory.mktemp("clusters") / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache"))
    return root, cluster(root)


def _points(ds: Dataset, projection: str):
    """The projection's points joined with their labels and cluster codes (pandas)."""
    frame = ds.read_pandas(f"projections/{projection}")
    codes = ds.read_pandas(clusters_key(projection))
    labels = ds.read_pandas("samples", columns=["id", "label"])
    assert np.array_equal(codes["id"].to_numpy(), frame["id"].to_numpy())  # same row order
    return frame.merge(codes, on="id").merge(labels, on="id", how="left")


def _tiny(tmp_path, xy: np.ndarray, labels=None, *, name: str = "toy.2d") -> Dataset:
    """A dataset of ``len(xy)`` samples with one 2D projection ``name`` and no embedding."""
    from embviz.pipeline.reduce import write_projection

    ds = Dataset.create(tmp_path / "tiny")
    ids = np.arange(len(xy))
    columns = {"id": pa.array(ids)}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.string())
    w = ds.writer("samples")
    w.write_part(0, pa.table(columns))
    w.commit()
    write_projection(ds, name, ids, xy, meta={"method": "given", "source": None})
    return ds


# -- the step on the demo -------------------------------------------------------------------------
def test_names_match_majority_labels_on_the_demo(clustered):
    root, result = clustered
    ds = open_dataset(root)
    assert set(result.tables) == {clusters_key(p) for p in ds.projections if "2d" in p}
    assert result.named_by[UMAP] == "label" and result.typical_space[UMAP] == "embedding"
    frame = read_clusters(ds, UMAP)
    points = _points(ds, UMAP)
    for level in range(3):
        col = level_column(level)
        counts = points.groupby([col, "label"]).size().unstack(fill_value=0)
        mine = frame[frame["level"] == level].set_index("cluster")
        assert sorted(mine.index) == sorted(counts.index)
        for c, row in mine.iterrows():
            votes = counts.loc[c]
            assert votes[row["label"]] == votes.max()  # a majority label (ties allowed)
            assert row["purity"] == pytest.approx(votes.max() / votes.sum())
            assert row["name"] == f"{row['label']} - {row['purity']:.0%}"
            assert row["size"] == votes.sum()
        assert list(mine.sort_index()["size"]) == sorted(mine["size"], reverse=True)
    # Quality: the finest clusters of the demo's UMAP are mostly one digit each.
    assert frame[frame["level"] == 2]["purity"].median() >= 0.85


def test_levels_nest_and_centres_lie_on_their_clusters(clustered):
    root, _ = clustered
    ds = open_dataset(root)
    frame = read_clusters(ds, UMAP)
    points = _points(ds, UMAP)
    sizes = [int((frame["level"] == lv).sum()) for lv in range(3)]
    assert sizes == [8, 32, 128]
    for level in (1, 2):
        fine, coarse = level_column(level), level_column(level - 1)
        parents = points.groupby(fine)[coarse].agg(["min", "max"])
        assert (parents["min"] == parents["max"]).all()  # every fine cluster in one coarse
        mine = frame[frame["level"] == level].set_index("cluster")
        assert (mine["parent"] == parents["min"].reindex(mine.index)).all()
    assert (frame[frame["level"] == 0]["parent"] == -1).all()
    x, y = points["x"].to_numpy(), points["y"].to_numpy()
    for row in frame.itertuples(index=False):
        assert x.min() <= row.x <= x.max() and y.min() <= row.y <= y.max()
        members = points[points[level_column(row.level)] == row.cluster]
        # The centre is one of the cluster's own points, and so is its typical sample.
        assert ((members["x"] == np.float32(row.x)) & (members["y"] == np.float32(row.y))).any()
        assert row.typical_id in set(members["id"])


def test_a_ring_is_centred_on_the_ring_and_unlabelled_clusters_get_numbers(tmp_path):
    from embviz.pipeline.cluster import cluster

    angle = np.random.default_rng(0).uniform(0, 2 * np.pi, 400)
    xy = np.column_stack([np.cos(angle), np.sin(angle)]) * 5.0
    ds = _tiny(tmp_path, xy)
    r = cluster(ds, sizes=[1, 4])
    assert r.named_by["toy.2d"] == "number" and r.typical_space["toy.2d"] == "map"
    frame = read_clusters(ds, "toy.2d")
    ring = frame[frame["level"] == 0].iloc[0]
    assert np.hypot(ring["x"], ring["y"]) == pytest.approx(5.0, abs=1e-3)  # not the middle
    assert ring["name"] == "cluster 0" and np.isnan(ring["purity"]) and ring["label"] is None


def test_reused_on_rerun_and_recomputed_when_forced(clustered):
    from embviz.pipeline.cluster import cluster

    root, _ = clustered
    ds = open_dataset(root)
    before = ds.table(clusters_key(UMAP))["dir"]
    again = cluster(root, projection=UMAP)
    assert again.reused and open_dataset(root).table(clusters_key(UMAP))["dir"] == before
    forced = cluster(root, projection=UMAP, force=True)
    assert not forced.reused
    ds = open_dataset(root)
    assert ds.table(clusters_key(UMAP))["dir"] != before
    assert ds.manifest["steps"][-1]["step"] == "cluster"


def test_the_map_colours_by_cluster_level(clustered):
    from embviz.render.store import clear_stores, load_store

    root, _ = clustered
    ds = open_dataset(root)
    clear_stores()
    store = load_store(ds, UMAP)
    frame = read_clusters(ds, UMAP)
    codes, names = store.categorical["cluster_l0"]
    assert len(names) == 8 and names[0] == f"0 {frame.loc[0, 'name']}"
    table = ds.read_pandas(clusters_key(UMAP)).set_index("id")
    assert np.array_equal(codes, table.loc[store.ids, "cluster_l0"].to_numpy())
    assert len(store.categories("cluster_l2")) == 128
    assert (
        "cluster_l0" not in load_store(ds, "efficientnet_lite0.blocks.5.umap3d", dims=3).categorical
    )


def test_report_has_a_clusters_section(clustered, tmp_path):
    from embviz.report import write_report

    root, _ = clustered
    r = write_report(root, tmp_path / "r.html")
    assert "clusters" in r.sections
    text = (tmp_path / "r.html").read_text()
    section = text.split('id="clusters"')[1].split("</section>")[0]
    frame = read_clusters(open_dataset(root), UMAP)
    coarse = frame[frame["level"] == 0]
    assert section.count("<figure") == len(coarse) == 8
    assert section.count("data:image/webp;base64,") == 8  # each with its typical image
    for name in coarse["name"]:
        assert f"<figcaption>{name}<br>" in section


def test_cli_clusters_one_projection_and_names_a_bad_one(clustered, capsys):
    from embviz.pipeline.cli import main

    root, _ = clustered
    assert main(["-q", "cluster", str(root), "--projection", UMAP]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tables"] == [clusters_key(UMAP)] and out["reused"]
    assert main(["cluster", str(root), "--projection", "nope.umap2d"]) == 2
    err = capsys.readouterr().err
    assert "no projection 'nope.umap2d'" in err and UMAP in err


# -- bad input ------------------------------------------------------------------------------------
def test_errors_name_the_projection_file_or_model(clustered, tmp_path):
    from embviz.pipeline.cluster import cluster

    root, _ = clustered
    with pytest.raises(DatasetError, match=r"is 3D; clusters are made on 2D maps"):
        cluster(root, projection="efficientnet_lite0.blocks.5.umap3d")
    with pytest.raises(DatasetError, match=r"no projection 'umap2'; 2D projections: \["):
        cluster(root, projection="umap2")
    empty = tmp_path / "prompts.txt"
    empty.write_text("# nothing but a comment\n\n")
    with pytest.raises(ConfigError, match=str(empty)):
        cluster(root, prompts=empty)
    with pytest.raises(ConfigError, match="missing.txt: cannot read"):
        cluster(root, prompts=tmp_path / "missing.txt")
    with pytest.raises(ModelError, match=r"'efficientnet_lite0'.*cannot embed text"):
        cluster(root, projection=UMAP, prompts=["a seven"])
    with pytest.raises(ValueError, match="ascending"):
        cluster(root, sizes=[32, 8])

    bare = Dataset.create(tmp_path / "bare")
    w = bare.writer("samples")
    w.write_part(0, pa.table({"id": pa.array([0, 1])}))
    w.commit()
    with pytest.raises(DatasetError, match=r"no 2D projection to cluster; run 'embviz reduce"):
        cluster(bare)
    ds = _tiny(tmp_path, np.random.default_rng(0).normal(size=(50, 2)))
    with pytest.raises(DatasetError, match=r"'toy.2d' has no clusters; run 'embviz cluster"):
        read_clusters(ds, "toy.2d")


def test_recipe_entry_is_validated(tmp_path):
    from embviz.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("dataset: d\nsource: {path: x}\ncluster: {levels: 2, sizes: [4, 16]}\n")
    assert load_recipe(path).cluster.sizes == [4, 16]
    path.write_text("dataset: d\nsource: {path: x}\ncluster: {level: 2}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'level' in ClusterConfig"):
        load_recipe(path)


# -- names on the map -----------------------------------------------------------------------------
def _no_overlap(labels, view, width, height) -> None:
    boxes = label_boxes(labels, view, width, height)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            assert a[1] <= b[0] or b[1] <= a[0] or a[3] <= b[2] or b[3] <= a[2], (i, j)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= width).all()
    assert (boxes[:, 2] >= 0).all() and (boxes[:, 3] <= height).all()


def test_labels_never_overlap_and_zooming_in_shows_finer_ones(clustered):
    root, _ = clustered
    ds = open_dataset(root)
    frame = read_clusters(ds, UMAP)
    pts = ds.read_pandas(f"projections/{UMAP}")
    full = View(pts["x"].min(), pts["x"].max(), pts["y"].min(), pts["y"].max())
    w, h = 900, 640
    shown = cluster_labels(frame, full, w, h)
    assert len(shown["text"]) >= 8
    _no_overlap(shown, full, w, h)
    fine_names = set(frame[frame["level"] == 2]["name"])
    zoomed_total = 0
    cx, cy = (full.x0 + full.x1) / 2, (full.y0 + full.y1) / 2
    for x0, x1 in ((full.x0, cx), (cx, full.x1)):
        for y0, y1 in ((full.y0, cy), (cy, full.y1)):
            quarter = View(x0, x1, y0, y1)  # 2x zoom into each quarter ...
            inner = View(x0, (x0 + x1) / 2, y0, (y0 + y1) / 2)  # ... and 4x
            for view in (quarter, inner):
                got = cluster_labels(frame, view, w, h)
                _no_overlap(got, view, w, h)
                assert all(view.x0 <= x <= view.x1 for x in got["x"])
                assert all(view.y0 <= y <= view.y1 for y in got["y"])
            assert set(cluster_labels(frame, inner, w, h)["text"]) <= fine_names
            zoomed_total += len(cluster_labels(frame, quarter, w, h)["text"])
    assert zoomed_total > len(shown["text"])  # the four 2x views together show more names
    # Fast: the per-level arrays are prepared once per frame.
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        cluster_labels(frame, full, w, h)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.005


def test_the_larger_of_two_overlapping_names_wins():
    import pandas as pd

    frame = pd.DataFrame(
        {
            "level": [0, 0, 0],
            "cluster": [0, 1, 2],
            "name": ["big one", "small one", "far away"],
            "size": [100, 10, 50],
            "x": [0.0, 0.01, 5.0],
            "y": [0.0, 0.0, 5.0],
        }
    )
    view = View(-10, 10, -10, 10)
    got = cluster_labels(frame, view, 400, 400)
    assert got["text"] == ["big one", "far away"] and got["size"][0] > got["size"][1]
    assert cluster_labels(frame, View(4, 6, 4, 6), 400, 400)["text"] == ["far away"]
    assert cluster_labels(frame, View(20, 30, 20, 30), 400, 400)["text"] == []


# -- contours -------------------------------------------------------------------------------------
def test_density_contours_lie_in_the_view_and_are_fast(clustered):
    from embviz.render.contours import density_contours
    from embviz.render.raster import Renderer
    from embviz.render.store import load_store

    root, _ = clustered
    store = load_store(open_dataset(root), UMAP)
    view = store.extent
    counts = Renderer(store).aggregate(view, 900, 640, mode="density").values
    lines = density_contours(counts, view, levels=4)
    assert len(lines["xs"]) == len(lines["ys"]) >= 10  # at least one ring per digit island
    xs, ys = np.concatenate(lines["xs"]), np.concatenate(lines["ys"])
    assert (xs >= view.x0).all() and (xs <= view.x1).all()
    assert (ys >= view.y0).all() and (ys <= view.y1).all()
    # The sparsest level rings the points: most points lie inside some outermost line.
    assert len(density_contours(counts, view, levels=1)["xs"]) < len(lines["xs"])
    assert density_contours(np.zeros((640, 900)), view) == {"xs": [], "ys": []}
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        density_contours(np.zeros(10), view)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        density_contours(counts, view)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.02


# -- CLIP-like naming -----------------------------------------------------------------------------
def test_prompts_name_clusters_with_a_clip_like_model(clip_dataset, tmp_path):  # noqa: F811
    from embviz.pipeline.cluster import cluster
    from embviz.pipeline.reduce import reduce
    from embviz.search import searcher

    source, embedding = clip_dataset
    root = tmp_path / "ds"
    shutil.copytree(source, root)
    reduce(root, embedding=embedding, method="pca", dims=2, progress=False)
    prompts = ["a red square", "a blue disc", "a green triangle", "a photo of a cat"]
    (tmp_path / "prompts.txt").write_text("# shapes\n" + "\n".join(prompts) + "\n\n")
    r = cluster(root, sizes=[1, 3], prompts=tmp_path / "prompts.txt")
    ds = open_dataset(root)
    (projection,) = ds.projections
    assert r.named_by[projection] == "prompts" and r.typical_space[projection] == "embedding"
    # Recomputed here from the dataset's vectors and the model's text tower: each cluster is
    # named by the prompt nearest its mean image vector, its typical image the nearest image.
    ids, vecs = ds.read_vectors(embedding)
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    s = searcher(ds, embedding)
    text = np.stack([s.embed_text(p) for p in prompts])
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    codes = ds.read_pandas(clusters_key(projection)).set_index("id")
    frame = read_clusters(ds, projection)
    assert len(frame) == 4
    for row in frame.itertuples(index=False):
        members = codes.index[codes[level_column(row.level)] == row.cluster].to_numpy()
        v = vecs[np.searchsorted(ids, members)]
        mean = v.mean(axis=0) / np.linalg.norm(v.mean(axis=0))
        assert row.name == prompts[int(np.argmax(text @ mean))]
        assert row.typical_id == members[int(np.argmax(v @ mean))]
