"""The onos driver against a local fake of ONOS's network configuration REST API.

ONOS cannot run here, so ``FakeOnos`` (http.server on 127.0.0.1, port 0)
serves the one resource the driver uses, as documented, and keeps ONOS's
state for the tests to check:

- ``GET``/``POST``/``DELETE /onos/v1/network/configuration/apps/org.onosproject.router/bgp``:
  the REST API of the network configuration service,
  https://wiki.onosproject.org/display/ONOS/The+Network+Configuration+Service, as implemented in
  web/api/src/main/java/org/onosproject/rest/resources/NetworkConfigWebResource.java of
  https://github.com/opennetworkinglab/onos: GET answers 200 with the object or 404
  ``{"code": 404, "message": "Config for 'apps/org.onosproject.router/bgp' not found"}``;
  POST replaces the whole object and answers 200; DELETE answers 204; errors are
  ``{"code": N, "message": "..."}`` (utils/rest/.../AbstractMapper.java,
  web/api/.../InvalidConfigExceptionMapper.java for 400).
- the object: ``{"bgpSpeakers": [{"name", "connectPoint", "vlan", "peers": [...]}]}``,
  the SDN-IP page of the ONOS wiki (https://wiki.onosproject.org/pages/viewpage.action?pageId=4162813),
  apps/routing-api/src/main/java/org/onosproject/routing/config/BgpConfig.java and
  tools/tutorials/sdnip/configs/network-cfg.json.
- HTTP basic authentication (401), as ONOS's REST API does (default user onos).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from isthmus.agent.journal import Journal
from isthmus.agent.overrides import Overrides
from isthmus.agent.reconciler import Reconciler
from isthmus.agent.state import DesiredState
from isthmus.core import model as m
from isthmus.drivers.base import DriverContext, DriverError
from isthmus.drivers.onos import OnosDriver
from isthmus.drivers.rest import ControllerAuthFailed, ControllerRefused, ControllerUnavailable

SITE = "one"
SPEAKER = "isthmus-one-gw"
CONNECT_POINT = "of:00000000000000a3/1"
USER, PASSWORD = "onos", "rocks-s3cret"
PATH = "/onos/v1/network/configuration/apps/org.onosproject.router/bgp"
# What an operator configured before isthmus came: a speaker of its own and a top-level field isthmus knows nothing of.
THEIRS = {"name": "speaker1", "connectPoint": "of:00000000000000a1/1", "peers": ["10.0.1.1", "10.0.2.1"]}


class FakeOnos:
    """ONOS's documented network configuration resource of the router application, with basic auth.

    ``config``: the ``bgp`` object as ONOS stores it (None: not configured).
    Faults: ``fail_next(status, n, message)`` answers the next n requests with
    ``status``; ``stall_next(seconds, n)`` holds the next n requests that long.
    """

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None
        self.invalid = ""  # when set, a POST is refused as an invalid config with this message
        self.requests: list[tuple[str, str, int]] = []
        self.faults: list[tuple[str, float, str]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                pass

            def _serve(self) -> None:
                fake.handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 (http.server's names)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeOnos:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def fail_next(self, status: int, n: int = 1, message: str = "") -> None:
        self.faults += [("status", status, message)] * n

    def stall_next(self, seconds: float, n: int = 1) -> None:
        self.faults += [("stall", seconds, "")] * n

    @property
    def writes(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] != "GET"]

    def speaker(self, name: str = SPEAKER) -> dict[str, Any]:
        assert self.config is not None, "ONOS has no bgp configuration"
        found = [s for s in self.config.get("bgpSpeakers", []) if s.get("name") == name]
        assert len(found) == 1, self.config
        return found[0]  # type: ignore[no-any-return]

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        with self.lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None and fault[0] == "stall":
            self.release.wait(fault[1])
            fault = None
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        doc: Any = None
        if h.headers.get("Authorization") != expected:
            status = 401
        elif fault is not None:
            status = int(fault[1])
            doc = {"code": status, "message": fault[2]} if fault[2] else None
        elif h.path != PATH:
            status, doc = 404, {"code": 404, "message": "Not found"}
        else:
            with self.lock:
                status, doc = self.serve(h.command, raw)
        with self.lock:
            self.requests.append((h.command, h.path, status))
        body = json.dumps(doc).encode() if doc is not None else b""
        with contextlib.suppress(OSError):  # the client may have given up (timeout test)
            h.send_response(status)
            if status == 401:
                h.send_header("WWW-Authenticate", 'Basic realm="karaf"')
            if body:
                h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

    def serve(self, method: str, raw: bytes) -> tuple[int, Any]:
        if method == "GET":
            if self.config is None:
                return 404, {"code": 404, "message": "Config for 'apps/org.onosproject.router/bgp' not found"}
            return 200, copy.deepcopy(self.config)
        if method == "POST":
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                return 400, {"code": 400, "message": str(exc)}
            if not isinstance(doc, dict):
                return 400, {"code": 400, "message": "Unable to parse config: not an object"}
            if self.invalid:  # as InvalidConfigExceptionMapper answers
                return 400, {"code": 400, "message": self.invalid, "subjectKey": "apps",
                             "subject": "org.onosproject.router", "configKey": "bgp"}
            self.config = doc
            return 200, None
        if method == "DELETE":
            self.config = None
            return 204, None
        return 405, {"code": 405, "message": "HTTP 405 Method Not Allowed"}


# ---------------------------------------------------------------- helpers


@pytest.fixture
def onos() -> Iterator[FakeOnos]:
    with FakeOnos() as server:
        yield server


def make_driver(server: FakeOnos, tmp: Path, password: str = PASSWORD, **options: str) -> OnosDriver:
    pwfile = tmp / "onos.pass"
    pwfile.write_text(password + "\n")
    opts = {"url": server.url, "username": USER, "password_file": str(pwfile), "timeout": "2", "retries": "2",
            **options}
    return OnosDriver(DriverContext(SITE, tmp / "state", opts))


def peering(conn: str, remote: str = "192.0.2.2", remote_as: int = 65002, *, hold_time: int = 90,
            connect_point: str | None = CONNECT_POINT, admin: m.AdminState = m.AdminState.UP,
            endpoint: str = "gw", local_as: int = 65001) -> m.DesiredPeering:
    props = {"onos.connect_point": connect_point} if connect_point else {}
    return m.DesiredPeering(
        connection=conn, type=m.ConnectionType.BGP,
        local=m.Endpoint(SITE, endpoint, "192.0.2.1", local_as, properties=props),
        remote=m.Endpoint("two", "gw", remote, remote_as),
        bgp=m.BgpParams(hold_time=hold_time), admin_state=admin,
    )


def states(observed: dict[str, m.ObservedPeering]) -> dict[str, tuple[str, str]]:
    return {n: (o.state.value, o.error) for n, o in observed.items()}


# ---------------------------------------------------------------- create, re-apply, update, delete


async def test_create_adds_a_speaker_and_keeps_everything_else(onos: FakeOnos, tmp_path: Path) -> None:
    onos.config = {"bgpSpeakers": [copy.deepcopy(THEIRS)], "comment": "lab"}
    driver = make_driver(onos, tmp_path)
    await driver.apply({"a": peering("a"), "b": peering("b", remote="2001:DB8::0:2")})
    assert onos.config == {"comment": "lab", "bgpSpeakers": [
        THEIRS, {"name": SPEAKER, "connectPoint": CONNECT_POINT, "peers": ["192.0.2.2", "2001:db8::2"]}]}
    assert [w[0] for w in onos.writes] == ["POST"]
    record = json.loads((tmp_path / "state" / "onos-owned.json").read_text())
    assert record == {onos.url: {"speakers": [SPEAKER], f"peers:{SPEAKER}": ["192.0.2.2", "2001:db8::2"]}}
    # ONOS exposes no session state: ESTABLISHED means ONOS has the configuration.
    assert states(await driver.observe()) == {"a": ("established", ""), "b": ("established", "")}


async def test_create_from_nothing_with_vlan_from_options(onos: FakeOnos, tmp_path: Path) -> None:
    driver = make_driver(onos, tmp_path, connect_point="of:00000000000000a4/7", vlan="20")
    await driver.apply({"a": peering("a", connect_point=None)})
    assert onos.config == {"bgpSpeakers": [
        {"name": SPEAKER, "connectPoint": "of:00000000000000a4/7", "vlan": "20", "peers": ["192.0.2.2"]}]}


async def test_reapply_of_the_same_state_writes_nothing(onos: FakeOnos, tmp_path: Path) -> None:
    onos.config = {"bgpSpeakers": [copy.deepcopy(THEIRS)]}
    driver = make_driver(onos, tmp_path)
    desired = {"a": peering("a"), "b": peering("b", remote="192.0.2.3")}
    await driver.apply(desired)
    assert len(onos.writes) == 1
    await driver.apply(desired)
    await driver.apply(dict(desired))
    assert len(onos.writes) == 1, onos.writes
    assert [r[0] for r in onos.requests[-2:]] == ["GET", "GET"]


async def test_update(onos: FakeOnos, tmp_path: Path) -> None:
    driver = make_driver(onos, tmp_path)
    await driver.apply({"a": peering("a")})
    # Hold time and AS numbers belong to the BGP speaker, not to ONOS: nothing to write.
    await driver.apply({"a": peering("a", hold_time=30, remote_as=65009, local_as=65008)})
    assert len(onos.writes) == 1
    # A new remote address replaces the peer; a new connect point moves the speaker isthmus created.
    await driver.apply({"a": peering("a", remote="192.0.2.9", connect_point="of:00000000000000a3/2")})
    assert onos.speaker() == {"name": SPEAKER, "connectPoint": "of:00000000000000a3/2", "peers": ["192.0.2.9"]}
    assert len(onos.writes) == 2  # one whole-object write for both changes
    assert states(await driver.observe()) == {"a": ("established", "")}


async def test_delete_removes_only_what_isthmus_added(onos: FakeOnos, tmp_path: Path) -> None:
    onos.config = {"bgpSpeakers": [copy.deepcopy(THEIRS)]}
    driver = make_driver(onos, tmp_path)
    await driver.apply({"a": peering("a"), "b": peering("b", remote="192.0.2.3")})
    onos.speaker()["peers"].append("198.51.100.7")  # someone adds a peer to isthmus's speaker

    await driver.apply({"b": peering("b", remote="192.0.2.3")})
    assert onos.speaker()["peers"] == ["192.0.2.3", "198.51.100.7"]
    assert set(states(await driver.observe())) == {"b"}

    await driver.apply({})
    assert onos.speaker()["peers"] == ["198.51.100.7"]  # their peer keeps the speaker alive
    assert onos.speaker("speaker1") == THEIRS
    onos.speaker()["peers"].clear()
    await driver.apply({})
    assert onos.config == {"bgpSpeakers": [THEIRS]}
    record = json.loads((tmp_path / "state" / "onos-owned.json").read_text())
    assert record == {onos.url: {"speakers": []}}


async def test_peer_that_was_there_is_used_but_never_removed(onos: FakeOnos, tmp_path: Path) -> None:
    onos.config = {"bgpSpeakers": [{"name": SPEAKER, "connectPoint": CONNECT_POINT, "peers": ["192.0.2.2"]}]}
    driver = make_driver(onos, tmp_path)
    await driver.apply({"a": peering("a")})
    assert not onos.writes and states(await driver.observe()) == {"a": ("established", "")}
    await driver.apply({})
    assert onos.config == {"bgpSpeakers": [{"name": SPEAKER, "connectPoint": CONNECT_POINT, "peers": ["192.0.2.2"]}]}
    assert not onos.writes


async def test_speaker_of_someone_else_is_never_moved(onos: FakeOnos, tmp_path: Path) -> None:
    onos.config = {"bgpSpeakers": [{"name": "speaker1", "connectPoint": "of:00000000000000a1/1", "peers": []}]}
    driver = make_driver(onos, tmp_path, speaker="speaker1")
    await driver.apply({"a": peering("a")})  # wants it at of:...a3/1
    seen = await driver.observe()
    assert seen["a"].state == m.PeeringState.ERROR and "not created by isthmus" in seen["a"].error
    assert not onos.writes


async def test_peer_of_another_speaker_and_missing_connect_point_are_errors_of_those_peerings(
        onos: FakeOnos, tmp_path: Path) -> None:
    onos.config = {"bgpSpeakers": [copy.deepcopy(THEIRS)]}
    driver = make_driver(onos, tmp_path)
    await driver.apply({"a": peering("a"), "dup": peering("dup", remote="10.0.1.1"),
                        "nocp": peering("nocp", remote="192.0.2.5", connect_point=None, endpoint="edge")})
    seen = await driver.observe()
    assert seen["a"].state == m.PeeringState.ESTABLISHED
    assert seen["dup"].error == "peer 10.0.1.1 is already a peer of speaker speaker1; ONOS keeps one per peer"
    assert seen["nocp"].state == m.PeeringState.ERROR
    assert "local endpoint one/edge has no onos.connect_point property" in seen["nocp"].error
    assert onos.speaker("speaker1") == THEIRS and onos.speaker()["peers"] == ["192.0.2.2"]


async def test_admin_down_removes_the_peer_and_shows_down(onos: FakeOnos, tmp_path: Path) -> None:
    driver = make_driver(onos, tmp_path)
    await driver.apply({"a": peering("a"), "b": peering("b", remote="192.0.2.3")})
    await driver.apply({"a": peering("a", admin=m.AdminState.DOWN), "b": peering("b", remote="192.0.2.3")})
    assert onos.speaker()["peers"] == ["192.0.2.3"]
    assert states(await driver.observe()) == {"a": ("down", ""), "b": ("established", "")}


# ---------------------------------------------------------------- errors


async def test_bad_credentials_show_error_on_every_peering(onos: FakeOnos, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    driver = make_driver(onos, tmp_path, password="wrong-password")
    with pytest.raises(ControllerAuthFailed) as err:
        await driver.apply({"a": peering("a")})
    assert err.value.terminal and err.value.status == 401 and not onos.writes
    assert f"refused the credentials (401 Unauthorized); check onos.username (onos) and the password in file " \
           f"{tmp_path / 'onos.pass'}" in str(err.value)

    rec = Reconciler(SITE, [driver], Overrides(tmp_path / "o.json", SITE), Journal(tmp_path / "j.jsonl"), interval=9)
    rec.set_desired(DesiredState(SITE, 4, {"a": peering("a"), "b": peering("b", remote="192.0.2.3")}))
    assert await rec.reconcile_once() == 9
    assert {o.state for o in rec.observed.values()} == {m.PeeringState.ERROR}
    assert "onos: GET http://127.0.0.1:" in rec.observed["b"].error and "401" in rec.observed["b"].error
    assert "wrong-password" not in caplog.text and PASSWORD not in caplog.text


async def test_refused_write_is_a_terminal_error_with_the_controllers_message(onos: FakeOnos,
                                                                             tmp_path: Path) -> None:
    driver = make_driver(onos, tmp_path)
    onos.invalid = "Invalid config for apps/org.onosproject.router/bgp"
    with pytest.raises(ControllerRefused) as err:
        await driver.apply({"a": peering("a")})
    assert err.value.terminal and err.value.status == 400
    assert err.value.message == "Invalid config for apps/org.onosproject.router/bgp"
    assert not (tmp_path / "state" / "onos-owned.json").exists()  # nothing recorded as isthmus's


async def test_server_error_is_retried_then_succeeds(onos: FakeOnos, tmp_path: Path) -> None:
    driver = make_driver(onos, tmp_path, retries="2")
    onos.fail_next(500, 2, message="java.lang.NullPointerException")
    await driver.apply({"a": peering("a")})
    assert [(r[0], r[2]) for r in onos.requests] == [("GET", 500), ("GET", 500), ("GET", 404), ("POST", 200)]
    assert onos.speaker()["peers"] == ["192.0.2.2"]

    onos.fail_next(502, 3)
    with pytest.raises(ControllerUnavailable) as err:
        await driver.observe()
    assert not err.value.terminal and "after 3 attempts" in str(err.value)


async def test_timeout_is_retried_within_a_bounded_time(onos: FakeOnos, tmp_path: Path) -> None:
    driver = make_driver(onos, tmp_path, timeout="0.3", retries="1")
    onos.stall_next(10, 2)
    start = time.monotonic()
    with pytest.raises(ControllerUnavailable) as err:
        await driver.apply({"a": peering("a")})
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 2.5, elapsed
    assert not err.value.terminal and "TimeoutError" in str(err.value)
    assert onos.config is None
    onos.release.set()
    await driver.apply({"a": peering("a")})
    assert onos.speaker()["peers"] == ["192.0.2.2"]


async def test_a_pass_cancelled_during_its_write_still_records_what_it_wrote(onos: FakeOnos, tmp_path: Path) -> None:
    driver = make_driver(onos, tmp_path)
    onos.stall_next(0)  # the read answers at once
    onos.stall_next(1)  # the write takes a second
    task = asyncio.ensure_future(driver.apply({"a": peering("a")}))
    deadline = time.monotonic() + 10
    while onos.faults:  # until the write arrived and is held (its stall taken off the list)
        assert time.monotonic() < deadline, "the write never reached the fake ONOS"
        await asyncio.sleep(0.01)
    task.cancel()  # the agent stops
    with pytest.raises(asyncio.CancelledError):
        await task
    # The write went through, and so did the record that makes the speaker isthmus's to remove later.
    assert onos.speaker()["peers"] == ["192.0.2.2"] and [w[0] for w in onos.writes] == ["POST"]
    record = json.loads((tmp_path / "state" / "onos-owned.json").read_text())
    assert record == {onos.url: {"speakers": [SPEAKER], f"peers:{SPEAKER}": ["192.0.2.2"]}}


@pytest.mark.parametrize(("options", "message"), [
    ({"password": "rocks"}, "onos.password: passwords are never taken on the command line"),
    ({"bgp_port": "179"}, "onos.bgp_port: unknown option"),
    ({"connect_point": "of:00000000000000a3"}, "onos.connect_point: 'of:00000000000000a3' is not a connect point"),
    ({"vlan": "5000"}, "onos.vlan: 5000 is out of range 1..4094"),
    ({"speaker": "my speaker"}, "onos.speaker: 'my speaker' is not a name"),
    ({"url": ""}, "onos.url: is required"),
])
def test_unusable_options_are_terminal_errors(tmp_path: Path, options: dict[str, str], message: str) -> None:
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD)
    opts = {"url": "http://127.0.0.1:1", "username": USER, "password_file": str(pwfile), **options}
    with pytest.raises(DriverError) as err:
        OnosDriver(DriverContext(SITE, tmp_path, opts))
    assert err.value.terminal and str(err.value).startswith(message), str(err.value)
