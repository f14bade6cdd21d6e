"""The etcd store against a real etcd: prefix reads in pages stay one consistent snapshot; etcd's errors and
unreachable members become the error tree. (A three-member cluster losing quorum or its leader:
test_etcd_faults.py.)"""

from __future__ import annotations

import time

import pytest

from isthmus.coordinator.etcd import free_port
from isthmus.coordinator.registry import ROOT
from isthmus.coordinator.store import QUORUM_PATIENCE, Put, Store
from isthmus.core.errors import InvalidArgument, Unavailable


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


async def test_etcd_errors_come_out_as_the_error_tree_with_what_etcd_said(etcd: str) -> None:
    """Never a gRPC error: requests etcd refuses are INVALID_ARGUMENT naming etcd's reason."""
    store = Store([etcd])
    await store.connect()
    try:
        prefix = ROOT + "refused/"
        with pytest.raises(InvalidArgument, match="etcd refused the write: .*too many operations"):
            await store.txn([], [Put(f"{prefix}{i}", b"") for i in range(200)])
        with pytest.raises(InvalidArgument, match="etcd refused the write: .*(too large|larger than max)"):
            await store.put(prefix + "big", b"x" * 3_000_000)
        assert await store.count(prefix) == 0
    finally:
        await store.close()


async def test_unreachable_members_answer_unavailable_at_once_naming_each() -> None:
    endpoints = [f"127.0.0.1:{free_port()}" for _ in range(3)]  # nothing listens there
    store = Store(endpoints)
    started = time.monotonic()
    with pytest.raises(Unavailable) as exc:
        await store.connect()
    took = time.monotonic() - started
    assert str(exc.value).startswith("no etcd member can be reached (" + "; ".join(
        f"{e}: unreachable" for e in endpoints) + "); gave up after ")
    assert took < QUORUM_PATIENCE + 1.0, took  # fewer than a majority answer: no point waiting out the bound
    await store.close()
    with pytest.raises(Unavailable, match="closed"):
        await store.get(ROOT + "x")
