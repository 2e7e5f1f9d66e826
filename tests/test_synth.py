"""Tests for the synth step: a complete, deterministic synthetic dataset with sprites and projections."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embviz.curve import hilbert_distances
from embviz.dataset import open_dataset
from embviz.pipeline.synth import synth
from embviz.synth import draw_sprite, generate_part, make_spec

POINTS = 200_000


@pytest.fixture(scope="module")
def synth_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ds"
    result = synth(root, points=POINTS, partition_rows=80_000, sprites=48, seed=5, progress=False)
    return result, open_dataset(root)


def test_tables_and_row_counts(synth_ds):
    result, ds = synth_ds
    assert result.rows == POINTS and result.partitions == 3
    assert set(result.tables) == {
        "samples",
        "thumbnails",
        "projections/synth.2d",
        "projections/synth.3d",
    }
    for key in result.tables[1:]:
        assert ds.table(key)["rows"] == POINTS
    s = ds.read_pandas("samples")
    assert s["id"].tolist() == list(range(POINTS))
    assert s["uri"].isna().all()
    assert set(s["split"]) == {"train", "test", "prod"}
    assert 0.6 < (s["split"] == "train").mean() < 0.75
    assert s["label"].nunique() == 10 and s["label"].str.match(r"class_\d\d$").all()
    assert set(s["source"]) <= {"camera_a", "camera_b", "web", "partner"}
    assert s["score"].dtype == np.float32 and s["confidence"].between(0, 1).all()
    assert ds.meta("samples")["synth"]["seed"] == 5
    assert ds.manifest["steps"][-1]["step"] == "synth"


def test_thumbnails_decode_and_cover_samples(synth_ds):
    _, ds = synth_ds
    thumbs = ds.read_arrow("thumbnails")
    assert thumbs.column("thumb_id").to_pylist() == list(range(48))
    for blob in thumbs.column("image").to_pylist()[:8]:
        img = Image.open(io.BytesIO(blob))
        assert img.format == "WEBP" and img.size == (64, 64)
    used = np.unique(ds.read_arrow("samples", columns=["thumb_id"]).column(0).to_numpy())
    assert np.isin(used, thumbs.column("thumb_id").to_numpy()).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_projections_sorted_with_bounds(synth_ds, dims):
    _, ds = synth_ds
    key = f"projections/synth.{dims}d"
    meta = ds.meta(key)
    assert meta["curve"] == "hilbert" and meta["dims"] == dims
    t = ds.read_arrow(key)
    coords = np.stack([t.column(c).to_numpy() for c in "xyz"[:dims]], axis=1)
    assert np.isfinite(coords).all()
    assert (np.diff(hilbert_distances(coords, meta["bounds"])) >= 0).all()
    assert np.array_equal(np.sort(t.column("id").to_numpy()), np.arange(POINTS))
    for part in ds.table(key)["partitions"]:
        assert set(part["bounds"]) == set("xyz"[:dims])
    # lone outliers sit well outside the clusters' box
    spread = np.abs(coords).max(axis=1)
    assert (spread > 1.4 * 10 * np.sqrt(40)).sum() >= 5


def test_deterministic_for_a_seed(tmp_path):
    a = synth(tmp_path / "a", points=5_000, partition_rows=2_000, sprites=8, seed=1, progress=False)
    b = synth(tmp_path / "b", points=5_000, partition_rows=2_000, sprites=8, seed=1, progress=False)
    c = synth(tmp_path / "c", points=5_000, partition_rows=2_000, sprites=8, seed=2, progress=False)
    da, db, dc = (open_dataset(r.root) for r in (a, b, c))
    for key in ("samples", "thumbnails", "projections/synth.2d", "projections/synth.3d"):
        assert da.read_arrow(key).equals(db.read_arrow(key)), key
    assert not da.read_arrow("projections/synth.2d").equals(dc.read_arrow("projections/synth.2d"))


def test_drift_and_sprites_follow_clusters():
    spec = make_spec(clusters=20, labels=5, sprites=60, seed=0)
    part = generate_part(spec, 0, 0, 50_000)
    inside = part["cluster"] >= 0
    drift = inside & spec.drift[np.where(inside, part["cluster"], 0)]
    prod = part["split"] == 2
    assert prod[drift].mean() > 0.5 > prod[inside & ~drift].mean()
    fam = part["thumb_id"][inside] % 20
    np.testing.assert_array_equal(fam, part["cluster"][inside] % 20)
    assert draw_sprite(3, families=20) != draw_sprite(23, families=20)
