"""Tags and export: latest-wins semantics, validation, durability, concurrent writers and
compaction across processes and threads, Parquet/CSV round trips, and the CLI.

The dataset is real: 40 generated PNGs ingested by the pipeline (labels cat/dog/@home from
the folders, train/test splits, three partitions), plus a ``scores`` table.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embviz._tagfiles import TagFiles
from embviz.dataset import open_dataset
from embviz.errors import ExportError, TagError
from embviz.export import export_samples, export_tags, samples_table
from embviz.tags import BUILTIN_TAGS, TagStore

N = 40
LABELS = ("cat", "dog", "@home")  # '@home' is a label a spreadsheet would run as a formula


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The ingested dataset with a scores table; tests copy it before tagging."""
    from PIL import Image

    from embviz.pipeline.ingest import ingest

    root = tmp_path_factory.mktemp("tags")
    rng = np.random.default_rng(0)
    for i in range(N):
        path = root / "imgs" / ("test" if i % 4 == 0 else "train") / LABELS[i % 3] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
    ingest(root / "ds", source=root / "imgs", partition_rows=16, threads=1, progress=False)
    ds = open_dataset(root / "ds")
    ids = ds.read_arrow("samples", columns=["id"]).column("id").to_numpy()
    w = ds.writer("scores")
    w.write_part(0, pa.table({"id": ids, "outlier_score": (ids * 0.5).astype(np.float32)}))
    w.commit({"test": "scores"})
    return root / "ds"


@pytest.fixture
def root(base, tmp_path):
    shutil.copytree(base, tmp_path / "ds")
    return tmp_path / "ds"


def _samples(root) -> pd.DataFrame:
    return open_dataset(root).read_pandas("samples").set_index("id")


def _live(store) -> set[tuple]:
    cur = store.current()
    return {
        (int(i), t, None if pd.isna(v) else v)
        for i, t, v in zip(cur["id"], cur["tag"], cur["value"], strict=True)
    }


# -- semantics ---------------------------------------------------------------------------------
def test_add_remove_relabel_note_latest_wins(root):
    s = TagStore(root)
    assert s.add([1, 2, 3, 3], "exclude") == 3  # duplicates count once
    assert s.add(2, "relabel", "bird", user="ann") == 1
    assert s.add(2, "relabel", "fish", user="bob") == 1  # a new value replaces the old
    assert s.add([4], "note", "blurry") == 1
    assert s.add([4], "note", "very blurry") == 1
    assert s.add([4, 5], "review") == 2
    assert s.add([6], "Needs crop") == 1  # a custom tag
    assert s.remove([1, 9], "exclude") == 2  # removing an absent tag is harmless
    assert _live(s) == {
        (2, "exclude", None),
        (3, "exclude", None),
        (2, "relabel", "fish"),
        (4, "note", "very blurry"),
        (4, "review", None),
        (5, "review", None),
        (6, "Needs crop", None),
    }
    assert s.ids("exclude").tolist() == [2, 3]
    assert s.ids("relabel", "fish").tolist() == [2] and s.ids("relabel", "bird").size == 0
    assert s.counts() == {"exclude": 2, "relabel": 1, "review": 2, "note": 1, "Needs crop": 1}
    tags = s.of(2)
    assert [t["tag"] for t in tags] == ["exclude", "relabel"]
    assert tags[1]["value"] == "fish" and tags[1]["user"] == "bob"
    assert tags[1]["time"].tzinfo is not None
    assert s.of(39) == []
    s.remove(2, "relabel")
    s.add(3, "exclude")  # re-adding after a remove (and adding twice) keeps one row
    assert s.ids("relabel").size == 0 and s.ids("exclude").tolist() == [2, 3]
    cur = s.current()
    assert list(cur.columns) == ["id", "tag", "value", "user", "time"]
    assert cur[["id", "tag"]].duplicated().sum() == 0
    assert set(BUILTIN_TAGS) == {"exclude", "relabel", "review", "note"}


def test_version_changes_on_every_write_and_compaction(root):
    s = TagStore(root)
    v0 = s.version
    assert s.version == v0
    s.add(1, "review")
    v1 = s.version
    s.remove(1, "review")
    v2 = s.version
    s.compact()
    v3 = s.version
    assert len({v0, v1, v2, v3}) == 4
    assert TagStore(root).version == v3  # the same on disk for every reader


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add([1], ""), "bad tag name ''"),
        (lambda s: s.add([1], "-x"), "bad tag name '-x'"),
        (lambda s: s.add([1], "a;b"), "bad tag name 'a;b'"),
        (lambda s: s.add([1], "x" * 41), "bad tag name 'xxxx"),
        (lambda s: s.add([1], "trailing "), "bad tag name 'trailing '"),
        (lambda s: s.add([1], "Exclude"), "'Exclude' differs from the built-in tag 'exclude'"),
        (lambda s: s.add([1], 7), "tag name must be a string, got int 7"),
        (lambda s: s.add([1], "relabel"), "tag 'relabel' needs a value (the new label)"),
        (lambda s: s.add([1], "relabel", "  "), "tag 'relabel' needs a non-empty value"),
        (lambda s: s.add([1], "note", ""), "tag 'note' needs a non-empty value"),
        (lambda s: s.add([1], "note", "x" * 501), "501 characters; at most 500"),
        (lambda s: s.add([1], "note", 5), "value must be a string, got int 5"),
        (lambda s: s.add([1], "note", "ok\x00"), "control character '\\x00' at character 2"),
        (lambda s: s.add([1], "relabel", "\x1b[31mcat"), "control character '\\x1b'"),
        (lambda s: s.add([1], "note", "abc\u202edcba"), "control character '\\u202e'"),
        (lambda s: s.add([1], "note", "x\ud800"), "is not valid text (character 1)"),
        (lambda s: s.add([1], "review", user="u" * 101), "user must be a string"),
        (lambda s: s.add([1, 40, -3], "review"), "sample id 40 is not in the dataset"),
        (lambda s: s.add([0, 1000], "review"), "sample id 1000 is not in the dataset"),
        (lambda s: s.remove([1000], "review"), "sample id 1000 is not in the dataset"),
        (lambda s: s.add([1, "2"], "review"), "sample ids must be integers; got '2'"),
        (lambda s: s.add([1, 2.5], "review"), "sample ids must be integers; got 2.5"),
        (lambda s: s.add([True], "review"), "sample ids must be integers; got True"),
    ],
)
def test_bad_input_is_refused_by_name_and_writes_nothing(root, call, message):
    s = TagStore(root)
    with pytest.raises(TagError) as info:
        call(s)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not (root / "tags").exists() or not list((root / "tags").glob("events-*"))
    assert s.current().empty


def test_values_are_stored_as_given(root):
    s = TagStore(root)
    hostile = "<script>alert(1)</script> & 'quotes' \"double\"\nsecond line ünï"
    s.add(7, "note", hostile)
    s.add(8, "relabel", "=1+1")
    assert TagStore(root).of(7)[0]["value"] == hostile
    assert TagStore(root).ids("relabel", "=1+1").tolist() == [8]


def test_not_a_dataset_is_named(tmp_path):
    with pytest.raises(Exception, match="not an embviz dataset|not a directory"):
        TagStore(tmp_path / "nowhere")


# -- durability ------------------------------------------------------------------------------
def test_tags_survive_reopen_and_compaction(root):
    s = TagStore(root, compact_after=3)
    for i in range(10):
        s.add(i, "review", user=f"u{i}")
    s.remove(0, "review")
    s.add(1, "relabel", "dog")
    expected = _live(s)
    assert len(expected) == 10
    files = sorted(p.name for p in (root / "tags").iterdir())
    assert sum(f.startswith("snapshot-") for f in files) == 1  # compacted on the way
    assert sum(f.startswith("events-") for f in files) <= 3
    assert _live(TagStore(root)) == expected
    s.compact()
    assert not list((root / "tags").glob("events-*"))
    again = TagStore(root)
    assert _live(again) == expected
    assert again.of(5)[0]["user"] == "u5"


def test_late_event_files_fold_by_time_not_arrival(root, monkeypatch):
    """An event file renamed into place after a compaction, but stamped earlier than what the
    snapshot holds, neither wins over a newer add nor resurrects a newly removed tag."""
    import embviz._tagfiles as tagfiles

    s = TagStore(root, compact_after=1000)
    real_now = tagfiles.now_ns
    early = real_now() - 10_000_000_000  # 10 s ago
    s.add(1, "review")
    s.add(2, "review")
    s.remove(2, "review")  # a tombstone the snapshot must keep
    s.compact()
    monkeypatch.setattr(tagfiles, "now_ns", lambda: early)
    s.remove(1, "review")  # older than the add: loses
    s.add(2, "review")  # older than the remove: loses
    monkeypatch.setattr(tagfiles, "now_ns", real_now)
    assert _live(TagStore(root)) == {(1, "review", None)}
    s.compact()
    assert _live(TagStore(root)) == {(1, "review", None)}


def test_crash_leftovers_are_ignored_then_cleaned(root):
    s = TagStore(root, compact_after=1000)
    s.add([1, 2], "exclude")
    s.add([3], "note", "x")
    tags_dir = root / "tags"
    saved = {p.name: p.read_bytes() for p in tags_dir.glob("events-*")}
    s.compact()
    expected = _live(TagStore(root))
    # A compaction that died after publishing its snapshot but before deleting: the absorbed
    # event files are still there, plus a half-finished snapshot and a writer's temp file.
    for name, data in saved.items():
        (tags_dir / name).write_bytes(data)
    (tags_dir / "snapshot-00000000000000000001-dead.parquet").write_bytes(b"half")
    tmp = tags_dir / ".events-x.parquet.abc.tmp"
    tmp.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(tmp, (old, old))
    fresh = TagStore(root)
    assert _live(fresh) == expected
    version = fresh.version
    s.add(4, "review")
    s.compact()
    names = sorted(p.name for p in tags_dir.iterdir())
    assert [n for n in names if n.startswith("events-")] == []
    assert len([n for n in names if n.startswith("snapshot-")]) == 1
    assert not tmp.exists()
    assert _live(TagStore(root)) == expected | {(4, "review", None)}
    assert fresh.version != version


def test_reader_racing_a_compaction_retries_and_loses_nothing(root, monkeypatch):
    """A reader lists the event files, then a compaction absorbs and deletes them before the
    reader opens them: the reader must start over, not return a partial state."""
    writer = TagStore(root, compact_after=1000)
    for i in range(6):
        writer.add(i, "review")
    reader = TagStore(root)
    real_read = TagFiles.read_file
    raced = []

    def read_file(self, name):
        if self is reader._files and not raced:
            raced.append(name)
            writer.add(10, "exclude")
            writer.compact()  # deletes every event file the reader listed
        return real_read(self, name)

    monkeypatch.setattr(TagFiles, "read_file", read_file)
    assert _live(reader) == {(i, "review", None) for i in range(6)} | {(10, "exclude", None)}
    assert raced


# -- concurrency -------------------------------------------------------------------------------
ROUNDS = 10


def _plan(worker: int):
    """The operations one worker makes, in order: ``(op, ids, tag, value)``."""
    ops = []
    for r in range(ROUNDS):
        ops.append(("add", [worker * 6 + r % 6], "mine", None))  # disjoint ids across workers
        ops.append(("add", [r, r + 1, r + 2], "shared", None))  # overlapping ids and tag
        ops.append(("add", [r], f"w{worker}", f"r{r}"))  # distinct (id, tag), with a value
        ops.append(("add", [r], f"tmp{worker}", None))
        if r % 2 == 1:
            ops.append(("remove", [r - 1], f"tmp{worker}", None))  # even ids lose tmp again
    return ops


def _expected(workers: int) -> set[tuple]:
    state: dict[tuple, str | None] = {}
    for w in range(workers):
        for op, ids, tag, value in _plan(w):
            for i in ids:
                if op == "add":
                    state[(i, tag)] = value
                else:
                    state.pop((i, tag), None)
    return {(i, t, v) for (i, t), v in state.items()}


def _work(root: str, worker: int, go, store: TagStore | None = None) -> None:
    store = store or TagStore(root, compact_after=4)
    assert go.wait(120), "start signal never came"
    for op, ids, tag, value in _plan(worker):
        if op == "add":
            store.add(ids, tag, value, user=f"worker{worker}")
        else:
            store.remove(ids, tag, user=f"worker{worker}")


def test_concurrent_processes_and_threads_lose_nothing(root):
    """3 spawned processes and 3 threads (sharing one store) tag at once, compacting every
    few writes, while a thread keeps compacting and another keeps reading: afterwards every
    add and remove is there, and no reader ever saw a stable tag disappear."""
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_work, args=(str(root), w, go)) for w in range(3)]
    for p in procs:
        p.start()
    shared = TagStore(root, compact_after=4)
    errors: list[BaseException] = []

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=guarded, args=(_work, str(root), w, go, shared))
        for w in range(3, 6)
    ]
    done = threading.Event()
    compactions = []
    seen_sizes = []

    def compactor():
        store = TagStore(root)
        while not done.is_set():
            compactions.append(store.compact())
            time.sleep(0.005)

    def reader():
        store = TagStore(root)
        stable: set[tuple] = set()
        while not done.is_set():
            now = {k for k in _live(store) if not k[1].startswith("tmp")}
            missing = stable - now
            assert not missing, f"a reader lost tags it had seen: {sorted(missing)[:5]}"
            stable = now
            seen_sizes.append(len(now))

    helpers = [threading.Thread(target=guarded, args=(f,)) for f in (compactor, reader)]
    for t in [*threads, *helpers]:
        t.start()
    time.sleep(0.5)  # let the spawned interpreters import and reach the barrier
    go.set()
    for p in procs:
        p.join(180)
    for t in threads:
        t.join(180)
    done.set()
    for t in helpers:
        t.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert not errors, errors
    expected = _expected(6)
    assert _live(TagStore(root)) == expected
    assert _live(shared) == expected
    assert sum(compactions) > 0 and len(seen_sizes) > 1
    counts = TagStore(root).counts()
    assert counts["shared"] == ROUNDS + 2 and counts["mine"] == 36
    assert all(counts[f"w{w}"] == ROUNDS and counts[f"tmp{w}"] == ROUNDS // 2 for w in range(6))
    TagStore(root).compact()
    assert not list((root / "tags").glob("events-*"))
    assert _live(TagStore(root)) == expected


# -- export ------------------------------------------------------------------------------------
def _tag_some(root) -> TagStore:
    s = TagStore(root)
    s.add([1, 5], "exclude")
    s.add(2, "relabel", "zebra")
    s.add(3, "relabel", '=HYPERLINK("http://x")')
    s.add(4, "review")
    s.add(4, "note", "+SUM(A1:A9)")
    s.add(6, "blurry")
    return s


def _read(data: bytes | Path, fmt: str) -> pd.DataFrame:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    if fmt == "csv":
        return pd.read_csv(src, dtype=str, keep_default_na=False)
    return pq.read_table(src).to_pandas()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_clean_export_round_trips(root, tmp_path, fmt):
    _tag_some(root)
    samples = _samples(root)
    path = export_samples(root, tmp_path / f"clean.{fmt}")
    assert path == tmp_path / f"clean.{fmt}" and path.is_file()
    df = _read(path, fmt)
    ids = df["id"].astype(int).tolist()
    assert ids == [i for i in range(N) if i not in (1, 5)]
    assert list(df.columns[:5]) == ["id", "uri", "label", "original_label", "split"]
    assert df.columns[-1] == "tags" and "outlier_score" in df.columns  # scores joined
    row = df.set_index(df["id"].astype(int))

    def cell(v):  # what the file holds for a sample's text: CSV escapes formula-like text
        return "'" + v if fmt == "csv" and v[:1] in "=+-@" else v

    assert row.loc[2, "label"] == "zebra"
    assert row.loc[2, "original_label"] == cell(samples.loc[2, "label"])
    assert row.loc[4, "tags"] == "review;note" and row.loc[6, "tags"] == "blurry"
    assert row.loc[0, "tags"] == ""
    assert row.loc[7, "uri"] == samples.loc[7, "uri"]
    untouched = [i for i in ids if i not in (2, 3)]
    assert (row.loc[untouched, "label"] == row.loc[untouched, "original_label"]).all()
    if fmt == "csv":  # formulas from users arrive as text
        assert row.loc[3, "label"] == '\'=HYPERLINK("http://x")'
        at_home = [i for i in untouched if samples.loc[i, "label"] == "@home"]
        assert at_home and (row.loc[at_home, "label"] == "'@home").all()
        assert float(row.loc[8, "outlier_score"]) == 4.0
    else:
        assert row.loc[3, "label"] == '=HYPERLINK("http://x")'
        assert row.loc[8, "outlier_score"] == pytest.approx(4.0)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_tag_list_export_round_trips(root, tmp_path, fmt):
    _tag_some(root)
    samples = _samples(root)
    df = _read(export_tags(open_dataset(root), None, fmt=fmt), fmt)
    assert list(df.columns) == ["id", "tag", "value", "user", "time", "uri", "label"]
    got = list(zip(df["id"].astype(int), df["tag"], strict=True))
    assert got == [
        (1, "exclude"),
        (2, "relabel"),
        (3, "relabel"),
        (4, "review"),
        (4, "note"),
        (5, "exclude"),
        (6, "blurry"),
    ]
    note = df[df["tag"] == "note"].iloc[0]
    assert note["value"] == ("'+SUM(A1:A9)" if fmt == "csv" else "+SUM(A1:A9)")
    assert df["uri"].tolist() == [samples.loc[i, "uri"] for i, _ in got]
    assert pd.to_datetime(df["time"], utc=True).notna().all()
    only = _read(export_tags(root, tmp_path / f"t.{fmt}", ids=[4, 6]), fmt)
    assert only["id"].astype(int).tolist() == [4, 4, 6]


def test_selection_export_keeps_order_and_cleans_only_when_asked(root):
    _tag_some(root)
    sel = [7, 2, 1, 7, 30]
    clean = pq.read_table(io.BytesIO(export_samples(root, ids=sel))).to_pandas()
    assert clean["id"].tolist() == [7, 2, 30]  # 1 is excluded; duplicates once
    assert clean["label"].tolist()[1] == "zebra"
    raw = samples_table(root, ids=sel, clean=False).to_pandas()
    assert raw["id"].tolist() == [7, 2, 1, 30]
    assert "original_label" not in raw.columns
    assert raw["tags"].tolist() == ["", "relabel", "exclude", ""]
    assert raw["label"].tolist()[1] == _samples(root).loc[2, "label"]
    assert samples_table(root, ids=[]).num_rows == 0
    with pytest.raises(ExportError, match="sample id 999 is not in the dataset"):
        samples_table(root, ids=[1, 999])


def test_export_without_tags_is_the_manifest(root):
    t = samples_table(root)
    assert t.num_rows == N and set(t.column("tags").to_pylist()) == {""}
    assert t.column("label").to_pylist() == t.column("original_label").to_pylist()


def test_unknown_format_lists_valid_ones(root, tmp_path):
    with pytest.raises(ExportError, match=r"valid formats: \['csv', 'parquet'\]"):
        export_samples(root, tmp_path / "x.xlsx")
    with pytest.raises(ExportError, match="unknown export format 'json'"):
        export_tags(root, None, fmt="json")
    with pytest.raises(ExportError, match="suffix '.csv' means csv"):
        export_samples(root, tmp_path / "x.csv", fmt="parquet")
    assert not list(tmp_path.glob("x.*"))


def test_csv_escapes_formula_cells_and_headers():
    from embviz.export import csv_safe

    t = pa.table(
        {
            "=cmd": ["a", "=1+1", "+1", "-1", "@x", "\tx", "\rx", "ok=", None],
            "n": [-1, 2, 3, 4, 5, 6, 7, 8, 9],
        }
    )
    out = csv_safe(t)
    assert out.column_names == ["'=cmd", "n"]
    assert out.column(0).to_pylist() == [
        "a",
        "'=1+1",
        "'+1",
        "'-1",
        "'@x",
        "'\tx",
        "'\rx",
        "ok=",
        None,
    ]
    assert out.column(1).to_pylist()[0] == -1  # numbers are numbers, not formulas


# -- command line ------------------------------------------------------------------------------
def test_cli_tag_and_export(root, tmp_path, capsys):
    from embviz.pipeline.cli import main

    assert main(["-q", "tag", str(root), "--ids", "1,2,3", "--tag", "exclude"]) == 0
    assert main(["-q", "tag", str(root), "--ids", "4", "--tag", "relabel", "--value", "cow"]) == 0
    assert main(["-q", "tag", str(root), "--ids", "3", "--tag", "exclude", "--remove"]) == 0
    assert (
        main(
            [
                "-q",
                "tag",
                str(root),
                "--ids",
                "5",
                "--tag",
                "note",
                "--value",
                "hi",
                "--user",
                "zoe",
            ]
        )
        == 0
    )
    s = TagStore(root)
    assert s.ids("exclude").tolist() == [1, 2]
    assert s.of(5)[0]["user"] == "zoe"
    capsys.readouterr()

    out = tmp_path / "clean.csv"
    assert main(["-q", "export", str(root), "--out", str(out)]) == 0
    assert '"rows": 38' in capsys.readouterr().out
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert 1 not in df["id"].astype(int).tolist() and len(df) == N - 2
    assert df.set_index(df["id"].astype(int)).loc[4, "label"] == "cow"

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# picked\n9, 1\n4\n")
    out = tmp_path / "all.parquet"
    args = [
        "-q",
        "export",
        str(root),
        "--out",
        str(out),
        "--what",
        "all",
        "--ids-from",
        str(ids_file),
    ]
    assert main(args) == 0
    assert pq.read_table(out).column("id").to_pylist() == [9, 1, 4]
    out = tmp_path / "tags.parquet"
    assert main(["-q", "export", str(root), "--out", str(out), "--what", "tags"]) == 0
    assert pq.read_table(out).num_rows == 4


def test_cli_errors_are_clear(root, tmp_path, capsys):
    from embviz.pipeline.cli import main

    capsys.readouterr()
    assert main(["-q", "export", str(root), "--out", str(tmp_path / "x.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "embviz export: error:" in err and "valid formats: ['csv', 'parquet']" in err
    assert not (tmp_path / "x.xlsx").exists()
    assert main(["-q", "tag", str(root), "--ids", "1,99", "--tag", "review"]) == 2
    assert "sample id 99 is not in the dataset" in capsys.readouterr().err
    assert main(["-q", "tag", str(root), "--ids", "1", "--tag", "relabel"]) == 2
    assert "needs a value" in capsys.readouterr().err
    bad_ids = tmp_path / "bad.txt"
    bad_ids.write_text("1\n2x\n")
    assert (
        main(
            [
                "-q",
                "export",
                str(root),
                "--out",
                str(tmp_path / "y.csv"),
                "--ids-from",
                str(bad_ids),
            ]
        )
        == 2
    )
    assert "line 2: '2x' is not an integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["-q", "tag", str(root), "--ids", "a,b", "--tag", "review"])
    assert info.value.code == 2
    assert "expected comma-separated integer ids" in capsys.readouterr().err


def test_fold_of_a_cached_state_and_new_events_is_the_plain_fold():
    """Folding new events onto the cached state (``src``/``op`` categorical) gives what folding
    plain strings gives: per (id, tag) the event of the largest ``src``, tag names as strings."""
    import pandas as pd

    from embviz._tagfiles import fold

    rng = np.random.default_rng(7)

    def events(n: int, files: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "id": rng.integers(0, 50, n),
                "tag": rng.choice(["a", "b", "review", "é"], n),
                "value": rng.choice(["x", None], n),
                "op": rng.choice(["add", "remove"], n),
                "user": "u",
                "time": pd.Timestamp("2026-01-01", tz="UTC"),
                "src": rng.choice(files, n),
            }
        )

    base = events(400, [f"events-{i:03d}" for i in range(0, 40, 2)])
    new = [events(60, [f"events-{i:03d}"]) for i in (1, 17, 41)]  # older and newer names
    cached = fold([base]).astype({"src": "category", "op": "category"})
    got = fold([cached, *new]).sort_values(["id", "tag"]).reset_index(drop=True)
    plain = pd.concat([base, *new], ignore_index=True).sort_values("src", kind="stable")
    want = plain.drop_duplicates(["id", "tag"], keep="last").sort_values(["id", "tag"])
    want = want.reset_index(drop=True)
    assert got["tag"].dtype == object
    for col in ("id", "tag", "op", "src", "value"):
        assert got[col].astype(object).tolist() == want[col].astype(object).tolist(), col
