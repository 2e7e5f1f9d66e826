"""Tests for ``reduce --series`` on real digits: aligned maps move points less than independent ones,
quality rises along a checkpoint-like series, reuse, bad series refused before anything is
written, the CLI, the recipe, and the report's curve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from serieskit import series_dataset, write_embedding

from embviz.dataset import open_dataset
from embviz.errors import ConfigError, DatasetError
from embviz.pipeline.reduce_series import reduce_series
from embviz.series import list_series, series_entry

ROWS = 700
FAST = {"n_epochs": 100}  # umap-learn picks 500 below 10K rows; 100 is enough to measure
MEASURED: dict[str, dict] = {}  # align -> jumps and seconds, printed by the comparison test


@pytest.fixture(scope="module")
def ds(demo_dataset, tmp_path_factory):
    """700 real digits with series ``ckpt`` (5 checkpoint-like members) and ``layers`` (2)."""
    return series_dataset(tmp_path_factory.mktemp("series") / "ds", demo_dataset, rows=ROWS)


@pytest.fixture(scope="module")
def chained(ds):
    """``ckpt`` projected with the default alignment (chain)."""
    return reduce_series(ds, "ckpt", sample=ROWS, params=FAST, progress=False)


def _series_jump(result) -> float:
    """The mean over the series' steps of the median jump between neighbouring members."""
    return float(np.mean([j for j in result.jumps if j is not None]))


def test_aligned_projections_move_points_less_than_independent_ones(ds, chained, tmp_path):
    copy = tmp_path / "copy"  # the same projection names: keep the chained ones for the others
    shutil.copytree(ds.root, copy)
    independent = reduce_series(
        copy, "ckpt", align="independent", sample=ROWS, params=FAST, progress=False
    )
    for r in (chained, independent):
        MEASURED[r.align] = {"jumps": r.jumps, "fit_seconds": r.fit_seconds}
    print("measured median jumps per step:", json.dumps(MEASURED))
    assert chained.align == "chain" and independent.align == "independent"
    assert _series_jump(chained) < 0.8 * _series_jump(independent), MEASURED
    # Alignment keeps the maps' quality: the last member separates the digits as well.
    last_chain, last_ind = chained.quality[-1], independent.quality[-1]
    assert last_chain["knn_map"] > last_ind["knn_map"] - 0.05, (last_chain, last_ind)
    assert last_chain["trustworthiness"] > 0.9


def test_aligned_umap_on_the_layers_series(ds, tmp_path):
    """AlignedUMAP (fitted on a sample, the rest placed by kNN) against independent fits, on
    the two real layers (192-d and 1,280-d: layers may differ in dimension)."""
    copy = tmp_path / "copy"
    shutil.copytree(ds.root, copy)
    runs = {
        align: reduce_series(copy, "layers", align=align, sample=400, params=FAST, progress=False)
        for align in ("aligned-umap", "independent")
    }
    jumps = {a: r.jumps[1] for a, r in runs.items()}
    print("layers, median jump blocks.5 -> pooled:", jumps)
    assert jumps["aligned-umap"] < 0.6 * jumps["independent"], jumps
    r = runs["aligned-umap"]
    assert r.rows == ROWS and r.sample_rows == 400  # 300 rows placed through the fit
    assert all(q["knn_map"] > 0.6 for q in r.quality), r.quality


def test_quality_rises_from_the_untrained_member_to_the_last(chained):
    emb = [q["knn_embedding"] for q in chained.quality]
    maps = [q["knn_map"] for q in chained.quality]
    assert emb[0] < 0.25 and emb[-1] > 0.75, emb  # 10 classes: chance is 0.1
    assert maps[0] < 0.25 and maps[-1] > 0.7, maps
    assert emb[-1] > emb[2] > emb[0]
    assert chained.jumps[0] is None and all(j > 0 for j in chained.jumps[1:])


def test_projections_carry_series_alignment_jump_and_quality(ds, chained):
    ds = open_dataset(ds.root)
    members = list_series(ds, "projections")["ckpt.umap2d"]
    assert [m.key for m in members] == list(chained.tables)
    assert chained.tables[0] == "projections/ckpt-epoch-000.blocks.5.umap2d"
    ids = np.sort(ds.read_arrow("samples", columns=["id"]).column("id").to_numpy())
    for i, m in enumerate(members):
        meta = ds.meta(m.key)
        assert meta["series"] == series_entry("ckpt.umap2d", "checkpoints", i, f"epoch-{i:03d}", 5)
        assert meta["source"] == f"embeddings/ckpt-epoch-{i:03d}.blocks.5"
        assert meta["method"] == "umap" and meta["dims"] == 2 and meta["params"] == FAST
        assert meta["alignment"]["method"] == "chain" and meta["curve"] == "hilbert"
        assert meta["jump"] == chained.jumps[i]
        assert set(meta["quality"]) >= {"knn_embedding", "knn_map", "trustworthiness"}
        got = np.sort(ds.read_arrow(m.key, columns=["id"]).column("id").to_numpy())
        assert np.array_equal(got, ids)


def test_rerun_reuses_and_a_new_parameter_recomputes(ds, chained):
    before = {k: open_dataset(ds.root).table(k)["dir"] for k in chained.tables}
    again = reduce_series(ds, "ckpt", sample=ROWS, params=FAST, progress=False)
    assert again.reused and again.jumps == chained.jumps and again.quality == chained.quality
    assert {k: open_dataset(ds.root).table(k)["dir"] for k in chained.tables} == before
    pca = reduce_series(ds, "ckpt", method="pca", sample=ROWS, progress=False)
    assert not pca.reused and pca.align == "independent"
    assert pca.tables[-1] == "projections/ckpt-epoch-004.blocks.5.pca2d"
    assert pca.quality[-1]["knn_embedding"] > pca.quality[0]["knn_embedding"] + 0.5


def test_bad_options_fail_before_anything_is_read(ds):
    with pytest.raises(ConfigError, match="alignment 'chain' needs method 'umap'"):
        reduce_series(ds, "ckpt", method="pca", align="chain")
    with pytest.raises(ConfigError, match="unknown alignment 'best'"):
        reduce_series(ds, "ckpt", align="best")
    with pytest.raises(ConfigError, match="unknown parameter 'n_neighbours'"):
        reduce_series(ds, "ckpt", params={"n_neighbours": 5})


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("ids", r"member 2 'epoch-002' .* holds 699 samples, member 0 'epoch-000' .* 700"),
        ("dims", r"member 1 'epoch-001' .* has 96-d vectors, member 0 'epoch-000' .* 192-d"),
        ("missing", r"series 'bad': member 1 of 3 is missing \(tables present: 0: 'epoch-000', 2:"),
        ("corrupt", r"series 'bad': cannot read member 1 'epoch-001' \(embeddings/bad-corrupt-1\)"),
    ],
)
def test_bad_series_are_refused_naming_the_member_and_nothing_is_written(ds, case, message):
    ids = np.sort(ds.read_arrow("samples", columns=["id"]).column("id").to_numpy())
    X = np.random.default_rng(0).normal(size=(ids.size, 192)).astype(np.float32)
    for t in range(3):
        if case == "missing" and t == 1:
            continue
        rows = ids[:-1] if case == "ids" and t == 2 else ids
        vecs = X[: rows.size, :96] if case == "dims" and t == 1 else X[: rows.size]
        entry = series_entry("bad", "checkpoints", t, f"epoch-{t:03d}", 3)
        write_embedding(ds, f"bad-{case}-{t}", rows, vecs, series=entry)
    if case == "corrupt":
        open_dataset(ds.root).part_paths("embeddings/bad-corrupt-1")[0].write_bytes(b"not parquet")
    before = open_dataset(ds.root).tables
    try:
        with pytest.raises(DatasetError, match=message):
            reduce_series(ds, "bad", method="pca", progress=False)
        after = open_dataset(ds.root)
        assert after.tables == before
        assert not list((ds.root / "projections").glob(".*staging*"))
    finally:
        ds.update_manifest(
            lambda m: [m["tables"].pop(k) for k in list(m["tables"]) if "/bad-" in k]
        )


def test_layers_may_differ_in_dimension_checkpoints_may_not(ds):
    r = reduce_series(ds, "layers", method="pca", sample=ROWS, progress=False)
    assert r.kind == "layers" and len(r.tables) == 2 and r.jumps[1] is not None


def test_cli_reduce_series(ds):
    cmd = [sys.executable, "-m", "embviz.pipeline.cli", "-q", "reduce", str(ds.root)]
    done = subprocess.run(
        [*cmd, "--series", "layers", "--method", "pca", "--dims", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["series"] == "layers.pca3d" and out["align"] == "independent"
    assert out["tables"] == [
        "projections/efficientnet_lite0.blocks.5.pca3d",
        "projections/efficientnet_lite0.pooled.pca3d",
    ]
    assert "layers.pca3d" in list_series(open_dataset(ds.root), "projections")
    bad = subprocess.run(
        [*cmd, "--series", "layers", "--method", "pca", "--align", "aligned-umap"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "needs method 'umap'" in bad.stderr, bad.stderr
    bad = subprocess.run(
        [*cmd, "--series", "nope", "--method", "pca"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2
    assert "no embedding series 'nope'" in bad.stderr and "ckpt" in bad.stderr, bad.stderr


def test_recipe_reduces_a_series(ds, tmp_path, mnist_small):
    """``embviz build`` with ``reduce: [{series: ...}]``: real digit images ingested, their
    pixels (mixed with noise, like checkpoints) written as a series, then the recipe maps it."""
    from PIL import Image

    from embviz.config import load_recipe
    from embviz.pipeline.build import build
    from embviz.pipeline.reduce_series import SeriesReduceResult

    images, labels = mnist_small
    folder = tmp_path / "imgs"
    for i in range(120):
        path = folder / str(labels[i]) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(path)
    recipe = tmp_path / "r.yaml"
    out = tmp_path / "built"
    recipe.write_text(f"dataset: {out}\nsource: {{path: {folder}}}\n")
    build(recipe, progress=False)  # ingest only
    built = open_dataset(out)
    t = built.read_arrow("samples", columns=["id", "uri"])
    by_uri = {u.rsplit("/", 1)[-1]: i for i, u in zip(*t.to_pydict().values(), strict=True)}
    ids = np.array([by_uri[f"{i}.png"] for i in range(120)], np.int64)
    pixels = images[:120].reshape(120, -1).astype(np.float32) / 255
    noise = np.random.default_rng(0).normal(size=pixels.shape).astype(np.float32)
    for s, w in enumerate((0.0, 1.0)):
        entry = series_entry("pix", "checkpoints", s, f"epoch-{s}", 2)
        write_embedding(built, f"pix-{s}", ids, (1 - w) * noise + w * pixels, series=entry)
    recipe.write_text(
        recipe.read_text() + "reduce: [{series: pix, method: pca, dims: 2}, {method: pca}]\n"
    )
    result = build(recipe, progress=False)
    step = result.steps[1]
    assert isinstance(step, SeriesReduceResult) and step.series == "pix.pca2d"
    assert step.quality[1]["knn_embedding"] > step.quality[0]["knn_embedding"] + 0.3
    assert result.steps[2].table == "projections/pix-0.pca2d"  # a plain reduce, first table
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"dataset: {out}\nsource: {{path: {folder}}}\nreduce: [{{series: pix, name: x}}]\n"
    )
    with pytest.raises(ConfigError, match="'name' applies to one embedding"):
        load_recipe(bad)


def test_report_shows_the_quality_curve(ds, chained, tmp_path):
    from embviz.report import write_report

    r = write_report(ds, tmp_path / "r.html")
    assert "evolution" in r.sections
    page = (tmp_path / "r.html").read_text()
    section = page[page.index('id="evolution"') :]
    section = section[: section.index("</section>")]
    assert 'alt="quality per member of series ckpt.umap2d"' in section
    assert "data:image/png;base64," in section
    for i in range(5):
        assert f"epoch-{i:03d}" in section
    assert f"{chained.quality[-1]['knn_map']:.3f}" in section


@pytest.mark.cluster
def test_series_on_a_local_cluster_matches_local(ds, tmp_path):
    """The transform runs on Dask workers (the fitted reducers scattered once per member)."""
    from distributed import Client, LocalCluster

    copy = tmp_path / "copy"
    shutil.copytree(ds.root, copy)
    here = reduce_series(copy, "layers", method="pca", sample=300, progress=False)
    local = {k: open_dataset(copy).read_arrow(k).sort_by("id") for k in here.tables}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        there = reduce_series(
            copy, "layers", method="pca", sample=300, progress=False, force=True, scheduler=client
        )
    assert there.tables == here.tables and there.jumps == here.jumps
    for key, table in local.items():
        assert open_dataset(copy).read_arrow(key).sort_by("id").equals(table), key
