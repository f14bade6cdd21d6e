"""Mutual TLS, roles, tokens, audit and limits, with real certificates made by isthmus.pki."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import BIN, Proc, agent_cmd, coordinator_cmd, ctl, wait_for
from isthmus.core import pki
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc
from isthmus.v1 import types_pb2 as pb


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    pki.init_ca(d)
    pki.issue(d, "coordinator", "c1", ips=["127.0.0.1"])
    pki.issue(d, "agent", "region-one")
    pki.issue(d, "agent", "region-two")
    for role in ("viewer", "operator", "admin"):
        pki.issue(d, "operator", role, role=role)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    pki.issue(d, "operator", "expired", role="admin", not_before=past, days=1)
    other = tmp_path / "other-ca"
    pki.init_ca(other)
    pki.issue(other, "operator", "stranger", role="admin")
    return d


def tls(d: Path, kind: str, name: str) -> list[str]:
    return ["--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / f"{kind}-{name}.pem"),
            "--tls-key", str(d / f"{kind}-{name}.key")]


@pytest.fixture
def secure_coordinator(etcd: str, tmp_path: Path, certs: Path, procs: Callable[..., Proc]) -> str:
    ready = tmp_path / "addr"
    tokens = tmp_path / "tokens"
    digest = hashlib.sha256(b"s3cret-ci-token").hexdigest()
    tokens.write_text(f"# name role token\nci operator sha256:{digest}\n")
    tokens.chmod(0o600)
    procs("coordinator", coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd) + [
        "--tls-cert", str(certs / "coordinator-c1.pem"), "--tls-key", str(certs / "coordinator-c1.key"),
        "--tls-ca", str(certs / "ca.pem"), "--token-file", str(tokens), "--write-rate", "5",
        "--refusal-window", "0.5"],
        tmp_path / "coord.log")
    return str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the TLS coordinator"))


def test_roles_from_certificates_and_refusals(secure_coordinator: str, certs: Path, tmp_path: Path) -> None:
    c = ("--coordinator", secure_coordinator)
    ctl(*c, *tls(certs, "operator", "admin"), "site", "create", "region-one", "--kind", "region")
    ctl(*c, *tls(certs, "operator", "admin"), "site", "create", "region-two", "--kind", "region")

    # operator: network objects yes, sites no.
    ctl(*c, *tls(certs, "operator", "operator"), "endpoint", "create", "region-one/gw", "--address", "192.0.2.1",
        "--asn", "65001")
    res = ctl(*c, *tls(certs, "operator", "operator"), "site", "delete", "region-two", check=False)
    assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr and "needs the admin role" in res.stderr
    # viewer: reads yes, writes no.
    assert "region-one" in ctl(*c, *tls(certs, "operator", "viewer"), "site", "list").stdout
    res = ctl(*c, *tls(certs, "operator", "viewer"), "endpoint", "delete", "region-one/gw", check=False)
    assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr and "needs the operator role" in res.stderr
    # An agent certificate is not a person: it may not use the API.
    res = ctl(*c, *tls(certs, "agent", "region-one"), "site", "list", check=False)
    assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr
    # No certificate, an unknown CA, an expired certificate: the TLS handshake itself is refused.
    for args in (["--tls-ca", str(certs / "ca.pem")],
                 ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(tmp_path / "other-ca" / "operator-stranger.pem"),
                  "--tls-key", str(tmp_path / "other-ca" / "operator-stranger.key")],
                 tls(certs, "operator", "expired")):
        res = ctl(*c, *args, "--timeout", "3", "site", "list", check=False)
        assert res.returncode == 1 and "UNAVAILABLE" in res.stderr, res.stderr

    # Every refusal is in the audit history, with who and what, once its window (0.5 s here) is over.
    def refusals() -> list[tuple[str, str]]:
        events = json.loads(ctl(*c, *tls(certs, "operator", "viewer"), "audit", "-o", "json").stdout)
        return [(e["who"], e["method"]) for e in events if not e.get("allowed")]
    expected = {("user:operator", "/isthmus.v1.SiteService/DeleteSite"),
                ("user:viewer", "/isthmus.v1.EndpointService/DeleteEndpoint"),
                ("site:region-one", "/isthmus.v1.SiteService/ListSites")}
    wait_for(lambda: expected <= set(refusals()), 10, "the refusals to reach the audit history")
    events = json.loads(ctl(*c, *tls(certs, "operator", "viewer"), "audit", "-o", "json").stdout)
    assert any(e["who"] == "user:admin" and e["method"].endswith("CreateSite") and e.get("allowed") for e in events)


def test_agents_may_only_speak_for_their_own_site(secure_coordinator: str, certs: Path, tmp_path: Path,
                                                  procs: Callable[..., Proc]) -> None:
    c = ("--coordinator", secure_coordinator, *tls(certs, "operator", "admin"))
    ctl(*c, "site", "create", "region-one", "--kind", "region")
    # An agent with region-two's certificate claiming region-one is refused and logged.
    procs("impostor", agent_cmd("region-one", secure_coordinator, tmp_path / "bad", *tls(certs, "agent", "region-two")),
          tmp_path / "impostor.log")
    wait_for(lambda: "PERMISSION_DENIED" in (tmp_path / "impostor.log").read_text(), 20,
             "the impostor to be refused")
    assert "may not speak for site region-one" in (tmp_path / "coord.log").read_text()
    assert not json.loads(ctl(*c, "status", "region-one", "-o", "json").stdout).get("connected")
    # The right certificate is accepted.
    procs("agent", agent_cmd("region-one", secure_coordinator, tmp_path, *tls(certs, "agent", "region-one")),
          tmp_path / "agent.log")
    wait_for(lambda: json.loads(ctl(*c, "status", "region-one", "-o", "json").stdout).get("connected"), 20,
             "region-one's own agent to connect")


def test_bearer_tokens_and_the_write_rate_limit(secure_coordinator: str, certs: Path) -> None:
    channel = grpc.secure_channel(secure_coordinator, grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "operator-viewer.key").read_bytes(),
        certificate_chain=(certs / "operator-viewer.pem").read_bytes()))
    eps = api_pb2_grpc.EndpointServiceStub(channel)
    sites = api_pb2_grpc.SiteServiceStub(channel)
    admin = [("authorization", "Bearer s3cret-ci-token")]
    # The token (operator) overrides the viewer certificate's role; a wrong token is UNAUTHENTICATED.
    with pytest.raises(grpc.RpcError) as exc:
        sites.ListSites(api.ListSitesRequest(), metadata=[("authorization", "Bearer wrong")], timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ctl("--coordinator", secure_coordinator, *tls(certs, "operator", "admin"), "site", "create", "r1", "--kind",
        "region")
    codes = []
    for i in range(30):
        try:
            eps.CreateEndpoint(pb.Endpoint(site="r1", name=f"e{i}", address=f"192.0.2.{i + 1}", asn=65000 + i),
                               metadata=admin, timeout=5)
            codes.append("OK")
        except grpc.RpcError as err:
            codes.append(err.code().name)
    # --write-rate 5 with bursts of 10: the first ten pass, the rest of a tight loop is refused.
    assert codes[:10] == ["OK"] * 10 and "RESOURCE_EXHAUSTED" in codes[10:], codes
    listed = eps.ListEndpoints(api.ListEndpointsRequest(site="r1"), metadata=admin, timeout=5)
    assert len(listed.endpoints) == codes.count("OK")


def test_oversized_messages_are_refused(coordinator: str) -> None:
    sites = api_pb2_grpc.SiteServiceStub(grpc.insecure_channel(coordinator))
    with pytest.raises(grpc.RpcError) as exc:
        sites.CreateSite(pb.Site(name="big", kind=pb.SITE_KIND_REGION, description="x" * (5 * 1024 * 1024)),
                         timeout=10)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _as_nobody(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *args],
                          capture_output=True, text=True, timeout=30, cwd="/")


def test_admin_socket_admits_root_and_the_admin_group_only(tmp_path: Path, procs: Callable[..., Proc],
                                                          request: pytest.FixtureRequest) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run a client as another user")
    probe = _as_nobody([sys.executable, "-c", "import grpc, isthmus"])
    if probe.returncode != 0:
        pytest.skip(f"the venv is not readable by other users here: {probe.stderr.strip()[-200:]}")
    # pytest's own temporary directories are 0700: the sockets go where another user could reach them.
    base = Path(tempfile.mkdtemp(prefix="isthmus-sock-"))
    base.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    client = [str(BIN / "isthmusctl"), "local", "--socket"]

    # Default: 0600 in a 0700 directory; root gets in, nobody does not.
    run_dir = base / "run"
    procs("agent", agent_cmd("region-one", "127.0.0.1:1", tmp_path, "--admin-socket", str(run_dir / "a.sock")),
          tmp_path / "agent.log")
    sock = run_dir / "a.sock"
    wait_for(sock.exists, 20, "the admin socket")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600 and stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    assert ctl("local", "--socket", str(sock), "status").returncode == 0
    # Even after a careless chmod, the peer-credential check refuses other users, and logs it.
    run_dir.chmod(0o755)
    sock.chmod(0o666)
    denied = _as_nobody([*client, str(sock), "--timeout", "3", "status"])
    assert denied.returncode == 1, denied.stdout
    wait_for(lambda: "refused an admin socket connection from uid 65534" in (tmp_path / "agent.log").read_text(),
             10, "the refusal to be logged")

    # With --admin-group, members of that group are admitted (socket 0660, directory 0750).
    group_dir = base / "grp"
    procs("agent2", agent_cmd("region-two", "127.0.0.1:1", tmp_path, "--admin-group", "nogroup",
                              "--admin-socket", str(group_dir / "a.sock")), tmp_path / "agent2.log")
    gsock = group_dir / "a.sock"
    wait_for(gsock.exists, 20, "the group admin socket")
    assert stat.S_IMODE(os.stat(gsock).st_mode) == 0o660 and os.stat(gsock).st_gid == 65534
    allowed = _as_nobody([*client, str(gsock), "status"])
    assert allowed.returncode == 0 and "region-two" in allowed.stdout, allowed.stderr


def test_coordinator_talks_to_etcd_over_mutual_tls(tmp_path: Path, certs: Path, procs: Callable[..., Proc]) -> None:
    from isthmus.coordinator.etcd import free_port

    client, peer = free_port(), free_port()
    d = certs
    procs("etcd-tls", ["etcd", "--name", "tls", "--data-dir", str(tmp_path / "etcd"),
                       "--listen-client-urls", f"https://127.0.0.1:{client}",
                       "--advertise-client-urls", f"https://127.0.0.1:{client}",
                       "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                       "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                       "--initial-cluster", f"tls=http://127.0.0.1:{peer}",
                       "--cert-file", str(d / "coordinator-c1.pem"), "--key-file", str(d / "coordinator-c1.key"),
                       "--trusted-ca-file", str(d / "ca.pem"), "--client-cert-auth"], tmp_path / "etcd.log")
    ready = tmp_path / "addr"
    tls_args = ["--etcd-ca", str(d / "ca.pem"), "--etcd-cert", str(d / "coordinator-c1.pem"),
                "--etcd-key", str(d / "coordinator-c1.key")]
    procs("coordinator", coordinator_cmd(tmp_path / "c", ready, etcd_endpoint=f"127.0.0.1:{client}") + tls_args,
          tmp_path / "coord.log")
    addr = wait_for(lambda: ready.exists() and ready.read_text().strip(), 40, "the coordinator on TLS etcd")
    ctl("--coordinator", str(addr), "site", "create", "region-one", "--kind", "region")
    assert "region-one" in ctl("--coordinator", str(addr), "site", "list").stdout
    # Without a client certificate, etcd refuses the coordinator, which says so and exits.
    ready2 = tmp_path / "addr2"
    bad = procs("coordinator-nocert", coordinator_cmd(tmp_path / "c2", ready2, etcd_endpoint=f"127.0.0.1:{client}")
                + ["--etcd-ca", str(d / "ca.pem")], tmp_path / "coord2.log")
    wait_for(lambda: not bad.alive(), 40, "the coordinator without an etcd client certificate to give up")
    assert "cannot start" in (tmp_path / "coord2.log").read_text()


def test_secrets_never_reach_etcd_the_api_or_the_logs(etcd: str, coordinator: str, tmp_path: Path) -> None:
    secret = "pa55w0rd-for-bgp-md5"
    ref_file = tmp_path / "peer.secret"
    ref_file.write_text(secret)
    c = ("--coordinator", coordinator)
    ctl(*c, "site", "create", "region-one", "--kind", "region")
    ctl(*c, "site", "create", "region-two", "--kind", "region")
    ctl(*c, "endpoint", "create", "region-one/gw", "--address", "192.0.2.1", "--asn", "65001")
    ctl(*c, "endpoint", "create", "region-two/gw", "--address", "192.0.2.2", "--asn", "65002")
    # A password typed where the reference goes is refused, not stored.
    bad = ctl(*c, "connection", "create", "x", "--a", "region-one/gw", "--b", "region-two/gw", "--type", "bgp",
              "--password-ref", secret, check=False)
    assert bad.returncode == 1 and "bgp.password_ref" in bad.stderr and secret not in bad.stderr
    ctl(*c, "connection", "create", "one-two", "--a", "region-one/gw", "--b", "region-two/gw", "--type", "bgp",
        "--password-ref", f"file:{ref_file}")
    shown = ctl(*c, "connection", "get", "one-two", "-o", "json").stdout
    assert f"file:{ref_file}" in shown and secret not in shown

    async def dump() -> str:
        from isthmus.coordinator.store import Store

        store = Store([etcd])
        await store.connect()
        kvs, _ = await store.get_prefix("/")
        await store.close()
        return "\n".join(kv.key + "=" + kv.value.decode(errors="replace") for kv in kvs)

    import asyncio

    everything = asyncio.run(dump())
    assert "one-two" in everything and secret not in everything
    assert secret not in (tmp_path / "coord.log").read_text()


def test_refusals_are_aggregated_rate_limited_and_counted(etcd: str, tmp_path: Path, procs: Callable[..., Proc],
                                                          port: int) -> None:
    """A flood of calls without an identity costs etcd one audit event per caller, method and reason per window,
    is slowed down per host past its burst, and shows in the refusal counter."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ci admin sha256:{hashlib.sha256(b'ci-token').hexdigest()}\n")
    tokens.chmod(0o600)
    ready = tmp_path / "addr"
    procs("coordinator", coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd) + [
        "--token-file", str(tokens), "--refusal-window", "0.5", "--metrics-listen", f"127.0.0.1:{port}"],
        tmp_path / "coord.log")
    address = str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator"))
    channel = grpc.insecure_channel(address)
    sites = api_pb2_grpc.SiteServiceStub(channel)
    codes = []
    for _ in range(200):
        with pytest.raises(grpc.RpcError) as exc:
            sites.ListSites(api.ListSitesRequest(), timeout=5)
        codes.append(exc.value.code())
    assert codes[:20] == [grpc.StatusCode.UNAUTHENTICATED] * 20  # the burst
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) > 100  # then 5 a second
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}

    admin = ("--coordinator", address, "--token", "ci-token")

    def refused() -> list[dict[str, Any]]:
        return [e for e in json.loads(ctl(*admin, "audit", "-o", "json").stdout) if not e.get("allowed")]

    events = wait_for(lambda: sum(int(e.get("count", 1)) for e in refused()) >= 200 and refused(), 10,
                      "the refusals to be audited")
    assert len(events) <= 4, events  # one per reason and window, not 200
    assert {e["detail"] for e in events} == {"no valid certificate or token", "unauthenticated calls rate limit"}
    assert all(e["who"] == "anonymous:127.0.0.1" and e["first_unix_ms"] <= e["time_unix_ms"] for e in events)
    table = ctl(*admin, "audit").stdout
    assert "times since" in table
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'isthmus_coordinator_refusals_total{reason="unauthenticated"} 20.0' in metrics
    assert 'isthmus_coordinator_refusals_total{reason="rate_limited"}' in metrics
    channel.close()
