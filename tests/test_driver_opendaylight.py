"""The opendaylight driver against a local fake of OpenDaylight's RESTCONF for the BGP plugin (bgpcep).

OpenDaylight cannot run here, so ``FakeOpenDaylight`` (http.server on
127.0.0.1, port 0) serves the resources the driver uses, as documented, and
keeps the controller's state for the tests to check:

- ``POST .../network-instance=global-bgp/protocols`` (a protocol instance with
  ``global/config`` router-id and as, ``apply-policy``, ``afi-safis``):
  https://docs.opendaylight.org/projects/bgpcep/en/latest/bgp/bgp-user-guide-protocol-configuration.html
  and https://docs.opendaylight.org/projects/bgpcep/en/latest/bgp/bgp-user-guide-ip-unicast-family.html
- ``POST .../bgp-openconfig-extensions:bgp/neighbors`` (``neighbor-address``,
  ``config`` peer-type / peer-as / auth-password, ``timers``, ``transport``,
  ``afi-safis``) and ``PUT .../bgp/global/config``:
  https://docs.opendaylight.org/projects/bgpcep/en/latest/bgp/bgp-user-guide-bgp-peering.html
- ``GET .../bgp/neighbors?content=nonconfig`` with ``state/session-state``:
  https://docs.opendaylight.org/projects/bgpcep/en/latest/bgp/bgp-user-guide-operational-state.html
- RESTCONF itself (``?content=config``, PUT and DELETE of a list entry,
  201/204 answers, 404 ``data-missing``, 409 ``data-exists``, ``errors`` bodies):
  RFC 8040 sections 3.5.3, 4.3, 4.4.1, 4.5, 4.7 and 7, https://www.rfc-editor.org/rfc/rfc8040;
  the older "bierman02" URLs (``/restconf/config/...``, ``/restconf/operational/...``)
  as the bgpcep guides gave them before 2023 (bgpcep commit 0d147fd6ac, BGPCEP-1024).
- HTTP basic authentication (401 with ``WWW-Authenticate``), as OpenDaylight's AAA does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from isthmus.agent.journal import Journal
from isthmus.agent.overrides import Overrides
from isthmus.agent.reconciler import Reconciler
from isthmus.agent.state import DesiredState
from isthmus.core import model as m
from isthmus.drivers.base import DriverContext, DriverError
from isthmus.drivers.opendaylight import OpenDaylightDriver
from isthmus.drivers.rest import ControllerAuthFailed, ControllerUnavailable

SITE = "one"
INSTANCE = "isthmus-one-gw"
USER, PASSWORD = "admin", "odl-s3cret"
BGP_SECRET = "md5-t0psecret"
WRITES = ("POST", "PUT", "DELETE")

NEIGHBOR_KEYS = {"neighbor-address", "config", "timers", "transport", "afi-safis", "route-reflector",
                 "graceful-restart", "add-paths", "error-handling", "logging-options", "ebgp-multihop",
                 "use-multiple-paths", "apply-policy", "as-path-options"}
NEIGHBOR_CONFIG_KEYS = {"peer-as", "local-as", "peer-type", "auth-password", "remove-private-as",
                        "route-flap-damping", "send-community", "description", "peer-group"}
AFI_SAFIS = {"IPV4-UNICAST", "IPV6-UNICAST", "IPV4-LABELLED-UNICAST", "IPV6-LABELLED-UNICAST",
             "L3VPN-IPV4-UNICAST", "L3VPN-IPV6-UNICAST", "L2VPN-EVPN"}


def local(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def get(obj: Any, name: str) -> Any:
    """A member with or without module prefix, as RFC 7951 allows."""
    if not isinstance(obj, dict):
        return None
    return next((v for k, v in obj.items() if local(k) == name), None)


class Refusal(Exception):
    def __init__(self, status: int, tag: str, message: str) -> None:
        super().__init__(message)
        self.status, self.tag, self.message = status, tag, message


# ---------------------------------------------------------------- the fake controller


class FakeOpenDaylight:
    """bgpcep's documented RESTCONF resources in one flavour, with basic auth; keeps the controller's state.

    ``protocols``: instance name -> {"global": {...}, "neighbors": {address: entry}}.
    ``sessions``: (instance, address) -> session-state in the operational datastore.
    Faults: ``fail_next(status, n)`` answers the next n requests with ``status``;
    ``stall_next(seconds, n)`` holds the next n requests that long before answering.
    """

    def __init__(self, flavour: str = "rfc8040", tls: ssl.SSLContext | None = None) -> None:
        self.flavour = flavour
        self.protocols: dict[str, dict[str, Any]] = {}
        self.sessions: dict[tuple[str, str], str] = {}
        self.reject: dict[str, str] = {}  # neighbor address -> error-message of a 400
        self.requests: list[tuple[str, str, int]] = []  # method, path, status answered
        self.faults: list[tuple[str, float]] = []
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
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeOpenDaylight:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def fail_next(self, status: int, n: int = 1) -> None:
        self.faults += [("status", status)] * n

    def stall_next(self, seconds: float, n: int = 1) -> None:
        self.faults += [("stall", seconds)] * n

    @property
    def writes(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] in WRITES]

    def neighbor(self, address: str, instance: str = INSTANCE) -> dict[str, Any]:
        return self.protocols[instance]["neighbors"][address]  # type: ignore[no-any-return]

    # ------------------------------------------------------------ HTTP

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        with self.lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None and fault[0] == "stall":
            self.release.wait(fault[1])
            fault = None
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if h.headers.get("Authorization") != expected:
            status, body, headers = 401, b"", {"WWW-Authenticate": 'Basic realm="opendaylight"'}
        elif fault is not None:
            status, body, headers = int(fault[1]), b"", {}
        else:
            headers = {}
            try:
                with self.lock:
                    status, doc = self.route(h.command, h.path, json.loads(raw) if raw else None)
                body = json.dumps(doc).encode() if doc is not None else b""
            except Refusal as exc:
                status, body = exc.status, json.dumps(self.error(exc.tag, exc.message)).encode()
        with self.lock:
            self.requests.append((h.command, h.path, status))
        with contextlib.suppress(OSError):  # the client may have given up (timeout test)
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            if body:
                h.send_header("Content-Type", "application/yang-data+json" if self.flavour == "rfc8040"
                              else "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

    def error(self, tag: str, message: str) -> dict[str, Any]:
        err = {"error": [{"error-type": "protocol", "error-tag": tag, "error-message": message}]}
        return {"ietf-restconf:errors": err} if self.flavour == "rfc8040" else {"errors": err}

    def ok(self, method: str, created: bool) -> int:
        if self.flavour == "rfc8040":  # RFC 8040 4.4.1, 4.5, 4.7
            return 201 if created else 204
        return {"POST": 204, "PUT": 200, "DELETE": 200}[method]  # bierman02 RESTCONF of OpenDaylight

    # ------------------------------------------------------------ resources

    def parse(self, path: str) -> tuple[str, str, str, str]:
        """(datastore, resource, instance, neighbor address) of a request path; Refusal 404 when unknown."""
        parts = urlsplit(path)
        query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
        if self.flavour == "rfc8040":
            ni = (r"/rests/data/openconfig-network-instance:network-instances/network-instance=global-bgp")
            proto = ni + r"/openconfig-network-instance:protocols/protocol=openconfig-policy-types:BGP,(?P<name>[^/]+)"
            bgp = proto + "/bgp-openconfig-extensions:bgp"
            routes = [("protocols", ni + "/protocols"), ("protocol", proto), ("config", bgp + "/global/config"),
                      ("afi-safis", bgp + "/global/afi-safis"), ("neighbors", bgp + "/neighbors"),
                      ("neighbor", bgp + "/neighbors/neighbor=(?P<addr>[^/]+)")]
            ds = {"config": "config", "nonconfig": "operational"}.get(query.get("content", ""), "all")
        else:
            ni = (r"/restconf/(?P<ds>config|operational)/openconfig-network-instance:network-instances/"
                  r"network-instance/global-bgp/openconfig-network-instance:protocols")
            proto = ni + "/protocol/openconfig-policy-types:BGP/(?P<name>[^/]+)"
            routes = [("protocols", ni), ("protocol", proto), ("config", proto + "/bgp/global/config"),
                      ("afi-safis", proto + "/bgp/global/afi-safis"), ("neighbors", proto + "/bgp/neighbors"),
                      ("neighbor", proto + "/bgp/neighbors/neighbor/(?P<addr>[^/]+)")]
            ds = ""
        for resource, pattern in routes:
            match = re.fullmatch(pattern, parts.path)
            if match:
                groups = match.groupdict()
                return (groups.get("ds") or ds, resource, unquote(groups.get("name") or ""),
                        unquote(groups.get("addr") or ""))
        raise Refusal(404, "invalid-value", f"no such resource {parts.path}")

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        ds, resource, name, addr = self.parse(path)
        if method != "GET" and ds == "operational":
            raise Refusal(405, "operation-not-supported", "the operational datastore is read-only")
        proto = self.protocols.get(name)
        if resource != "protocols" and proto is None:
            raise Refusal(404 if method in ("GET", "DELETE") else 409, "data-missing",
                          "Request could not be completed because the relevant data model content does not exist")
        qualify = (lambda n: f"bgp-openconfig-extensions:{n}") if self.flavour == "rfc8040" else (lambda n: n)
        if resource == "protocols" and method == "GET":
            if not self.protocols:
                raise Refusal(404, "data-missing", "Request could not be completed because the relevant data "
                              "model content does not exist")
            items = [{"name": n, "identifier": "openconfig-policy-types:BGP", "config": {"name": n},
                      qualify("bgp"): {"global": p["global"],
                                       "neighbors": {"neighbor": list(p["neighbors"].values())}}}
                     for n, p in self.protocols.items()]
            top = "openconfig-network-instance:protocols" if self.flavour == "rfc8040" else "protocols"
            return 200, {top: {"protocol": items}}
        if resource == "protocols" and method == "POST":
            (item,) = body["protocol"]
            if local(item["identifier"]) != "BGP":
                raise Refusal(400, "invalid-value", "identifier must be BGP")
            if item["name"] in self.protocols:
                raise Refusal(409, "data-exists", "Data already exists")
            bgp = get(item, "bgp")
            self.protocols[item["name"]] = {"global": get(bgp, "global"), "neighbors": {}}
            return self.ok(method, True), None
        assert proto is not None
        if resource == "protocol" and method == "DELETE":
            del self.protocols[name]
            return self.ok(method, False), None
        if resource in ("config", "afi-safis") and method == "PUT":
            proto["global"][resource] = get(body, resource)
            return self.ok(method, False), None
        if resource == "neighbors" and method == "GET":
            if ds == "operational":
                entries = [{"neighbor-address": a, **({"state": {"session-state": s}} if s else {})}
                           for a in proto["neighbors"] for s in [self.sessions.get((name, a), "")]]
            else:
                entries = list(proto["neighbors"].values())
            return 200, {qualify("neighbors"): {"neighbor": entries}}
        if resource == "neighbors" and method == "POST":
            (entry,) = body["neighbor"]
            self.check_neighbor(entry)
            if entry["neighbor-address"] in proto["neighbors"]:
                raise Refusal(409, "data-exists", "Data already exists")
            proto["neighbors"][entry["neighbor-address"]] = entry
            return self.ok(method, True), None
        if resource == "neighbor" and method == "PUT":
            (entry,) = get(body, "neighbor")
            if entry["neighbor-address"] != addr:
                raise Refusal(400, "invalid-value", "The key in the URI does not match the key in the payload")
            self.check_neighbor(entry)
            created = addr not in proto["neighbors"]
            proto["neighbors"][addr] = entry
            return self.ok(method, created), None
        if resource == "neighbor" and method == "DELETE":
            if addr not in proto["neighbors"]:
                raise Refusal(404, "data-missing", "Data does not exist")
            del proto["neighbors"][addr]
            return self.ok(method, False), None
        raise Refusal(405, "operation-not-supported", f"{method} is not supported on {resource}")

    def check_neighbor(self, entry: dict[str, Any]) -> None:
        """Refuse what the openconfig model would (unknown nodes, bad identities) and what the test asks."""
        for key in entry:
            if key not in NEIGHBOR_KEYS:
                raise Refusal(400, "malformed-message", f"Schema node with name {key} was not found")
        for key in entry.get("config", {}):
            if key not in NEIGHBOR_CONFIG_KEYS:
                raise Refusal(400, "malformed-message", f"Schema node with name {key} was not found")
        for item in entry.get("afi-safis", {}).get("afi-safi", []):
            if local(item["afi-safi-name"]) not in AFI_SAFIS:
                raise Refusal(400, "invalid-value", f"unknown identity {item['afi-safi-name']}")
        if entry["config"].get("peer-type") not in (None, "INTERNAL", "EXTERNAL"):
            raise Refusal(400, "invalid-value", "bad peer-type")
        if entry["neighbor-address"] in self.reject:
            raise Refusal(400, "invalid-value", self.reject[entry["neighbor-address"]])


# ---------------------------------------------------------------- helpers


@pytest.fixture(params=["rfc8040", "bierman02"])
def odl(request: pytest.FixtureRequest) -> Iterator[FakeOpenDaylight]:
    with FakeOpenDaylight(request.param) as server:
        yield server


def make_driver(server: FakeOpenDaylight, tmp: Path, password: str = PASSWORD, **options: str) -> OpenDaylightDriver:
    pwfile = tmp / "odl.pass"
    pwfile.write_text(password + "\n")
    opts = {"url": server.url, "username": USER, "password_file": str(pwfile), "timeout": "2", "retries": "2",
            "restconf": server.flavour, **options}
    return OpenDaylightDriver(DriverContext(SITE, tmp / "state", opts))


def peering(conn: str, remote: str = "192.0.2.2", remote_as: int = 65002, *, local_as: int = 65001,
            local_address: str = "192.0.2.1", hold_time: int = 90, password_ref: str = "",
            families: tuple[str, ...] = (), admin: m.AdminState = m.AdminState.UP, endpoint: str = "gw",
            router_id: str = "") -> m.DesiredPeering:
    return m.DesiredPeering(
        connection=conn, type=m.ConnectionType.BGP,
        local=m.Endpoint(SITE, endpoint, local_address, local_as, router_id=router_id),
        remote=m.Endpoint("two", "gw", remote, remote_as),
        bgp=m.BgpParams(hold_time=hold_time, password_ref=password_ref, address_families=families),
        admin_state=admin,
    )


def states(observed: dict[str, m.ObservedPeering]) -> dict[str, tuple[str, str]]:
    return {n: (o.state.value, o.error) for n, o in observed.items()}


# ---------------------------------------------------------------- create, re-apply, update, delete


async def test_create_realizes_instance_and_neighbors_as_documented(odl: FakeOpenDaylight, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ODL_TEST_BGP_SECRET", BGP_SECRET)
    driver = make_driver(odl, tmp_path)
    await driver.apply({
        "ebgp": peering("ebgp", password_ref="env:ODL_TEST_BGP_SECRET", families=("ipv4-unicast", "l2vpn-evpn")),
        "ibgp": peering("ibgp", remote="2001:db8::2", remote_as=65001, hold_time=30),
    })
    glob = odl.protocols[INSTANCE]["global"]
    assert glob["config"] == {"router-id": "192.0.2.1", "as": 65001}
    assert glob["apply-policy"]["config"]["import-policy"] == ["default-odl-import-policy"]
    assert {a["afi-safi-name"] for a in glob["afi-safis"]["afi-safi"]} == {
        "openconfig-bgp-types:IPV4-UNICAST", "openconfig-bgp-types:IPV6-UNICAST", "openconfig-bgp-types:L2VPN-EVPN"}
    ebgp = odl.neighbor("192.0.2.2")
    assert ebgp["config"] == {"peer-type": "EXTERNAL", "peer-as": 65002, "description": "isthmus:one:ebgp",
                              "auth-password": BGP_SECRET}
    assert ebgp["timers"] == {"config": {"hold-time": 90}}
    assert ebgp["transport"] == {"config": {"passive-mode": False, "local-address": "192.0.2.1"}}
    assert [a["afi-safi-name"] for a in ebgp["afi-safis"]["afi-safi"]] == [
        "openconfig-bgp-types:IPV4-UNICAST", "openconfig-bgp-types:L2VPN-EVPN"]
    ibgp = odl.neighbor("2001:db8::2")
    assert ibgp["config"]["peer-type"] == "INTERNAL" and ibgp["timers"]["config"]["hold-time"] == 30
    assert [a["afi-safi-name"] for a in ibgp["afi-safis"]["afi-safi"]] == ["openconfig-bgp-types:IPV6-UNICAST"]
    record = json.loads((tmp_path / "state" / "opendaylight-owned.json").read_text())
    assert record == {odl.url: {"instances": [INSTANCE]}}

    # Observed state is what the controller reports: no session yet, then ACTIVE, then ESTABLISHED.
    assert states(await driver.observe()) == {
        "ebgp": ("connecting", "the controller reports no session state yet"),
        "ibgp": ("connecting", "the controller reports no session state yet")}
    odl.sessions[(INSTANCE, "192.0.2.2")] = "ESTABLISHED"
    odl.sessions[(INSTANCE, "2001:db8::2")] = "ACTIVE"
    assert states(await driver.observe()) == {
        "ebgp": ("established", ""), "ibgp": ("connecting", "the controller reports session state ACTIVE")}
    assert BGP_SECRET not in caplog.text and PASSWORD not in caplog.text
    await driver.close()


async def test_reapply_of_the_same_state_writes_nothing(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path)
    desired = {"a": peering("a"), "b": peering("b", remote="192.0.2.3", remote_as=65003)}
    await driver.apply(desired)
    assert [w[0] for w in odl.writes] == ["POST", "POST", "POST"]  # instance, two neighbors
    before = len(odl.writes)
    await driver.apply(desired)
    await driver.apply(dict(desired))
    assert len(odl.writes) == before, odl.writes[before:]
    assert [r[0] for r in odl.requests[-2:]] == ["GET", "GET"]


async def test_update_replaces_the_neighbor_and_changes_the_instance(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path)
    await driver.apply({"a": peering("a"), "b": peering("b", remote="192.0.2.3")})
    before = len(odl.writes)
    await driver.apply({"a": peering("a", hold_time=180, remote_as=65009), "b": peering("b", remote="192.0.2.3")})
    assert [w[0] for w in odl.writes[before:]] == ["PUT"], odl.writes[before:]
    assert odl.neighbor("192.0.2.2")["timers"]["config"]["hold-time"] == 180
    assert odl.neighbor("192.0.2.2")["config"]["peer-as"] == 65009
    assert odl.neighbor("192.0.2.3")["config"]["peer-as"] == 65002  # untouched

    # The local AS changes the instance it created (PUT global/config) and makes "a" internal.
    before = len(odl.writes)
    await driver.apply({"a": peering("a", local_as=65009, hold_time=180, remote_as=65009),
                        "b": peering("b", remote="192.0.2.3", local_as=65009)})
    assert odl.protocols[INSTANCE]["global"]["config"] == {"router-id": "192.0.2.1", "as": 65009}
    assert odl.neighbor("192.0.2.2")["config"]["peer-type"] == "INTERNAL"
    assert [w[0] for w in odl.writes[before:]] == ["PUT", "PUT"], odl.writes[before:]
    odl.sessions[(INSTANCE, "192.0.2.2")] = "ESTABLISHED"
    assert (await driver.observe())["a"].state == m.PeeringState.ESTABLISHED


async def test_delete_removes_only_what_isthmus_created(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path)
    await driver.apply({"a": peering("a"), "b": peering("b", remote="192.0.2.3")})
    # Someone adds a neighbor of their own to the instance, and one with another site's marker.
    odl.protocols[INSTANCE]["neighbors"]["198.51.100.7"] = {
        "neighbor-address": "198.51.100.7", "config": {"peer-type": "EXTERNAL", "peer-as": 64999}}
    odl.protocols[INSTANCE]["neighbors"]["198.51.100.8"] = {
        "neighbor-address": "198.51.100.8", "config": {"peer-as": 64998, "description": "isthmus:two:x"}}

    await driver.apply({"b": peering("b", remote="192.0.2.3")})
    assert set(odl.protocols[INSTANCE]["neighbors"]) == {"192.0.2.3", "198.51.100.7", "198.51.100.8"}
    assert [w[0] for w in odl.writes][-1] == "DELETE"
    assert set(states(await driver.observe())) == {"b"}

    await driver.apply({})
    assert set(odl.protocols[INSTANCE]["neighbors"]) == {"198.51.100.7", "198.51.100.8"}  # and the instance stays
    assert await driver.observe() == {}
    # Once the others are gone, the instance isthmus created goes too.
    odl.protocols[INSTANCE]["neighbors"].clear()
    await driver.apply({})
    assert INSTANCE not in odl.protocols
    record = json.loads((tmp_path / "state" / "opendaylight-owned.json").read_text())
    assert record == {odl.url: {"instances": []}}


async def test_neighbor_of_someone_else_at_a_desired_address_is_left_alone(odl: FakeOpenDaylight,
                                                                           tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path)
    await driver.apply({"b": peering("b", remote="192.0.2.3")})
    theirs = {"neighbor-address": "192.0.2.2", "config": {"peer-as": 64999, "description": "core router"}}
    odl.protocols[INSTANCE]["neighbors"]["192.0.2.2"] = dict(theirs)
    await driver.apply({"a": peering("a"), "b": peering("b", remote="192.0.2.3")})
    assert odl.neighbor("192.0.2.2") == theirs
    seen = await driver.observe()
    assert seen["a"].state == m.PeeringState.ERROR
    assert "exists and is not isthmus's (description 'core router')" in seen["a"].error
    assert seen["b"].state == m.PeeringState.CONNECTING
    await driver.apply({"b": peering("b", remote="192.0.2.3")})
    assert odl.neighbor("192.0.2.2") == theirs


async def test_existing_instance_is_used_but_never_changed_or_removed(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    odl.protocols["bgp-example"] = {"global": {"config": {"router-id": "192.0.2.1", "as": 65000}}, "neighbors": {}}
    driver = make_driver(odl, tmp_path, instance="bgp-example")
    await driver.apply({"a": peering("a")})  # wants AS 65001
    seen = await driver.observe()
    assert seen["a"].state == m.PeeringState.ERROR and "not created by isthmus" in seen["a"].error
    assert odl.protocols["bgp-example"]["global"]["config"]["as"] == 65000 and not odl.writes

    await driver.apply({"a": peering("a", local_as=65000)})
    assert set(odl.protocols["bgp-example"]["neighbors"]) == {"192.0.2.2"}
    await driver.apply({})
    assert odl.protocols["bgp-example"] == {"global": {"config": {"router-id": "192.0.2.1", "as": 65000}},
                                            "neighbors": {}}


async def test_admin_down_removes_the_neighbor_and_shows_down(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path)
    await driver.apply({"a": peering("a")})
    await driver.apply({"a": peering("a", admin=m.AdminState.DOWN)})
    assert odl.protocols[INSTANCE]["neighbors"] == {}
    assert states(await driver.observe()) == {"a": ("down", "")}


# ---------------------------------------------------------------- errors


async def test_refused_neighbor_is_the_error_of_that_peering_only(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    odl.reject["192.0.2.9"] = "peer-as 65009 is not allowed here"
    driver = make_driver(odl, tmp_path)
    await driver.apply({"a": peering("a"), "bad": peering("bad", remote="192.0.2.9", remote_as=65009)})
    seen = await driver.observe()
    assert seen["bad"].state == m.PeeringState.ERROR
    assert seen["bad"].error == ("the controller refused neighbor 192.0.2.9 in instance isthmus-one-gw: 400: "
                                 "peer-as 65009 is not allowed here (invalid-value)")
    assert seen["a"].state == m.PeeringState.CONNECTING and "192.0.2.2" in odl.protocols[INSTANCE]["neighbors"]


async def test_unreadable_bgp_password_is_an_error_naming_the_file(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path)
    missing = tmp_path / "nope" / "md5"
    await driver.apply({"a": peering("a", password_ref=f"file:{missing}"), "b": peering("b", remote="192.0.2.3")})
    seen = await driver.observe()
    assert seen["a"].state == m.PeeringState.ERROR and str(missing) in seen["a"].error
    assert "192.0.2.2" not in odl.protocols[INSTANCE]["neighbors"]
    missing.parent.mkdir()
    missing.write_text(BGP_SECRET + "\n")
    await driver.apply({"a": peering("a", password_ref=f"file:{missing}"), "b": peering("b", remote="192.0.2.3")})
    assert odl.neighbor("192.0.2.2")["config"]["auth-password"] == BGP_SECRET


async def test_bad_credentials_show_error_on_every_peering(odl: FakeOpenDaylight, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    driver = make_driver(odl, tmp_path, password="wrong-password")
    with pytest.raises(ControllerAuthFailed) as err:
        await driver.apply({"a": peering("a")})
    assert err.value.terminal and err.value.status == 401
    assert "refused the credentials (401 Unauthorized)" in str(err.value)
    assert f"check opendaylight.username (admin) and the password in file {tmp_path / 'odl.pass'}" in str(err.value)
    assert not odl.writes and "wrong-password" not in str(err.value)

    # Through the agent's reconcile loop: ERROR on the peering, with the message; no retry storm.
    rec = Reconciler(SITE, [driver], Overrides(tmp_path / "o.json", SITE), Journal(tmp_path / "j.jsonl"), interval=9)
    rec.set_desired(DesiredState(SITE, 3, {"a": peering("a")}))
    assert await rec.reconcile_once() == 9  # terminal: the periodic pass, not a fast retry
    assert rec.observed["a"].state == m.PeeringState.ERROR
    assert rec.observed["a"].error.startswith("opendaylight: GET http://127.0.0.1:")
    assert "refused the credentials (401 Unauthorized)" in rec.observed["a"].error
    assert "wrong-password" not in caplog.text

    (tmp_path / "odl.pass").write_text(PASSWORD)  # fixed without restarting the agent
    await rec.reconcile_once()
    assert rec.observed["a"].state == m.PeeringState.CONNECTING


async def test_server_error_is_retried_then_succeeds(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path, retries="2")
    odl.fail_next(500, 2)
    await driver.apply({"a": peering("a")})
    # the read, twice refused, then answered: data-missing (no instance yet), and the writes went on
    assert [(r[0], r[2]) for r in odl.requests[:3]] == [("GET", 500), ("GET", 500), ("GET", 404)]
    assert "192.0.2.2" in odl.protocols[INSTANCE]["neighbors"]

    odl.fail_next(503, 3)  # more than the retries allow: a DriverError to retry later, not terminal
    with pytest.raises(ControllerUnavailable) as err:
        await driver.observe()
    assert not err.value.terminal
    assert "503 Service Unavailable" in str(err.value) and "after 3 attempts" in str(err.value)


async def test_timeout_is_retried_within_a_bounded_time(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path, timeout="0.3", retries="1")
    odl.stall_next(10, 2)
    start = time.monotonic()
    with pytest.raises(ControllerUnavailable) as err:
        await driver.apply({"a": peering("a")})
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 2.5, elapsed  # two attempts of 0.3 s and one backoff of 0.25 s
    assert not err.value.terminal and "TimeoutError" in str(err.value) and "after 2 attempts" in str(err.value)
    odl.release.set()
    await driver.apply({"a": peering("a")})  # the controller answers again: converges
    assert "192.0.2.2" in odl.protocols[INSTANCE]["neighbors"]


async def test_unreachable_controller_is_a_retryable_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD)
    driver = OpenDaylightDriver(DriverContext(SITE, tmp_path, {
        "url": f"http://127.0.0.1:{port}", "username": USER, "password_file": str(pwfile), "retries": "1"}))
    with pytest.raises(ControllerUnavailable) as err:
        await driver.apply({"a": peering("a")})
    assert not err.value.terminal and "ConnectionRefusedError" in str(err.value)


def make_ca_and_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it (openssl); (ca, cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True, timeout=30)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=isthmus test CA")
    run("req", *ec, "-keyout", "odl.key", "-out", "odl.csr", "-subj", "/CN=127.0.0.1")
    (tmp / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "odl.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "ext", "-out", "odl.pem")
    return tmp / "ca.pem", tmp / "odl.pem", tmp / "odl.key"


async def test_https_with_the_ca_option(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with FakeOpenDaylight(tls=tls) as server:
        driver = make_driver(server, tmp_path, ca=str(ca))
        await driver.apply({"a": peering("a")})
        assert "192.0.2.2" in server.protocols[INSTANCE]["neighbors"]

        untrusting = make_driver(server, tmp_path)  # the system's CAs only
        with pytest.raises(DriverError) as err:
            await untrusting.observe()
        assert err.value.terminal and "TLS certificate is not trusted" in str(err.value)
        assert "set opendaylight.ca to the CA that signed it" in str(err.value)


async def test_peerings_that_cannot_be_mapped_are_errors_of_their_own(odl: FakeOpenDaylight, tmp_path: Path) -> None:
    driver = make_driver(odl, tmp_path)
    await driver.apply({
        "a": peering("a"),
        "again": peering("again"),  # the same neighbor as "a"
        "v6": peering("v6", remote="2001:db8::2", local_address="2001:db8::1", endpoint="v6gw"),
        "other-as": peering("other-as", remote="192.0.2.7", local_as=65111),  # the instance of "a" is AS 65001
    })
    seen = states(await driver.observe())
    assert seen["a"] == ("connecting", "the controller reports no session state yet")
    assert seen["again"] == ("error", "connection a already has neighbor 192.0.2.2 in instance isthmus-one-gw")
    assert seen["v6"][0] == "error" and "has the IPv6 address 2001:db8::1 and no router id" in seen["v6"][1]
    assert seen["other-as"][0] == "error" and "is AS 65001 router id 192.0.2.1 for connection a" in seen["other-as"][1]
    assert set(odl.protocols) == {INSTANCE} and set(odl.protocols[INSTANCE]["neighbors"]) == {"192.0.2.2"}


@pytest.mark.parametrize(("options", "message"), [
    ({"password": "x"}, "opendaylight.password: passwords are never taken on the command line"),
    ({"colour": "x"}, "opendaylight.colour: unknown option"),
    ({"url": "ftp://odl"}, "opendaylight.url: 'ftp://odl' is not an http:// or https:// URL"),
    ({"url": "http://admin:pw@odl:8181"}, "opendaylight.url: must not carry credentials"),
    ({"timeout": "soon"}, "opendaylight.timeout: 'soon' is not a number"),
    ({"retries": "99"}, "opendaylight.retries: 99 is out of range 0..10"),
    ({"restconf": "draft01"}, "opendaylight.restconf: 'draft01' is not rfc8040 or bierman02"),
    ({"ca": "/nonexistent/ca.pem"}, "opendaylight.ca: only applies to an https:// url"),
    ({"url": "https://odl:8181", "ca": "/nonexistent/ca.pem"}, "opendaylight.ca: cannot load CA file"),
    ({"password_file": "/nonexistent/pw"}, "opendaylight.password_file: cannot read /nonexistent/pw"),
    ({"instance": "odl/{endpoint}"}, "opendaylight.instance: 'odl/{endpoint}' is not a name"),
])
def test_unusable_options_are_terminal_errors(tmp_path: Path, options: dict[str, str], message: str) -> None:
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD)
    opts = {"url": "http://127.0.0.1:1", "username": USER, "password_file": str(pwfile), **options}
    with pytest.raises(DriverError) as err:
        OpenDaylightDriver(DriverContext(SITE, tmp_path, opts))
    assert err.value.terminal and str(err.value).startswith(message), str(err.value)


def test_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODL_TEST_PW", raising=False)
    opts = {"url": "http://127.0.0.1:1", "username": USER, "password_env": "ODL_TEST_PW"}
    with pytest.raises(DriverError, match="environment variable ODL_TEST_PW is not set"):
        OpenDaylightDriver(DriverContext(SITE, tmp_path, opts))
    monkeypatch.setenv("ODL_TEST_PW", PASSWORD)
    assert OpenDaylightDriver(DriverContext(SITE, tmp_path, opts)).client.username == USER
