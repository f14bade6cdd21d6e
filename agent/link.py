"""The agent's link to the coordinators: one stream at a time, failover and backoff with jitter.

Desired state received on the stream is persisted before the reconciler sees
it. While no coordinator answers, the agent keeps the last desired state and
keeps reconciling it: the dataplane never changes because the link is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

import isthmus
from isthmus import convert
from isthmus.agent.reconciler import Reconciler
from isthmus.agent.state import DesiredState, StateFile
from isthmus.v1 import agent_pb2 as apb
from isthmus.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnection is ours (failover + jittered backoff), not the channel's.
    ("grpc.enable_retries", 0),
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


def backoff(attempt: int, base: float = 0.2, cap: float = 15.0) -> float:
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
        self._last_logged = ("", 0.0)

    async def run(self) -> None:
        attempt = 0
        index = 0
        while True:
            self.current = self.coordinators[index]
            got_snapshot = False
            try:
                got_snapshot = await self._session(self.current)
                self.last_error = "stream ended by the coordinator"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except OSError as exc:
                self.last_error = str(exc)
            finally:
                self.connected = False
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
        """One stream; returns whether a snapshot was received before it ended."""
        creds = self.tls.credentials()
        channel = (grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS) if creds
                   else grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS))
        outbox: asyncio.Queue[apb.AgentMessage] = asyncio.Queue()
        outbox.put_nowait(apb.AgentMessage(hello=apb.Hello(
            site=self.site,
            agent_version=isthmus.__version__,
            applied_revision=self.reconciler.applied_revision,
            driver=self.driver_names,
            host=socket.gethostname(),
            instance_id=self.instance_id,
        )))

        async def outgoing() -> AsyncIterator[apb.AgentMessage]:
            while True:
                yield await outbox.get()

        got_snapshot = False
        sender: asyncio.Task[None] | None = None
        async with channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            call = stub.Connect(outgoing())
            try:
                async for msg in call:
                    kind = msg.WhichOneof("msg")
                    if kind == "snapshot":
                        self._take(DesiredState(
                            self.site,
                            msg.snapshot.revision,
                            {p.connection: convert.peering_from_pb(p) for p in msg.snapshot.peerings},
                        ))
                        if not got_snapshot:
                            got_snapshot = self.connected = True
                            self.sessions += 1
                            self.last_error = ""
                            log.info("site %s: connected to coordinator %s", self.site, address)
                            sender = asyncio.create_task(self._send_reports(outbox), name="reports")
                    elif kind == "delta" and got_snapshot:
                        peerings = dict(self.reconciler.desired.peerings)
                        for name in msg.delta.removes:
                            peerings.pop(name, None)
                        for p in msg.delta.upserts:
                            peerings[p.connection] = convert.peering_from_pb(p)
                        self._take(DesiredState(self.site, msg.delta.revision, peerings))
            finally:
                if sender is not None:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                call.cancel()
        return got_snapshot

    def _take(self, state: DesiredState) -> None:
        """Persist, then hand to the reconciler: a crash after this line re-applies from disk."""
        if state == self.reconciler.desired:
            return
        self.state_file.save(state)
        self.reconciler.set_desired(state)

    async def _send_reports(self, outbox: asyncio.Queue[apb.AgentMessage]) -> None:
        """Report on connect, then on every change; a heartbeat when nothing changed for a while."""
        seq, report = self.reconciler.report()
        while True:
            outbox.put_nowait(apb.AgentMessage(observed=apb.ObservedReport(
                revision=report.applied_revision,
                peerings=[convert.observed_to_pb(o) for o in report.observed.values()],
            )))
            outbox.put_nowait(apb.AgentMessage(ack=apb.Ack(revision=report.applied_revision)))
            while True:
                try:
                    seq, report = await asyncio.wait_for(self.reconciler.wait_report(seq), self.heartbeat)
                    break
                except TimeoutError:
                    outbox.put_nowait(apb.AgentMessage(heartbeat=apb.Heartbeat()))
