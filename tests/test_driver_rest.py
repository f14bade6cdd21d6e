"""The controller drivers' HTTP client (isthmus.drivers.rest) against a local HTTP/1.1 server with keep-alive.

The controller fakes of the opendaylight and onos tests answer HTTP/1.0 and close every
connection; this one keeps connections open, as Jetty (OpenDaylight) and ONOS's web server
do, to show the client reusing them, and sets a session cookie, as a controller may.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from isthmus.drivers.rest import ControllerClient, ControllerUnavailable

USER, PASSWORD = "admin", "rest-s3cret"
COOKIE = "JSESSIONID=cookie-s3cret"


class KeepAliveServer:
    """Answers every request 200 ``{"ok": true}`` (or ``status``), keeping the connection open; records what came."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.status = 200
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server.connections += 1

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with server.lock:
                    server.requests.append((self.command, self.path, dict(self.headers)))
                body = b'{"ok": true}'
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Set-Cookie", f"{COOKIE}; Path=/")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 (http.server's names)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    s = KeepAliveServer()
    yield s
    s.close()


def client(server: KeepAliveServer, tmp_path: Path, **options: str) -> ControllerClient:
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD + "\n")
    return ControllerClient("test", {"url": server.url + "/base", "username": USER, "password_file": str(pwfile),
                                     "timeout": "2", "retries": "2", **options})


async def test_one_connection_is_reused_and_every_request_authenticates(server: KeepAliveServer,
                                                                        tmp_path: Path) -> None:
    c = client(server, tmp_path)
    try:
        for method, body in (("GET", None), ("POST", {"a": 1}), ("PUT", {"b": [2]}), ("DELETE", None), ("GET", None)):
            reply = await c.request(method, "/rests/data/x=a%2Fb?content=config", body)
            assert (reply.status, reply.json(), reply.attempts) == (200, {"ok": True}, 1)
    finally:
        await c.aclose()
    assert server.connections == 1
    assert [(m, p) for m, p, _ in server.requests] == [
        (m, "/base/rests/data/x=a%2Fb?content=config") for m in ("GET", "POST", "PUT", "DELETE", "GET")]
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for method, _, headers in server.requests:
        assert headers["Authorization"] == basic and headers["Accept"] == "application/json"
        assert "Cookie" not in headers  # the controller's session cookie is never sent back
        assert headers.get("Content-Type") == ("application/json" if method in ("POST", "PUT") else None)


async def test_the_password_file_is_read_at_every_request(server: KeepAliveServer, tmp_path: Path) -> None:
    c = client(server, tmp_path)
    try:
        await c.request("GET", "/a")
        (tmp_path / "pw").write_text("new-password\n")
        await c.request("GET", "/a")
    finally:
        await c.aclose()
    sent = [base64.b64decode(h["Authorization"].split()[1]).decode() for _, _, h in server.requests]
    assert sent == [f"{USER}:{PASSWORD}", f"{USER}:new-password"]


async def test_no_secret_in_any_log_at_debug(server: KeepAliveServer, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = client(server, tmp_path)
    try:
        server.status = 503
        with pytest.raises(ControllerUnavailable):
            await c.request("POST", "/a", {"auth-password": "x"})
        server.status = 200
        await c.request("GET", "/a")
    finally:
        await c.aclose()
    assert "/a -> 200" in caplog.text and "503" in caplog.text
    assert PASSWORD not in caplog.text and "cookie-s3cret" not in caplog.text
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in caplog.text


async def test_the_agents_proxy_settings_are_not_used(server: KeepAliveServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    c = client(server, tmp_path)
    try:
        assert (await c.request("GET", "/a")).status == 200
    finally:
        await c.aclose()


async def test_close_ends_the_backoff_at_once(server: KeepAliveServer, tmp_path: Path) -> None:
    server.status = 500
    c = client(server, tmp_path, retries="10")
    started = time.monotonic()
    pending = asyncio.ensure_future(c.request("GET", "/a"))
    while not server.requests:
        await asyncio.sleep(0.01)
    await c.aclose()
    with pytest.raises(ControllerUnavailable, match="the driver is closing"):
        await pending
    assert time.monotonic() - started < 2  # ten retries would back off for 30 s
    with pytest.raises(ControllerUnavailable, match="the driver is closing"):
        await c.request("GET", "/a")
