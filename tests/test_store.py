"""The etcd store against a real etcd: prefix reads in pages stay one consistent snapshot."""

from __future__ import annotations

from isthmus.coordinator.registry import ROOT
from isthmus.coordinator.store import Put, Store


async def test_a_prefix_read_in_pages_is_one_snapshot(etcd: str) -> None:
    store = Store([etcd])
    await store.connect()
    try:
        prefix = ROOT + "paging/"
        await store.txn([], [Put(f"{prefix}{i:03d}", str(i).encode()) for i in range(23)])
        kvs, rev = await store.get_prefix(prefix, page=5)
        assert [kv.key for kv in kvs] == [f"{prefix}{i:03d}" for i in range(23)]
        # Keys written after the first read are not in a read at its revision, however it is paged.
        await store.put(f"{prefix}000a", b"late")
        again, rev_again = await store.get_prefix(prefix, revision=rev, page=4)
        assert again == kvs and rev_again == rev
        now, _ = await store.get_prefix(prefix, page=7)
        assert len(now) == 24 and now[1].key == f"{prefix}000a"
    finally:
        await store.close()
