"""`embviz serve DATASET`: the explorer page and the image routes answer from one process."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import free_port

from embviz.app import routes


@pytest.mark.browser
def test_embviz_serve_serves_the_page_and_thumbnails(demo_dataset, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "pipeline.cli", "serve", str(demo_dataset), "--port", str(port)]
    cmd += ["--address", "127.0.0.1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/explorer", timeout=60) as r:
                    assert r.status == 200 and b"embviz" in r.read()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.time() < deadline, "embviz serve did not answer"
                time.sleep(0.5)
        key = routes.register(demo_dataset)  # the same key in any process for the same files
        with urllib.request.urlopen(f"{base}{routes.thumb_url(key, 7)}", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/webp"
            assert "immutable" in r.headers["Cache-Control"]
            assert r.headers.get("Access-Control-Allow-Origin") is None
            assert r.read()[:4] == b"RIFF"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.mark.browser
def test_explorer_behind_a_prefix_loads_its_images(browser, demo_dataset, tmp_path):
    """``panel serve --prefix /team``: the page's thumbnail and image URLs carry the prefix."""
    from conftest import PanelServer

    server = PanelServer(demo_dataset, tmp_path / "serve.log", extra=("--prefix", "/team"))
    server.url = server.url.replace("/explorer", "/team/explorer")
    server.wait()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server.url}?sample=7")
        image = page.locator(".embviz-detail-image").first
        image.wait_for(timeout=90_000)
        assert image.get_attribute("src").startswith("/team/embviz/image/")
        for _ in range(120):
            if image.evaluate("img => img.complete && img.naturalWidth > 0"):
                break
            page.wait_for_timeout(250)
        assert image.evaluate("img => img.naturalWidth") > 0
        thumbs = page.locator(".embviz-grid-item img")
        thumbs.first.wait_for(timeout=30_000)  # the neighbours' thumbnails
        assert thumbs.first.get_attribute("src").startswith("/team/embviz/thumb/")
    finally:
        page.close()
        server.stop()
