"""Hostile data: URLs in a manifest are never fetched by the server or the pipeline."""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
from PIL import Image

from pipeline.ingest import ingest


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
