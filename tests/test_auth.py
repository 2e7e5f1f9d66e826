"""With Panel's basic auth on, no page, thumbnail or image is readable without logging in; a
forged cookie does not count; logged-in responses are private; no route allows any origin."""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import PanelServer, wait_until

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
        ),
    )
    s.wait()
    yield s
    s.stop()


def opener(jar=None):
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar if jar is not None else http.cookiejar.CookieJar())
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


def test_websocket_needs_a_login(server):
    """Everything else a session does (frames, exports, tags) rides its websocket: without the
    login cookie the upgrade is refused; with it the session opens and renders its map."""
    from embviz.loadtest import Person, run_sync

    with pytest.raises(Exception, match="40[13]|[Uu]nauthori|[Ff]orbidden|closed"):
        run_sync(Person(server.url, timeout=30).open())

    jar = http.cookiejar.CookieJar()
    alice = opener(jar)
    login(alice, server, PASSWORD)
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)

    async def visit():
        person = Person(server.url, headers={"Cookie": cookie}, timeout=120)
        await person.open()
        seconds = await person.frame(person.view)
        await person.close()
        return seconds

    assert run_sync(visit()) < 120


class _Provider:
    """A stand-in OAuth 2 identity provider on loopback: authorize, token and userinfo."""

    CODE, TOKEN = "code-for-alice", "token-for-alice"

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        provider = self
        self.calls: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict | None = None, location: str | None = None):
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                data = json.dumps(body or {}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                provider.calls.append(url.path)
                if url.path == "/authorize":
                    back = urllib.parse.urlencode({"code": provider.CODE, "state": query["state"]})
                    self._send(302, location=f"{query['redirect_uri']}?{back}")
                elif url.path == "/userinfo":
                    if self.headers.get("Authorization") != f"Bearer {provider.TOKEN}":
                        return self._send(401, {"error": "invalid_token"})
                    self._send(200, {"email": "alice@example.com", "name": "Alice"})
                else:
                    self._send(404)

            def do_POST(self):
                provider.calls.append(self.path)
                length = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if form.get("code") != provider.CODE or form.get("client_secret") != "s3cret":
                    return self._send(400, {"error": "invalid_grant"})
                self._send(200, {"access_token": provider.TOKEN, "token_type": "Bearer"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_oauth_login_guards_pages_and_routes(demo_dataset, tmp_path):
    """Panel's OAuth (generic provider) against a stand-in identity provider: the page sends
    you to the provider, the thumbnail and image routes refuse you until the code exchange has
    set the signed user cookie, then serve you privately; the session sees who you are."""
    provider = _Provider()
    s = PanelServer(
        demo_dataset,
        tmp_path / "serve.log",
        extra=(
            "--oauth-provider",
            "generic",
            "--oauth-key",
            "embviz",
            "--oauth-secret",
            "s3cret",
            "--cookie-secret",
            "embviz-test-secret-" + "y" * 24,
        ),
        env={
            "PANEL_OAUTH_AUTHORIZE_URL": f"{provider.base}/authorize",
            "PANEL_OAUTH_TOKEN_URL": f"{provider.base}/token",
            "PANEL_OAUTH_USER_URL": f"{provider.base}/userinfo",
        },
    )
    try:
        key = routes.register(demo_dataset)
        base = s.url.rsplit("/", 1)[0]
        thumb = f"{base}/embviz/thumb/{key}/0"

        def refuses_anonymous() -> bool:  # the server is up once it refuses a thumbnail
            try:
                return get(opener(), thumb)[0] == 403
            except OSError:
                return False

        wait_until(
            refuses_anonymous, 120, f"the server to refuse an anonymous thumbnail: {s.log_path}"
        )

        anonymous = opener()
        assert get(anonymous, thumb)[0] == 403
        assert get(anonymous, f"{base}/embviz/image/{key}/0")[0] == 403

        alice = opener()
        status, _, page, final = get(alice, s.url)  # app -> /login -> provider -> /login -> app
        assert provider.calls[:3] == ["/authorize", "/token", "/userinfo"], provider.calls
        assert status == 200 and final.startswith(s.url) and b"embviz" in page, s.log()
        status, headers, body, _ = get(alice, thumb)
        assert status == 200 and body[:4] == b"RIFF"
        assert headers["Cache-Control"].startswith("private")
        assert headers.get("Access-Control-Allow-Origin") is None
    finally:
        s.stop()
        provider.stop()
