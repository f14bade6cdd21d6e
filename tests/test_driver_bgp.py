"""The bgp driver against real BGP daemons in network namespaces.

The lab (coordinator, agents in namespaces, gobgpd and BIRD) is tests/bgp_lab.py.
The peer is Debian's gobgpd in another namespace, joined by a veth pair, or a
second isthmus agent.

Also, without namespaces: the pieces of the driver that need no speaker
(secrets, hold time, options).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from bgp_lab import BgpLab, bgp_lab, established_with, needs_daemons, netns

from conftest import await_for, ctl, wait_for
from isthmus.core import model as m
from isthmus.drivers.base import DriverContext, DriverError
from isthmus.drivers.bgp.client import alive
from isthmus.drivers.bgp.driver import BgpDriver, NeighborConfig, advertised_prefixes, speaker_hold_time
from isthmus.drivers.secrets import SecretError, read_secret
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc, api_pb2_grpc
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import types_pb2 as pb

__all__ = ["bgp_lab"]  # the fixture


# ---------------------------------------------------------------- without namespaces


def test_read_secret_from_file_and_env_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    assert read_secret(f"file:{pw}") == "s3cret"
    monkeypatch.setenv("ISTHMUS_TEST_BGP_PW", "from-env")
    assert read_secret("env:ISTHMUS_TEST_BGP_PW") == "from-env"
    with pytest.raises(SecretError, match=f"{tmp_path}/absent: No such file"):
        read_secret(f"file:{tmp_path}/absent")
    monkeypatch.delenv("ISTHMUS_TEST_BGP_PW")
    with pytest.raises(SecretError, match="ISTHMUS_TEST_BGP_PW .* not set"):
        read_secret("env:ISTHMUS_TEST_BGP_PW")
    pw.write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        read_secret(f"file:{pw}")
    pw.write_text("x" * 81)
    with pytest.raises(SecretError, match="longer than 80 bytes") as exc:
        read_secret(f"file:{pw}")
    assert "x" * 81 not in str(exc.value)


def test_hold_time_families_and_prefixes_of_a_peering(tmp_path: Path) -> None:
    for offered in (0, 3, 9, 10, 90, 65535):  # the model's one rule, offered as given
        assert speaker_hold_time(offered) == offered
    for refused in (1, 2, 65536):
        with pytest.raises(ValueError, match=f"hold time {refused} is not 0 or 3..65535"):
            speaker_hold_time(refused)
    local = m.validate_endpoint(m.Endpoint("one", "gw", "2001:db8::1", 4200000001, router_id="192.0.2.11",
                                           properties={m.ADVERTISE_PROPERTY: "2001:db8:100::/48, 203.0.113.0/24"}))
    remote = m.validate_endpoint(m.Endpoint("two", "gw", "2001:db8::2", 65002, role=m.EndpointRole.REMOTE))
    pw = tmp_path / "pw"
    pw.write_text("one")
    peering = m.DesiredPeering("c", m.ConnectionType.BGP, local, remote, m.BgpParams(9, f"file:{pw}", ()))
    cfg, password = NeighborConfig.of(peering)
    assert (cfg.remote_as, cfg.hold_time, cfg.ipv4, cfg.ipv6, cfg.evpn) == (65002, 9, False, True, False)
    assert password == "one" and "one" not in repr(cfg)
    pw.write_text("two")
    assert NeighborConfig.of(peering)[0] != cfg, "a new password re-creates the neighbor"
    assert advertised_prefixes(local) == {"2001:db8:100::/48", "203.0.113.0/24"}


@pytest.mark.parametrize(("options", "text"), [
    ({"listen_port": "0"}, "listen_port"),
    ({"listen_port": "bgp"}, "listen_port"),
    ({"speaker_log_level": "loud"}, "speaker_log_level"),
    ({"netns": "x"}, "unknown option"),
])
def test_bad_options_are_terminal_errors(tmp_path: Path, options: dict[str, str], text: str) -> None:
    with pytest.raises(DriverError, match=text) as exc:
        BgpDriver(DriverContext("one", tmp_path, options))
    assert exc.value.terminal


def _ep(ref: str, address: str, asn: int, router_id: str = "", remote: bool = False) -> m.Endpoint:
    site, name = ref.split("/")
    return m.validate_endpoint(m.Endpoint(site, name, address, asn, router_id=router_id,
                                          role=m.EndpointRole.REMOTE if remote else m.EndpointRole.LOCAL))


def _bgp(local: m.Endpoint, remote: m.Endpoint, hold_time: int = 9,
         admin: m.AdminState = m.AdminState.UP) -> m.DesiredPeering:
    return m.DesiredPeering("", m.ConnectionType.BGP, local, remote, m.BgpParams(hold_time, "", ()), admin_state=admin)


async def test_conflicts_and_a_speaker_that_cannot_listen(tmp_path: Path) -> None:
    """Planning errors need no speaker; a speaker that cannot listen is retried, then shown as ERROR."""
    address = "192.0.2.254"  # not on this host: the speaker's bind fails before any packet is sent
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            pass
        else:
            pytest.skip(f"{address} is configured on this host")
    gw = _ep("one/gw", address, 65001)
    peer = _ep("ext/peer", "192.0.2.2", 65002, remote=True)
    peerings = {
        "a-main": _bgp(gw, peer),
        "b-same-neighbor": _bgp(gw, _ep("ext/alias", "192.0.2.2", 65002, remote=True)),
        "c-same-address": _bgp(_ep("one/twin", address, 65009), peer),
        "d-no-router-id": _bgp(_ep("one/v6", "2001:db8::1", 65001), _ep("ext/v6", "2001:db8::2", 65002, remote=True)),
        "e-hold-time-2": _bgp(gw, _ep("ext/three", "192.0.2.3", 65003, remote=True), hold_time=2),
        "f-down": _bgp(gw, _ep("ext/four", "192.0.2.4", 65004, remote=True), admin=m.AdminState.DOWN),
    }
    driver = BgpDriver(DriverContext("one", tmp_path / "bgp", {"listen_port": "1790"}))
    try:
        await driver.apply(peerings)
        seen = await driver.observe()
        error, down = m.PeeringState.ERROR, m.PeeringState.DOWN
        want = {
            "b-same-neighbor": (error, "neighbor 192.0.2.2 of one/gw is already used by connection a-main"),
            "c-same-address": (error, f"address {address} is already the BGP speaker of local endpoint one/gw"),
            "d-no-router-id": (error, "no router id"),
            "e-hold-time-2": (error, "hold time 2 is not 0 or 3..65535"),
            "f-down": (down, ""),
        }
        for name, (state, text) in want.items():
            assert seen[name].state == state and text in seen[name].error, (name, seen[name])
        assert seen["a-main"].state == m.PeeringState.CONNECTING
        assert f"cannot listen on {address} port 1790" in seen["a-main"].error
        assert seen["a-main"].driver == "bgp"

        async def given_up() -> bool:
            await driver.apply(peerings)
            main = (await driver.observe())["a-main"]
            if main.state != m.PeeringState.ERROR:
                raise AssertionError(main)
            return "exited with code 3" in main.error and "3 times in a row" in main.error

        await await_for(given_up, 15, "a-main in ERROR after three failed starts")
    finally:
        await driver.close()


# ---------------------------------------------------------------- the lab: coordinator, agents, gobgpd



@netns
@needs_daemons
def test_sessions_with_gobgpd(bgp_lab: BgpLab) -> None:
    bl = bgp_lab
    one, peer = bl.lab.netns("one"), bl.lab.netns("peer")
    bl.link(one, ["192.0.2.1/24", "2001:db8::1/64"], peer, ["192.0.2.2/24", "2001:db8::2/64"])
    gobgp = bl.gobgpd(peer, 65002, "192.0.2.2", [{"address": "192.0.2.1", "peer_as": 4200000001},
                                                  {"address": "2001:db8::1", "peer_as": 65010}])
    gobgp.cli("global", "rib", "add", "198.51.100.0/24")
    gobgp.cli("global", "rib", "-a", "ipv6", "add", "2001:db8:200::/48")

    bl.site("one")
    bl.site("ext", pb.SITE_KIND_INSTANCE)
    bl.endpoint("one/gw", "192.0.2.1", 4200000001, advertise="203.0.113.0/25")  # a 4-byte AS
    bl.endpoint("one/gw6", "2001:db8::1", 65010, router_id="192.0.2.11", advertise="2001:db8:100::/48")
    bl.endpoint("ext/gobgp", "192.0.2.2", 65002, remote=True)
    bl.endpoint("ext/gobgp6", "2001:db8::2", 65002, remote=True)
    bl.connection("one-gobgp", "one/gw", "ext/gobgp")
    bl.connection("one-gobgp6", "one/gw6", "ext/gobgp6")
    bl.agent(one, "one")

    # Both sessions come up; each side learns what the other advertises.
    wait_for(lambda: established_with(bl, "one", "one-gobgp", ["198.51.100.0/24"])
             and established_with(bl, "one", "one-gobgp6", ["2001:db8:200::/48"]), 30, "both sessions established")
    assert gobgp.established("192.0.2.1") and gobgp.established("2001:db8::1")
    wait_for(lambda: "203.0.113.0/25" in gobgp.rib(), 10, "gobgpd to receive 203.0.113.0/25")
    wait_for(lambda: "2001:db8:100::/48" in gobgp.rib("ipv6"), 10, "gobgpd to receive 2001:db8:100::/48")
    # ... and the coordinator's status says so too.
    seen = bl.coordinator_sees("one", lambda s: s["one-gobgp"].get("state") == "PEERING_STATE_ESTABLISHED",
                               "the coordinator to show one-gobgp established")
    assert seen["one-gobgp"]["received_prefixes"] == ["198.51.100.0/24"]

    # A prefix the peer starts advertising shows up in received_prefixes.
    gobgp.cli("global", "rib", "add", "198.51.100.128/25")
    wait_for(lambda: established_with(bl, "one", "one-gobgp", ["198.51.100.0/24", "198.51.100.128/25"]), 10,
             "the new prefix in received_prefixes")

    # A route that already went through our AS (as routers send the site's own prefix back) is ignored
    # (RFC 4271 9.1.2), counted, and logged at debug only.
    gobgp.cli("global", "rib", "add", "192.0.2.128/25", "aspath", "65002,4200000001")
    wait_for(lambda: bl.speaker_state("one", "gw")["neighbors"]["192.0.2.2"]["looped"] >= 1, 10,
             "the looped route to be counted")
    assert bl.state_of("one", "one-gobgp")[2] == ["198.51.100.0/24", "198.51.100.128/25"]
    assert "has loops" not in bl.log("one")

    # Applies that change nothing, and one that changes only the advertised prefixes, keep the session.
    before = gobgp.session("192.0.2.1")
    with grpc.insecure_channel(f"unix:{bl.tmp / 'one' / 'admin.sock'}") as ch:
        for _ in range(3):
            admin_pb2_grpc.AgentAdminStub(ch).Resync(adm.ResyncRequest(), timeout=10)
    bl.endpoint("one/gw", "192.0.2.1", 4200000001, advertise="203.0.113.128/25", update=True)
    wait_for(lambda: (rib := gobgp.rib()) >= {"203.0.113.128/25"} and "203.0.113.0/25" not in rib, 10,
             "gobgpd to see 203.0.113.0/25 withdrawn and 203.0.113.128/25 advertised")
    assert gobgp.session("192.0.2.1") == before and gobgp.established("192.0.2.1"), "the session was reset"

    # A killed speaker is replaced, and its session comes back.
    pid = bl.speaker_pid("one", "gw")
    assert pid > 0
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: bl.speaker_pid("one", "gw") not in (0, pid), 15, "a new speaker")
    wait_for(lambda: established_with(bl, "one", "one-gobgp", ["198.51.100.0/24", "198.51.100.128/25"]), 30,
             "the session back after the speaker was killed")
    wait_for(lambda: gobgp.established("192.0.2.1") and "203.0.113.128/25" in gobgp.rib(), 10,
             "gobgpd to see the session and the prefix again")
    assert f"the BGP speaker of one/gw (pid {pid}) is gone" in bl.log("one")

    # Admin state DOWN of the endpoint's only session: gobgpd is told (Cease, Administrative Shutdown), the
    # peering shows DOWN, and the speaker stays, refusing gobgpd's reconnect attempts (every second) quietly.
    pid6 = bl.speaker_pid("one", "gw6")
    bl.set_admin_state("one-gobgp6", pb.ADMIN_STATE_DOWN)
    wait_for(lambda: bl.state_of("one", "one-gobgp6")[0] == "DOWN", 10, "one-gobgp6 DOWN")
    wait_for(lambda: not gobgp.established("2001:db8::1"), 10, "gobgpd to see the IPv6 session end")
    assert gobgp.ceases("2001:db8::1") == ["notification-received code 6(cease) subcode 2(administrative shutdown)"]
    # gobgpd waits a while before dialling again after a Cease: three attempts of our own from its namespace.
    dial = ("import socket\nfor _ in range(3):\n    s = socket.create_connection(('2001:db8::1', 179), 5)\n"
            "    print(s.recv(64).hex()); s.close()")
    answers = peer.run([sys.executable, "-c", dial]).stdout.split()
    assert len(answers) == 3 and all(a.endswith("0015030605") for a in answers), answers  # Cease / Connection Rejected
    assert bl.speaker_state("one", "gw6")["refused_connections"] >= 3
    assert bl.speaker_pid("one", "gw6") == pid6

    # Deleting the endpoint's only connection: Cease (Peer De-configured), then its speaker stops.
    bl.delete_connection("one-gobgp")
    wait_for(lambda: "one-gobgp" not in bl.peerings("one"), 10, "one-gobgp to be gone from the agent")
    wait_for(lambda: not gobgp.established("192.0.2.1"), 10, "gobgpd to see the session end")
    assert gobgp.ceases("192.0.2.1") == ["notification-received code 6(cease) subcode 3(peer deconfigured)"]
    wait_for(lambda: bl.speaker_pid("one", "gw") == 0, 10, "the speaker of one/gw to stop")
    agent_log = bl.log("one")
    assert " ERROR " not in agent_log, [line for line in agent_log.splitlines() if " ERROR " in line]
    assert "refused a connection from 2001:db8::2" not in agent_log, "logged above debug"


@netns
@needs_daemons
def test_md5_wrong_peer_as_and_missing_secret(bgp_lab: BgpLab) -> None:
    bl = bgp_lab
    one, peer = bl.lab.netns("one"), bl.lab.netns("peer")
    bl.link(one, ["192.0.2.3/24", "192.0.2.4/24", "192.0.2.5/24"], peer, ["192.0.2.2/24"])
    gobgp = bl.gobgpd(peer, 65002, "192.0.2.2", [{"address": "192.0.2.3", "peer_as": 65003,
                                                  "password": "isthmus-md5-test"},
                                                 {"address": "192.0.2.4", "peer_as": 65004},
                                                 {"address": "192.0.2.5", "peer_as": 65005}])
    secret = bl.tmp / "md5.secret"
    secret.write_text("isthmus-md5-test\n")
    secret.chmod(0o600)
    missing = bl.tmp / "no-such.secret"

    bl.site("one")
    bl.site("ext", pb.SITE_KIND_INSTANCE)
    bl.endpoint("one/md5", "192.0.2.3", 65003)
    bl.endpoint("one/bad", "192.0.2.4", 65004)
    bl.endpoint("one/renumbered", "192.0.2.5", 64555)  # gobgpd expects AS 65005 from 192.0.2.5
    bl.endpoint("ext/gobgp", "192.0.2.2", 65002, remote=True)
    bl.endpoint("ext/liar", "192.0.2.2", 65099, remote=True)  # gobgpd really is AS 65002
    bl.endpoint("ext/ghost", "192.0.2.9", 65009, remote=True)
    bl.connection("one-md5", "one/md5", "ext/gobgp", password_ref=f"file:{secret}")
    bl.connection("one-liar", "one/bad", "ext/liar")
    bl.connection("one-ghost", "one/md5", "ext/ghost", password_ref=f"file:{missing}")
    bl.connection("one-renumbered", "one/renumbered", "ext/gobgp")
    bl.agent(one, "one")

    wait_for(lambda: established_with(bl, "one", "one-md5", []), 30, "the MD5 session established")
    assert gobgp.established("192.0.2.3")
    wait_for(lambda: bl.state_of("one", "one-liar")[0] == "ERROR", 30, "one-liar in ERROR")
    assert "bad peer AS" in bl.state_of("one", "one-liar")[1]
    assert not gobgp.established("192.0.2.4")
    state, error, _ = bl.state_of("one", "one-ghost")
    assert state == "ERROR" and str(missing) in error

    # The operator sees the same through the coordinator.
    seen = bl.coordinator_sees("one", lambda s: s["one-md5"].get("state") == "PEERING_STATE_ESTABLISHED"
                               and s["one-liar"].get("state") == "PEERING_STATE_ERROR",
                               "the coordinator to show one-md5 established and one-liar in error")
    assert "bad peer AS" in seen["one-liar"]["error"]
    assert "isthmus-md5-test" not in bl.log("one"), "the password was logged"

    # The peer refuses our AS: ERROR, until the endpoint gets the AS the peer expects. Its speaker
    # restarts with the new AS and the session comes up.
    wait_for(lambda: bl.state_of("one", "one-renumbered")[0] == "ERROR", 30, "one-renumbered in ERROR")
    assert "received: Open Message Error: bad peer AS" in bl.state_of("one", "one-renumbered")[1]
    assert "does not expect our AS 64555" in bl.state_of("one", "one-renumbered")[1]
    pid = bl.speaker_pid("one", "renumbered")
    bl.endpoint("one/renumbered", "192.0.2.5", 65005, update=True)
    wait_for(lambda: bl.speaker_pid("one", "renumbered") not in (0, pid), 15, "a speaker with the new AS")
    wait_for(lambda: established_with(bl, "one", "one-renumbered", []), 30, "one-renumbered established")
    assert gobgp.established("192.0.2.5")


@netns
@needs_daemons
def test_hold_time_edges_with_gobgpd(bgp_lab: BgpLab) -> None:
    """0 (no keepalives) and 3 s, the edges of the one rule, are offered as given and hold; 2 is refused by the API
    and by isthmusctl alike."""
    bl = bgp_lab
    one, peer = bl.lab.netns("one"), bl.lab.netns("peer")
    bl.link(one, ["192.0.2.3/24", "192.0.2.4/24"], peer, ["192.0.2.2/24"])
    gobgp = bl.gobgpd(peer, 65002, "192.0.2.2", [{"address": "192.0.2.3", "peer_as": 65003},
                                                  {"address": "192.0.2.4", "peer_as": 65004}])
    bl.site("one")
    bl.site("ext", pb.SITE_KIND_EXTERNAL)
    bl.endpoint("one/h0", "192.0.2.3", 65003)
    bl.endpoint("one/h3", "192.0.2.4", 65004)
    bl.endpoint("ext/gobgp", "192.0.2.2", 65002, remote=True)
    with pytest.raises(grpc.RpcError) as exc:
        bl.connection("one-h2", "one/h0", "ext/gobgp", hold_time=2)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bgp.hold_time" in str(exc.value.details()) and "0 or 3..65535" in str(exc.value.details())
    res = ctl("--coordinator", bl.coordinator, "connection", "create", "one-h2", "--a", "one/h0", "--b", "ext/gobgp",
              "--type", "bgp", "--hold-time", "2", check=False)
    assert res.returncode == 2 and "2 is not 0 or 3..65535 seconds" in res.stderr
    bl.connection("one-h0", "one/h0", "ext/gobgp", hold_time=0)
    bl.connection("one-h3", "one/h3", "ext/gobgp", hold_time=3)
    bl.agent(one, "one")

    def negotiated(address: str) -> int:
        return int(gobgp.neighbor(address)["timers"]["state"].get("negotiated_hold_time", 0))

    wait_for(lambda: established_with(bl, "one", "one-h0", []) and established_with(bl, "one", "one-h3", [])
             and gobgp.established("192.0.2.3") and gobgp.established("192.0.2.4"), 30, "both sessions up")
    assert (negotiated("192.0.2.3"), negotiated("192.0.2.4")) == (0, 3)
    before = gobgp.session("192.0.2.3"), gobgp.session("192.0.2.4")
    time.sleep(10)  # longer than the router's own 9 s: keepalives every second on one, none needed on the other
    assert (gobgp.session("192.0.2.3"), gobgp.session("192.0.2.4")) == before
    assert gobgp.established("192.0.2.3") and gobgp.established("192.0.2.4")


@netns
@needs_daemons
def test_two_agents_peer_with_each_other(bgp_lab: BgpLab) -> None:
    bl = bgp_lab
    a, b = bl.lab.netns("one"), bl.lab.netns("two")
    bl.link(a, ["192.0.2.1/24"], b, ["192.0.2.2/24"])
    bl.site("one")
    bl.site("two")
    bl.endpoint("one/gw", "192.0.2.1", 65001, advertise="203.0.113.0/24")
    bl.endpoint("two/gw", "192.0.2.2", 4200000002, advertise="198.51.100.0/24")
    bl.connection("one-two", "one/gw", "two/gw")
    bl.agent(a, "one")
    bl.agent(b, "two")

    wait_for(lambda: established_with(bl, "one", "one-two", ["198.51.100.0/24"])
             and established_with(bl, "two", "one-two", ["203.0.113.0/24"]), 30,
             "both agents ESTABLISHED, each with the other's prefix")

    def converged() -> bool:
        for site in ("one", "two"):
            st = api_pb2_grpc.StatusServiceStub(bl.channel).GetSiteStatus(api.GetSiteStatusRequest(site=site),
                                                                           timeout=5)
            states = [pb.PeeringState.Name(p.observed.state) for p in st.peerings]
            if not (st.connected and st.applied_revision >= st.desired_revision
                    and states == ["PEERING_STATE_ESTABLISHED"]):
                raise AssertionError(f"{site}: connected={st.connected} states={states}")
        return True

    wait_for(converged, 15, "the coordinator to show both sites established")

    # An agent that stops leaves its speaker running: the other site's session stays up, longer than the
    # 9 s hold time, and its SINCE does not move; the agent that comes back adopts the speaker.
    pid = bl.speaker_pid("two", "gw")
    since = bl.peerings("one")["one-two"].since_unix_ms
    assert pid > 0
    assert bl.stop_agent("two") == 0
    assert alive(pid) and bl.speaker_pid("two", "gw") == pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = bl.peerings("one")["one-two"]
        assert (seen.state, seen.since_unix_ms) == (pb.PEERING_STATE_ESTABLISHED, since), seen
        time.sleep(0.5)
    bl.agent(b, "two")
    wait_for(lambda: established_with(bl, "two", "one-two", ["203.0.113.0/24"]), 15, "two ESTABLISHED again")
    assert bl.speaker_pid("two", "gw") == pid and bl.peerings("one")["one-two"].since_unix_ms == since


@netns
def test_speaker_protocol_on_its_socket(lab: Any, tmp_path: Path) -> None:
    """The speaker alone: detaches once listening, answers on its socket, refuses in os-ken's words, survives
    its clients, stops on shutdown with its files removed."""
    ns = lab.netns("child")
    ns.ip("addr", "add", "192.0.2.1/32", "dev", "lo")
    sock, pid_file = tmp_path / "speaker.sock", tmp_path / "speaker.pid"
    base = ["ip", "netns", "exec", ns.name, sys.executable, "-m", "isthmus.drivers.bgp.speaker", "--daemon",
            "--endpoint", "one/gw", "--asn", "65001", "--router-id", "192.0.2.1", "--listen-port", "1790",
            "--socket", str(sock), "--pid-file", str(pid_file)]

    bad = subprocess.run([*base, "--listen-host", "192.0.2.99"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 3 and "cannot listen on 192.0.2.99 port 1790" in bad.stderr
    assert not sock.exists()

    # The detached speaker keeps its stderr: a file, not a pipe this test would wait on.
    with open(tmp_path / "speaker.log", "wb") as logf:
        started = subprocess.run([*base, "--listen-host", "192.0.2.1"], stdout=logf, stderr=logf, timeout=60)
    assert started.returncode == 0, (tmp_path / "speaker.log").read_text()
    pid = int(pid_file.read_text())
    assert (sock.stat().st_mode & 0o777) == 0o600
    try:
        def connect() -> tuple[socket.socket, Any]:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(sock))
            conn.settimeout(10)
            return conn, conn.makefile("rb")

        conn, lines = connect()

        def ask(req: dict[str, Any]) -> dict[str, Any]:
            conn.sendall(json.dumps(req).encode() + b"\n")
            while True:
                msg = json.loads(lines.readline())
                if "id" in msg:
                    return msg  # type: ignore[no-any-return]

        hello = ask({"id": 1, "op": "hello", "args": {}})["result"]
        assert (hello["pid"], hello["endpoint"], hello["asn"], hello["address"], hello["port"]) == (
            pid, "one/gw", 65001, "192.0.2.1", 1790)
        assert hello["neighbors"] == [] and hello["prefixes"] == []
        add = {"address": "192.0.2.2", "remote_as": 65002, "hold_time": 3, "password": "pw-not-echoed",
               "ipv4": True, "ipv6": False, "evpn": False}
        assert ask({"id": 2, "op": "neighbor_add", "args": add}) == {"id": 2, "ok": True, "result": None}
        assert ask({"id": 3, "op": "prefix_add", "args": {"prefix": "203.0.113.0/24"}})["ok"]
        state = ask({"id": 4, "op": "state", "args": {}})
        assert state["ok"] and set(state["result"]["neighbors"]) == {"192.0.2.2"}
        assert state["result"]["neighbors"]["192.0.2.2"]["state"] in ("Idle", "Connect", "Active")
        refused = ask({"id": 5, "op": "neighbor_add", "args": {**add, "address": "192.0.2.3", "hold_time": 2}})
        assert not refused["ok"] and "hold_time" in refused["error"]
        assert ask({"id": 6, "op": "neighbor_add", "args": {**add, "address": "192.0.2.4", "hold_time": 0}})["ok"]
        assert not ask({"id": 7, "op": "no-such-op", "args": {}})["ok"]
        lines.close()
        conn.close()  # the client goes; the speaker stays, holding what it was given
        time.sleep(0.2)
        assert alive(pid)
        conn, lines = connect()
        hello = ask({"id": 1, "op": "hello", "args": {}})["result"]
        assert [(n["address"], n["hold_time"], bool(n["password_digest"])) for n in hello["neighbors"]] == [
            ("192.0.2.2", 3, True), ("192.0.2.4", 0, True)]
        assert hello["prefixes"] == ["203.0.113.0/24"]
        assert "pw-not-echoed" not in json.dumps(hello)
        assert ask({"id": 2, "op": "shutdown", "args": {}})["ok"]
        lines.close()
        conn.close()
        wait_for(lambda: not alive(pid), 10, "the speaker to exit")
        assert not sock.exists() and not pid_file.exists()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
