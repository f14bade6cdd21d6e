"""Learned routes reach the kernel under the connection's import policy: two hosts talk only through BGP.

    hostA --- [one: isthmus agent + speakers] --- [router: BIRD] --- hostB
    10.1.0.0/24, 2001:db8:a::/64                              10.2.0.0/24, 2001:db8:b::/64

Neither the site nor the router has a static route to the other's hosts: the
site advertises its host network (``bgp.advertise``) and BIRD installs it in its
kernel; BIRD advertises its host network and the speaker installs it in table
179 with protocol 179 (next hop the router), with the policy rules that make
the site use that table. The hosts have only a default route to their gateway.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from bgp_lab import BgpLab, bgp_lab, needs_bird, needs_daemons, netns

from conftest import wait_for
from isthmus.v1 import types_pb2 as pb

__all__ = ["bgp_lab"]  # the fixture

BIRD_CONFIG = """router id 192.0.2.2;
log stderr all;
timeformat protocol iso long;
protocol device { }
protocol direct { ipv4; ipv6; interface "eth1"; }
protocol kernel k4 { ipv4 { import none; export where source = RTS_BGP; }; }
protocol kernel k6 { ipv6 { import none; export where source = RTS_BGP; }; }
protocol static s4 {
  ipv4;
  route 10.99.0.0/24 blackhole;   # outside the site's import policy
  route 0.0.0.0/0 blackhole;      # a default route: refused unless the policy names it
  route 10.77.0.0/24 blackhole;   # accepted, but the site already has a route of its own there
}
protocol static s6 { ipv6; route 2001:db8:99::/64 blackhole; }
protocol bgp isthmus {
  local 192.0.2.2 as 65003; neighbor 192.0.2.1 as 65001;
  hold time 9; keepalive time 3; connect retry time 1; connect delay time 1; error wait time 1, 5;
  ipv4 { import all; export where source ~ [RTS_STATIC, RTS_DEVICE]; };
}
protocol bgp isthmus6 {
  local 2001:db8::2 as 65003; neighbor 2001:db8::1 as 65001;
  hold time 9; keepalive time 3; connect retry time 1; connect delay time 1; error wait time 1, 5;
  ipv6 { import all; export where source ~ [RTS_STATIC, RTS_DEVICE]; };
}
"""


def _routes(ns: Any, family: str, table: str) -> dict[str, str]:
    """prefix -> the rest of ``ip route show`` for each route of ``table`` in ``ns``."""
    out = ns.ip(family, "route", "show", "table", table).stdout
    return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line.strip()}


def _ping(ns: Any, address: str) -> bool:
    res = ns.run(["ping", "-c", "1", "-W", "1", address], check=False, timeout=10)
    return res.returncode == 0


@netns
@needs_daemons
@needs_bird
def test_hosts_reach_each_other_through_learned_routes_only(bgp_lab: BgpLab) -> None:
    bl = bgp_lab
    one, router = bl.lab.netns("one"), bl.lab.netns("router")
    host_a, host_b = bl.lab.netns("hosta"), bl.lab.netns("hostb")
    bl.link(one, ["192.0.2.1/24", "2001:db8::1/64"], router, ["192.0.2.2/24", "2001:db8::2/64"])
    bl.link(one, ["10.1.0.1/24", "2001:db8:a::1/64"], host_a, ["10.1.0.2/24", "2001:db8:a::2/64"], a_if="eth2")
    bl.link(router, ["10.2.0.1/24", "2001:db8:b::1/64"], host_b, ["10.2.0.2/24", "2001:db8:b::2/64"], a_if="eth1")
    for ns, gw4, gw6 in ((host_a, "10.1.0.1", "2001:db8:a::1"), (host_b, "10.2.0.1", "2001:db8:b::1")):
        ns.ip("route", "add", "default", "via", gw4)
        ns.ip("-6", "route", "add", "default", "via", gw6)
    for ns in (one, router):
        ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
    # A route of the site's own in isthmus's table, for a prefix the router will advertise: never touched.
    one.ip("route", "add", "10.77.0.0/24", "via", "192.0.2.2", "table", "179")
    bird = bl.bird(router, "", "", 0, "", 0, [], config=BIRD_CONFIG)
    assert not _ping(host_a, "10.2.0.2"), "the hosts reach each other before any BGP"

    bl.site("one")
    bl.site("ext", pb.SITE_KIND_EXTERNAL)
    bl.endpoint("one/gw", "192.0.2.1", 65001, advertise="10.1.0.0/24")
    bl.endpoint("one/gw6", "2001:db8::1", 65001, router_id="192.0.2.11", advertise="2001:db8:a::/64")
    bl.endpoint("ext/bird", "192.0.2.2", 65003, remote=True)
    bl.endpoint("ext/bird6", "2001:db8::2", 65003, remote=True)
    policy4 = ["10.2.0.0/16 le 24", "10.77.0.0/24"]
    bl.connection("one-bird", "one/gw", "ext/bird", import_prefixes=policy4)
    bl.connection("one-bird6", "one/gw6", "ext/bird6", import_prefixes=["2001:db8:b::/48 le 64"])
    bl.agent(one, "one")

    # Each side learns the other's host network and installs it: the hosts reach each other.
    wait_for(lambda: "10.2.0.0/24" in _routes(one, "-4", "179") and "2001:db8:b::/64" in _routes(one, "-6", "179"),
             30, "the router's host networks in table 179")
    v4, v6 = _routes(one, "-4", "179"), _routes(one, "-6", "179")
    assert v4["10.2.0.0/24"].startswith("via 192.0.2.2 dev eth0 proto 179"), v4
    assert v6["2001:db8:b::/64"].startswith("via 2001:db8::2 dev eth0 proto 179"), v6
    # Outside the policy, and the default route: not installed; the site's own route: left as it was.
    assert set(v4) == {"10.2.0.0/24", "10.77.0.0/24"} and set(v6) == {"2001:db8:b::/64"}, (v4, v6)
    assert "proto 179" not in v4["10.77.0.0/24"], v4
    rules = one.ip("rule").stdout + one.ip("-6", "rule").stdout
    assert rules.count("1790:\tfrom all lookup main suppress_prefixlength 0") == 2, rules
    assert rules.count("1791:\tfrom all lookup 179") == 2, rules
    wait_for(lambda: _ping(host_a, "10.2.0.2") and _ping(host_b, "10.1.0.2"), 15, "hostA and hostB to reach "
             "each other over IPv4")
    wait_for(lambda: _ping(host_a, "2001:db8:b::2") and _ping(host_b, "2001:db8:a::2"), 15,
             "hostA and hostB to reach each other over IPv6")

    # The router withdraws its host network: out of the kernel at once; announced again: back.
    assert "disabled" in bird.cli("disable", "direct1").stdout
    wait_for(lambda: "10.2.0.0/24" not in _routes(one, "-4", "179"), 10, "10.2.0.0/24 withdrawn from the kernel")
    assert "10.77.0.0/24" in _routes(one, "-4", "179") and bird.established("isthmus")
    bird.cli("enable", "direct1")
    wait_for(lambda: "10.2.0.0/24" in _routes(one, "-4", "179"), 10, "10.2.0.0/24 back in the kernel")

    # What was refused is counted and visible.
    state = bl.speaker_state("one", "gw")
    assert state["neighbors"]["192.0.2.2"]["refused"] == 2, state  # 10.99.0.0/24 and the default route
    assert state["foreign"] == ["10.77.0.0/24"], state
    # The agent hears of the route announced again from the speaker's event, a moment after the kernel has it.
    _, error, received = wait_for(
        lambda: (st := bl.state_of("one", "one-bird"))[2] == ["10.2.0.0/24", "10.77.0.0/24"] and st, 10,
        "the agent to report both received routes")
    assert "2 routes refused by the import policy" in error and "10.77.0.0/24" in error, error

    # More accepted routes than max_prefixes: the session is closed (the router hears why), ERROR here,
    # the routes leave the kernel; a higher limit brings it all back, without touching the IPv6 session.
    since6 = bl.peerings("one")["one-bird6"].since_unix_ms
    bl.update_bgp("one-bird", import_prefixes=policy4, max_prefixes=1)
    wait_for(lambda: bl.state_of("one", "one-bird")[0] == "ERROR", 10, "one-bird ERROR over max_prefixes")
    assert "received 2 routes, more than max_prefixes 1" in bl.state_of("one", "one-bird")[1]
    wait_for(lambda: "Maximum number of prefixes reached" in bird.last_error("isthmus"), 10,
             "BIRD to hear the Cease (Maximum Number of Prefixes Reached)")
    wait_for(lambda: "10.2.0.0/24" not in _routes(one, "-4", "179"), 10, "10.2.0.0/24 out of the kernel")
    assert not _ping(host_a, "10.2.0.2")
    bl.update_bgp("one-bird", import_prefixes=policy4, max_prefixes=10)
    wait_for(lambda: bl.state_of("one", "one-bird")[0] == "ESTABLISHED", 30, "one-bird back with a higher limit")
    wait_for(lambda: _ping(host_a, "10.2.0.2"), 15, "hostA to reach hostB again")
    assert bl.peerings("one")["one-bird6"].since_unix_ms == since6

    # The policy changes in place (no session reset): narrowing it takes the route out of the kernel.
    since = bl.peerings("one")["one-bird"].since_unix_ms
    bl.update_bgp("one-bird", import_prefixes=["10.77.0.0/24"], max_prefixes=10)
    wait_for(lambda: "10.2.0.0/24" not in _routes(one, "-4", "179"), 10, "10.2.0.0/24 refused by the new policy")
    assert bl.peerings("one")["one-bird"].since_unix_ms == since and bird.established("isthmus")
    bl.update_bgp("one-bird", import_prefixes=policy4, max_prefixes=10)
    wait_for(lambda: "10.2.0.0/24" in _routes(one, "-4", "179"), 10, "10.2.0.0/24 accepted again")

    # A speaker that dies leaves its routes in the kernel; the next one keeps them (it removes nothing until
    # every neighbor is back) and takes them over: the route to hostB is there at every look.
    pid = bl.speaker_pid("one", "gw")
    os.kill(pid, signal.SIGKILL)
    looks = 0
    while not (bl.speaker_pid("one", "gw") not in (0, pid) and bl.state_of("one", "one-bird")[0] == "ESTABLISHED"):
        assert "via 192.0.2.2" in _routes(one, "-4", "179").get("10.2.0.0/24", ""), "the route left the kernel"
        looks += 1
        assert looks < 600, "the session did not come back"
        time.sleep(0.05)
    # What the new speaker learned again is what is installed.
    wait_for(lambda: _routes(one, "-4", "179").get("10.2.0.0/24", "").startswith("via 192.0.2.2 dev eth0 proto 179"),
             10, "the new speaker's route to 10.2.0.0/24 installed")
    wait_for(lambda: _ping(host_a, "10.2.0.2"), 15, "hostA to reach hostB after the speaker's restart")

    # An endpoint that only advertises: nothing installed, the session stays.
    bl.endpoint("one/gw6", "2001:db8::1", 65001, router_id="192.0.2.11", advertise="2001:db8:a::/64", update=True,
                properties={"bgp.install": "false"})
    wait_for(lambda: not _routes(one, "-6", "179"), 10, "the IPv6 routes out of the kernel")
    assert bl.peerings("one")["one-bird6"].since_unix_ms == since6

    # The session removed: the route leaves the kernel, the hosts no longer reach each other; the site's
    # own route in table 179 is still there.
    bl.delete_connection("one-bird")
    wait_for(lambda: set(_routes(one, "-4", "179")) == {"10.77.0.0/24"}, 10, "only the site's own route left")
    assert not _ping(host_a, "10.2.0.2")
