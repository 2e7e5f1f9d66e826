"""With Panel's basic auth on, no page, thumbnail or image is readable without logging in; a
forged cookie does not count; logged-in responses are private; no route allows any origin."""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import PanelServer

from embviz.app import routes

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def server(demo_dataset, tmp_path_factory):
    s = PanelServer(
        demo_dataset,
        tmp_path_factory.mktemp("auth") / "serve.log",
        extra=(
            "--basic-auth",
            PASSWORD,
            "--cookie-secret",
            "embviz-test-secret-" + "x" * 24,
            "--plugins",
            "embviz.app.routes",
        ),
    )
    s.wait()
    yield s
    s.stop()


def opener(jar=None):
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar or http.cookiejar.CookieJar())
    )


def get(open_, url: str, headers: dict | None = None):
    """(status, headers, body, final url) without raising on 4xx."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with open_.open(request, timeout=60) as r:
            return r.status, r.headers, r.read(), r.url
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read(), url


def login(open_, server, password: str):
    data = urllib.parse.urlencode({"username": "alice", "password": password}).encode()
    base = server.url.rsplit("/", 1)[0]
    try:
        with open_.open(f"{base}/login", data=data, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def test_routes_and_page_need_a_login(server, demo_dataset):
    key = routes.register(demo_dataset)
    base = server.url.rsplit("/", 1)[0]
    thumb, image = f"{base}/embviz/thumb/{key}/0", f"{base}/embviz/image/{key}/0"

    anonymous = opener()
    status, headers, _, final = get(anonymous, server.url)
    assert "/login" in final  # the app itself redirects to the login page
    for url in (thumb, image):
        status, headers, body, _ = get(anonymous, url)
        assert status == 403 and b"RIFF" not in body
        assert headers.get("Access-Control-Allow-Origin") is None

    # A cookie the server did not sign is not a login.
    jar = http.cookiejar.CookieJar()
    forged = opener(jar)
    status, *_ = get(forged, thumb, headers={"Cookie": "user=alice"})
    assert status == 403

    wrong = opener()
    login(wrong, server, "guess")
    assert get(wrong, thumb)[0] == 403

    alice = opener()
    login(alice, server, PASSWORD)
    status, headers, body, _ = get(alice, thumb)
    assert status == 200 and headers["Content-Type"] == "image/webp" and body[:4] == b"RIFF"
    assert headers["Cache-Control"].startswith("private")  # never stored by a shared cache
    assert headers.get("Access-Control-Allow-Origin") is None
    assert get(alice, image)[0] == 200
    status, _, page, final = get(alice, server.url)
    assert status == 200 and "/login" not in final and b"embviz" in page
