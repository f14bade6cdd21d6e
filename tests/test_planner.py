"""The planner's derivation of per-site desired peerings, without etcd."""

from __future__ import annotations

import logging
from typing import cast

import pytest

from isthmus.coordinator import registry as r
from isthmus.coordinator.planner import Planner, plan_site
from isthmus.coordinator.store import KV, Event, Store
from isthmus.core import model as m


def _ep(site: str, name: str, addr: str, asn: int, role: m.EndpointRole = m.EndpointRole.LOCAL) -> m.Endpoint:
    return m.Endpoint(site, name, addr, asn, role, router_id=addr)


EPS = {e.ref: e for e in [
    _ep("r1", "gw", "192.0.2.1", 65001),
    _ep("r2", "gw", "192.0.2.2", 65002),
    _ep("c1", "gw", "192.0.2.3", 65003),
    _ep("r1", "dcgw", "198.51.100.1", 64999, m.EndpointRole.REMOTE),
]}


def _conn(name: str, a: str, b: str, **kw: object) -> m.Connection:
    sa, na = a.split("/")
    sb, nb = b.split("/")
    return m.Connection(name, m.EndpointRef(sa, na), m.EndpointRef(sb, nb), m.ConnectionType.BGP,
                        bgp=m.BgpParams(), **kw)  # type: ignore[arg-type]


def test_each_local_end_gets_a_peering_towards_the_other_end() -> None:
    conns = [_conn("r1-r2", "r1/gw", "r2/gw"), _conn("r2-c1", "r2/gw", "c1/gw")]
    r1 = plan_site("r1", conns, EPS)
    r2 = plan_site("r2", conns, EPS)
    assert set(r1) == {"r1-r2"}
    assert set(r2) == {"r1-r2", "r2-c1"}
    assert r1["r1-r2"].local.address == "192.0.2.1" and r1["r1-r2"].remote.address == "192.0.2.2"
    assert r2["r1-r2"].local.address == "192.0.2.2" and r2["r1-r2"].remote.asn == 65001
    assert r2["r2-c1"].remote.site == "c1"


def test_remote_end_gets_nothing_and_local_end_peers_with_it() -> None:
    conns = [_conn("to-dc", "r2/gw", "r1/dcgw")]
    assert plan_site("r1", conns, EPS) == {}
    peering = plan_site("r2", conns, EPS)["to-dc"]
    assert peering.remote.role == m.EndpointRole.REMOTE and peering.remote.address == "198.51.100.1"


def test_admin_state_and_params_follow_the_connection() -> None:
    conns = [_conn("r1-r2", "r1/gw", "r2/gw", admin_state=m.AdminState.DOWN)]
    p = plan_site("r1", conns, EPS)["r1-r2"]
    assert p.admin_state == m.AdminState.DOWN and p.bgp == m.BgpParams()


def test_missing_endpoint_plans_nothing() -> None:
    conns = [_conn("ghost", "r1/gw", "r9/none")]
    assert plan_site("r1", conns, EPS) == {}


# ---------------------------------------------------------------- against etcd


async def test_planner_follows_etcd_and_recovers_from_compaction(etcd: str) -> None:
    import asyncio

    from conftest import await_for
    from isthmus.coordinator.planner import Planner
    from isthmus.coordinator.registry import Registry
    from isthmus.coordinator.store import Store

    store = Store([etcd])
    await store.connect()
    reg = Registry(store)
    for name in ("r1", "r2"):
        await reg.create_site(m.Site(name, m.SiteKind.REGION))
    for ep in EPS.values():
        if ep.site in ("r1", "r2"):
            await reg.create_endpoint(m.Endpoint(ep.site, ep.name, ep.address, ep.asn, ep.role))
    first = await reg.create_connection(_conn("one", "r1/gw", "r2/gw"))

    planner = Planner(store)
    await planner.start()
    assert set(planner.desired("r1")[0]) == {"one"}
    assert planner.site_revision["r1"] == first.version
    woken = planner.changed_event("r2")
    woken.clear()

    second = await reg.create_connection(_conn("two", "r2/gw", "r1/dcgw"))
    await await_for(lambda: "two" in planner.desired("r2")[0], 10, "the planner to see connection two")
    assert woken.is_set() and planner.site_revision["r2"] == second.version
    assert planner.site_revision["r1"] == first.version  # r1's side of "two" is the REMOTE end: unchanged

    # Stop following, change things, compact the history away: the planner must reload, not miss it.
    await planner.stop()
    rev = await reg.delete_connection("one")
    later = await reg.create_site(m.Site("r3", m.SiteKind.REGION))
    await store.compact(later.version)
    task = asyncio.create_task(planner._follow())
    await await_for(lambda: "one" not in planner.desired("r1")[0], 10, "the planner to reload after compaction")
    assert planner.site_revision["r1"] >= rev and "r3" in planner.sites
    task.cancel()
    await store.close()


async def test_desired_revisions_move_only_when_a_sites_peerings_change(etcd: str) -> None:
    """Restarts, writes that leave a site's peerings as they were, and a second planner never move its revision."""
    import dataclasses

    from conftest import await_for
    from isthmus.coordinator.planner import Planner
    from isthmus.coordinator.registry import Registry
    from isthmus.coordinator.store import Store

    store = Store([etcd])
    await store.connect()
    reg = Registry(store)
    for name in ("r1", "r2", "r3"):
        await reg.create_site(m.Site(name, m.SiteKind.REGION))
    for ep in EPS.values():
        if ep.site in ("r1", "r2"):
            await reg.create_endpoint(m.Endpoint(ep.site, ep.name, ep.address, ep.asn, ep.role))
    await reg.create_endpoint(m.Endpoint("r3", "gw", "192.0.2.9", 65009))
    first = Planner(store)  # running while everything below changes
    await first.start()
    one = await reg.create_connection(_conn("one", "r1/gw", "r2/gw"))
    two = await reg.create_connection(_conn("two", "r1/gw", "r3/gw"))
    gone = await reg.delete_connection("two")  # r1 and r3 changed at this revision
    # Seen and recorded in etcd (the planner records changes in the background, many revisions at a time).
    assert await first.wait_for_revision(gone, 10, reconciled=True)
    want = {"r1": gone, "r2": one.version, "r3": gone}
    assert {s: first.site_revision.get(s, 0) for s in want} == want

    # Writes that leave every site's peerings as they were: a description, a site's labels.
    touched = await reg.update_connection(dataclasses.replace(one, description="now with a description", version=0),
                                          type_given=False)
    await reg.update_site("r2", labels={"tier": "gold"}, description="")
    assert await first.wait_for_revision(touched.version + 1, 10, reconciled=True)
    assert {s: first.site_revision.get(s, 0) for s in want} == want

    # A second coordinator, and the first one restarted, agree with the one that saw every change.
    second = Planner(store)
    await second.start()
    await first.stop()
    restarted = Planner(store)
    await restarted.start()
    for planner in (second, restarted):
        assert {s: planner.site_revision.get(s, 0) for s in want} == want, f"two was created at {two.version}"

    # A change of r2's peerings moves r2 (and r1: the same connection), on both, to the same revision.
    moved = await reg.update_connection(dataclasses.replace(touched, admin_state=m.AdminState.DOWN, version=0),
                                        type_given=False)
    for planner in (second, restarted):
        await await_for(lambda p=planner: p.site_revision.get("r2") == moved.version, 10, "r2's revision to move")
        assert planner.site_revision["r1"] == moved.version and planner.site_revision["r3"] == gone
    await second.stop()
    again = Planner(store)
    await again.start()
    assert {s: again.site_revision.get(s, 0) for s in want} == {"r1": moved.version, "r2": moved.version,
                                                               "r3": gone}
    await again.stop()
    await restarted.stop()
    await store.close()


def test_incremental_planning_equals_planning_every_site_whole() -> None:
    """The planner replans only the connections a change touches; after any sequence of endpoint and connection
    writes and deletes, every site's peerings are what planning the site whole gives."""
    import random
    from typing import cast

    from isthmus.coordinator import registry as r
    from isthmus.coordinator.planner import Planner
    from isthmus.coordinator.store import KV, Event, Store

    rng = random.Random(21)
    planner = Planner(cast(Store, None))  # apply() does no I/O
    sites = [f"s{i}" for i in range(6)]
    refs = [m.EndpointRef(s, n) for s in sites for n in ("gw", "dc")]
    revision = 0
    for _ in range(400):
        revision += 1
        kind = rng.random()
        if kind < 0.4:
            ref = rng.choice(refs)
            role = rng.choice([m.EndpointRole.LOCAL, m.EndpointRole.REMOTE])
            ep = _ep(ref.site, ref.name, f"192.0.2.{rng.randrange(1, 250)}", rng.randrange(64512, 64520), role)
            key, value = r.endpoint_key(ref.site, ref.name), r.encode(ep)
        else:
            a, b = rng.sample(refs, 2)
            conn = _conn(f"c{rng.randrange(12)}", f"{a.site}/{a.name}", f"{b.site}/{b.name}",
                         admin_state=rng.choice([m.AdminState.UP, m.AdminState.DOWN]))
            if conn.name in planner.connections:  # ends are fixed at creation: same ends, other parameters
                old = planner.connections[conn.name]
                conn = _conn(conn.name, f"{old.a.site}/{old.a.name}", f"{old.b.site}/{old.b.name}",
                             admin_state=conn.admin_state)
            key, value = r.connection_key(conn.name), r.encode(conn)
        deleted = rng.random() < 0.25
        kv = KV(key, b"" if deleted else value, revision, revision)
        planner.apply(revision, [Event(deleted, kv)])
        for site in sites:
            assert planner.peerings.get(site, {}) == planner._plan(site), (revision, site)


def test_a_change_of_many_sites_logs_one_line_naming_twenty_and_counting_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    """The operator guide's promise: the planner's line names at most 20 sites (a hub endpoint changed for a
    thousand sites is one readable line, not a thousand names)."""
    planner = Planner(cast(Store, None))
    hub = _ep("hub", "gw", "192.0.2.1", 65000)
    objects: list[tuple[str, m.Endpoint | m.Connection]] = [(r.endpoint_key("hub", "gw"), hub)]
    for i in range(25):
        objects.append((r.endpoint_key(f"s{i:02d}", "gw"), _ep(f"s{i:02d}", "gw", f"192.0.2.{10 + i}", 65100 + i)))
        objects.append((r.connection_key(f"hub-s{i:02d}"), _conn(f"hub-s{i:02d}", "hub/gw", f"s{i:02d}/gw")))
    events = [Event(False, KV(key, r.encode(obj), 5, 5)) for key, obj in objects]
    with caplog.at_level(logging.INFO, logger="isthmus.coordinator.planner"):
        changed = planner.apply(5, events)
    assert len(changed) == 26
    [line] = [rec.getMessage() for rec in caplog.records if "changed the desired peerings" in rec.getMessage()]
    named = line.split(" of ", 1)[1].rsplit(" and ", 1)[0].split(", ")
    assert line.endswith(" and 6 more") and len(named) == 20 and named == sorted(changed)[:20], line
