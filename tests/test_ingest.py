"""The ingest step over folders, manifests and user vectors, with broken files mixed in."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from embviz.dataset import Dataset, open_dataset
from embviz.errors import DatasetError
from embviz.images import thumbnail_bytes
from embviz.pipeline.ingest import IngestResult, ingest

# (relative path, label, split) of the good images; MNIST digit i goes to GOOD[i].
GOOD = [
    ("train/cat/a.png", "cat", "train"),
    ("train/cat/b.jpg", "cat", "train"),
    ("train/cat/c.webp", "cat", "train"),
    ("train/dog/a.png", "dog", "train"),
    ("train/dog/b.bmp", "dog", "train"),
    ("test/cat/a.png", "cat", "test"),
    ("test/cat/b.tiff", "cat", "test"),
    ("dog/validation/a.png", "dog", "val"),
    ("dog/VALID/b.PNG", "dog", "val"),
    ("bird/a.png", "bird", None),
    ("loose.png", None, None),
]
COPY = ("train/dog/copy_of_cat_a.png", "dog", "train")  # byte-identical to train/cat/a.png
# (relative path, expected reason prefix) of the files ingest must skip.
BAD = [
    ("train/cat/zero.jpg", "zero-byte file"),
    ("train/dog/notes.jpg", "not an image"),
    ("test/cat/trunc.jpg", "truncated or corrupt"),
    ("test/cat/bomb.png", "decompression bomb: 2000000 pixels > max_pixels 1000000"),
]
MAX_PIXELS = 1_000_000


def _write(root: Path, rel: str, img: Image.Image) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format={".jpg": "JPEG", ".tiff": "TIFF"}.get(path.suffix.lower()))


@pytest.fixture
def mixed_folder(tmp_path, mnist_small):
    """An image folder: real MNIST digits under split/label folders, broken files among them."""
    images, _ = mnist_small
    root = tmp_path / "images"
    for i, (rel, _, _) in enumerate(GOOD):
        _write(root, rel, Image.fromarray(images[i]).convert("RGB"))
    shutil.copy(root / GOOD[0][0], root / COPY[0])
    (root / BAD[0][0]).write_bytes(b"")
    (root / BAD[1][0]).write_text("not a jpeg\n")
    buf = io.BytesIO()
    Image.fromarray(np.tile(images[20], (4, 4))).save(buf, format="JPEG", quality=95)
    (root / BAD[2][0]).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("1", (2000, 1000)).save(root / BAD[3][0])
    # Ignored: hidden files and folders, macOS resource forks, non-image extensions.
    (root / ".DS_Store").write_bytes(b"\0\0")
    (root / "train/cat/._a.png").write_bytes(b"\0")
    (root / ".cache").mkdir()
    _write(root, ".cache/x.png", Image.new("RGB", (4, 4)))
    (root / "README.txt").write_text("labels are folder names\n")
    return root


def _ingest(ds, source, **kw):
    kw.setdefault("progress", False)
    return ingest(ds, source=source, **kw)


def test_folder_ingest_rows_labels_splits_and_report(tmp_path, mixed_folder, mnist_small, caplog):
    with caplog.at_level(logging.WARNING, logger="embviz.pipeline.ingest"):
        res = _ingest(tmp_path / "ds", mixed_folder, partition_rows=4, max_pixels=MAX_PIXELS)
    assert isinstance(res, IngestResult)
    expected = {str((mixed_folder / rel).absolute()): (lab, sp) for rel, lab, sp in [*GOOD, COPY]}
    assert res.rows == len(expected) == 12
    assert res.skipped == len(BAD)
    assert set(res.tables) == {"samples", "thumbnails"}
    assert "skipped 4 of 16" in caplog.text and "ingest.json" in caplog.text

    ds = open_dataset(tmp_path / "ds")
    df = ds.read_arrow("samples").to_pydict()
    assert df["id"] == list(range(12))
    assert df["thumb_id"] == list(range(12))
    assert df["uri"] == sorted(df["uri"])  # deterministic (sorted) order
    got = {u: (lab, sp) for u, lab, sp in zip(df["uri"], df["label"], df["split"], strict=True)}
    assert got == expected
    assert set(df["width"]) == {28} and set(df["height"]) == {28}
    assert str(ds.table("samples")["columns"]["width"]) == "int32"
    by_uri = dict(zip(df["uri"], df["content_hash"], strict=True))
    cat_a, copy = (str((mixed_folder / r).absolute()) for r in (GOOD[0][0], COPY[0]))
    assert by_uri[cat_a] == by_uri[copy]
    assert len(set(df["content_hash"])) == 11
    assert ds.meta("samples")["kind"] == "folder"

    report = json.loads(res.report_path.read_text())
    assert res.report_path == ds.root / "reports" / "ingest.json"
    assert report["rows"] == 12
    skipped = {
        Path(s["path"]).relative_to(mixed_folder).as_posix(): s["reason"] for s in report["skipped"]
    }
    assert set(skipped) == {rel for rel, _ in BAD}
    for rel, reason in BAD:
        assert skipped[rel].startswith(reason), rel

    # Aligned partitions: 12 rows in parts of 4, same id ranges in both tables.
    s_parts, t_parts = ds.table("samples")["partitions"], ds.table("thumbnails")["partitions"]
    assert [p["rows"] for p in s_parts] == [4, 4, 4]
    assert [p["id_range"] for p in s_parts] == [p["id_range"] for p in t_parts]
    assert [p["id_range"] for p in s_parts] == [[0, 3], [4, 7], [8, 11]]
    assert [s["step"] for s in ds.manifest["steps"]] == ["ingest"]


def test_thumbnails_found_by_id_and_look_like_the_image(tmp_path, mixed_folder, mnist_small):
    images, _ = mnist_small
    _ingest(tmp_path / "ds", mixed_folder, partition_rows=5, max_pixels=MAX_PIXELS, thumb_size=48)
    ds = open_dataset(tmp_path / "ds")
    df = ds.read_pandas("samples")
    for row in df.itertuples():
        data = thumbnail_bytes(ds, row.thumb_id)
        thumb = Image.open(io.BytesIO(data))
        assert thumb.format == "WEBP" and thumb.size == (48, 48)
        rel = Path(row.uri).relative_to(mixed_folder).as_posix()
        if rel == COPY[0]:
            continue
        digit = images[[g[0] for g in GOOD].index(rel)].astype(float)
        back = np.asarray(thumb.convert("L").resize((28, 28), Image.Resampling.BOX), float)
        tol = 25 if rel.endswith(".jpg") else 15
        assert np.abs(back - digit).mean() < tol, rel
    assert thumbnail_bytes(ds, -1) is None
    assert thumbnail_bytes(ds, 10_000) is None


def test_rerun_replaces_tables_and_limit(tmp_path, mixed_folder):
    ds_path = tmp_path / "ds"
    _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS)
    ds = open_dataset(ds_path)
    first_dir = ds.table("samples")["dir"]
    res = _ingest(Dataset.create(ds_path), mixed_folder, max_pixels=MAX_PIXELS, limit=8)
    ds = open_dataset(ds_path)
    # The first 8 candidates in sorted order hold 2 broken files (test/cat/bomb, trunc).
    assert ds.table("samples")["rows"] == res.rows == 6 and res.skipped == 2
    assert not (ds_path / first_dir).exists()
    assert len(list(ds_path.glob("samples*"))) == 1
    assert [s["step"] for s in ds.manifest["steps"]] == ["ingest", "ingest"]


def test_nothing_valid_is_an_error_pointing_at_the_report(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"")
    (src / "b.png").write_text("no")
    with pytest.raises(DatasetError, match=r"no valid input.*reports/ingest\.json"):
        _ingest(tmp_path / "ds", src)
    report = json.loads((tmp_path / "ds" / "reports" / "ingest.json").read_text())
    assert report["rows"] == 0 and len(report["skipped"]) == 2
    assert not Dataset.create(tmp_path / "ds").has("samples")


def test_manifest_keeps_metadata_and_reports_missing_files(tmp_path, mnist_small):
    images, labels = mnist_small
    (tmp_path / "imgs").mkdir()
    names = []
    for i in range(6):
        name = f"imgs/{i}.png"
        Image.fromarray(images[i]).save(tmp_path / name)
        names.append(name)
    names.insert(3, "imgs/missing.png")
    table = pa.table(
        {
            "path": names,
            "label": [int(labels[i]) for i in range(7)],
            "split": ["train", "validation", "test", "train", "train", "Valid", None],
            "score": [10 * i for i in range(7)],
            "id": [100 + i for i in range(7)],  # clashes with the core column: kept as meta_id
        }
    )
    csv = tmp_path / "manifest.csv"
    table.to_pandas().to_csv(csv, index=False)
    res = _ingest(tmp_path / "ds", csv, partition_rows=4)
    assert res.rows == 6 and res.skipped == 1
    report = json.loads(res.report_path.read_text())
    assert report["skipped"] == [
        {
            "row": 3,
            "path": str((tmp_path / "imgs/missing.png").absolute()),
            "reason": "file not found",
        }
    ]
    df = open_dataset(tmp_path / "ds").read_arrow("samples").to_pandas()
    kept = [0, 1, 2, 4, 5, 6]
    assert df["score"].tolist() == [10 * i for i in kept]
    assert df["meta_id"].tolist() == [100 + i for i in kept]
    assert df["label"].tolist() == [str(int(labels[i])) for i in kept]
    splits = open_dataset(tmp_path / "ds").read_arrow("samples").column("split").to_pylist()
    assert splits == ["train", "val", "test", "train", "val", None]
    assert df["uri"].tolist() == [str((tmp_path / names[i]).absolute()) for i in kept]

    parquet = tmp_path / "manifest.parquet"
    pq.write_table(table, parquet)
    res = _ingest(tmp_path / "ds2", parquet, kind="manifest")
    assert res.rows == 6
    assert open_dataset(tmp_path / "ds2").meta("samples")["kind"] == "manifest"


def test_manifest_without_path_column_names_file_and_columns(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,label\na.png,cat\n")
    with pytest.raises(DatasetError, match=r"m\.csv.*'path'.*\['file', 'label'\]"):
        _ingest(tmp_path / "ds", csv, kind="manifest")
    with pytest.raises(DatasetError, match=r"m\.csv.*cannot tell.*\['file', 'label'\]"):
        _ingest(tmp_path / "ds", csv)


def test_vectors_from_npy_and_csv(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(30, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "label,split,note\n"
        + "".join(f"c{i % 3},{'train' if i < 20 else 'test'},n{i}\n" for i in range(30))
    )
    res = _ingest(
        tmp_path / "ds",
        tmp_path / "v.npy",
        metadata=meta,
        partition_rows=8,
        embedding_name="my emb",
    )
    assert res.rows == 30
    assert set(res.tables) == {"samples", "embeddings/my-emb"}
    ds = open_dataset(tmp_path / "ds")
    ids, got = ds.read_vectors("my-emb")
    assert ids.tolist() == list(range(30))
    np.testing.assert_array_equal(got, vecs)
    assert ds.meta("embeddings/my-emb") == {
        "model": "user",
        "layer": "my emb",
        "dim": 8,
        "source": str(tmp_path / "v.npy"),
    }
    df = ds.read_pandas("samples")
    assert (df["thumb_id"] == -1).all() and df["uri"].isna().all()
    assert df["label"].tolist()[:4] == ["c0", "c1", "c2", "c0"]
    assert df["note"].tolist()[-1] == "n29"
    assert [p["id_range"] for p in ds.table("embeddings/my-emb")["partitions"]] == [
        p["id_range"] for p in ds.table("samples")["partitions"]
    ]

    short = tmp_path / "short.csv"
    short.write_text("label\n" + "a\n" * 29)
    with pytest.raises(DatasetError, match=r"short\.csv has 29 rows but .*v\.npy has 30 vectors"):
        _ingest(tmp_path / "ds", tmp_path / "v.npy", metadata=short)

    vecs[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", vecs)
    with pytest.raises(DatasetError, match=r"nan\.npy: row 7: .*non-finite"):
        _ingest(tmp_path / "ds", tmp_path / "nan.npy", partition_rows=5)
    # The failed run left the good tables in place.
    assert open_dataset(tmp_path / "ds").table("samples")["rows"] == 30


def test_vectors_from_parquet_list_column(tmp_path):
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(12, 5))
    ids = rng.permutation(12) + 50
    table = pa.table(
        {
            "id": ids,
            "emb": pa.array(list(vecs), pa.list_(pa.float64())),
            "path": [f"img/{i}.png" for i in ids],
            "label": [f"k{i % 2}" for i in ids],
            "weight": ids * 0.5,
        }
    )
    path = tmp_path / "vecs.parquet"
    pq.write_table(table, path)
    res = _ingest(tmp_path / "ds", path, vector_column="emb", partition_rows=5)  # auto
    assert res.rows == 12
    ds = open_dataset(tmp_path / "ds")
    got_ids, got = ds.read_vectors("user")
    assert got_ids.tolist() == sorted(ids.tolist())
    order = np.argsort(ids)
    np.testing.assert_allclose(got, vecs[order].astype(np.float32))
    df = ds.read_pandas("samples")
    assert df["id"].tolist() == sorted(ids.tolist())
    assert df["weight"].tolist() == [i * 0.5 for i in sorted(ids.tolist())]
    assert df["uri"].tolist() == [str((tmp_path / f"img/{i}.png").absolute()) for i in sorted(ids)]

    with pytest.raises(DatasetError, match=r"vecs\.parquet: no vector column 'vector'.*'emb'"):
        _ingest(tmp_path / "ds", path, kind="vectors")
    ragged = pa.table({"vector": pa.array([[1.0, 2.0], [1.0, 2.0], [3.0]], pa.list_(pa.float32()))})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(DatasetError, match=r"ragged\.parquet: row 2: .*1 values"):
        _ingest(tmp_path / "ds", tmp_path / "ragged.parquet")


def test_vectors_with_user_coordinates_write_a_projection(tmp_path):
    pytest.importorskip("embviz.pipeline.reduce")
    rng = np.random.default_rng(3)
    n = 40
    table = pa.table(
        {
            "vector": pa.array(
                list(rng.normal(size=(n, 4)).astype(np.float32)), pa.list_(pa.float32())
            ),
            "x": rng.uniform(-1, 1, n),
            "y": rng.uniform(0, 5, n),
        }
    )
    pq.write_table(table, tmp_path / "v.parquet")
    res = _ingest(tmp_path / "ds", tmp_path / "v.parquet", coord_columns=["x", "y"])
    assert "projections/user2d" in res.tables
    ds = open_dataset(tmp_path / "ds")
    proj = ds.read_pandas("projections/user2d").sort_values("id")
    assert proj["id"].tolist() == list(range(n))
    np.testing.assert_allclose(proj["x"], table.column("x").to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(proj["y"], table.column("y").to_numpy(), rtol=1e-6)
    assert "x" not in ds.table("samples")["columns"]


# -- idempotence: an unchanged source is not ingested again -------------------------------------
def _touch(path: Path) -> None:
    """Move ``path``'s mtime one second on (a same-second touch may not change it on disk)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _state(ds_path: Path) -> tuple[str, int, int]:
    """(samples dir, number of recorded steps, report mtime): what a reused run must not change."""
    ds = open_dataset(ds_path)
    report = ds_path / "reports" / "ingest.json"
    return ds.table("samples")["dir"], len(ds.manifest["steps"]), report.stat().st_mtime_ns


def test_unchanged_folder_is_reused_and_any_change_reingests(tmp_path, mixed_folder, monkeypatch):
    ds_path = tmp_path / "ds"
    first = _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS)
    assert not first.reused
    fp = open_dataset(ds_path).meta("samples")["fingerprint"]
    assert isinstance(fp, str) and len(fp) == 32
    before = _state(ds_path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a reused ingest must not decode images")

    with monkeypatch.context() as m:
        m.setattr("embviz.pipeline.ingest.image_info", no_decoding)
        again = _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS, threads=4)
    assert again.reused  # and no image was decoded (no_decoding); speed is for benchmarks
    assert (again.rows, again.skipped, again.tables) == (first.rows, first.skipped, first.tables)
    assert again.report_path == first.report_path
    assert _state(ds_path) == before  # same table dir, no new step, report untouched

    # Each change re-ingests: a touched file, an added one, a removed one, another parameter.
    _touch(mixed_folder / GOOD[3][0])
    res = _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS)
    assert not res.reused and res.rows == 12
    dirs = {before[0], open_dataset(ds_path).table("samples")["dir"]}
    assert len(dirs) == 2
    assert open_dataset(ds_path).meta("samples")["fingerprint"] != fp
    assert _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS).reused

    extra = mixed_folder / "bird" / "extra.png"
    shutil.copy(mixed_folder / GOOD[9][0], extra)
    res = _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS)
    assert not res.reused and res.rows == 13
    extra.unlink()
    res = _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS)
    assert not res.reused and res.rows == 12
    res = _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS, thumb_size=48)
    assert not res.reused
    assert open_dataset(ds_path).meta("thumbnails")["size"] == 48

    # force= re-ingests unchanged inputs.
    dir_before = open_dataset(ds_path).table("samples")["dir"]
    res = _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS, thumb_size=48, force=True)
    assert not res.reused and res.rows == 12
    assert open_dataset(ds_path).table("samples")["dir"] != dir_before
    steps = open_dataset(ds_path).manifest["steps"]
    assert [s["step"] for s in steps] == ["ingest"] * 6


def test_missing_table_is_not_reused(tmp_path, mixed_folder):
    ds_path = tmp_path / "ds"
    _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS)
    ds = open_dataset(ds_path)
    ds.update_manifest(lambda m: m["tables"].pop("thumbnails"))
    res = _ingest(ds_path, mixed_folder, max_pixels=MAX_PIXELS)
    assert not res.reused and open_dataset(ds_path).has("thumbnails")


def test_manifest_reingests_when_a_listed_image_changes(tmp_path, mnist_small):
    images, _ = mnist_small
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(images[i]).save(tmp_path / f"imgs/{i}.png")
    csv = tmp_path / "m.csv"
    csv.write_text("path\n" + "".join(f"imgs/{i}.png\n" for i in range(3)))
    ds_path = tmp_path / "ds"
    assert not _ingest(ds_path, csv).reused
    assert _ingest(ds_path, csv).reused
    _touch(tmp_path / "imgs/1.png")
    assert not _ingest(ds_path, csv).reused
    _touch(csv)
    assert not _ingest(ds_path, csv).reused
    assert _ingest(ds_path, csv).reused


def test_vectors_reused_until_the_metadata_changes(tmp_path):
    vecs = np.random.default_rng(4).normal(size=(10, 3)).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    meta = tmp_path / "meta.csv"
    meta.write_text("label\n" + "a\n" * 10)
    ds_path = tmp_path / "ds"
    first = _ingest(ds_path, tmp_path / "v.npy", metadata=meta)
    emb_dir = open_dataset(ds_path).table("embeddings/user")["dir"]
    again = _ingest(ds_path, tmp_path / "v.npy", metadata=meta)
    assert again.reused and again.tables == first.tables == ("samples", "embeddings/user")
    assert open_dataset(ds_path).table("embeddings/user")["dir"] == emb_dir
    assert not _ingest(ds_path, tmp_path / "v.npy", metadata=meta, embedding_name="other").reused
    _touch(meta)
    assert not _ingest(ds_path, tmp_path / "v.npy", metadata=meta).reused


def test_non_finite_coordinates_are_kept_off_the_map_and_counted(tmp_path, capsys):
    """One NaN coordinate must not refuse the whole file: the row stays in the dataset, off
    the map, counted and listed; --strict keeps the refusal."""
    from embviz.pipeline.cli import main
    from embviz.projections import unplaced_ids

    rng = np.random.default_rng(3)
    xy = rng.normal(size=(20, 2))
    xy[7, 0], xy[12, 1] = np.nan, np.inf
    table = pa.table(
        {
            "id": np.arange(20),
            "vector": pa.array(list(rng.normal(size=(20, 4))), pa.list_(pa.float64())),
            "x": xy[:, 0],
            "y": xy[:, 1],
        }
    )
    path = tmp_path / "vecs.parquet"
    pq.write_table(table, path)
    res = _ingest(tmp_path / "ds", path, coord_columns=["x", "y"])
    assert res.rows == 20 and res.unplaced == 2
    ds = open_dataset(tmp_path / "ds")
    assert ds.table("samples")["rows"] == 20
    assert ds.table("projections/user2d")["rows"] == 18
    assert ds.meta("projections/user2d")["unplaced"] == 2
    assert unplaced_ids(ds, "user2d").tolist() == [7, 12]
    argv = ["-q", "ingest", str(path), "--out", str(tmp_path / "strict"), "--coords", "x,y"]
    assert main([*argv, "--strict"]) != 0
    assert re.search(r"vecs\.parquet: row 7: coordinates .* non-finite", capsys.readouterr().err)


def test_the_explorer_counts_and_lists_the_samples_off_the_map(tmp_path):
    from embviz.app.explorer import Explorer

    rng = np.random.default_rng(4)
    xy = rng.normal(size=(30, 2))
    xy[[3, 9, 21], 0] = np.nan
    table = pa.table(
        {
            "id": np.arange(30),
            "vector": pa.array(list(rng.normal(size=(30, 4))), pa.list_(pa.float64())),
            "x": xy[:, 0],
            "y": xy[:, 1],
            "label": [f"c{i % 3}" for i in range(30)],
        }
    )
    pq.write_table(table, tmp_path / "v.parquet")
    _ingest(tmp_path / "ds", tmp_path / "v.parquet", coord_columns=["x", "y"])
    ex = Explorer(tmp_path / "ds")
    assert ex.map.last.frame.points == 27 and ex.unplaced == 3
    ex.list_unplaced()
    assert ex.session.shown_ids.tolist() == [3, 9, 21]
    assert ex.selected.id.tolist() == [3, 9, 21]  # listed rows read like any selection (export)
