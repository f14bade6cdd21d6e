"""The leader's expansion of topology policies into connections, as sites join, leave or change labels.

Level-based: each pass reads the whole configuration at one revision, expands every policy
(``isthmus.core.topology.expand_all``) and makes the stored policy connections match, deleting first (a
relabelled site frees its pairs and VNIs), then updating, then creating; then it waits for the next change
under ``config/``. Its writes go through the registry like any API write (same validation, same transactions),
as the owner of the connections: an explicit connection is never touched, and wins its endpoint pair.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable

from isthmus.coordinator import registry as r
from isthmus.coordinator.policies import POLICIES, expansions, read_config
from isthmus.coordinator.registry import Registry
from isthmus.coordinator.store import Store
from isthmus.core import model as m
from isthmus.core.errors import IsthmusError, Unavailable

log = logging.getLogger(__name__)

SETTLE = 0.2  # seconds of quiet after a change before the next pass, so that a burst of writes makes one pass


@dataclasses.dataclass
class PassResult:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    revision: int = 0
    owns: bool = True  # whether any policy, or any connection a policy made, was there to expand


async def expand_once(store: Store, registry: Registry) -> PassResult:
    """One pass: make the stored policy connections what the policies expand to now."""
    config = await read_config(store)
    out = PassResult(revision=config.revision)
    wanted: dict[str, m.Connection] = {}
    for expansion in expansions(config).values():
        wanted.update(expansion.connections)
    stored = {c.name: c for c in config.connections if c.policy}
    out.owns = bool(config.policies or stored)
    for name, conn in sorted(stored.items()):
        if name not in wanted or wanted[name].policy != conn.policy or _fixed_part(wanted[name]) != _fixed_part(conn):
            await _write(out, "deleted", f"delete {name}", registry.delete_connection(name, conn.version, conn.policy))
    for name, conn in sorted(wanted.items()):
        old = stored.get(name)
        if old is not None and _fixed_part(old) == _fixed_part(conn) and dataclasses.replace(old, version=0) != conn:
            await _write(out, "updated", f"update {name}", registry.update_connection(
                dataclasses.replace(conn, version=old.version), type_given=True, owner=conn.policy))
    for name, conn in sorted(wanted.items()):
        old = stored.get(name)
        if old is None or _fixed_part(old) != _fixed_part(conn):
            await _write(out, "created", f"create {name}", registry.create_connection(conn))
    if out.created or out.updated or out.deleted or out.failed:
        log.info("topology policies at rev %d: created %d, updated %d, deleted %d connections, %d writes failed",
                 config.revision, out.created, out.updated, out.deleted, out.failed)
    return out


def _fixed_part(conn: m.Connection) -> tuple[object, ...]:
    # What an update cannot change: a connection whose ends or type change is deleted and created again.
    return (conn.a, conn.b, conn.type, conn.policy)


async def _write(out: PassResult, counter: str, what: str, write: Awaitable[object]) -> None:
    try:
        await write
    except Unavailable:
        raise
    except IsthmusError as exc:
        # Something changed since the read (a race with a hand-written connection, a VNI taken meanwhile):
        # the next pass, after that change, reads again.
        out.failed += 1
        log.warning("topology policies: cannot %s: %s", what, exc)
        return
    setattr(out, counter, getattr(out, counter) + 1)


async def expand_policies(store: Store) -> None:
    """The leader job: a pass, then another after each change under ``config/``, until cancelled.

    While there is no policy and no connection a policy made, a change only counts the policies (one small
    read) instead of reading the whole configuration: in a cloud without policies a pass per burst of writes
    read every connection, a fifth of the coordinator's CPU while a mesh of 100 sites was being built.
    """
    registry = Registry(store)
    owns = True  # the first pass of a leadership reads everything: a former leader may have left connections
    while True:
        if not owns:
            policies, revision = await store.get_prefix(POLICIES)
            if not policies:
                await _wait_for_change(store, revision)
                continue
        result = await expand_once(store, registry)
        owns = result.owns
        await _wait_for_change(store, result.revision)


async def _wait_for_change(store: Store, revision: int) -> None:
    async for _ in store.watch_prefix(r.CONFIG, revision + 1):
        break
    await asyncio.sleep(SETTLE)
