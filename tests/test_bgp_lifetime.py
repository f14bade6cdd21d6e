"""A BGP speaker's life is not the agent's: agent SIGTERM, kill -9 and replacement leave sessions and routes alone.

Read from the routers themselves: gobgpd's neighbor uptime and flap counter and
the age of each path in its RIB; BIRD's protocol state and since-time and the
time it learned each route. The agent is down at least DOWN_FOR seconds each
time, longer than the routers' 9 s hold time, so a session that depended on the
agent would be seen to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bgp_lab import BgpLab, Bird, Gobgpd, bgp_lab, established_with, needs_bird, needs_daemons, netns

from conftest import agent_cmd, wait_for
from isthmus.drivers.bgp.client import alive

__all__ = ["bgp_lab"]  # the fixture

DOWN_FOR = 10.0  # seconds the agent stays down each time


def _routers(gobgp: Gobgpd, bird: Bird) -> dict[str, Any]:
    """What the routers say about their sessions with the site and the routes it advertises."""
    uptime, flaps = gobgp.session("192.0.2.1")
    state, since, info = bird.protocol()
    return {
        "gobgp": (gobgp.established("192.0.2.1"), uptime, flaps),
        "gobgp_routes": gobgp.rib_ages(),
        "bird": (state, since, info.split()[0] if info else ""),
        "bird_routes": bird.routes(),
    }


def _unchanged_for(seconds: float, before: dict[str, Any], gobgp: Gobgpd, bird: Bird) -> int:
    """Poll the routers for ``seconds``: every look must equal ``before``; returns how many looks."""
    deadline, looks = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        now = _routers(gobgp, bird)
        assert now == before, f"a router saw a change while the agent was down: {before} -> {now}"
        looks += 1
        time.sleep(0.5)
    return looks


@netns
@needs_daemons
@needs_bird
def test_sessions_and_routes_outlive_the_agent(bgp_lab: BgpLab) -> None:
    bl = bgp_lab
    one, gobgp, bird = bl.site_with_two_routers()
    gobgp.cli("global", "rib", "add", "198.51.100.0/24")

    def converged() -> bool:
        return (established_with(bl, "one", "one-gobgp", ["198.51.100.0/24"])
                and established_with(bl, "one", "one-bird", ["198.18.10.0/24"]))

    wait_for(converged, 30, "both sessions established with the routers' prefixes")
    wait_for(lambda: "203.0.113.0/25" in gobgp.rib_ages() and "203.0.113.128/25" in bird.routes(), 15,
             "the routers to have the site's prefixes")
    before = _routers(gobgp, bird)
    assert before["gobgp"][0] and before["bird"][2] == "Established", before
    pids = {ep: bl.speaker_pid("one", ep) for ep in ("gw", "gw2")}
    since = {name: bl.peerings("one")[name].since_unix_ms for name in ("one-gobgp", "one-bird")}
    figures: dict[str, Any] = {}

    def agent_back(how: str, cmd: list[str] | None = None) -> None:
        started = time.monotonic()
        if cmd is None:
            bl.agent(one, "one")
        else:
            bl.agents["one"] = one.popen(cmd, bl.tmp / "agent-one.log")
        wait_for(converged, 30, f"the sessions established at the agent after {how}")
        figures[f"{how}: agent start to ESTABLISHED shown (s)"] = round(time.monotonic() - started, 2)
        assert {ep: bl.speaker_pid("one", ep) for ep in ("gw", "gw2")} == pids, "a speaker was replaced"
        seen = bl.peerings("one")
        assert {name: seen[name].since_unix_ms for name in since} == since, "SINCE moved: the agent saw a new session"
        assert _routers(gobgp, bird) == before

    # 1. SIGTERM, as systemctl stop/restart does.
    assert bl.stop_agent("one") == 0
    figures["SIGTERM: looks at the routers while down"] = _unchanged_for(DOWN_FOR, before, gobgp, bird)
    agent_back("SIGTERM")
    assert bl.log("one").count("adopted the BGP speaker of one/gw ") == 1

    # 2. kill -9: no chance to say goodbye.
    proc = bl.agents["one"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    figures["kill -9: looks at the routers while down"] = _unchanged_for(DOWN_FOR, before, gobgp, bird)
    agent_back("kill -9")

    # 3. Replaced, as an upgrade does: another command line (the module, not the console script,
    # other options) starts once the old process is gone.
    assert bl.stop_agent("one") == 0
    figures["replaced: looks at the routers while down"] = _unchanged_for(DOWN_FOR, before, gobgp, bird)
    new = [sys.executable, "-m", "isthmus.agent.main",
           *agent_cmd("one", f"unix:{bl.socket}", bl.tmp, "--driver", "bgp", "--reconcile-interval", "3")[1:]]
    agent_back("replaced", new)

    after = _routers(gobgp, bird)
    assert after == before
    figures["session resets seen by gobgpd"] = after["gobgp"][2] - before["gobgp"][2]
    figures["session resets seen by BIRD"] = int(after["bird"][1] != before["bird"][1])
    figures["withdrawals seen (path age changed)"] = sum(
        after[k][p] != before[k][p] for k in ("gobgp_routes", "bird_routes") for p in before[k])
    assert "ERROR" not in bl.log("one"), "the agent logged an error"
    (bl.tmp / "figures.json").write_text(json.dumps(figures, indent=1))
    print("\nfigures:", json.dumps(figures, indent=1))

    # Stopping a speaker on purpose: the agent is stopped first (a running agent with peerings would start
    # it again), then `python -m isthmus.drivers.bgp stop`; each router records a Cease.
    assert bl.stop_agent("one") == 0
    res = subprocess.run([sys.executable, "-m", "isthmus.drivers.bgp", "stop", str(bl.tmp / "one" / "state" / "bgp")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "stopped the BGP speaker of one/gw " in res.stdout and "one/gw2" in res.stdout
    wait_for(lambda: not any(alive(p) for p in pids.values()), 10, "the speakers to exit")
    wait_for(lambda: gobgp.ceases("192.0.2.1")[-1:] == ["notification-received code 6(cease) subcode 2"
                                                        "(administrative shutdown)"], 10,
             "gobgpd to record a Cease (Administrative Shutdown)")
    wait_for(lambda: "Administrative shutdown" in bird.last_error(), 10,
             "BIRD to record a Cease (Administrative shutdown)")
    assert not list((bl.tmp / "one" / "state" / "bgp").glob("*.sock"))


@netns
@needs_daemons
@needs_bird
def test_a_speaker_restart_is_graceful(bgp_lab: BgpLab) -> None:
    """RFC 4724: a speaker killed and started again; the routers (gobgpd with graceful restart, BIRD, which is
    aware of it by default) keep its routes, stale, through the restart, and get them again with End-of-RIB:
    at no look is a route of the site missing from their RIBs."""
    bl = bgp_lab
    one, gobgp, bird = bl.site_with_two_routers({"graceful_restart": True})
    wait_for(lambda: established_with(bl, "one", "one-gobgp", [])
             and established_with(bl, "one", "one-bird", ["198.18.10.0/24"]), 30, "both sessions up")
    wait_for(lambda: "203.0.113.0/25" in gobgp.rib_ages() and "203.0.113.128/25" in bird.routes(), 15,
             "the routers to have the site's prefixes")
    caps = gobgp.cli("neighbor", "192.0.2.1")
    assert "graceful-restart:\tadvertised and received" in caps, caps
    assert "Graceful restart" in bird.cli("show", "protocols", "all", "isthmus").stdout

    pids = [bl.speaker_pid("one", ep) for ep in ("gw", "gw2")]
    started = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    looks, stale_seen = 0, False
    while True:
        paths = gobgp.rib_paths().get("203.0.113.0/25", [])
        assert paths, "gobgpd withdrew the site's route"
        assert "203.0.113.128/25" in bird.routes(), "BIRD withdrew the site's route"
        stale_seen = stale_seen or any(p.get("stale") for p in paths)
        looks += 1
        if (all(bl.speaker_pid("one", ep) not in (0, *pids) for ep in ("gw", "gw2"))
                and bl.state_of("one", "one-gobgp")[0] == "ESTABLISHED"
                and bl.state_of("one", "one-bird")[0] == "ESTABLISHED"
                and not any(p.get("stale") for p in paths)):
            break
        assert time.monotonic() - started < 60, f"not back after 60 s: {paths}"
        time.sleep(0.1)
    assert stale_seen, "gobgpd never marked the routes stale: no graceful restart happened"
    print(f"\nfigures: speaker restart: back and not stale after {time.monotonic() - started:.1f} s, "
          f"{looks} looks, the routes at every one")
