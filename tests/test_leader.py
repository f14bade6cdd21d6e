"""Leader election and the leader's garbage collection, against a real etcd."""

from __future__ import annotations

from conftest import await_for
from isthmus.coordinator import border as br
from isthmus.coordinator import registry as r
from isthmus.coordinator.leader import LEADER, Membership, collect_garbage, list_coordinators
from isthmus.coordinator.registry import Registry
from isthmus.coordinator.store import Put, Store
from isthmus.core import model as m


async def test_one_leader_and_a_stopped_leader_is_replaced_at_once(etcd: str) -> None:
    store = Store([etcd])
    await store.connect()
    a = Membership(store, "127.0.0.1:1", ttl=5)
    b = Membership(store, "127.0.0.1:2", ttl=5)
    await a.start()
    await b.start()
    await await_for(lambda: a.is_leader.is_set() or b.is_leader.is_set(), 10, "a leader")
    assert a.is_leader.is_set() != b.is_leader.is_set()
    first, second = (a, b) if a.is_leader.is_set() else (b, a)
    records, leader = await list_coordinators(store)
    assert leader == first.id and {c.address for c in records} == {"127.0.0.1:1", "127.0.0.1:2"}

    await first.stop()  # revokes its lease: the other takes over without waiting for the TTL
    await await_for(lambda: second.is_leader.is_set(), 3, "the other coordinator to take over")
    kv = await store.get(LEADER)
    assert kv is not None and kv.value.decode() == second.id
    await second.stop()
    assert await store.get(LEADER) is None
    await store.close()


async def test_garbage_collection_removes_only_orphans(etcd: str) -> None:
    store = Store([etcd])
    await store.connect()
    reg = Registry(store)
    for name, addr in (("r1", "192.0.2.1"), ("r2", "192.0.2.2")):
        await reg.create_site(m.Site(name, m.SiteKind.REGION))
        await reg.create_endpoint(m.Endpoint(name, "gw", addr, 65000 + int(name[1])))
    await reg.create_connection(m.Connection("live", m.EndpointRef("r1", "gw"), m.EndpointRef("r2", "gw"),
                                             m.ConnectionType.VXLAN, vxlan=m.VxlanParams(vni=10)))
    # What a hand edit of etcd could leave behind: index and reference keys of a connection that is gone.
    await store.txn([], [Put(r.vni_key(11), b"ghost"), Put(r.endpoint_refs(m.EndpointRef("r1", "gw")) + "ghost", b""),
                         Put(r.site_refs("r1") + "gone-cell", b"")])
    before, _ = await store.get_prefix(r.ROOT)
    await collect_garbage(store)
    after, _ = await store.get_prefix(r.ROOT)
    removed = {kv.key for kv in before} - {kv.key for kv in after}
    assert removed == {r.vni_key(11), r.endpoint_refs(m.EndpointRef("r1", "gw")) + "ghost",
                       r.site_refs("r1") + "gone-cell"}
    # The live connection's keys are intact: its endpoint still cannot be deleted.
    assert (await store.get(r.vni_key(10))) is not None
    await store.close()


async def test_garbage_collection_keeps_the_border_gateways_bindings(etcd: str) -> None:
    """A segmentation id bound to a network, and a gateway device's name, are not connection indexes: they stay
    while a connection uses the id and while the device exists, and go (as orphans) when nothing does."""
    store = Store([etcd])
    await store.connect()
    await store.txn([], [
        Put(r.segment_key(100), b"net-blue"), Put(br.segment_refs(100) + "conn-1", b""),  # in use
        Put(r.segment_key(200), b"net-red"),  # nothing uses it any more
        Put(br.DEVICES + "dev-1", b"{}"), Put(br.device_name_key("r1", "gw"), b"dev-1"),  # the device exists
        Put(br.device_name_key("r1", "old"), b"dev-gone"),  # its device is gone
    ])
    await collect_garbage(store)
    assert (await store.get(r.segment_key(100))) is not None
    assert (await store.get(br.device_name_key("r1", "gw"))) is not None
    assert (await store.get(r.segment_key(200))) is None
    assert (await store.get(br.device_name_key("r1", "old"))) is None
    await store.close()
