"""Hostile data: URLs in a manifest are never fetched by the server or the pipeline."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pytest
from PIL import Image

from embviz.pipeline.ingest import ingest


def test_manifest_urls_are_never_fetched(tmp_path):
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "ok.png")
        port = httpd.server_address[1]
        paths = [
            "ok.png",
            f"http://127.0.0.1:{port}/a.png",
            f"HTTPS://127.0.0.1:{port}/b.png",
            "file:///etc/passwd",
            "s3://bucket/c.png",
        ]
        csv = tmp_path / "m.csv"
        pa.csv.write_csv(pa.table({"path": paths, "label": ["x"] * len(paths)}), csv)
        res = ingest(tmp_path / "ds", source=csv, progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert res.rows == 1 and hits == []
    report = json.loads(res.report_path.read_text())
    reasons = {s["row"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {1, 2, 3, 4}
    assert all("URL" in r and "not fetched" in r for r in reasons.values())


@pytest.mark.browser
def test_a_corrupt_dataset_gets_an_error_page_and_the_others_keep_working(
    browser, tmp_path, artifacts
):
    from conftest import PanelServer

    from embviz.dataset import open_dataset
    from embviz.pipeline.synth import synth

    good = Path(synth(tmp_path / "good", points=3000, dims=(2,), progress=False).root)
    broken_part = Path(synth(tmp_path / "broken-part", points=3000, dims=(2,), progress=False).root)
    part = open_dataset(broken_part).part_paths("projections/synth.2d")[0]
    part.write_bytes(part.read_bytes()[:100])  # truncated: not Parquet any more
    broken_manifest = tmp_path / "broken-manifest"
    broken_manifest.mkdir()
    (broken_manifest / "manifest.json").write_text('{"format": "embviz-dataset", <script>')
    server = PanelServer([broken_part, good, broken_manifest], tmp_path / "serve.log")
    server.wait()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        for key, named in (("broken-part", part.name), ("broken-manifest", "manifest.json")):
            page.goto(f"{server.url}?dataset={key}")
            page.get_by_text("This dataset cannot be opened").first.wait_for(timeout=60_000)
            text = page.locator(".embviz-error").first.inner_text()
            assert named in text
            page.screenshot(path=str(artifacts / f"hostile_{key}.png"))
        assert page.locator("script", has_text="<script>").count() == 0
        # The server still serves the good dataset, next to the broken ones.
        page.goto(f"{server.url}?dataset=good")
        page.get_by_text("of 3,000 points in view").first.wait_for(timeout=60_000)
        assert server.proc.poll() is None
    finally:
        page.close()
        server.stop()
    assert not errors, errors
