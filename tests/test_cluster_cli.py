"""``--scheduler ADDRESS`` from the command line against a real ``dask scheduler`` and two
``dask worker`` processes, as the README shows it (not an in-process Client object)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, wait_until

from embviz.dataset import open_dataset

pytestmark = pytest.mark.slow
TINY = "timm:test_efficientnet?pretrained=false"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``tcp://127.0.0.1:PORT`` of a scheduler with two single-thread workers (separate processes)."""
    import socket

    logs = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dask = [sys.executable, "-m", "dask"]
    files = [open(logs / f"{name}.log", "w") for name in ("scheduler", "w0", "w1")]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=files[0],
            stderr=subprocess.STDOUT,
            env=env,
        )
    ]

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 60, "the dask scheduler")
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [*dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
                stdout=files[1 + i],
                stderr=subprocess.STDOUT,
                env=env,
            )
        )

    def two_workers() -> bool:
        from distributed import Client

        with Client(address, set_as_default=False, timeout=10) as c:
            return len(c.scheduler_info()["workers"]) == 2

    wait_until(two_workers, 90, "two dask workers")
    yield address
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    for f in files:
        f.close()


def embviz(*args: str) -> dict:
    """Run the ``embviz`` CLI (this interpreter's) and return its JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", "embviz.pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_synth_embed_reduce_on_a_real_cluster_by_address(cluster, tmp_path, mnist_small):
    from PIL import Image

    out = tmp_path / "synth"
    r = embviz("synth", "--points", "20000", "--out", str(out), "--scheduler", cluster)
    assert open_dataset(out).table("samples")["rows"] == 20000 == r["rows"]

    folder = tmp_path / "digits"
    images, labels = mnist_small
    for i in range(0, 120):
        sub = folder / str(labels[i])
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(sub / f"{i:04d}.png")
    ds = tmp_path / "ds"
    embviz("ingest", str(folder), "--out", str(ds), "--partition-rows", "40")
    e = embviz("embed", str(ds), "--model", TINY, "--image-size", "32", "--scheduler", cluster)
    assert e["rows"] == 120 and e["partitions_done"] == 3
    p = embviz("reduce", str(ds), "--method", "pca", "--dims", "2", "--scheduler", cluster)
    assert p["rows"] == 120
    got = open_dataset(Path(ds))
    assert got.projections and got.table("samples")["rows"] == 120
