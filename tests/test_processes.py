"""Several server processes (``--num-procs``): they fork after the maps were loaded, so they map
the same store files and share those pages, and every process serves pages with their first frame."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import PanelServer, wait_until

from embviz.loadtest import Person, run_sync


@pytest.fixture(scope="module")
def small_map(tmp_path_factory):
    from embviz.pipeline.synth import synth

    out = tmp_path_factory.mktemp("procs") / "synth"
    synth(out, points=60_000, dims=(2,), progress=False)
    from embviz.render.store import clear_stores, load_store

    load_store(out, "synth.2d")  # writes the explorer cache the server then maps
    clear_stores()
    return out


def _cache_files(proc, root) -> set[str]:
    """The files under ``root`` that ``proc`` has mapped into memory."""
    return {m.path for m in proc.memory_maps() if m.path.startswith(str(root))}


def _started(server):
    """``(parent, [its two server processes])`` once ``server`` answers and has forked."""
    import psutil

    server.wait(timeout=300)
    parent = psutil.Process(server.proc.pid)
    children = wait_until(
        lambda: (c := parent.children()) and len(c) == 2 and c,
        timeout=120,
        what="two server processes",
    )
    return parent, children


def test_processes_share_one_store_and_each_serves_first_frames(small_map, tmp_path):

    server = PanelServer(small_map, tmp_path / "serve.log", extra=("--num-procs", "2"))
    try:
        parent, children = _started(server)
        # Loaded before the fork: the parent and both processes map the same cache files.
        mapped = [_cache_files(p, small_map.resolve()) for p in (parent, *children)]
        assert mapped[0], "the parent loaded the map before forking"
        assert mapped[0] == mapped[1] == mapped[2]
        assert any(path.endswith("x.npy") for path in mapped[0])

        async def opening(count):
            people = [Person(server.url, timeout=120) for _ in range(count)]
            firsts = await asyncio.gather(*(p.open() for p in people))
            for p in people:
                await p.close()
            return firsts

        firsts = run_sync(opening(8))
        assert len(firsts) == 8 and max(firsts) < 120  # every page got its first frame
        # Shared, not copied: the processes together hold much less than separate copies.
        pss = sum(p.memory_full_info().pss for p in (parent, *children))
        rss = sum(p.memory_info().rss for p in (parent, *children))
        assert pss < 0.8 * rss
    finally:
        server.stop()
    assert not any(c.is_running() for c in children)  # stopping the server stops them all


def test_a_crowd_opening_at_once_is_shared_by_the_processes(small_map, tmp_path):
    """20 people opening the page at the same instant: each process serves some of them (each
    listens on its own socket of the port). With one socket shared by the processes, the one
    that woke first accepted the whole crowd and built its sessions one after another."""
    import psutil

    server = PanelServer(small_map, tmp_path / "serve.log", extra=("--num-procs", "2"))
    try:
        parent, children = _started(server)

        def listening(proc) -> set[str]:
            """The listening sockets of the port ``proc`` holds, by kernel inode."""
            fds = {
                c.fd
                for c in proc.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port
            }
            return {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in fds}

        # Each process accepts on a socket of its own (one shared socket: the same inode).
        own = [listening(c) for c in children]
        assert all(own) and not own[0] & own[1], own

        def served(proc) -> int:
            return sum(
                1
                for c in proc.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
            )

        async def crowd(count):
            people = [Person(server.url, timeout=120) for _ in range(count)]
            await asyncio.gather(*(p.open() for p in people))
            try:
                return [served(c) for c in children]
            finally:
                for p in people:
                    await p.close()

        shares = run_sync(crowd(20))
        assert sum(shares) == 20 and min(shares) >= 3, shares
    finally:
        server.stop()
