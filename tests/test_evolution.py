"""Tests for embviz.evolution: jumps, Procrustes, per-member quality on the demo's real digits, the
HoloViews quality curve, and the report section that draws it (escaped)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from embviz.dataset import Dataset, open_dataset
from embviz.evolution import (
    jump,
    procrustes,
    quality,
    quality_curve,
    series_jump,
    series_quality,
)
from embviz.pipeline.reduce import write_projection
from embviz.series import list_series, series_entry

HOSTILE = "<img src=x onerror=alert(1)>&"


@pytest.fixture(scope="module")
def real(demo_dataset):
    """2,000 real demo digits: their pooled vectors, their stored UMAP map and labels."""
    ds = open_dataset(demo_dataset)
    ids, X = ds.read_vectors("efficientnet_lite0.pooled")
    order = np.argsort(ids)
    ids, X = ids[order][:2000], X[order][:2000]
    t = ds.read_ids("projections/efficientnet_lite0.pooled.umap2d", ids, ["x", "y"])
    assert np.array_equal(t.column("id").to_numpy(), ids)
    Y = np.stack([t.column("x").to_numpy(), t.column("y").to_numpy()], axis=1).astype(np.float64)
    labels = np.array(ds.read_ids("samples", ids, ["label"]).column("label").to_pylist(), object)
    return X, Y, labels, ds.read_ids("samples", ids)


def test_jump_counts_neighbourhoods_and_is_scale_free(real):
    _, Y, _, _ = real
    assert np.all(jump(Y, Y) == 0)
    moved = Y.copy()
    moved[7] += [1000.0, 0.0]
    j = jump(Y, moved)
    assert j[7] > 10 and np.all(np.delete(j, 7) == 0)
    # The same motion in a map ten times as big is the same number of neighbourhoods.
    shift = np.random.default_rng(0).normal(size=Y.shape) * 0.05
    assert np.allclose(jump(Y, Y + shift), jump(10 * Y, 10 * (Y + shift)))
    # A point moved by exactly its neighbourhood's width jumps 1.
    from sklearn.neighbors import NearestNeighbors

    d, _ = NearestNeighbors(n_neighbors=11).fit(Y).kneighbors(Y[:1])
    one = Y.copy()
    one[0, 0] += d[0, 1:].mean()
    assert jump(Y, one)[0] == pytest.approx(1.0, rel=1e-4)
    steps = series_jump([Y, Y, moved])
    assert len(steps) == 2 and steps[0] == 0 and steps[1] == 0  # one point: the median stays


def test_procrustes_undoes_rotation_reflection_scale_and_shift(real):
    _, Y, _, _ = real
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mirrored = (Y @ rot) * [-1, 1] * 3.5 + [40.0, -7.0]
    back = procrustes(mirrored, Y).apply(mirrored)
    assert np.abs(back - Y).max() < 1e-3 * np.ptp(Y)
    assert float(np.median(jump(Y, back))) < 1e-3
    # Noise on top: still much closer than before alignment.
    noisy = mirrored + np.random.default_rng(1).normal(size=Y.shape) * 0.01 * np.ptp(Y)
    assert np.median(jump(Y, procrustes(noisy, Y).apply(noisy))) < 0.1 * np.median(jump(Y, noisy))
    with pytest.raises(ValueError, match="procrustes"):
        procrustes(Y[:5], Y[:6])


def test_quality_of_real_digits_and_of_shuffled_labels(real):
    X, Y, labels, _ = real
    q = quality(X, Y, labels, k=10, sample=1500, seed=0)
    assert q["rows"] == 1500 and q["classes"] == 10
    assert q["knn_embedding"] > 0.85 and q["knn_map"] > 0.8, q
    assert q["trustworthiness"] > 0.9, q
    shuffled = np.random.default_rng(0).permutation(labels)
    low = quality(X, Y, shuffled, sample=1500)
    assert low["knn_embedding"] < 0.25 and low["knn_map"] < 0.25, low
    # A random map keeps no neighbours: low trustworthiness, chance-level map accuracy.
    noise = np.random.default_rng(0).normal(size=Y.shape)
    bad = quality(X, noise, labels, sample=1500)
    assert bad["trustworthiness"] < 0.6 and bad["knn_map"] < 0.25, bad
    # Rows without a label are skipped; no labels at all: trustworthiness only.
    partial = labels.copy()
    partial[::2] = None
    partial[1::4] = ""
    assert quality(X, Y, partial)["rows"] == int(np.sum(np.arange(len(labels)) % 4 == 3))
    none = quality(X, Y, None)
    assert none["knn_embedding"] is None and none["knn_map"] is None
    assert none["trustworthiness"] == pytest.approx(q["trustworthiness"], abs=0.02)


@pytest.fixture(scope="module")
def curve_ds(real, tmp_path_factory):
    """A dataset holding a hand-written 3-member projection series (real map, stored quality);
    one member's label is hostile HTML."""
    _, Y, _, samples = real
    ds = Dataset.create(tmp_path_factory.mktemp("curve") / "ds")
    w = ds.writer("samples")
    w.write_part(0, samples)
    w.commit({})
    ids = samples.column("id").to_numpy()
    members = ["epoch-000", HOSTILE, "epoch-002"]
    for i, member in enumerate(members):
        meta = {
            "source": f"embeddings/e{i}",
            "method": "umap",
            "series": series_entry("cnn.umap2d", "checkpoints", i, member, 3),
            "alignment": {"method": "chain"},
            "jump": None if i == 0 else 2.0 / i,
            "quality": {"knn_embedding": 0.1 + 0.4 * i, "knn_map": 0.1 + 0.35 * i},
        }
        meta["quality"]["trustworthiness"] = 0.7 + 0.1 * i
        write_projection(ds, f"e{i}.umap2d", ids, Y + i, meta=meta)
    return ds.reload()


def test_series_quality_and_curve(curve_ds):
    import holoviews as hv

    rows = series_quality(curve_ds, "cnn.umap2d")
    assert [r["member"] for r in rows] == ["epoch-000", HOSTILE, "epoch-002"]
    assert [r["jump"] for r in rows] == [None, 2.0, 1.0]
    assert [r["knn_embedding"] for r in rows] == pytest.approx([0.1, 0.5, 0.9])
    layout = quality_curve(curve_ds, "cnn.umap2d")
    assert isinstance(layout, hv.Layout) and len(layout) == 2
    scores, jumps = layout
    curves = {el.label: el for el in scores if isinstance(el, hv.Curve)}
    assert set(curves) == {"k-NN accuracy, embedding", "k-NN accuracy, 2D map", "trustworthiness"}
    assert {type(el) for el in scores} == {hv.Curve, hv.Scatter}
    acc = curves["k-NN accuracy, embedding"]
    assert list(acc.dimension_values("member")) == ["0: epoch-000", f"1: {HOSTILE}", "2: epoch-002"]
    assert list(acc.dimension_values(1)) == pytest.approx([0.1, 0.5, 0.9])
    jump_curve = next(el for el in jumps if isinstance(el, hv.Curve))
    assert list(jump_curve.dimension_values(1)) == pytest.approx([2.0, 1.0])  # none for member 0
    with pytest.raises(Exception, match="no complete projections series 'nope'"):
        quality_curve(curve_ds, "nope")


def test_report_section_draws_the_curve_and_escapes_members(curve_ds, tmp_path):
    from embviz.report import write_report

    assert list(list_series(curve_ds, "projections")) == ["cnn.umap2d"]
    r = write_report(curve_ds, tmp_path / "r.html")
    assert "evolution" in r.sections
    page = (tmp_path / "r.html").read_text()
    section = page[page.index('id="evolution"') :]
    section = section[: section.index("</section>")]
    assert HOSTILE not in page and "&lt;img src=x onerror=alert(1)&gt;&amp;" in section
    img = re.search(r'<img src="data:image/png;base64,([^"]+)" alt="quality per member', section)
    assert img, "no quality curve image"
    png = Image.open(io.BytesIO(base64.b64decode(img.group(1))))
    assert png.width >= 600 and png.height >= 200
    pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 20  # curves, dots, legend: not a blank figure
    # The table holds every member's numbers.
    for text in ("epoch-000", "epoch-002", "0.900", "2.000", "1.000"):
        assert text in section
