"""Image routes: thumbnails and re-encoded images by sample id, never a file named by a request."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import io
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from PIL import Image

from embviz.app import image_source, routes
from embviz.dataset import open_dataset
from embviz.pipeline.ingest import ingest

SECRET = (0, 255, 0)  # the colour of the image outside the root, which must never be served
NAME = "My Images_v2.0"


# -- helpers -------------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(make_app):
    """Run ``make_app()`` on a loopback port in a thread with its own event loop; yield the port."""
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    ready = threading.Event()
    box: dict = {}

    async def main() -> None:
        server = tornado.httpserver.HTTPServer(make_app())
        server.add_sockets(sockets)
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await box["stop"].wait()
        server.stop()
        await server.close_all_connections()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield port
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def fetch(port: int, path: str, headers: dict | None = None, method: str = "GET"):
    """``(status, headers, body)`` of one request sent with ``path`` exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.getheader("Access-Control-Allow-Origin") is None, path
    return resp.status, resp.headers, body


def webp(body: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(body))
    assert img.format == "WEBP"
    return img.convert("RGB")


def is_secret(img: Image.Image) -> bool:
    """Whether most pixels have the outside image's colour."""
    px = np.asarray(img).reshape(-1, 3).astype(int)
    return bool((np.abs(px - SECRET).max(1) < 40).mean() > 0.5)


class Trap(http.server.BaseHTTPRequestHandler):
    """An HTTP server a sample's ``http://`` uri points at; it counts every request."""

    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trap():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trap)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/secret.png"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def data(tmp_path_factory, trap):
    """A real ingest of 3 PNGs (ids 0-2; id 2 is 2000x1500), then samples with hostile uris.

    Added samples (all but 8 share thumbnail 0; id 9 is a gap): 3 absolute path outside the
    root, 4 symlink inside the root to it, 5 ``root/../outside``, 6 ``http://``, 7 a broken
    file inside the root, 8 no uri and no thumbnail, 10 ``file://`` outside, 11 a folder inside
    the root, 12 a good image inside the root sharing thumbnail 1.
    """
    base = tmp_path_factory.mktemp("routes")
    imgs = base / "imgs"
    (imgs / "cat").mkdir(parents=True)
    (imgs / "dog").mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(imgs / "cat" / "a.png")
    Image.new("RGB", (40, 60), (30, 30, 200)).save(imgs / "cat" / "b.png")
    big = np.zeros((1500, 2000, 3), np.uint8)
    big[:, :1000] = (255, 0, 0)
    big[:, 1000:] = (0, 0, 255)
    Image.fromarray(big).save(imgs / "dog" / "big.png")
    ingest(base / "ds", source=imgs, kind="folder", name=NAME, progress=False, threads=1)
    first_key = routes.register(base / "ds")

    secret = base / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (300, 300), SECRET).save(secret)
    (imgs / "dog" / "link.png").symlink_to(secret)
    (imgs / "dog" / "broken.png").write_text("not a png\n")
    hostile = {
        3: str(secret),
        4: str(imgs / "dog" / "link.png"),
        5: f"{imgs}/../outside/secret.png",
        6: trap,
        7: str(imgs / "dog" / "broken.png"),
        8: None,
        10: f"file://{secret}",
        11: str(imgs / "dog"),
        12: str(imgs / "cat" / "a.png"),
    }
    ds = open_dataset(base / "ds")
    samples = ds.read_arrow("samples")
    extra = [
        {"id": i, "uri": uri, "label": "x", "thumb_id": None if i == 8 else 1 if i == 12 else 0}
        for i, uri in hostile.items()
    ]
    table = pa.concat_tables([samples, pa.Table.from_pylist(extra, schema=samples.schema)])
    writer = ds.writer("samples")
    writer.write_part(0, table)
    writer.commit(meta=ds.meta("samples"))
    return {"root": base / "ds", "key": routes.register(base / "ds"), "first_key": first_key}


@pytest.fixture(scope="module")
def port(data):
    with serving(lambda: tornado.web.Application(routes.extra_patterns())) as p:
        yield p


# -- registry ---------------------------------------------------------------------------------------
def test_key_is_url_safe_stable_and_follows_the_version(data):
    key = data["key"]
    assert re.fullmatch(r"my-images-v2-0-[0-9a-f]{8}", key)
    assert routes.register(data["root"]) == key
    assert routes.register(Path(data["root"]) / "." / "") == key
    assert data["first_key"] != key, "rewriting the samples table must change the key"
    with pytest.raises(KeyError):
        routes.lookup(data["first_key"])
    assert routes.lookup(key).name == NAME
    assert routes.thumb_url(key, 7) == f"/embviz/thumb/{key}/7"
    assert routes.image_url(key, 7) == f"/embviz/image/{key}/7"
    with pytest.raises(ValueError):
        routes.thumb_url("../x", 1)


def test_register_is_thread_safe(data):
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(routes.register(data["root"])))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert keys == [data["key"]] * 8


# -- thumbnails -----------------------------------------------------------------------------------
def test_thumbnail_is_webp_cached_as_immutable_and_revalidates(data, port):
    path = routes.thumb_url(data["key"], 2)
    status, headers, body = fetch(port, path)
    assert status == 200
    assert headers["Content-Type"] == "image/webp"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    img = webp(body)
    assert max(img.size) == 96  # the ingest thumbnail, not the 2000 px original
    status, headers304, body304 = fetch(port, path, {"If-None-Match": headers["Etag"]})
    assert (status, body304) == (304, b"")
    assert headers304["Etag"] == headers["Etag"]
    assert fetch(port, path, {"If-None-Match": '"other"'})[0] == 200
    status, headers, body = fetch(port, path, method="HEAD")
    assert (status, body) == (200, b"") and headers["Content-Type"] == "image/webp"


def test_samples_sharing_a_thumbnail_get_the_same_bytes(data, port):
    key = data["key"]
    assert fetch(port, routes.thumb_url(key, 12))[2] == fetch(port, routes.thumb_url(key, 1))[2]
    assert fetch(port, routes.thumb_url(key, 3))[2] == fetch(port, routes.thumb_url(key, 0))[2]


def test_unknown_key_id_or_thumbnail_is_404(data, port):
    key = data["key"]
    for path in [
        "/embviz/thumb/nope-00000000/0",
        f"/embviz/thumb/{data['first_key']}/0",  # replaced by a newer version
        f"/embviz/thumb/{key}/9",  # a gap in the ids
        f"/embviz/thumb/{key}/1000",
        f"/embviz/thumb/{key}/9999999999999999999",  # beyond int64
        f"/embviz/thumb/{key}/8",  # null thumb_id
        f"/embviz/image/{key}/9",
        f"/embviz/image/{key}/8",  # no uri and no thumbnail
    ]:
        status, headers, body = fetch(port, path)
        assert status == 404, path
        assert headers["Content-Type"].startswith("text/plain")
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_paths_in_requests_never_reach_files(data, port):
    key = data["key"]
    for path in [
        f"/embviz/thumb/{key}/../../etc/passwd",
        f"/embviz/thumb/{key}/%2e%2e%2fetc%2fpasswd",
        f"/embviz/image/{key}/..%2F..%2Fetc%2Fpasswd",
        f"/embviz/thumb/{key}//etc/passwd",
        f"/embviz/image/{key}/%2Fetc%2Fpasswd",
        f"/embviz/image/{key}/0/../../../../etc/passwd",
        "/embviz/image/..%2F..%2F/0",
        f"/embviz/image/{key}/-1",
        f"/embviz/image/{key}/0x10",
    ]:
        status, headers, body = fetch(port, path)
        assert status in (400, 404), path
        assert b"root:" not in body and not headers.get("Content-Type", "").startswith("image/")


def test_access_hook_can_refuse(data, port, monkeypatch):
    monkeypatch.setattr(routes, "_allowed", lambda handler: False)
    assert fetch(port, routes.thumb_url(data["key"], 0))[0] == 403
    assert fetch(port, routes.image_url(data["key"], 2))[0] == 403


def test_thumbnail_partition_is_read_once_for_many_requests(data, port, monkeypatch):
    from embviz.dataset import Dataset

    reads: list[str] = []
    original = Dataset.read_arrow
    monkeypatch.setattr(
        Dataset,
        "read_arrow",
        lambda self, key, **kw: reads.append(key) or original(self, key, **kw),
    )
    image_source.drop_cached(data["key"])
    for _ in range(5):
        for i in (0, 1, 2, 3, 12):
            assert fetch(port, routes.thumb_url(data["key"], i))[0] == 200
    assert reads.count("thumbnails") == 1


# -- full images ------------------------------------------------------------------------------------
def test_image_inside_root_is_reencoded_and_capped_at_1024(data, port):
    path = routes.image_url(data["key"], 2)
    status, headers, body = fetch(port, path)
    assert status == 200
    assert "X-Embviz-Fallback" not in headers
    assert headers["Content-Type"] == "image/webp"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "public, max-age=3600"
    img = webp(body)
    assert img.size == (1024, 768)
    px = np.asarray(img).astype(int)
    assert (np.abs(px[:, :500] - (255, 0, 0)).max(-1) < 40).mean() > 0.95
    assert (np.abs(px[:, -500:] - (0, 0, 255)).max(-1) < 40).mean() > 0.95
    assert fetch(port, path, {"If-None-Match": headers["Etag"]})[0] == 304
    small = webp(fetch(port, routes.image_url(data["key"], 12))[2])
    assert small.size == (64, 48), "small images are re-encoded, not scaled up"


@pytest.mark.parametrize("sample_id", [3, 4, 5, 6, 7, 10, 11])
def test_unsafe_or_bad_uri_falls_back_to_the_thumbnail(data, port, sample_id):
    status, headers, body = fetch(port, routes.image_url(data["key"], sample_id))
    assert status == 200
    assert headers["X-Embviz-Fallback"] == "thumbnail"
    assert headers["Content-Type"] == "image/webp"
    assert body == fetch(port, routes.thumb_url(data["key"], 0))[2]
    assert not is_secret(webp(body))
    assert Trap.hits == 0, "an http:// uri was fetched"


def test_fallback_revalidates_too(data, port):
    path = routes.image_url(data["key"], 4)
    headers = fetch(port, path)[1]
    status, again, _ = fetch(port, path, {"If-None-Match": headers["Etag"]})
    assert status == 304 and again["X-Embviz-Fallback"] == "thumbnail"


# -- declaring the routes to a server ----------------------------------------------------------------
def test_reading_routes_declares_them(monkeypatch, caplog):
    """``--plugins`` reads ``ROUTES``; until something does, the page's warning is there and is
    logged once."""
    monkeypatch.setattr(routes, "_declared", threading.Event())
    monkeypatch.setattr(routes, "_warned", threading.Event())
    assert "ROUTES" not in routes.__all__  # a star import must not count as declaring them
    assert not routes.declared()
    with caplog.at_level("WARNING", logger=routes.__name__):
        assert routes.missing_message() == routes.MISSING_ROUTES
        assert routes.missing_message() == routes.MISSING_ROUTES
    assert [r.getMessage().count("--plugins embviz.app.routes") for r in caplog.records] == [1]
    rules = routes.ROUTES
    assert [(p, h) for p, h, _ in rules] == [
        (routes.THUMB_PATTERN, routes.ThumbHandler),
        (routes.IMAGE_PATTERN, routes.ImageHandler),
    ]
    assert routes.declared() and routes.missing_message() is None
    assert routes.extra_patterns() is not routes.extra_patterns()  # Bokeh extends its copy
    with pytest.raises(AttributeError, match="INSTALL"):
        routes.INSTALL  # noqa: B018 - the module __getattr__ still refuses other names


APP = """
import sys
import panel as pn
from embviz.app import routes

key = routes.register(sys.argv[1])
missing = routes.missing_message() is not None
print(f"key={key} declared={routes.declared()} missing={missing}", flush=True)
pn.pane.Markdown("ok").servable()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def panel_serve(tmp_path: Path, root: Path, *options: str, prefix: str = ""):
    """``python -m panel serve app.py`` in a subprocess; yield ``(port, log path)`` once it answers."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "panel", "serve", str(script), *options]
    cmd += ["--port", str(port), "--address", "127.0.0.1"]
    cmd += ["--allow-websocket-origin", f"127.0.0.1:{port}"]
    cmd += ["--prefix", prefix] if prefix else []
    cmd += ["--args", str(root)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.time() + 45
        while True:
            assert proc.poll() is None, f"panel serve exited:\n{log.read_text()}"
            assert time.time() < deadline, f"panel serve did not answer:\n{log.read_text()}"
            with contextlib.suppress(OSError):
                status, _, _ = fetch(port, f"{prefix}/app")
                assert status == 200, log.read_text()  # creates a session: the script runs
                break
            time.sleep(0.3)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_routes_work_in_panel_serve_with_plugins(data, tmp_path):
    with panel_serve(tmp_path, data["root"], "--plugins", "embviz.app.routes") as (p, log):
        status, headers, body = fetch(p, routes.thumb_url(data["key"], 0))
        assert status == 200, log.read_text()
        assert headers["Content-Type"] == "image/webp"
        assert max(webp(body).size) == 96
        status, headers, body = fetch(p, routes.image_url(data["key"], 2))
        assert status == 200 and webp(body).size == (1024, 768)
        assert fetch(p, "/embviz/thumb/nope-00000000/0")[0] == 404
        fetch(p, "/app")  # a second session
        assert fetch(p, routes.thumb_url(data["key"], 1))[0] == 200
    text = log.read_text()
    assert text.count(f"key={data['key']} declared=True missing=False") == 2, text
    assert routes.MISSING_ROUTES not in text


def test_panel_serve_without_plugins_says_so_once(data, tmp_path):
    """No routes are added behind Panel's back: the log says how to start the server (once,
    however many sessions) and every session's page can say it too."""
    with panel_serve(tmp_path, data["root"]) as (p, log):
        assert fetch(p, routes.thumb_url(data["key"], 0))[0] == 404
        fetch(p, "/app")  # a second session
    text = log.read_text()
    assert text.count(f"key={data['key']} declared=False missing=True") == 2, text
    assert text.count(routes.MISSING_ROUTES) == 1, text


def test_routes_follow_the_server_prefix(data, tmp_path):
    """Behind ``panel serve --prefix /team`` the routes and the URLs the app builds carry it."""
    plugin = ("--plugins", "embviz.app.routes")
    with panel_serve(tmp_path, data["root"], *plugin, prefix="/team") as (p, log):
        url = routes.thumb_url(data["key"], 0, prefix="/team")
        assert url.startswith("/team/embviz/thumb/")
        status, headers, _ = fetch(p, url)
        assert status == 200 and headers["Content-Type"] == "image/webp", log.read_text()
        assert fetch(p, routes.image_url(data["key"], 2, prefix="/team/"))[0] == 200


def test_bad_prefix_is_refused():
    with pytest.raises(ValueError, match="prefix"):
        routes.thumb_url("a-00000000", 0, prefix="//evil.example")
