"""The agent's link to the coordinators: one stream at a time, failover and backoff with jitter.

Desired state received on the stream is persisted before the reconciler sees
it; a snapshot or delta that comes in pieces is taken only once its last piece
arrived, so a stream that breaks midway changes nothing. While no coordinator
answers, the agent keeps the last desired state and keeps reconciling it: the
dataplane never changes because the link is down.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

import isthmus
from isthmus.agent import remote
from isthmus.agent.reconciler import Reconciler
from isthmus.agent.state import DesiredState, StateFile
from isthmus.core import model as m
from isthmus.core.wire import network as wire
from isthmus.core.wire import pieces
from isthmus.v1 import agent_pb2 as apb
from isthmus.v1 import agent_pb2_grpc
from isthmus.v1 import types_pb2 as pb

log = logging.getLogger(__name__)

JOURNAL_CHUNK = 100  # journal entries per LocalReport

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnection is ours (failover + jittered backoff), not the channel's.
    ("grpc.enable_retries", 0),
    # What the coordinator sends fits: a large desired state comes in pieces (Hello.pieces).
    ("grpc.max_receive_message_length", pieces.MESSAGE_LIMIT),
]


@dataclass(frozen=True)
class TlsFiles:
    ca: str = ""
    cert: str = ""
    key: str = ""

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.ca:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca).read_bytes(),
            private_key=Path(self.key).read_bytes() if self.key else None,
            certificate_chain=Path(self.cert).read_bytes() if self.cert else None,
        )


def open_channel(address: str, tls: TlsFiles) -> grpc.aio.Channel:
    """A channel to a coordinator with the agent's keepalive settings, TLS when ``tls`` names a CA."""
    creds = tls.credentials()
    options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
    if creds and address.startswith("unix:"):
        # A unix socket has no host name; the coordinator's certificate names localhost.
        options.append(("grpc.ssl_target_name_override", "localhost"))
    return (grpc.aio.secure_channel(address, creds, options=options) if creds
            else grpc.aio.insecure_channel(address, options=options))


def backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter: uniform in [base/2, min(cap, base * 2**attempt)]."""
    return random.uniform(base / 2, min(cap, base * 2 ** min(attempt, 16)))


class CoordinatorLink:
    def __init__(
        self,
        site: str,
        coordinators: Sequence[str],
        reconciler: Reconciler,
        state_file: StateFile,
        driver_names: str,
        tls: TlsFiles | None = None,
        heartbeat: float = 5.0,
    ) -> None:
        self.site = site
        self.coordinators = list(coordinators)
        self.reconciler = reconciler
        self.state_file = state_file
        self.driver_names = driver_names
        self.tls = tls or TlsFiles()
        self.heartbeat = heartbeat
        self.instance_id = uuid.uuid4().hex
        self.connected = False
        self.current = self.coordinators[0]
        self.last_error = ""
        self.sessions = 0
        self._synced = False
        self.link_down_since_ms = int(time.time() * 1000)
        self._last_logged = ("", 0.0)
        self._outbox: asyncio.Queue[apb.AgentMessage] = asyncio.Queue()
        self._journal_after: int | None = None  # this stream: the journal seq reported up to (None: not asked yet)
        self.remote = remote.Remote(site)  # log pages asked for by the coordinator, the region's health

    async def run(self) -> None:
        attempt = 0
        index = 0
        while True:
            self.current = self.coordinators[index]
            self._synced = False
            try:
                await self._session(self.current)
                self.last_error = "stream ended by the coordinator"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except (OSError, StaleCoordinator, LinkClosed, pieces.PieceError) as exc:
                self.last_error = str(exc)
            except Exception as exc:  # a bug here must not end the link for good
                log.exception("site %s: link to %s failed unexpectedly", self.site, self.current)
                self.last_error = repr(exc)
            finally:
                self.connected = False
            got_snapshot = self._synced
            self._log_down(got_snapshot)
            if got_snapshot:
                attempt = 0  # it worked for a while: the next coordinator at once, then back off
                index = (index + 1) % len(self.coordinators)
                continue
            index = (index + 1) % len(self.coordinators)
            delay = backoff(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _log_down(self, was_up: bool) -> None:
        """Say when the link goes down; while it stays down, repeat a failure only once a minute."""
        now = time.monotonic()
        if was_up or self.last_error != self._last_logged[0] or now - self._last_logged[1] > 60:
            log.log(logging.INFO if was_up else logging.WARNING, "site %s: link to coordinator %s down: %s "
                    "(peerings stay as they are; retrying with backoff)", self.site, self.current, self.last_error)
            self._last_logged = (self.last_error, now)
        else:
            log.debug("site %s: coordinator %s still unreachable: %s", self.site, self.current, self.last_error)

    async def _session(self, address: str) -> bool:
        """One stream; returns whether the desired state was received before it ended."""
        channel = open_channel(address, self.tls)
        held = self.reconciler.desired
        outbox: asyncio.Queue[apb.AgentMessage] = asyncio.Queue()
        self._outbox = outbox
        outbox.put_nowait(apb.AgentMessage(hello=apb.Hello(
            site=self.site,
            agent_version=isthmus.__version__,
            applied_revision=self.reconciler.applied_revision,
            driver=self.driver_names,
            host=socket.gethostname(),
            instance_id=self.instance_id,
            desired_revision=held.revision,
            desired_digest=m.peerings_digest(held.peerings) if held.revision else "",
            journal_limit=self.reconciler.journal.limit,
            pieces=True,
        )))
        assembler = pieces.Assembler()
        self._journal_after = None
        self._observed_changes = False  # the coordinator takes ObservedReports of changes (EventsFrom says so)
        synced = False
        tasks: list[asyncio.Task[None]] = []
        async with channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            call = stub.Connect()

            async def send() -> None:
                while True:
                    await call.write(await outbox.get())

            tasks.append(asyncio.create_task(send(), name="send"))
            try:
                while True:
                    msg = await call.read()
                    if msg is grpc.aio.EOF:
                        code = await call.code()
                        if code != grpc.StatusCode.OK:
                            raise LinkClosed(f"{code.name}: {await call.details()}")
                        break
                    whole = assembler.add(msg)
                    if whole is None:
                        continue  # more pieces follow
                    self._receive(whole)
                    if not synced:
                        synced = self._synced = self.connected = True
                        self.sessions += 1
                        self.last_error = ""
                        self.link_down_since_ms = 0
                        self.reconciler.note("link", f"connected to coordinator {address} "
                                             f"(desired rev {self.reconciler.desired.revision})")
                        tasks += [asyncio.create_task(self._send_reports(outbox), name="reports"),
                                  asyncio.create_task(self._send_local(outbox), name="local-reports"),
                                  asyncio.create_task(self.remote.send_health(outbox), name="health")]
            finally:
                call.cancel()  # first: a write blocked on the dead stream returns at once
                for t in tasks:
                    t.cancel()
                self.remote.cancel()
                await asyncio.wait(tasks, timeout=2)
                if synced:
                    self.link_down_since_ms = int(time.time() * 1000)
                    self.reconciler.note("link", f"lost coordinator {address}; keeping desired rev "
                                         f"{self.reconciler.desired.revision} and every peering as it is",
                                         level="warning")
        return synced

    def _receive(self, msg: apb.CoordinatorMessage) -> None:
        """Take a whole snapshot or delta; refuse one older than what the agent holds (stale coordinator)."""
        held = self.reconciler.desired
        kind = msg.WhichOneof("msg")
        if kind == "snapshot":
            revision = msg.snapshot.revision
            peerings = {p.connection: wire.peering_from_pb(p) for p in msg.snapshot.peerings}
        elif kind == "delta":
            revision = msg.delta.revision
            if msg.delta.base_revision != held.revision:
                raise StaleCoordinator(f"delta from rev {msg.delta.base_revision} does not apply to the held "
                                       f"rev {held.revision}")
            peerings = dict(held.peerings)
            for name in msg.delta.removes:
                peerings.pop(name, None)
            for p in msg.delta.upserts:
                peerings[p.connection] = wire.peering_from_pb(p)
        elif kind == "events_from":
            self._observed_changes = msg.events_from.observed_changes
            self._events_from(msg.events_from.seq)
            return
        elif kind == "log_request":
            self.remote.answer(msg.log_request, self._outbox)
            return
        else:
            return
        if revision < held.revision:
            # A coordinator that has not caught up with etcd must never roll the site back.
            raise StaleCoordinator(f"the coordinator sent rev {revision}, older than the held rev {held.revision}; "
                                   "ignored (if etcd was restored from an older backup, remove "
                                   f"{self.state_file.path} to accept it)")
        self._take(DesiredState(self.site, revision, peerings))

    def _events_from(self, seq: int) -> None:
        """The coordinators hold the site's events up to ``seq``: report every journal entry after it."""
        if self.reconciler.journal.continue_after(seq):
            self.reconciler.note("agent", f"journal numbered on after seq {seq}: the coordinators hold the site's "
                                 "events up to it from an earlier journal (state directory lost or restored)",
                                 level="warning")
        self._journal_after = seq
        self.reconciler.local_changed()

    def _take(self, state: DesiredState) -> None:
        """Persist, then hand to the reconciler: a crash after this line re-applies from disk."""
        if state == self.reconciler.desired:
            return
        before = self.reconciler.desired
        self.state_file.save(state)
        self.reconciler.set_desired(state)
        added = state.peerings.keys() - before.peerings.keys()
        removed = before.peerings.keys() - state.peerings.keys()
        changed = {n for n in state.peerings.keys() & before.peerings.keys()
                   if (new := state.peerings[n]) is not (old := before.peerings[n]) and new != old}
        if added or removed or changed:
            self.reconciler.note("desired", f"rev {state.revision}: {len(state.peerings)} peerings "
                                 f"(+{len(added)} -{len(removed)} ~{len(changed)})")

    @property
    def partitioned(self) -> bool:
        return not self.connected

    async def _send_local(self, outbox: asyncio.Queue[apb.AgentMessage]) -> None:
        """Overrides on connect and on every change; the journal once the coordinator said where its history ends.

        Then every entry after that, oldest first and in chunks (a long cut-off
        loses nothing the journal still holds), and new entries as they come.
        """
        seq = self.reconciler.local_seq
        while True:
            overrides = [wire.override_to_pb(o) for o in self.reconciler.overrides.items.values()]
            after = self._journal_after
            entries = self.reconciler.journal.since(after) if after is not None else []
            for start in range(0, max(1, len(entries)), JOURNAL_CHUNK):
                outbox.put_nowait(apb.AgentMessage(local=apb.LocalReport(
                    overrides=overrides,
                    journal=[wire.journal_to_pb(e) for e in entries[start:start + JOURNAL_CHUNK]],
                    partitioned=False,
                )))
            if entries:
                self._journal_after = entries[-1].seq
            seq = await self.reconciler.wait_local(seq)

    async def _send_reports(self, outbox: asyncio.Queue[apb.AgentMessage]) -> None:
        """Report on connect, then on every change; a heartbeat when nothing changed for a while."""
        seq, report = self.reconciler.report()
        sent: dict[str, tuple[m.ObservedPeering, pb.ObservedPeering]] = {}  # by connection: what the coordinator has
        first = True
        while True:
            # The observed peerings go only when one of them changed (a new revision applied with the peerings as
            # they were is an Ack alone): all of them in the stream's first report and to a coordinator that did
            # not say it takes changes, else only those changed and the names of those gone.
            now: dict[str, tuple[m.ObservedPeering, pb.ObservedPeering]] = {}
            changed = []
            for name, o in report.observed.items():
                last = sent.get(name)
                if last is None or (last[0] is not o and last[0] != o):
                    last = (o, wire.observed_to_pb(o))
                    changed.append(last[1])
                now[name] = last
            gone = [name for name in sent if name not in now]
            if first or changed or gone:
                if first or not self._observed_changes:
                    observed = apb.ObservedReport(revision=report.applied_revision,
                                                  peerings=[q for _, q in now.values()])
                else:
                    observed = apb.ObservedReport(revision=report.applied_revision, peerings=changed, gone=gone,
                                                  changes=True)
                outbox.put_nowait(apb.AgentMessage(observed=observed))
            first = False
            sent = now
            outbox.put_nowait(apb.AgentMessage(ack=apb.Ack(revision=report.applied_revision)))
            while True:
                try:
                    seq, report = await asyncio.wait_for(self.reconciler.wait_report(seq), self.heartbeat)
                    break
                except TimeoutError:
                    outbox.put_nowait(apb.AgentMessage(heartbeat=apb.Heartbeat()))


class LinkClosed(Exception):
    """The coordinator ended the stream with an error status."""


class StaleCoordinator(Exception):
    """The coordinator's view is older than the agent's: the stream is dropped and another one tried."""
