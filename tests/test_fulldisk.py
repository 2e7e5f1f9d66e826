"""A full disk during any pipeline step or tag write names the step and the file, publishes
nothing half-written, keeps the last good dataset readable, and a re-run with room finishes.

How the full disk is simulated without root: each command runs in a child whose file-size limit
(``RLIMIT_FSIZE``, ``ulimit -f``) is set with ``SIGXFSZ`` ignored, so a write past the limit
fails with ``EFBIG`` ("File too large") instead of killing the process. The limit caps each
file, not the disk, so it is set to half the size of a file the step writes (a tmpfs would
need root); a real full disk (``ENOSPC``) or quota (``EDQUOT``) takes the same code path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import _readable

from embviz.manifest import TABLE_KINDS
from embviz.tags import TagStore

TINY = "timm:test_efficientnet?pretrained=false"  # as in test_embed: 0.4M random weights
ROWS = ["--partition-rows", "20", "--threads", "1"]  # 60 images: 3 partitions per table
EMBED = ["--model", TINY, "--image-size", "32", "--batch-size", "16", "--name", "tiny"]
#: The child: ignore SIGXFSZ, cap file sizes at argv[1] bytes, then exec the embviz CLI.
LIMITED = (
    "import os, resource, signal, sys; n = int(sys.argv[1]); "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "os.execv(sys.executable, [sys.executable, '-m', 'embviz.pipeline.cli', '-q', *sys.argv[2:]])"
)
#: case -> (command line, the file it writes whose half is the limit: a glob in the base
#: dataset, or a byte count). score-manifest: the scores fit, the manifest update does not.
CASES = {
    "ingest": (["ingest", "{images}", "--out", "{ds}", *ROWS, "--force"], "thumbnails--*/*"),
    "embed": (["embed", "{ds}", *EMBED, "--force"], "embeddings/*/*.parquet"),
    "reduce": (["reduce", "{ds}", "--method", "pca", "--force"], "projections/*/*.parquet"),
    "index": (["index", "{ds}", "--force"], "index/*/index.faiss"),
    "score": (["score", "{ds}", "--force"], "scores--*/*.parquet"),
    "score-manifest": (["score", "{ds}", "--force"], "manifest.json"),
    "report": (["report", "{ds}", "--out", "{ds}/reports/r.html"], 40_000),
    "tag": (["tag", "{ds}", "--ids", "4,5", "--tag", "exclude"], "tags/events-*.parquet"),
}


def _cli(argv: list[str], limit: int | None = None) -> subprocess.CompletedProcess:
    """Run ``embviz ARGV`` in a child, with a file-size limit of ``limit`` bytes if given."""
    if limit is None:
        cmd = [sys.executable, "-m", "embviz.pipeline.cli", "-q", *argv]
    else:
        cmd = [sys.executable, "-c", LIMITED, str(limit), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def base(tmp_path_factory, mnist_small):
    """60 real digits, ingested, embedded (tiny model), reduced, indexed, scored and tagged."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fulldisk")
    images, labels = mnist_small
    for i in range(60):
        folder = root / "images" / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:03d}.png")
    ds = root / "ds"
    for argv, _ in [CASES[s] for s in ("ingest", "embed", "reduce", "index", "score")]:
        done = _cli(_fill([a for a in argv if a != "--force"], root, ds))
        assert done.returncode == 0, done.stderr[-2000:]
    TagStore(ds).add([1, 2, 3], "review", user="before")
    return root


def _fill(argv: list[str], root: Path, ds: Path) -> list[str]:
    return [a.replace("{images}", str(root / "images")).replace("{ds}", str(ds)) for a in argv]


def _published(ds: Path) -> dict:
    """What a reader sees: table versions, index folders, live tags, report files."""
    tags = TagStore(ds).current()
    return {
        "tables": {k: e["dir"] for k, e in _manifest_tables(ds).items()},
        "index": sorted(p.name for p in (ds / "index").iterdir() if not p.name.startswith(".")),
        "tags": sorted(zip(tags["id"].tolist(), tags["tag"].tolist(), strict=True)),
        "reports": {p.name: p.read_bytes() for p in sorted((ds / "reports").glob("*"))},
    }


def _manifest_tables(ds: Path) -> dict:
    from embviz.dataset import open_dataset

    return open_dataset(ds).tables


def _version_dirs(ds: Path) -> set[str]:
    """Every table version folder on disk (hidden staging folders aside)."""
    found = set()
    for kind in TABLE_KINDS:
        for parent, pattern in ((ds, f"{kind}--*"), (ds / kind, "*--*")):
            found |= {str(p.relative_to(ds)) for p in parent.glob(pattern) if p.is_dir()}
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_full_disk_names_the_file_keeps_the_last_good_data_and_reruns(base, tmp_path, case):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(base / "ds", ds)
    (ds / "reports" / "r.html").write_text("<p>the last good report</p>")
    argv, size_of = CASES[case]
    argv = _fill(argv, base, ds)
    if isinstance(size_of, int):
        limit = size_of // 2
    else:
        limit = max(p.stat().st_size for p in ds.glob(size_of)) // 2
    if case == "score-manifest":  # the scores fit under the limit: the manifest update fails
        assert max(p.stat().st_size for p in ds.glob("scores--*/*")) < limit
    before = _published(ds)

    failed = _cli(argv, limit)
    assert failed.returncode != 0, f"{case} finished under a {limit}-byte file limit"
    assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
    error = [line for line in failed.stderr.splitlines() if " error: " in line]
    assert error and error[-1].startswith(f"embviz {argv[0]}: error: {ds}/"), failed.stderr
    assert "file-size limit was hit" in error[-1] and "run it again" in error[-1], error

    assert _published(ds) == before  # nothing half-published, nothing lost
    assert set(_readable(ds)) == set(before["tables"])
    assert _version_dirs(ds) == set(before["tables"].values())  # no orphan version folder
    assert not list(ds.rglob("*.tmp")), "an atomic write left its temporary file"

    done = _cli(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _published(ds)
    assert set(before["tables"]) <= set(_readable(ds))
    assert set(before["tags"]) <= set(after["tags"])
    if case == "tag":
        assert {(4, "exclude"), (5, "exclude")} <= set(after["tags"])
    if case == "report":
        assert b"embviz-report" in after["reports"]["r.html"]


#: Tag with compaction after every write under a file-size limit: argv = limit, dataset.
COMPACTING = (
    "import resource, signal, sys; n = int(sys.argv[1]); "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "from embviz.tags import TagStore; "
    "print(TagStore(sys.argv[2], compact_after=1).add([6, 7], 'review', user='u'))"
)


def test_full_disk_during_tag_compaction_keeps_the_tag_and_warns(base, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(base / "ds", ds)
    event = max(p.stat().st_size for p in ds.glob("tags/events-*.parquet"))
    # An event file fits; the snapshot (every tag, plus the file each came from) does not.
    limit = event + 300
    cmd = [sys.executable, "-c", COMPACTING, str(limit), str(ds)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr[-3000:]
    assert "compacting them waits for free space" in done.stderr, done.stderr
    assert "file-size limit was hit" in done.stderr and str(ds / "tags") in done.stderr
    store = TagStore(ds)
    assert store.counts().get("review") == 5
    assert not list(ds.rglob("*.tmp"))
    assert store.compact() == 2 and store.counts().get("review") == 5  # with room it compacts
