"""Duplicate groups: exact and near copies, chains, pixel checks on real digits (also through the
``score`` step), and the planted folder's ground truth."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from embviz import duplicates
from embviz.dataset import open_dataset, vectors_to_table
from embviz.samples import read_sample_columns


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


def test_score_step_confirms_changed_copies_by_their_thumbnails(tmp_path, mnist_small):
    """Real digits through ingest; the embedding is the raw pixels (no model needed)."""
    from embviz.pipeline.ingest import ingest
    from embviz.pipeline.score import score

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


def test_planted_folder_matches_its_ground_truth(tmp_path):
    from embviz.pipeline.planted import NEAR_CHANGES, read_truth, write_planted_folder

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
