"""Curation scores: planted outliers, label flips and duplicates are found; the ``score`` step."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from embviz import duplicates, scores
from embviz.dataset import Dataset, open_dataset, vectors_to_table
from embviz.errors import DatasetError
from embviz.index import NeighbourIndex
from embviz.samples import read_sample_columns


def _blobs(n: int, *, dim: int = 16, classes: int = 5, seed: int = 0):
    """Unit-norm points around ``classes`` random directions, and their class of each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = np.arange(n) % classes
    x = centres[y] + rng.normal(scale=0.25, size=(n, dim))
    return x.astype(np.float32), y


def _neighbours(x: np.ndarray, k: int):
    """Neighbour rows and cosine distances of every row (ids are row numbers)."""
    return NeighbourIndex.build(np.arange(len(x)), x).neighbours(k)


def _top(values: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(-np.where(np.isfinite(values), values, -np.inf), kind="stable")[:n]


# -- outliers and uniqueness -------------------------------------------------------------------
def test_planted_outliers_rank_highest():
    x, _ = _blobs(2000)
    rng = np.random.default_rng(1)
    far = rng.normal(size=(20, 16)).astype(np.float32) * 3  # anywhere: off every blob
    x = np.concatenate([x, far])
    nbr, dist = _neighbours(x, 10)
    for method in scores.OUTLIER_METHODS:
        s = scores.outlier_scores(nbr, dist, method=method)
        assert s.dtype == np.float32 and s.min() == 0.0 and s.max() == 1.0
        recall = np.isin(_top(s, 20), np.arange(2000, 2020)).mean()
        assert recall >= (0.9 if method == "knn" else 0.7), (method, recall)


def test_rows_without_neighbours_get_nan():
    nbr = np.array([[1, 2], [0, 2], [0, 1], [-1, -1]])
    dist = np.array([[0.1, 0.2], [0.1, 0.3], [0.2, 0.3], [np.inf, np.inf]], np.float32)
    out = scores.outlier_scores(nbr, dist)
    assert np.isnan(out[3]) and np.isfinite(out[:3]).all()
    u = scores.uniqueness(dist)
    assert np.isnan(u[3]) and u[:3].max() == pytest.approx(1.0)
    np.testing.assert_allclose(
        scores.rank01(np.array([3.0, np.nan, 1.0, 2.0])), [1, np.nan, 0, 0.5]
    )


def test_uniqueness_is_zero_for_a_copy_and_one_for_the_loneliest():
    x, _ = _blobs(300)
    x = np.concatenate([x, x[:1]])  # row 300 copies row 0
    nbr, dist = _neighbours(x, 5)
    u = scores.uniqueness(dist)
    assert u.dtype == np.float32 and u.min() >= 0.0 and u.max() == pytest.approx(1.0)
    # Weights 0.6, 0.3, 0.1: the copy's nearest (weight 0.6) is at distance 0.
    assert u[300] < np.median(u) and u[0] < np.median(u)


# -- label issues ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flipped():
    """1,000 points in 5 classes, 5% of labels flipped, 20 more rows unlabelled."""
    x, y = _blobs(1020, seed=2)
    rng = np.random.default_rng(3)
    labels = y.copy()
    flips = rng.choice(1000, 50, replace=False)
    labels[flips] = (y[flips] + rng.integers(1, 5, 50)) % 5
    labels[1000:] = -1
    nbr, dist = _neighbours(x, 10)
    return x, y, labels, flips, nbr, dist


@pytest.mark.parametrize("method", ["knn", "classifier"])
def test_planted_label_flips_are_found_and_fixed(flipped, method):
    x, y, labels, flips, nbr, dist = flipped
    found = scores.label_issues(labels, nbr, dist, vectors=x, method=method)
    assert found.method == ("knn" if method == "knn" else "knn+classifier")
    s = found.score
    assert s.dtype == np.float32 and np.isnan(s[1000:]).all() and np.isfinite(s[:1000]).all()
    assert np.nanmin(s) >= 0.0 and np.nanmax(s) <= 1.0
    recall = np.isin(flips, _top(s, 50)).mean()
    assert recall >= 0.8, recall
    assert (found.suggested[flips] == y[flips]).mean() >= 0.9
    # Unlabelled rows still get the label their neighbours vote for.
    assert (found.suggested[1000:] == y[1000:]).mean() >= 0.9


def test_a_model_prediction_is_blended_in(flipped):
    x, y, labels, flips, nbr, dist = flipped
    base = scores.label_issues(labels, nbr, dist, method="knn")
    kept = np.setdiff1d(np.arange(1000), flips)
    # A confident model that agrees with the truth keeps the flips on top and lowers the rest ...
    truth = scores.label_issues(
        labels, nbr, dist, method="knn", prediction=y, confidence=np.full(len(y), 0.9)
    )
    assert truth.method == "knn+prediction"
    assert (
        np.isin(flips, _top(truth.score, 50)).mean() >= np.isin(flips, _top(base.score, 50)).mean()
    )
    assert truth.score[kept].mean() < 0.15
    # ... one that agrees with the given labels speaks for them, flips included.
    given = scores.label_issues(labels, nbr, dist, method="knn", prediction=labels)
    assert given.score[flips].mean() < 0.6 * base.score[flips].mean()
    # ... and a prediction alone is evidence for a row with no labelled neighbour.
    alone = scores.label_issues(
        np.array([0, 1]),
        np.full((2, 1), -1),
        np.full((2, 1), np.inf, np.float32),
        prediction=np.array([0, 0]),
    )
    np.testing.assert_allclose(alone.score, [0.0, 1.0])
    assert alone.suggested.tolist() == [0, 0]


def test_unknown_label_method_lists_the_valid_ones(flipped):
    _, _, labels, _, nbr, dist = flipped
    with pytest.raises(ValueError, match="knn, classifier"):
        scores.label_issues(labels, nbr, dist, method="forest")


# -- duplicates --------------------------------------------------------------------------------
def test_exact_and_near_duplicates_form_groups_including_chains():
    """Seven rows, two neighbours each (threshold 0.05)::

    a ~ b ~ c     near chain: a-c is 0.09 apart, but one group through b
    d = e ~ g     d and e share a content hash (exact); g is near e
    f             alone
    """
    a, b, c, d, e, f, g = range(7)
    nbr = np.array([[b, c], [a, c], [b, a], [e, g], [d, g], [a, d], [e, d]])
    dist = np.array(
        [
            [0.04, 0.09],
            [0.04, 0.05],
            [0.05, 0.09],
            [0.0, 0.3],
            [0.0, 0.03],
            [0.5, 0.6],
            [0.03, 0.3],
        ],
        np.float32,
    )
    hashes = np.array([0, 1, 2, 3, 3, 4, -1])
    dups = duplicates.duplicate_groups(nbr, dist, content_hash=hashes, threshold=0.05)
    group = dups.group
    assert group[a] == group[b] == group[c] >= 0
    assert group[d] == group[e] == group[g] >= 0 and group[d] != group[a]
    assert group[f] == -1
    assert group.tolist()[:4] == [0, 0, 0, 1]  # numbered in row order
    assert dups.exact.tolist() == [False, False, False, True, True, False, False]
    assert (dups.exact_groups, dups.near_groups, dups.threshold) == (1, 1, 0.05)
    # Without the near pairs, the hash alone still joins d and e.
    only_exact = duplicates.duplicate_groups(nbr, dist, content_hash=hashes, threshold=0.0)
    assert only_exact.group.tolist() == [-1, -1, -1, 0, 0, -1, -1]


def test_adaptive_threshold_is_a_fraction_of_the_median_nearest_distance():
    dist = np.array([[0.0, 1.0], [0.2, 1.0], [0.4, 1.0], [0.6, 1.0]], np.float32)
    assert duplicates.near_threshold(dist, fraction=0.5) == pytest.approx(0.2)  # zeros ignored
    dups = duplicates.duplicate_groups(
        np.array([[1, 2], [0, 2], [1, 0], [2, 1]]), dist, fraction=0.5
    )
    assert dups.threshold == pytest.approx(0.2)
    assert dups.group.tolist() == [0, 0, -1, -1]


def _gray(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), np.float32)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_pixels_confirm_changed_copies_of_real_digits(mnist_small):
    images, _ = mnist_small
    digits = images[:60].astype(np.float32)
    rng = np.random.default_rng(0)
    copies = [
        np.roll(digits[0], 1, axis=1),  # 1 px shift
        digits[1] + rng.normal(0, 8, digits[1].shape),  # noise
        digits[2] * 0.8,  # darker
    ]
    jpeg = io.BytesIO()
    Image.fromarray(images[3]).save(jpeg, format="JPEG", quality=75)
    data = [_png(im) for im in digits] + [_png(c) for c in copies] + [jpeg.getvalue(), None]
    sig = duplicates.pixel_signatures(data)
    assert (
        sig.shape == (65, duplicates.SIGNATURE_SIZE, duplicates.SIGNATURE_SIZE)
        and sig.dtype == np.uint8
    )
    assert not sig[64].any()  # no image: a flat signature
    sim = duplicates.pixel_similarity(sig[[0, 1, 2, 3]], sig[[60, 61, 62, 63]])
    assert (sim >= duplicates.PIXEL_THRESHOLD).all(), sim
    others = duplicates.pixel_similarity(sig[:30], sig[30:60])
    assert (others < duplicates.PIXEL_THRESHOLD).all()
    assert duplicates.pixel_similarity(sig[[64]], sig[[64]])[0] == 0.0  # flat: never alike

    # No embedding neighbours at all: the coarse-pixel neighbours still find every copy.
    a, b, compared = duplicates.pixel_duplicate_pairs(sig, np.full((65, 1), -1))
    assert compared > 0
    assert {(int(i), int(j)) for i, j in zip(a, b, strict=True)} == {
        (0, 60),
        (1, 61),
        (2, 62),
        (3, 63),
    }


# -- clusters ----------------------------------------------------------------------------------
def test_clusters_are_found_and_named_largest_first():
    x, y = _blobs(600, classes=4, seed=5)
    x = np.concatenate([x, x[y == 0][:50]])  # class 0 is the largest
    y = np.concatenate([y, np.zeros(50, int)])
    centroids = scores.fit_centroids(x, k=4, seed=0)
    codes, names = scores.cluster_names(scores.assign_clusters(x, centroids), 4)
    assert names == ["0", "1", "2", "3"] and len(np.unique(codes)) == 4
    assert (codes[y == 0] == 0).mean() > 0.95  # the largest cluster is "0"
    # Each cluster is one class.
    purity = np.mean([np.bincount(y[codes == c]).max() / (codes == c).sum() for c in range(4)])
    assert purity > 0.95
    assert scores.cluster_names(np.array([0, 11, -1]), 12)[1][:2] == ["00", "01"]
    assert scores.cluster_names(np.array([0, 11, -1]), 12)[0][2] == -1
    assert [scores.default_clusters(n) for n in (10, 100, 999, 5000, 10**7)] == [1, 2, 19, 20, 20]
    assert len(scores.fit_centroids(x[:3], k=20)) == 3  # capped at the row count


# -- the score step ----------------------------------------------------------------------------
@pytest.fixture
def toy(tmp_path):
    """330 samples in 3 classes with an 8-D embedding ``toy.pooled``; ids 1000..1329.

    Rows 300-309 are byte copies of rows 0-9 (same content hash, same vector), rows 310-319
    near copies of rows 10-19 (vector nudged 0.01), rows 320-329 unlabelled; rows 0-14 of
    class c0 carry label c1 (flipped).
    """
    n = 330
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=3.0, size=(3, 8)).astype(np.float32)
    y = np.arange(n) % 3
    x = centres[y] + rng.normal(size=(n, 8)).astype(np.float32)
    x[300:310], y[300:310] = x[0:10], y[0:10]
    x[310:320] = x[10:20] + 0.01
    y[310:320] = y[10:20]
    labels = np.array([f"c{v}" for v in y], dtype=object)
    flips = np.flatnonzero(y[:300] == 0)[:15]
    labels[flips] = "c1"
    labels[320:] = None
    hashes = [f"h{i}" for i in range(n)]
    hashes[300:310] = hashes[0:10]
    ids = np.arange(n) + 1000
    ds = Dataset.create(tmp_path / "toy", name="toy")
    w = ds.writer("samples")
    w.write_part(
        0, pa.table({"id": ids[:200], "label": labels[:200], "content_hash": hashes[:200]})
    )
    w.write_part(
        1, pa.table({"id": ids[200:], "label": labels[200:], "content_hash": hashes[200:]})
    )
    w.commit()
    w = ds.writer("embeddings/toy.pooled")
    w.write_part(0, vectors_to_table(ids, x))
    w.commit(meta={"model": "toy", "layer": "pooled"})
    return ds, flips


def test_score_step_writes_a_scores_table_and_reuses_it(toy):
    from pipeline.score import score

    ds, flips = toy
    r = score(ds, k=8, clusters=3, progress=False)  # runs the index step first
    assert not r.reused and r.rows == 330 and r.embedding == "toy.pooled" and r.k == 8
    assert r.clusters == 3 and r.pixel_check is False  # no thumbnails in this dataset
    assert r.exact_groups == 10 and r.near_groups == 10 and r.duplicates == 40
    assert r.label_method == "knn+classifier" and r.near_threshold > 0
    ds = open_dataset(ds.root)
    entry = ds.table("scores")
    assert entry["rows"] == 330 and [p["rows"] for p in entry["partitions"]] == [200, 130]
    assert entry["columns"] == {
        "id": "int64",
        "outlier_score": "float",
        "uniqueness": "float",
        "label_issue_score": "float",
        "suggested_label": "string",
        "duplicate_group": "int64",
        "duplicate_kind": "string",
        "cluster": "string",
    }
    cols = read_sample_columns(
        ds, ["label", "label_issue_score", "suggested_label", "duplicate_group", "duplicate_kind"]
    ).to_pandas()
    assert cols["id"].tolist() == list(range(1000, 1330))
    issue = cols["label_issue_score"]
    assert issue[320:].isna().all() and issue[:320].notna().all()
    top = set(issue.sort_values(ascending=False).index[:15])
    assert len(top & set(flips)) >= 12
    assert (cols["suggested_label"][flips] == "c0").mean() >= 0.9
    group, kind = cols["duplicate_group"], cols["duplicate_kind"]
    for i in range(10):
        assert group[i] == group[300 + i] >= 0 and kind[i] == kind[300 + i] == "exact"
        assert group[10 + i] == group[310 + i] >= 0 and kind[310 + i] == "near"
    assert (group[20:300] == -1).all() and kind[20:300].isna().all()
    clusters = read_sample_columns(ds, ["cluster", "outlier_score"]).to_pandas()
    assert set(clusters["cluster"]) == {"0", "1", "2"}
    assert clusters["outlier_score"].between(0, 1).all()
    steps = ds.manifest["steps"]
    assert [s["step"] for s in steps] == ["index", "score"]
    assert steps[-1]["params"]["k"] == 8 and steps[-1]["result"]["exact_groups"] == 10

    again = score(ds, k=8, clusters=3, progress=False)
    assert again.reused and again.exact_groups == 10
    assert open_dataset(ds.root).table("scores")["dir"] == entry["dir"]
    forced = score(ds, k=8, clusters=3, force=True, progress=False)
    assert not forced.reused and open_dataset(ds.root).table("scores")["dir"] != entry["dir"]
    other = score(ds, k=8, clusters=2, progress=False)  # another option: recomputed
    assert not other.reused and other.clusters == 2


def test_an_interrupted_score_run_leaves_the_previous_table(toy, monkeypatch):
    from embviz.dataset import TableWriter
    from pipeline.score import score

    ds, _ = toy
    score(ds, k=5, clusters=3, progress=False)
    before = open_dataset(ds.root).table("scores")

    def killed(self, meta=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(TableWriter, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        score(ds, k=5, clusters=4, progress=False)
    after = open_dataset(ds.root)  # validates the manifest and that every file exists
    assert after.table("scores") == before
    assert read_sample_columns(after, ["cluster"]).num_rows == 330
    assert not list(ds.root.glob(".scores.staging*"))


def test_score_step_knn_only_and_a_fixed_threshold(toy):
    from pipeline.score import score

    ds, _ = toy
    r = score(ds, k=5, label_method="knn", near_threshold=0.0, progress=False)
    assert r.label_method == "knn" and r.near_threshold == 0.0
    assert r.exact_groups == 10 and r.near_groups == 0  # 0.01 nudges are above 0


def test_score_step_names_an_unknown_embedding(toy):
    from pipeline.score import score

    ds, _ = toy
    with pytest.raises(DatasetError, match=r"nope\.pooled.*toy\.pooled"):
        score(ds, embedding="nope.pooled", progress=False)


def test_cli_score(toy, capsys):
    from pipeline.cli import main

    ds, _ = toy
    assert main(["-q", "score", str(ds.root), "-k", "6", "--clusters", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 330 and out["clusters"] == 4 and out["k"] == 6
    assert main(["-q", "score", str(ds.root), "--embedding", "nope.pooled"]) == 2
    err = capsys.readouterr().err
    assert "embviz score: error" in err and "nope.pooled" in err and "toy.pooled" in err


def test_build_runs_index_and_score_with_a_model_prediction(tmp_path):
    from pipeline.build import build

    x, y = _blobs(200, classes=4, seed=7)
    labels = y.copy()
    labels[:10] = (y[:10] + 1) % 4  # flipped; the model's prediction is the truth
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "meta.csv").write_text(
        "label,prediction,confidence\n"
        + "".join(f"c{a},c{b},0.9\n" for a, b in zip(labels, y, strict=True))
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"dataset: {tmp_path / 'ds'}\n"
        f"source: {{path: {tmp_path / 'v.npy'}, kind: vectors, metadata: {tmp_path / 'meta.csv'}}}\n"
        "index: [{k: 5}]\nscore: {k: 5, clusters: 4}\n"
    )
    built = build(recipe, progress=False)
    assert [type(s).__name__ for s in built.steps] == ["IngestResult", "IndexResult", "ScoreResult"]
    result = built.steps[-1]
    assert result.label_method == "knn+classifier+prediction" and result.embedding == "user"
    assert result.exact_groups == 0 and result.pixel_check is False  # vectors: no hash, no image
    ds = open_dataset(built.dataset)
    assert [s["step"] for s in ds.manifest["steps"]] == ["ingest", "index", "score"]
    cols = read_sample_columns(ds, ["label_issue_score", "suggested_label"]).to_pandas()
    top = cols["label_issue_score"].sort_values(ascending=False).index[:10]
    assert len(set(top) & set(range(10))) >= 9
    assert (cols["suggested_label"][:10] == [f"c{v}" for v in y[:10]]).all()


def test_score_step_confirms_changed_copies_by_their_thumbnails(tmp_path, mnist_small):
    """Real digits through ingest; the embedding is the raw pixels (no model needed)."""
    from pipeline.ingest import ingest
    from pipeline.score import score

    images, labels = mnist_small
    folder = tmp_path / "imgs"
    for i in range(120):
        path = folder / "train" / str(labels[i]) / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(images[i]))
    (folder / "test" / str(labels[0])).mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "train" / str(labels[0]) / "000.png", folder / "test" / str(labels[0]))
    darker = folder / "test" / str(labels[1]) / "dark.png"
    darker.parent.mkdir(parents=True, exist_ok=True)
    darker.write_bytes(_png(images[1] * 0.8))
    ingest(tmp_path / "ds", source=folder, progress=False, thumb_size=64)
    ds = open_dataset(tmp_path / "ds")
    samples = ds.read_pandas("samples", columns=["id", "uri"])
    pixels = {p: _gray(p).ravel() for p in samples["uri"]}
    # A deliberately poor embedding (bright pixels only), which loses the darker copy.
    vectors = np.stack([(pixels[p] > 200).astype(np.float32) for p in samples["uri"]])
    w = ds.writer("embeddings/pix.raw")
    w.write_part(0, vectors_to_table(samples["id"].to_numpy(), vectors))
    w.commit(meta={"model": "pix", "layer": "raw"})

    off = score(ds, k=5, pixel_check=False, progress=False)
    on = score(ds, k=5, progress=False)
    assert not off.pixel_check and on.pixel_check and (off.exact_groups, on.exact_groups) == (1, 1)
    assert (off.near_groups, on.near_groups) == (0, 1)
    cols = read_sample_columns(ds, ["uri", "duplicate_group", "duplicate_kind"]).to_pandas()
    row = {u.split("imgs/", 1)[1]: i for i, u in enumerate(cols["uri"])}
    group, kind = cols["duplicate_group"], cols["duplicate_kind"]
    first = row[f"train/{labels[0]}/000.png"]
    assert group[first] == group[row[f"test/{labels[0]}/000.png"]] >= 0
    assert kind[first] == "exact"
    second = row[f"train/{labels[1]}/001.png"]
    assert group[second] == group[row[f"test/{labels[1]}/dark.png"]] >= 0
    assert kind[second] == "near"
    assert on.duplicates == 4


@pytest.mark.slow
def test_score_step_on_the_real_demo(demo_dataset, tmp_path):
    """The real pipeline on real images: the demo's digits, EfficientNet-Lite0 blocks.5."""
    from pipeline.score import score

    root = tmp_path / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache"))
    r = score(root, embedding="efficientnet_lite0.blocks.5", force=True, progress=False)
    assert r.rows == 5000 and r.clusters == 20 and r.pixel_check is True
    assert r.label_method == "knn+classifier"
    ds = open_dataset(root)
    cols = read_sample_columns(
        ds, ["label", "label_issue_score", "suggested_label", "outlier_score", "cluster"]
    ).to_pandas()
    assert cols["label_issue_score"].notna().all()  # every digit has a label
    # The classifier and the neighbours agree with most labels ...
    assert (cols["suggested_label"] == cols["label"]).mean() >= 0.85
    # ... and the highest label-issue scores are where they disagree.
    top = cols.sort_values("label_issue_score", ascending=False).head(100)
    assert (top["suggested_label"] != top["label"]).mean() >= 0.8
    assert cols["cluster"].nunique() == 20
    # Clusters follow the digits: each cluster's commonest label covers most of it.
    purity = cols.groupby("cluster")["label"].agg(lambda s: s.value_counts().iloc[0] / len(s))
    assert purity.mean() >= 0.6


def test_planted_folder_matches_its_ground_truth(tmp_path):
    from pipeline.planted import NEAR_CHANGES, read_truth, write_planted_folder

    out = write_planted_folder(tmp_path / "p", limit=200, exact=5, near=4, ood=3)
    truth = read_truth(out)
    assert len(truth["flipped"]) == 10 and len(truth["exact"]) == 5 and len(truth["near"]) == 4
    for path, flip in truth["flipped"].items():
        assert path.split("/")[1] == flip["given"] != flip["true"] and (out / path).is_file()
    for pair in truth["exact"]:
        assert (out / pair["copy"]).read_bytes() == (out / pair["original"]).read_bytes()
        assert pair["copy"].split("/")[0] != pair["original"].split("/")[0]  # other split
    assert [p["change"] for p in truth["near"]] == list(NEAR_CHANGES)
    for pair in truth["near"]:
        copy, original = _gray(out / pair["copy"]), _gray(out / pair["original"])
        assert 0 < np.abs(copy - original).mean() < 40
    for item in truth["ood"]:
        assert _gray(out / item["path"]).shape == (28, 28)
    files = sorted(p for p in out.rglob("*") if p.suffix in (".png", ".jpg"))
    assert len(files) == 200 + 5 + 4 + 3
    planted = {*truth["flipped"], *(p["original"] for p in truth["exact"] + truth["near"])}
    assert len(planted) == 10 + 5 + 4  # the sets do not overlap
    assert write_planted_folder(out, limit=200, exact=5, near=4, ood=3) == out  # kept
