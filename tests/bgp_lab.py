"""The BGP lab of the tests: a coordinator, isthmus agents and real BGP daemons (gobgpd, BIRD) in namespaces.

Each site's isthmus-agent runs inside its own namespace (so its os-ken speakers
do too) and reaches a coordinator on the host through a unix socket. Peers are
Debian's gobgpd and BIRD in other namespaces, joined by veth pairs. Addresses
are documentation and benchmarking ranges on those veths only.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import BIN, Proc, agent_cmd, coordinator_cmd, wait_for
from isthmus.core import model as m
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc, api_pb2_grpc
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import types_pb2 as pb

GOBGP_API_PORT = 50051  # gobgpd's gRPC API, on the loopback of its own namespace
ESTABLISHED = 6  # gobgp's session_state enum

needs_bird = pytest.mark.skipif(shutil.which("bird") is None or shutil.which("birdc") is None,
                                 reason="needs Debian's bird2 (`make deps`)")
needs_daemons = pytest.mark.skipif(
    shutil.which("gobgpd") is None or shutil.which("gobgp") is None or shutil.which("etcd") is None,
    reason="needs Debian's gobgpd and etcd-server (`make deps`)",
)
netns = pytest.mark.netns


def gobgpd_config(asn: int, router_id: str, neighbors: list[dict[str, Any]]) -> str:
    lines = ["[global.config]", f"  as = {asn}", f'  router-id = "{router_id}"']
    for n in neighbors:
        family = "ipv6-unicast" if ":" in n["address"] else "ipv4-unicast"
        lines += ["[[neighbors]]", "  [neighbors.config]", f'    neighbor-address = "{n["address"]}"',
                  f"    peer-as = {n['peer_as']}"]
        if n.get("password"):
            lines.append(f'    auth-password = "{n["password"]}"')
        lines += ["  [neighbors.timers.config]", "    connect-retry = 1", "    hold-time = 9",
                  "    keepalive-interval = 3"]
        if n.get("graceful_restart"):  # the helper side of RFC 4724: keep a restarting peer's routes
            lines += ["  [neighbors.graceful-restart.config]", "    enabled = true", "    restart-time = 120"]
        lines += ["  [[neighbors.afi-safis]]", "    [neighbors.afi-safis.config]", f'      afi-safi-name = "{family}"']
        if n.get("graceful_restart"):
            lines += ["    [neighbors.afi-safis.mp-graceful-restart.config]", "      enabled = true"]
    return "\n".join(lines) + "\n"


@dataclass
class Gobgpd:
    """gobgpd in a namespace, read through its CLI's JSON output."""

    ns: Any
    proc: subprocess.Popen[bytes]
    logfile: Path

    def cli(self, *args: str) -> str:
        return str(self.ns.run(["gobgp", "-p", str(GOBGP_API_PORT), *args], timeout=10).stdout)

    def neighbor(self, address: str) -> dict[str, Any]:
        return json.loads(self.cli("-j", "neighbor", address))  # type: ignore[no-any-return]

    def established(self, address: str) -> bool:
        return self.neighbor(address)["state"].get("session_state") == ESTABLISHED

    def session(self, address: str) -> tuple[int, int]:
        """(established-since, flaps) of a neighbor: both stay the same while its session does."""
        n = self.neighbor(address)
        return n["timers"]["state"]["uptime"]["seconds"], n["state"].get("flops", 0)

    def rib(self, family: str = "ipv4") -> set[str]:
        return set(json.loads(self.cli("-j", "global", "rib", "-a", family) or "{}"))

    def rib_paths(self, family: str = "ipv4") -> dict[str, list[dict[str, Any]]]:
        return json.loads(self.cli("-j", "global", "rib", "-a", family) or "{}")  # type: ignore[no-any-return]

    def rib_ages(self, family: str = "ipv4") -> dict[str, int]:
        """Prefix -> when gobgpd got its best path (a withdrawal and re-announce changes it)."""
        rib = json.loads(self.cli("-j", "global", "rib", "-a", family) or "{}")
        return {prefix: min(p.get("age", 0) for p in paths) for prefix, paths in rib.items()}

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def ceases(self, address: str) -> list[str]:
        """The reasons gobgpd logged for sessions with ``address`` that ended with a NOTIFICATION received."""
        out = []
        for line in self.log().splitlines():
            if '"Peer Down"' in line and f'"Key":"{address}"' in line and "notification-received" in line:
                out.append(json.loads(line)["Reason"])
        return out


def bird_config(router_id: str, local: str, asn: int, neighbor: str, peer_as: int, routes: list[str],
                extra: str = "") -> str:
    statics = "".join(f"  route {r} blackhole;\n" for r in routes)
    return f"""router id {router_id};
log stderr all;
timeformat protocol iso long;
timeformat route iso long;
protocol device {{ }}
protocol static st4 {{
  ipv4;
{statics}}}
protocol bgp isthmus {{
  local {local} as {asn};
  neighbor {neighbor} as {peer_as};
  hold time 9; keepalive time 3; connect retry time 1; connect delay time 1; error wait time 1, 5;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
{extra}
"""


@dataclass
class Bird:
    """BIRD 2 in a namespace, read through birdc on its control socket; its one BGP protocol is ``isthmus``."""

    ns: Any
    sock: Path
    proc: subprocess.Popen[bytes]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["birdc", "-s", str(self.sock), *args], capture_output=True, text=True, timeout=10)

    def protocol(self, name: str = "isthmus") -> tuple[str, str, str]:
        """(state, since, info) of a BGP protocol: since changes whenever the session does."""
        out = self.cli("show", "protocols", name).stdout
        for line in out.splitlines():
            if line.startswith(f"{name} "):
                # isthmus BGP --- up 2026-12-07 03:01:03.840 Established
                m_ = re.match(rf"{name}\s+BGP\s+\S+\s+(\S+)\s+(\S+ \S+)\s*(.*)$", line)
                if m_:
                    return m_.group(1), m_.group(2), m_.group(3).strip()
        raise AssertionError(f"no isthmus protocol in {out!r}")

    def established(self, name: str = "isthmus") -> bool:
        return self.protocol(name)[2].startswith("Established")

    def last_error(self, name: str = "isthmus") -> str:
        out = self.cli("show", "protocols", "all", name).stdout
        found = re.search(r"Last error:\s+(.*)", out)
        return found.group(1).strip() if found else ""

    def routes(self) -> dict[str, str]:
        """Prefixes learned from isthmus -> when BIRD learned them (a withdrawal and re-announce changes it)."""
        out = self.cli("show", "route", "protocol", "isthmus").stdout
        seen = {}
        for line in out.splitlines():
            found = re.match(r"^(\S+/\d+)\s+\S+\s+\[isthmus ([^\]]+)\]", line)
            if found:
                seen[found.group(1)] = found.group(2)
        return seen


@dataclass
class BgpLab:
    lab: Any
    tmp: Path
    coordinator: str  # host:port, for isthmusctl and the API
    socket: Path  # unix socket the agents in namespaces use
    channel: grpc.Channel
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def link(self, a: Any, a_addrs: list[str], b: Any, b_addrs: list[str], a_if: str = "eth0",
             b_if: str = "eth0") -> None:
        from netns import veth

        veth(a, a_if, b, b_if)
        for ns, addrs, ifname in ((a, a_addrs, a_if), (b, b_addrs, b_if)):
            for addr in addrs:
                # nodad: an IPv6 address is usable at once, not after duplicate address detection.
                ns.ip("addr", "add", addr, "dev", ifname, *(["nodad"] if ":" in addr else []))

    def bird(self, ns: Any, router_id: str, local: str, asn: int, neighbor: str, peer_as: int,
             routes: list[str], extra: str = "", config: str = "") -> Bird:
        conf = self.tmp / f"bird-{ns.name}.conf"
        conf.write_text(config or bird_config(router_id, local, asn, neighbor, peer_as, routes, extra))
        sock = self.tmp / f"bird-{ns.name}.ctl"
        proc = ns.popen(["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(self.tmp / f"bird-{ns.name}.pid")],
                        self.tmp / f"bird-{ns.name}.log")
        self.daemons.append(proc)
        b = Bird(ns, sock, proc)
        wait_for(lambda: sock.exists() and b.cli("show", "status").returncode == 0, 15, "BIRD's control socket")
        return b

    def gobgpd(self, ns: Any, asn: int, router_id: str, neighbors: list[dict[str, Any]]) -> Gobgpd:
        conf = self.tmp / f"gobgpd-{ns.name}.toml"
        conf.write_text(gobgpd_config(asn, router_id, neighbors))
        proc = ns.popen(["gobgpd", "-f", str(conf), "--api-hosts", f"127.0.0.1:{GOBGP_API_PORT}",
                         "--pprof-disable"], self.tmp / f"gobgpd-{ns.name}.log")
        self.daemons.append(proc)
        d = Gobgpd(ns, proc, self.tmp / f"gobgpd-{ns.name}.log")
        wait_for(lambda: ns.run(["gobgp", "-p", str(GOBGP_API_PORT), "neighbor"], check=False).returncode == 0,
                 15, "gobgpd's API")
        return d

    def agent(self, ns: Any, site: str, interval: float = 1) -> subprocess.Popen[bytes]:
        cmd = agent_cmd(site, f"unix:{self.socket}", self.tmp, "--driver", "bgp",
                        "--reconcile-interval", f"{interval:g}")
        proc: subprocess.Popen[bytes] = ns.popen(cmd, self.tmp / f"agent-{site}.log")
        self.agents[site] = proc
        return proc

    def site_with_two_routers(self, gobgp_neighbor: dict[str, Any] | None = None,
                              interval: float = 1) -> tuple[Any, Gobgpd, Bird]:
        """Site ``one`` (its agent in namespace one) peering with gobgpd (AS 65002, on eth0) and BIRD (AS 65003,
        on eth1), both in site ``ext`` (external); the connections one-gobgp and one-bird. ``gobgp_neighbor``:
        extra settings of gobgpd's neighbor (graceful restart, ...)."""
        one, gns, bns = self.lab.netns("one"), self.lab.netns("gobgp"), self.lab.netns("bird")
        self.link(one, ["192.0.2.1/24"], gns, ["192.0.2.2/24"], a_if="eth0", b_if="eth0")
        self.link(one, ["198.18.0.1/24"], bns, ["198.18.0.2/24"], a_if="eth1", b_if="eth0")
        gobgp = self.gobgpd(gns, 65002, "192.0.2.2",
                            [{"address": "192.0.2.1", "peer_as": 65001, **(gobgp_neighbor or {})}])
        bird = self.bird(bns, "198.18.0.2", "198.18.0.2", 65003, "198.18.0.1", 65011, ["198.18.10.0/24"])
        self.site("one")
        self.site("ext", pb.SITE_KIND_EXTERNAL)
        self.endpoint("one/gw", "192.0.2.1", 65001, advertise="203.0.113.0/25")
        self.endpoint("one/gw2", "198.18.0.1", 65011, advertise="203.0.113.128/25")
        self.endpoint("ext/gobgp", "192.0.2.2", 65002, remote=True)
        self.endpoint("ext/bird", "198.18.0.2", 65003, remote=True)
        self.connection("one-gobgp", "one/gw", "ext/gobgp")
        self.connection("one-bird", "one/gw2", "ext/bird")
        self.agent(one, "one", interval=interval)
        return one, gobgp, bird

    def stop_agent(self, site: str) -> int:
        proc = self.agents[site]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def log(self, site: str) -> str:
        return (self.tmp / f"agent-{site}.log").read_text(errors="replace")

    def peerings(self, site: str) -> dict[str, Any]:
        """The agent's observed peerings by connection name, from its admin socket."""
        with grpc.insecure_channel(f"unix:{self.tmp / site / 'admin.sock'}") as ch:
            resp = admin_pb2_grpc.AgentAdminStub(ch).ListPeerings(adm.ListPeeringsRequest(), timeout=2)
        return {p.desired.connection or p.observed.connection: p.observed for p in resp.peerings}

    def coordinator_sees(self, site: str, want: Callable[[dict[str, Any]], bool], what: str,
                         timeout: float = 30) -> dict[str, Any]:
        """The site's observed peerings by connection name as ``isthmusctl status`` shows them, once ``want``
        holds of them: the agent's reports reach the coordinator's status paced by their size (up to 5 s)."""
        seen: dict[str, Any] = {}

        def read() -> bool:
            nonlocal seen
            out = subprocess.run([str(BIN / "isthmusctl"), "--coordinator", self.coordinator, "status", site, "-o",
                                  "json"], capture_output=True, text=True, timeout=30, check=True).stdout
            seen = {p["desired"]["connection"]: p["observed"] for p in json.loads(out)["peerings"]}
            return want(seen)

        wait_for(read, timeout, what)
        return seen

    def state_of(self, site: str, name: str) -> tuple[str, str, list[str]]:
        o = self.peerings(site).get(name)
        if o is None:
            return ("absent", "", [])
        return (pb.PeeringState.Name(o.state).removeprefix("PEERING_STATE_"), o.error, sorted(o.received_prefixes))

    def speaker_state(self, site: str, endpoint: str) -> dict[str, Any]:
        """The ``state`` of a speaker, asked on its socket as the agent would."""
        path = self.tmp / site / "state" / "bgp" / f"speaker-{site}-{endpoint}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(path))
            conn.sendall(b'{"id": 1, "op": "state", "args": {}}\n')
            with conn.makefile("rb") as lines:
                for line in lines:
                    msg = json.loads(line)
                    if msg.get("id") == 1:
                        return msg["result"]  # type: ignore[no-any-return]
        raise AssertionError(f"no answer from {path}")

    def speaker_pid(self, site: str, endpoint: str) -> int:
        path = self.tmp / site / "state" / "bgp" / f"speaker-{site}-{endpoint}.pid"
        return int(path.read_text()) if path.exists() else 0

    # ------------------------------------------------------------ the API

    def site(self, name: str, kind: int = pb.SITE_KIND_REGION) -> None:
        api_pb2_grpc.SiteServiceStub(self.channel).CreateSite(pb.Site(name=name, kind=kind), timeout=10)

    def endpoint(self, ref: str, address: str, asn: int, remote: bool = False, router_id: str = "",
                 advertise: str = "", update: bool = False, properties: dict[str, str] | None = None) -> None:
        site, name = ref.split("/")
        props = {**(properties or {}), **({m.ADVERTISE_PROPERTY: advertise} if advertise else {})}
        ep = pb.Endpoint(site=site, name=name, address=address, asn=asn, router_id=router_id,
                         role=pb.ENDPOINT_ROLE_REMOTE if remote else pb.ENDPOINT_ROLE_LOCAL, properties=props)
        stub = api_pb2_grpc.EndpointServiceStub(self.channel)
        if update:
            ep.role = pb.ENDPOINT_ROLE_UNSPECIFIED
            stub.UpdateEndpoint(ep, timeout=10)
        else:
            stub.CreateEndpoint(ep, timeout=10)

    def connection(self, name: str, a: str, b: str, password_ref: str = "", hold_time: int = 9,
                   import_prefixes: list[str] | None = None, max_prefixes: int = 0) -> None:
        (sa, na), (sb, nb) = a.split("/"), b.split("/")
        api_pb2_grpc.ConnectionServiceStub(self.channel).CreateConnection(pb.Connection(
            name=name, type=pb.CONNECTION_TYPE_BGP, a=pb.EndpointRef(site=sa, name=na),
            b=pb.EndpointRef(site=sb, name=nb), bgp=pb.BgpParams(hold_time=hold_time, password_ref=password_ref,
                                                                   import_prefixes=import_prefixes or [],
                                                                   max_prefixes=max_prefixes)),
            timeout=10)

    def update_bgp(self, name: str, hold_time: int = 9, import_prefixes: list[str] | None = None,
                   max_prefixes: int = 0) -> None:
        api_pb2_grpc.ConnectionServiceStub(self.channel).UpdateConnection(pb.Connection(
            name=name, bgp=pb.BgpParams(hold_time=hold_time, import_prefixes=import_prefixes or [],
                                        max_prefixes=max_prefixes)), timeout=10)

    def set_admin_state(self, name: str, state: int) -> None:
        api_pb2_grpc.ConnectionServiceStub(self.channel).UpdateConnection(
            pb.Connection(name=name, admin_state=state), timeout=10)

    def delete_connection(self, name: str) -> None:
        api_pb2_grpc.ConnectionServiceStub(self.channel).DeleteConnection(
            api.DeleteConnectionRequest(name=name), timeout=10)


@pytest.fixture
def bgp_lab(lab: Any, etcd: str, tmp_path: Path, procs: Callable[..., Proc]) -> Iterator[BgpLab]:
    """A coordinator on the host (TCP for the test, a unix socket for agents in namespaces)."""
    sock = tmp_path / "coord.sock"
    ready = tmp_path / "coord.addr"
    cmd = [*coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd), "--listen", f"127.0.0.1:0,unix:{sock}"]
    procs("coordinator", cmd, tmp_path / "coordinator.log")
    addr = str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator"))
    channel = grpc.insecure_channel(addr)
    the_lab = BgpLab(lab, tmp_path, addr, sock, channel)
    try:
        yield the_lab
    finally:
        # Agents first, then the daemons; the namespaces go last, and with them the speakers (which outlive
        # their agents by design: deleting a namespace kills every process in it).
        for site in list(the_lab.agents):
            the_lab.stop_agent(site)
        for proc in the_lab.daemons:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        channel.close()


def established_with(bl: BgpLab, site: str, name: str, received: list[str]) -> bool:
    state = bl.state_of(site, name)
    if state[0] != "ESTABLISHED" or state[2] != received:
        raise AssertionError(f"{name}: {state}")
    return True

