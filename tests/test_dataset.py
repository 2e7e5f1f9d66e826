"""The dataset format: manifest validation, atomic table writes, resumable staging."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embviz.dataset import (
    Dataset,
    TableWriter,
    open_dataset,
    slugify,
    table_to_vectors,
    vectors_to_table,
)
from embviz.errors import DatasetError


def _samples(ids):
    return pa.table({"id": pa.array(ids, pa.int64()), "label": pa.array([str(i % 3) for i in ids])})


def _write_samples(ds, n=10, parts=2):
    w = ds.writer("samples")
    for p, chunk in enumerate(np.array_split(np.arange(n), parts)):
        w.write_part(p, _samples(chunk))
    return w.commit(meta={"source": "test"})


def test_create_write_and_reopen(tmp_path):
    ds = Dataset.create(tmp_path / "d", name="tiny")
    entry = _write_samples(ds)
    assert entry["rows"] == 10 and len(entry["partitions"]) == 2
    assert entry["partitions"][1]["id_range"] == [5, 9]
    again = open_dataset(tmp_path / "d")
    assert again.name == "tiny"
    assert again.read_pandas("samples")["id"].tolist() == list(range(10))
    assert again.to_dask("samples").npartitions == 2


def test_rewrite_replaces_old_version_and_keeps_one_dir(tmp_path):
    ds = Dataset.create(tmp_path / "d")
    first = _write_samples(ds)
    second = _write_samples(ds, n=4, parts=1)
    assert first["dir"] != second["dir"]
    assert not (tmp_path / "d" / first["dir"]).exists()
    assert open_dataset(tmp_path / "d").table("samples")["rows"] == 4


def test_crash_before_commit_leaves_last_good_table(tmp_path):
    ds = Dataset.create(tmp_path / "d")
    _write_samples(ds)
    w = ds.writer("samples")
    w.write_part(0, _samples([100, 101]))  # ... and the process dies here: no commit
    assert open_dataset(tmp_path / "d").table("samples")["rows"] == 10


def test_resumable_writer_keeps_parts_for_same_fingerprint(tmp_path):
    ds = Dataset.create(tmp_path / "d")
    w = ds.writer("embeddings/m.pooled", fingerprint={"model": "m"})
    w.write_part(0, vectors_to_table([0, 1], np.ones((2, 3))))
    assert ds.writer("embeddings/m.pooled", fingerprint={"model": "m"}).has_part(0)
    assert not ds.writer("embeddings/m.pooled", fingerprint={"model": "other"}).has_part(0)


def test_vectors_round_trip():
    ids, x = np.arange(4), np.random.default_rng(0).normal(size=(4, 5))
    got_ids, got = table_to_vectors(vectors_to_table(ids, x))
    assert got.dtype == np.float32 and got.shape == (4, 5)
    np.testing.assert_allclose(got, x.astype(np.float32))
    assert got_ids.tolist() == ids.tolist()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m.update(extra=1), "unknown key 'extra'"),
        (lambda m: m["tables"]["samples"].update(rows=3), "partitions add up to 10"),
        (lambda m: m["tables"]["samples"].update(dir="../elsewhere"), "relative path inside"),
        (
            lambda m: m["tables"]["samples"]["partitions"][0].update(file="../x.parquet"),
            "bad file name",
        ),
        (lambda m: m["tables"].update({"weird/x": {}}), "bad table key"),
    ],
)
def test_bad_manifest_names_the_key(tmp_path, edit, message):
    ds = Dataset.create(tmp_path / "d")
    _write_samples(ds)
    path = tmp_path / "d" / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=message):
        open_dataset(tmp_path / "d")


def test_missing_or_corrupt_files_are_named(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="manifest.json: missing"):
        open_dataset(tmp_path / "empty")
    ds = Dataset.create(tmp_path / "d")
    entry = _write_samples(ds)
    (tmp_path / "d" / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_dataset(tmp_path / "d")
    ds = Dataset.create(tmp_path / "e")
    entry = _write_samples(ds)
    part = tmp_path / "e" / entry["dir"] / entry["partitions"][0]["file"]
    part.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read Parquet"):
        open_dataset(tmp_path / "e").read_arrow("samples")
    part.unlink()
    with pytest.raises(DatasetError, match="missing or empty"):
        open_dataset(tmp_path / "e")


def test_unknown_table_lists_existing(tmp_path):
    ds = Dataset.create(tmp_path / "d")
    _write_samples(ds)
    with pytest.raises(DatasetError, match=r"no table 'projections/umap'.*samples"):
        ds.table("projections/umap")


def test_record_step_appends_with_times(tmp_path):
    import time

    ds = Dataset.create(tmp_path / "d")
    ds.record_step("ingest", {"source": "x"}, started=time.time() - 2, result={"rows": 1})
    step = open_dataset(tmp_path / "d").manifest["steps"][-1]
    assert step["step"] == "ingest" and step["seconds"] >= 2 and step["result"] == {"rows": 1}


def test_slugify():
    assert slugify("hf:google/vit-base-patch16-224") == "hf-google-vit-base-patch16-224"
    assert slugify("../..") == "unnamed"


# -- reading rows by id ----------------------------------------------------------------------------
@pytest.mark.parametrize("parts", [1, 2, 4])
def test_read_ids_keeps_order_leaves_out_missing_and_reads_only_needed_partitions(
    tmp_path, monkeypatch, parts
):
    import pyarrow.parquet as pq

    ds = Dataset.create(tmp_path / "d")
    _write_samples(ds, n=40, parts=parts)
    read: list[str] = []
    real = pq.read_table
    monkeypatch.setattr(
        pq, "read_table", lambda path, **kw: read.append(Path(path).name) or real(path, **kw)
    )
    ids = [37, 2, 99, 14, 2, -5, 33]  # none in 20..29: with 4 partitions, one is not read
    got = ds.read_ids("samples", ids)
    kept = [37, 2, 14, 2, 33]  # in the order asked, twice when asked twice, absent ids left out
    assert got.column("id").to_pylist() == kept
    assert got.column("label").to_pylist() == [str(i % 3) for i in kept]
    ranges = [p["id_range"] for p in ds.table("samples")["partitions"]]
    needed = {
        TableWriter.part_name(i)
        for i, (lo, hi) in enumerate(ranges)
        if any(lo <= w <= hi for w in ids)
    }
    assert sorted(read) == sorted(needed)  # each needed partition once, no other
    assert len(read) == {1: 1, 2: 2, 4: 3}[parts]
    read.clear()
    one = ds.read_ids("samples", np.array([21]), columns=["label"])
    assert one.column_names == ["id", "label"] and one.num_rows == 1 and len(read) == 1
    empty = ds.read_ids("samples", [1000, -1])
    assert empty.num_rows == 0 and empty.schema == got.schema
    assert ds.read_ids("samples", []).num_rows == 0


def test_thumbnails_are_read_by_thumb_id_through_the_one_reader(tmp_path):
    from embviz.images import read_thumbnails, thumbnail_bytes

    ds = Dataset.create(tmp_path / "d")
    w = ds.writer("thumbnails")
    for p, chunk in enumerate(np.array_split(np.arange(6), 2)):
        table = pa.table(
            {"thumb_id": pa.array(chunk, pa.int64()), "image": [bytes([i]) for i in chunk]}
        )
        w.write_part(p, table, id_range=(int(chunk[0]), int(chunk[-1])))
    w.commit()
    got = ds.read_ids("thumbnails", [4, 1], ["image"])
    assert got.to_pylist() == [{"thumb_id": 4, "image": b"\x04"}, {"thumb_id": 1, "image": b"\x01"}]
    assert read_thumbnails(ds, [4, None, -1, 99, 0]) == {0: b"\x00", 4: b"\x04"}
    assert thumbnail_bytes(ds, 5) == b"\x05" and thumbnail_bytes(ds, 6) is None
