"""etcd in trouble, with real parts: a three-member etcd cluster, coordinator and agent processes, isthmusctl.

What docs/operations.md promises ("etcd loses quorum", "an etcd member (even the leader) dies"):

- quorum lost: a write and a read answer UNAVAILABLE naming etcd's trouble within the store's bound, the write
  is not stored, isthmusctl says so without blaming the coordinator, agent streams end within the presence
  lease TTL and the agents keep their peerings; with quorum back, they reconnect and writes work;
- the etcd leader killed under a stream of creates: every create answers within the bound, none UNKNOWN or
  ALREADY_EXISTS, and a create repeated with its request id gets the first answer;
- isthmusctl with two coordinators, the first stopped, still works;
- a site cut off from every coordinator shows its agent's last report, and its desired revision stays put
  across a coordinator restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import BIN, Proc, agent_cmd, coordinator_cmd, ctl, wait_for
from etcd_cluster import EtcdCluster
from isthmus.coordinator.store import OPERATION_BOUND
from isthmus.core.edge import REQUEST_ID_KEY
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc, api_pb2_grpc
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import types_pb2 as pb
from tcp_proxy import Proxy

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (Debian package etcd-server)")

LEASE_TTL = 3  # coordinator_cmd's --lease-ttl
# What a call may take while etcd is sick: the store's bound, and the time gRPC and a loaded machine add.
ANSWER_WITHIN = OPERATION_BOUND + 1.5


# ---------------------------------------------------------------- helpers


class Api:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.sites = api_pb2_grpc.SiteServiceStub(self.channel)
        self.endpoints = api_pb2_grpc.EndpointServiceStub(self.channel)
        self.connections = api_pb2_grpc.ConnectionServiceStub(self.channel)
        self.status = api_pb2_grpc.StatusServiceStub(self.channel)

    def mesh(self, sites: list[str]) -> None:
        for i, site in enumerate(sites):
            self.sites.CreateSite(pb.Site(name=site, kind=pb.SITE_KIND_REGION), timeout=10)
            self.endpoints.CreateEndpoint(pb.Endpoint(site=site, name="gw", address=f"192.0.2.{i + 1}",
                                                      asn=65001 + i), timeout=10)
        for i, a in enumerate(sites):
            for b in sites[i + 1:]:
                self.connections.CreateConnection(pb.Connection(
                    name=f"{a}--{b}", type=pb.CONNECTION_TYPE_BGP, a=pb.EndpointRef(site=a, name="gw"),
                    b=pb.EndpointRef(site=b, name="gw")), timeout=10)

    def site(self, name: str) -> api.SiteStatus:
        return self.status.GetSiteStatus(api.GetSiteStatusRequest(site=name), timeout=5)

    def converged(self, sites: list[str]) -> bool:
        bad = {}
        for site in sites:
            s = self.site(site)
            desired = [p for p in s.peerings if p.HasField("desired")]
            if not (s.connected and s.applied_revision >= s.desired_revision and desired
                    and all(p.observed.state == pb.PEERING_STATE_ESTABLISHED for p in desired)):
                bad[site] = (s.connected, s.applied_revision, s.desired_revision)
        if bad:
            raise AssertionError(f"not converged: {bad}")
        return True


def established(st: api.SiteStatus) -> tuple[int, int]:
    desired = [p for p in st.peerings if p.HasField("desired")]
    return sum(p.observed.state == pb.PEERING_STATE_ESTABLISHED for p in desired), len(desired)


def admin(sock: Path) -> admin_pb2_grpc.AgentAdminStub:
    return admin_pb2_grpc.AgentAdminStub(grpc.insecure_channel(f"unix:{sock}"))


def start_coordinator(procs: Callable[..., Proc], tmp: Path, name: str, etcd: str, port: int = 0,
                      *extra: str) -> tuple[Proc, str]:
    ready = tmp / f"{name}.addr"
    ready.unlink(missing_ok=True)
    proc = procs(name, [*coordinator_cmd(tmp / name, ready, etcd_endpoint=etcd, port=port), *extra],
                 tmp / f"{name}.log")
    addr = wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, f"{name} to be ready")
    return proc, str(addr)


def timed(call: Callable[[], Any]) -> tuple[grpc.RpcError | None, float]:
    """The error a call ends with (None: it succeeded) and how long it took."""
    started = time.monotonic()
    try:
        call()
    except grpc.RpcError as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


class Waiter:
    """Runs ``check`` in a thread: once (``result``), or polling until it is truthy (``first_true``: when)."""

    def __init__(self, check: Callable[[], Any]) -> None:
        self.check = check
        self.value: Any = None
        self.when = 0.0
        self.last: Any = None
        self._done = threading.Event()
        self._poll = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                self.last = self.check()
            except Exception as exc:  # noqa: BLE001 (shown if it never comes true)
                self.last = exc
            if self.last or not self._poll:
                self.value, self.when = self.last, time.monotonic()
                self._done.set()
                return
            time.sleep(0.05)

    def result(self, timeout: float) -> Any:
        self._poll = False
        assert self._done.wait(timeout), f"no answer after {timeout}s"
        return self.value

    def first_true(self, timeout: float) -> float:
        assert self._done.wait(timeout), f"not true after {timeout}s; last seen: {self.last!r}"
        return self.when


@pytest.fixture
def etcd_cluster(tmp_path: Path, procs: Callable[..., Proc]) -> EtcdCluster:
    return EtcdCluster(tmp_path / "etcd", procs)


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    made: list[Proxy] = []
    yield made
    for p in made:
        p.cut()


# ---------------------------------------------------------------- tests


def test_quorum_loss_gets_a_plain_answer_in_time_and_agents_keep_their_peerings(
        etcd_cluster: EtcdCluster, tmp_path: Path, procs: Callable[..., Proc]) -> None:
    _, addr = start_coordinator(procs, tmp_path, "coord", etcd_cluster.endpoints)
    sites = ["r1", "r2"]
    for site in sites:
        procs(f"agent-{site}", agent_cmd(site, addr, tmp_path), tmp_path / f"agent-{site}.log")
    a = Api(addr)
    a.mesh(sites)
    wait_for(lambda: a.converged(sites), 30, "the mesh to converge")

    # A client watching the API: its stream ends with UNAVAILABLE when etcd ends the coordinator's watch.
    watch = a.status.Watch(api.WatchRequest(kinds=["site"]))
    watch_end = Waiter(lambda: timed(lambda: list(watch)))

    # Two of three members die; the third notices it has no leader (an election timeout or two).
    sock = tmp_path / "r1" / "admin.sock"
    leader = etcd_cluster.leader_index()
    survivor = (leader + 1) % 3
    dead = [i for i in range(3) if i != survivor]
    for i in dead:
        etcd_cluster.kill(i)
    lost_at = time.monotonic()
    stream_end = Waiter(lambda: not admin(sock).Status(adm.AgentStatusRequest(), timeout=2).connected)
    wait_for(lambda: etcd_cluster.has_leader(survivor) is False, 10, "the surviving member to lose its leader")

    # Writes and reads, all at once: UNAVAILABLE naming what is wrong with etcd, within the store's bound (well
    # within isthmusctl's 10 s), never a deadline; isthmusctl says so on one line, without a hint that no
    # coordinator is running.
    calls = {
        "CreateSite": lambda: a.sites.CreateSite(pb.Site(name="r9", kind=pb.SITE_KIND_REGION), timeout=10),
        "ListSites": lambda: a.sites.ListSites(api.ListSitesRequest(), timeout=10),
        "ListSiteStatus": lambda: a.status.ListSiteStatus(api.ListSiteStatusRequest(), timeout=10),
        "GetConnection": lambda: a.connections.GetConnection(api.GetConnectionRequest(name="r1--r2"), timeout=10),
    }
    answers = {name: Waiter(lambda c=call: timed(c)) for name, call in calls.items()}  # type: ignore[misc]
    res = ctl("--coordinator", addr, "status", check=False)
    for name, answer in answers.items():
        err, took = answer.result(2 * ANSWER_WITHIN)
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE, (name, err)
        assert "etcd has lost quorum: 1 of 3 members answer and none has a leader" in err.details(), err.details()
        for i in dead:
            assert f"{etcd_cluster.endpoint(i)}: unreachable" in err.details(), err.details()
        assert took < ANSWER_WITHIN, f"{name} took {took:.1f}s"
        print(f"\nquorum lost: {name} answered UNAVAILABLE in {took:.2f}s: {err.details()}")
    assert res.returncode == 1 and res.stderr.startswith("isthmusctl: error: UNAVAILABLE: etcd has lost quorum"), \
        res.stderr
    assert "is a coordinator running" not in res.stderr and len(res.stderr.strip().splitlines()) == 1

    # A caller whose deadline is shorter than the store's bound still hears why, not DEADLINE_EXCEEDED.
    err, took = timed(lambda: a.sites.ListSites(api.ListSitesRequest(), timeout=1.0))
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE and "etcd" in err.details(), err
    err, took = watch_end.result(10)
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE and "etcd" in err.details(), err
    print(f"quorum lost: an API Watch ended {watch_end.when - lost_at:.1f}s after the members died: "
          f"{err.details()}")

    # Agent streams end once the presence lease cannot be kept alive (TTL, plus up to a third of it between
    # refreshes and one try), and the agents keep every peering as it is.
    ended_after = stream_end.first_true(LEASE_TTL * 4 / 3 + ANSWER_WITHIN + 3) - lost_at
    print(f"quorum lost: r1's stream ended {ended_after:.1f}s after the members died")
    assert LEASE_TTL - 1 <= ended_after <= LEASE_TTL * 4 / 3 + ANSWER_WITHIN, ended_after
    local = admin(sock).Status(adm.AgentStatusRequest(), timeout=2)
    assert "etcd" in local.last_error, local.last_error
    assert {p.desired.connection: p.observed.state for p in admin(sock).ListPeerings(
        adm.ListPeeringsRequest(), timeout=2).peerings} == {"r1--r2": pb.PEERING_STATE_ESTABLISHED}

    # Quorum back: the refused create was not stored, the agents are back, writes work.
    for i in dead:
        etcd_cluster.start(i)
    wait_for(lambda: etcd_cluster.leader_index() >= 0, 20, "the cluster to elect a leader again")
    wait_for(lambda: a.converged(sites), 40, "the agents to reconnect")
    with pytest.raises(grpc.RpcError) as missing:
        a.sites.GetSite(api.GetSiteRequest(name="r9"), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    a.sites.CreateSite(pb.Site(name="r9", kind=pb.SITE_KIND_REGION), timeout=10)


def test_etcd_leader_killed_under_writes_every_create_answers_and_a_retry_is_the_same_request(
        etcd_cluster: EtcdCluster, tmp_path: Path, procs: Callable[..., Proc]) -> None:
    leader = etcd_cluster.leader_index()
    # The coordinator talks to a follower first: the writes in flight there are forwarded to the leader that dies.
    order = [i for i in range(3) if i != leader] + [leader]
    _, addr = start_coordinator(procs, tmp_path, "coord", ",".join(etcd_cluster.endpoint(i) for i in order), 0,
                                "--write-rate", "0")
    a = Api(addr)
    outcomes: list[tuple[str, str, grpc.StatusCode, float, int]] = []  # name, request id, code, seconds, version
    lock = threading.Lock()
    stop = threading.Event()

    def writer(k: int) -> None:
        for j in range(10_000):
            if stop.is_set():
                return
            name, rid = f"s{k}-{j}", str(uuid.uuid4())
            started = time.monotonic()
            try:
                site = a.sites.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION), timeout=10,
                                          metadata=[(REQUEST_ID_KEY, rid)])
                code, version = grpc.StatusCode.OK, site.version
            except grpc.RpcError as exc:
                code, version = exc.code(), 0
            with lock:
                outcomes.append((name, rid, code, time.monotonic() - started, version))

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(outcomes) >= 40, 20, "creates to flow")
    with lock:
        before = len(outcomes)
    etcd_cluster.kill(leader)
    killed_at = time.monotonic()
    wait_for(lambda: len(outcomes) >= before + 40 and time.monotonic() - killed_at > 2, 30,
             "creates to flow again after the leader died")
    stop.set()
    for t in threads:
        t.join(15)

    codes = {code for _, _, code, _, _ in outcomes}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    slowest = max(seconds for _, _, _, seconds, _ in outcomes)
    assert slowest < ANSWER_WITHIN, f"a create took {slowest:.1f}s"
    failed = [(name, rid) for name, rid, code, _, _ in outcomes if code != grpc.StatusCode.OK]
    print(f"\netcd leader killed: {len(outcomes)} creates, {len(failed)} failed (UNAVAILABLE), "
          f"slowest {slowest:.2f}s")

    # Every create again with its request id: the stored ones answer as the first time, never ALREADY_EXISTS.
    for name, rid, code, _, version in outcomes:
        again = a.sites.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION), timeout=10,
                                   metadata=[(REQUEST_ID_KEY, rid)])
        assert again.name == name
        if code == grpc.StatusCode.OK:
            assert again.version == version, (name, again.version, version)
    # Without its request id the same create is another request: the name is taken.
    with pytest.raises(grpc.RpcError) as taken:
        a.sites.CreateSite(pb.Site(name=outcomes[0][0], kind=pb.SITE_KIND_REGION), timeout=10)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    stored = {s.name for s in a.sites.ListSites(api.ListSitesRequest(), timeout=10).sites}
    assert stored == {name for name, _, _, _, _ in outcomes}


def test_isthmusctl_uses_the_next_coordinator_when_one_is_stopped(
        etcd: str, tmp_path: Path, procs: Callable[..., Proc]) -> None:
    first, a = start_coordinator(procs, tmp_path, "coord-a", etcd)
    _, b = start_coordinator(procs, tmp_path, "coord-b", etcd)
    both = f"{a},{b}"
    ctl("--coordinator", both, "site", "create", "r1", "--kind", "region")
    assert first.stop() == 0

    listed = ctl("--coordinator", both, "-o", "json", "site", "list").stdout
    assert '"r1"' in listed
    env = {**os.environ, "ISTHMUS_COORDINATOR": both}
    res = subprocess.run([str(BIN / "isthmusctl"), "site", "create", "r2", "--kind", "region"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([str(BIN / "isthmusctl"), "status"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "r2" in res.stdout, res.stderr

    # None reachable: one line naming every address tried.
    res = ctl("--coordinator", f"{a},{a}", "site", "list", check=False)
    assert res.returncode == 1 and "UNAVAILABLE" in res.stderr and f"is a coordinator running at {a} or {a}?" \
        in res.stderr, res.stderr


def test_a_cut_off_site_shows_its_last_report_and_keeps_its_desired_revision(
        etcd: str, tmp_path: Path, procs: Callable[..., Proc], proxies: list[Proxy]) -> None:
    coord, addr = start_coordinator(procs, tmp_path, "coord", etcd)
    port = int(addr.rsplit(":", 1)[1])
    proxy = Proxy(addr)
    proxies.append(proxy)
    sites = ["r1", "r2", "r3"]
    procs("agent-r1", agent_cmd("r1", proxy.address, tmp_path), tmp_path / "agent-r1.log")
    for site in sites[1:]:
        procs(f"agent-{site}", agent_cmd(site, addr, tmp_path), tmp_path / f"agent-{site}.log")
    a = Api(addr)
    a.mesh(sites)
    wait_for(lambda: a.converged(sites), 30, "the mesh to converge")
    before = a.site("r1")
    assert established(before) == (2, 2)

    proxy.cut()
    cut_at = time.time()
    wait_for(lambda: not a.site("r1").connected, 20, "the coordinator to see r1 go")
    st = a.site("r1")
    assert (st.applied_revision, st.desired_revision, st.agent_version, st.driver) == (
        before.applied_revision, before.desired_revision, before.agent_version, before.driver)
    assert established(st) == (2, 2), "the peerings as the agent last reported them"
    assert before.last_report_unix_ms <= st.last_report_unix_ms <= cut_at * 1000
    assert cut_at - 1 <= st.disconnected_since_unix_ms / 1000 <= time.time()

    row = next(line for line in ctl("--coordinator", addr, "status").stdout.splitlines() if line.startswith("r1 "))
    assert "disconnected for" in row and "2/2" in row and f" {before.applied_revision} " in row, row
    details = ctl("--coordinator", addr, "status", "r1").stdout
    assert "r1 has no agent connected: OBSERVED is what its agent last reported at" in details, details
    res = ctl("--coordinator", addr, "status", "--wait-established", "--wait-timeout", "1", check=False)
    assert res.returncode == 1 and "r1 (disconnected)" in res.stderr, res.stderr

    # The coordinator restarts while r1 is still cut off: same last report, same desired revisions everywhere.
    revisions = {s: a.site(s).desired_revision for s in sites}
    coord.stop(signal.SIGKILL)
    start_coordinator(procs, tmp_path, "coord2", etcd, port=port)
    wait_for(lambda: a.converged(sites[1:]), 30, "r2 and r3 to reconnect")
    st = a.site("r1")
    assert not st.connected and established(st) == (2, 2) and st.applied_revision == before.applied_revision
    assert {s: a.site(s).desired_revision for s in sites} == revisions

    # Healed: r1 is back and shows its live record.
    proxy.heal()
    wait_for(lambda: a.converged(sites), 30, "r1 to reconnect")
    st = a.site("r1")
    assert st.disconnected_since_unix_ms == 0 and {s: a.site(s).desired_revision for s in sites} == revisions
