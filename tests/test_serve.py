"""`embviz serve DATASET`: the explorer page and the image routes answer from one process; a
`panel serve` without the routes says so."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import free_port

from embviz.app import routes


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 2,000-point synthetic dataset (sprite thumbnails, 2D projection): seconds to write."""
    from embviz.pipeline.synth import synth

    out = tmp_path_factory.mktemp("serve") / "small"
    synth(out, points=2000, dims=(2,), partition_rows=1000, progress=False)
    return out


@contextlib.contextmanager
def running(cmd: list[str], url: str, log_path, timeout: float = 120):
    """Run ``cmd`` (a server) with its output in ``log_path``; yield once ``url`` answers 200."""
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    assert r.status == 200 and b"embviz" in r.read()
                break
            except OSError:
                assert proc.poll() is None, log_path.read_text()
                assert time.time() < deadline, f"{url} did not answer: {log_path.read_text()}"
                time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def thumbnail(url: str) -> bytes:
    """The body of a thumbnail response, after checking its headers."""
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.headers["Content-Type"] == "image/webp"
        assert "immutable" in r.headers["Cache-Control"]
        assert r.headers.get("Access-Control-Allow-Origin") is None
        return r.read()


def test_embviz_serve_behind_a_prefix_serves_page_and_thumbnails(small, tmp_path):
    """Panel's server on the shipped app with the routes plugin, options passed through."""
    port = free_port()
    cmd = [sys.executable, "-m", "embviz.pipeline.cli", "serve", str(small)]
    cmd += ["--port", str(port), "--address", "127.0.0.1", "--prefix", "/team"]
    base = f"http://127.0.0.1:{port}/team"
    log = tmp_path / "serve.log"
    with running(cmd, f"{base}/explorer", log):
        key = routes.register(small)  # the same key in any process for the same files
        path = routes.thumb_url(key, 7, prefix="/team")
        assert thumbnail(f"http://127.0.0.1:{port}{path}")[:4] == b"RIFF"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer", timeout=30)
        err.value.close()
        assert err.value.code == 404  # everything lives under the prefix
    assert routes.MISSING_ROUTES not in log.read_text()


def test_embviz_serve_refuses_a_broken_dataset_before_serving(tmp_path, capsys):
    from embviz.pipeline.cli import main

    assert main(["serve", str(tmp_path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "Traceback" not in err


def test_panel_serve_without_the_plugin_says_so_in_the_log_once(small, tmp_path):
    from embviz.pipeline.packaged import explorer_app

    port = free_port()
    cmd = [sys.executable, "-m", "panel", "serve", str(explorer_app()), "--port", str(port)]
    cmd += ["--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"]
    cmd += ["--args", str(small)]
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}/explorer"
    with running(cmd, url, log):
        with urllib.request.urlopen(url, timeout=60) as r:  # a second session
            assert r.status == 200
        key = routes.register(small)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{routes.thumb_url(key, 7)}")
        err.value.close()
        assert err.value.code == 404
    assert log.read_text().count(routes.MISSING_ROUTES) == 1, log.read_text()


@pytest.mark.browser
def test_embviz_serve_serves_the_demo_page_and_thumbnails(demo_dataset, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "embviz.pipeline.cli", "serve", str(demo_dataset)]
    cmd += ["--port", str(port), "--address", "127.0.0.1"]
    base = f"http://127.0.0.1:{port}"
    with running(cmd, f"{base}/explorer", tmp_path / "serve.log"):
        key = routes.register(demo_dataset)
        assert thumbnail(f"{base}{routes.thumb_url(key, 7)}")[:4] == b"RIFF"


@pytest.mark.browser
def test_explorer_behind_a_prefix_loads_its_images(browser, demo_dataset, tmp_path):
    """``panel serve --prefix /team``: the page's thumbnail and image URLs carry the prefix."""
    from conftest import PanelServer, wait_until

    server = PanelServer(demo_dataset, tmp_path / "serve.log", extra=("--prefix", "/team"))
    server.url = server.url.replace("/explorer", "/team/explorer")
    server.wait()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server.url}?sample=7")
        image = page.locator(".embviz-detail-image").first
        image.wait_for(timeout=90_000)
        assert image.get_attribute("src").startswith("/team/embviz/image/")
        wait_until(
            lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"),
            what="the detail image to load",
            page=page,
        )
        thumbs = page.locator(".embviz-grid-item img")
        thumbs.first.wait_for(timeout=30_000)  # the neighbours' thumbnails
        assert thumbs.first.get_attribute("src").startswith("/team/embviz/thumb/")
    finally:
        page.close()
        server.stop()


@pytest.mark.parametrize("how", ["embviz serve", "panel serve"])
def test_report_schedule_starts_with_the_server_before_any_visitor(small, tmp_path, how):
    """`embviz serve DATASET --reports FILE` (and the `panel serve` line it stands for):
    reports are written on schedule with nobody visiting (before, the schedule started with
    the first page view)."""
    from embviz.pipeline.packaged import explorer_app

    out = tmp_path / "reports"
    settings = tmp_path / "reports.yaml"
    settings.write_text(f"dataset: {small}\nout_dir: {out}\nperiod: 10s\n")
    log_path = tmp_path / "serve.log"
    port = str(free_port())
    if how == "embviz serve":
        cmd = [sys.executable, "-m", "embviz.pipeline.cli", "serve", str(small), "--port", port]
    else:
        cmd = [sys.executable, "-m", "panel", "serve", str(explorer_app()), "--port", port]
        cmd += ["--plugins", "embviz.app.routes", "--args", str(small)]
    cmd += ["--reports", str(settings)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 150
            # No request is made to the server: only the schedule can write these.
            while len(list(out.glob("*.html"))) < 3:  # index.html and two dated reports
                assert proc.poll() is None, log_path.read_text()
                assert time.time() < deadline, f"no scheduled reports: {log_path.read_text()}"
                time.sleep(1)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert (out / "index.html").exists()
