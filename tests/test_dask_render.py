"""Frames aggregated on a Dask cluster equal the one-process frames pixel for pixel: over 1, 2
and 4 persisted partitions, with a worker killed between frames, through ``register_source``,
and from ``embviz serve --scheduler`` against a scheduler and workers in their own processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, wait_until

from embviz.render.dask_source import DaskSources, cache_of, use_scheduler
from embviz.render.raster import Renderer, Style
from embviz.render.store import PointStore, View, clear_stores, load_store

pytestmark = pytest.mark.cluster

#: 45 labels: "label" takes the many-category layout (count + top code), "split" the stacked one.
LABELS = 45
W, H = 160, 120


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 50,000-point synthetic dataset (2D projection only), its explorer cache not yet written."""
    from embviz.pipeline.synth import synth

    out = tmp_path_factory.mktemp("dask") / "ds"
    synth(out, points=50_000, labels=LABELS, seed=5, dims=(2,), progress=False)
    return out


@pytest.fixture(scope="module")
def store(dataset):
    """The store as the first server start loads it: from the tables, cache written beside."""
    clear_stores()
    s = load_store(dataset, "synth.2d")
    assert not (Path(s.key) / "meta.json").exists()  # named by its table, not its cache
    yield s
    clear_stores()


@pytest.fixture(scope="module")
def client():
    """A client of a LocalCluster: two single-thread worker processes."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c,
        Client(c, set_as_default=False) as cl,
    ):
        yield cl


def views(store: PointStore) -> list[View]:
    """The full view, a quarter, and a narrow view around one dense chunk."""
    e = store.extent
    b = store.bounds[len(store.bounds) // 2]
    return [
        e,
        View(e.x0, (e.x0 + e.x1) / 2, e.y0, (e.y0 + e.y1) / 2),
        View(b[0], (b[0] + b[1]) / 2, b[2], (b[2] + b[3]) / 2),
    ]


FRAMES = [
    ("category", "label", Style()),
    ("category", "label", Style(hidden=frozenset({"class_03", "class_07"}))),
    ("category", "split", Style()),
    ("numeric", "score", Style()),
    ("density", None, Style()),
]


def same_frame(store, source, view, mode, color_by, style: Style | None = None) -> None:
    """Aggregate and render on the cluster and here; assert equal aggregates and PNG bytes."""
    style = style or Style()
    names = store.categories(color_by) if mode == "category" else []
    hidden = tuple(i for i, n in enumerate(names) if n in style.hidden)
    got = []
    for r in (Renderer(store, sources=[source]), Renderer(store, sources=[])):
        agg = r.aggregate(view, W, H, mode=mode, color_by=color_by, hidden_codes=hidden)
        frame = r.render(view, W, H, mode=mode, color_by=color_by, style=style)  # agg reused
        got.append((r.answered_by, agg, frame))
    (by, ra, a), (local, la, b) = got
    assert (by, local) == ("DaskSource", "local")
    assert ra.identical(la), (mode, color_by, view)
    for name in getattr(la, "data_vars", [None]):
        assert (ra if name is None else ra[name]).dtype == (la if name is None else la[name]).dtype
    if "counts" in la.attrs:
        np.testing.assert_array_equal(ra.attrs["counts"], la.attrs["counts"])
    assert a.png == b.png and a.counts == b.counts and a.points == b.points > 0


@pytest.mark.parametrize("partitions", [2, 4, 1])  # 2 first: both workers compile at once
def test_cluster_frames_equal_local_frames_over_partition_counts(store, client, partitions):
    chunks = len(store.bounds)
    factory = DaskSources(client, partition_rows=-(-chunks // partitions) * store.chunk_rows)
    source = factory(store)
    assert source is not None and len(source.parts.futures) == partitions
    assert source.parts.where == cache_of(store)
    for view in views(store):
        for mode, column, style in FRAMES:
            same_frame(store, source, view, mode, column, style)
    # Pruned by bounds: a full view reads every partition, a tiny one around the first point
    # only the first (chunks are compact along the curve).
    same_frame(store, source, store.extent, "density", None)
    assert source.last_partitions == partitions
    x, y, d = float(store.x[0]), float(store.y[0]), 1e-3 * (store.extent.x1 - store.extent.x0)
    same_frame(store, source, View(x - d, x + d, y - d, y + d), "density", None)
    assert source.last_partitions == 1
    factory.close()


def test_a_killed_worker_costs_a_recomputation_not_the_frame(store, client):
    factory = DaskSources(client, partition_rows=2 * store.chunk_rows, timeout=90)
    source = factory(store)
    full, quarter, _ = views(store)
    same_frame(store, source, full, "category", "split")
    keys = {f.key for f in source.parts.futures}
    held = {w for w, got in client.has_what().items() if keys & set(got)}
    victim = sorted(held)[0]  # a worker holding partitions: its death loses them
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: victim not in client.scheduler_info()["workers"], 60, "the worker's loss")
    # A new view: no cached aggregate; the lost partitions are read again from the files.
    same_frame(store, source, quarter, "category", "split")
    same_frame(store, source, full, "numeric", "score")
    where = client.who_has(source.parts.futures)
    assert all(where[k] and victim not in where[k] for k in keys)  # read again elsewhere
    factory.close()


def test_registered_source_answers_what_it_can(dataset, store, client):
    registered = use_scheduler(client, partition_rows=3 * store.chunk_rows)
    try:
        assert use_scheduler(client) is registered  # once per process
        clear_stores()
        mapped = load_store(dataset, "synth.2d")  # the next start: memory-mapped from the cache
        assert cache_of(mapped) == cache_of(store)
        r = Renderer(mapped)
        assert "DaskSource" in [type(s).__name__ for s in r.sources]
        full = mapped.extent
        frame = r.render(full, W, H, color_by="label")
        assert r.answered_by == "DaskSource"
        assert frame.png == Renderer(mapped, sources=[]).render(full, W, H, color_by="label").png
        # A filter, a column the cache does not hold (live tags): the renderer aggregates here.
        mask = mapped.numeric["score"] > 0.5
        r.render(full, W, H, color_by="label", mask=mask, mask_key="score>0.5")
        assert r.answered_by == "local"
        codes = np.zeros(mapped.n, dtype=np.int8)
        tagged = replace(mapped, categorical={**mapped.categorical, "tag": (codes, ["none"])})
        t = Renderer(tagged)
        t.render(full, W, H, color_by="tag")
        assert t.answered_by == "local"
        t.render(full, W, H, color_by="split")
        assert t.answered_by == "DaskSource"
        # A store with no explorer cache gets no source.
        plain = PointStore.from_arrays(mapped.x[:100], mapped.y[:100], ids=np.arange(100))
        assert "DaskSource" not in [type(s).__name__ for s in Renderer(plain).sources]
    finally:
        use_scheduler(None)
    assert "DaskSource" not in [type(s).__name__ for s in Renderer(store).sources]


@pytest.fixture
def dask_processes(tmp_path):
    """``tcp://127.0.0.1:PORT`` of a ``dask scheduler`` and two ``dask worker`` processes."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dask = [sys.executable, "-m", "dask"]
    cmds = [[*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]]
    cmds += [[*dask, "worker", address, "--nthreads", "1", "--no-dashboard"]] * 2
    logs = [open(tmp_path / f"dask{i}.log", "w") for i in range(3)]  # noqa: SIM115
    procs = [
        subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        for cmd, f in zip(cmds, logs, strict=True)
    ]
    yield address
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    for f in logs:
        f.close()


def test_embviz_serve_with_a_scheduler_renders_on_its_workers(dataset, dask_processes, tmp_path):
    from distributed import Client

    port = free_port()
    log_path = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "embviz.pipeline.cli", "serve", str(dataset)]
    cmd += ["--port", str(port), "--address", "127.0.0.1", "--scheduler", dask_processes]
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:

            def page() -> bool:
                assert server.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer") as r:
                        return r.status == 200
                except OSError:
                    return False

            wait_until(page, 90, "the explorer page")  # its session starts the warm-up frames
            wait_until(
                lambda: "first frame of" in log_path.read_text(), 90, "a frame from the cluster"
            )
            text = log_path.read_text()
            assert "on the Dask cluster at " + dask_processes in text
            with Client(dask_processes, set_as_default=False, timeout=30) as c:
                held = [k for keys in c.has_what().values() for k in keys]
                assert any(str(k[0]).startswith("embviz-") for k in held), held  # persisted there
                assert len(c.scheduler_info()["workers"]) == 2
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_serve_passes_the_scheduler_to_the_app_after_its_datasets():
    from embviz.pipeline.cli_serve import panel_serve_args

    args = panel_serve_args(["data/a"], scheduler="tcp://127.0.0.1:8786")
    assert args[args.index("--args") :] == [
        "--args",
        "data/a",
        "--scheduler",
        "tcp://127.0.0.1:8786",
    ]
    assert "--scheduler" not in panel_serve_args(["data/a"])
