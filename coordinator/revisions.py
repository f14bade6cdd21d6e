"""Each site's desired revision, kept in etcd so that every coordinator, and every restart, shows the same one.

A site's desired revision is the etcd revision that last changed its desired peerings. A planner following
the watch knows it exactly; one that has just listed the configuration does not (the change may be anywhere in
the history). So the first planner to see a change records it, with a digest of the peerings it produced,
under ``desired/{site}``; a planner that lists the configuration later takes the recorded revision when its
peerings have the recorded digest. A revision therefore moves only when the site's desired peerings change,
never because a coordinator restarted, nor because an object changed in a way that leaves them as they were
(a connection's description, a rewrite with the same content, a delete of something the site did not use).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from isthmus.coordinator.registry import desired_key
from isthmus.coordinator.store import KV, Put, Store, absent, mod_is
from isthmus.core import model as m
from isthmus.core.errors import IsthmusError

log = logging.getLogger(__name__)

BATCH = 60  # sites read or written per etcd transaction (etcd allows 128 operations)


@dataclass(frozen=True)
class Recorded:
    digest: str
    revision: int
    mod_revision: int  # of the key: what a write compares


def _recorded(kv: KV | None) -> Recorded | None:
    if kv is None:
        return None
    try:
        d = json.loads(kv.value)
        return Recorded(str(d["digest"]), int(d["revision"]), kv.mod_revision)
    except (ValueError, KeyError, TypeError):
        return None  # unreadable (a hand edit): recorded again


class DesiredRevisions:
    """Records (and reads back) the revision at which each site's desired peerings last changed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: set[str] = set()  # sites whose record could not be settled yet (etcd unavailable)
        # Each site's peerings as last digested, with their texts: a change re-encodes only the peerings it
        # changed (a site of a full mesh has hundreds; encoding them all for each change took half the CPU).
        self._texts: dict[str, dict[str, tuple[m.DesiredPeering, str]]] = {}

    def digest(self, site: str, peerings: Mapping[str, m.DesiredPeering]) -> str:
        """``m.peerings_digest(peerings)``, re-encoding only the peerings changed since the site's last digest."""
        known = self._texts.get(site, {})
        texts: dict[str, tuple[m.DesiredPeering, str]] = {}
        for name in sorted(peerings):
            p = peerings[name]
            held = known.get(name)
            texts[name] = held if held is not None and (held[0] is p or held[0] == p) else (p, m.peering_text(p))
        if texts:
            self._texts[site] = texts
        else:
            self._texts.pop(site, None)
        return m.digest_of(text for _, text in texts.values())

    async def settle(self, sites: set[str], peerings: Mapping[str, Mapping[str, m.DesiredPeering]],
                     revisions: dict[str, int], listed_at: int = 0) -> None:
        """Bring ``revisions`` (the planner's, for ``sites``) and etcd's records into agreement.

        ``revisions[site]`` is the planner's own idea: the revision of the change it saw, or after a listing
        (``listed_at``: the revision of the listing) an estimate. A record with the same digest wins: that is
        the change the peerings come from. A record of other peerings at a revision not older than the
        planner's comes from a planner that is ahead; nothing is written then. Otherwise the planner's
        revision is recorded (after a listing, no older than the listing when a record of other peerings is
        older). When etcd cannot be read or written, the sites stay pending and are settled with the next call.
        """
        todo = sorted(sites | self.pending)
        self.pending = set()
        for _ in range(3):
            lost: set[str] = set()
            for start in range(0, len(todo), BATCH):
                chunk = todo[start:start + BATCH]
                try:
                    lost |= await self._settle(chunk, peerings, revisions, listed_at)
                except IsthmusError as exc:
                    log.warning("cannot record the desired revisions of %d sites (%s); later", len(chunk), exc)
                    self.pending.update(chunk)
            if not lost:
                return
            todo = sorted(lost)  # another planner recorded some of them meanwhile: read those again
        self.pending.update(todo)

    async def _settle(self, sites: list[str], peerings: Mapping[str, Mapping[str, m.DesiredPeering]],
                      revisions: dict[str, int], listed_at: int) -> set[str]:
        """One batch; returns the sites whose record changed under it."""
        records = [_recorded(kv) for kv in await self.store.get_many([desired_key(s) for s in sites])]
        writes: list[tuple[str, Recorded | None, str, int]] = []
        for site, rec in zip(sites, records, strict=True):
            planned = peerings.get(site, {})
            digest = self.digest(site, planned)
            mine = revisions.get(site, 0)
            if rec is not None and rec.digest == digest:
                revisions[site] = rec.revision
                continue
            if rec is None and not planned:
                continue  # never had peerings: nothing to record, its revision stays 0
            if rec is not None and rec.revision >= mine and listed_at > mine:
                mine = revisions[site] = listed_at  # changed somewhere before the listing, after the record
            if rec is not None and rec.revision >= mine:
                continue  # recorded by a planner that has seen a later change
            writes.append((site, rec, digest, mine))
        if not writes:
            return set()
        ops = [Put(desired_key(site), json.dumps({"digest": digest, "revision": rev}).encode())
               for site, _, digest, rev in writes]
        compares = [mod_is(desired_key(site), rec.mod_revision) if rec else absent(desired_key(site))
                    for site, rec, _, _ in writes]
        ok, _ = await self.store.txn(compares, ops)
        if not ok:
            return {site for site, _, _, _ in writes}
        for site, _, _, rev in writes:
            log.debug("desired revision of %s recorded: %d", site, rev)
        return set()
