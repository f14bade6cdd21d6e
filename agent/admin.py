"""The agent's local admin socket: gRPC over a unix socket, served whether or not a coordinator answers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from isthmus.agent.link import CoordinatorLink
from isthmus.agent.reconciler import Reconciler
from isthmus.core import model as m
from isthmus.core.edge import grpc_errors
from isthmus.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from isthmus.core.wire import network as wire
from isthmus.core.wire import pieces
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc
from isthmus.v1 import logs_pb2 as lpb
from isthmus.v1 import types_pb2 as pb

log = logging.getLogger(__name__)


class AgentAdmin(admin_pb2_grpc.AgentAdminServicer):
    def __init__(self, site: str, reconciler: Reconciler, link: CoordinatorLink, driver: str, version: str,
                 sync: Any = None) -> None:
        self.sync = sync  # the SyncWorker, when the agent runs one
        self.site = site
        self.reconciler = reconciler
        self.link = link
        self.driver = driver
        self.version = version
        self.started_ms = int(time.time() * 1000)

    async def Status(self, request: adm.AgentStatusRequest, context: object) -> adm.AgentStatus:  # noqa: N802
        errors = [e for e in (self.link.last_error if not self.link.connected else "", self.reconciler.last_error) if e]
        return adm.AgentStatus(
            partitioned=self.link.partitioned,
            link_down_since_unix_ms=self.link.link_down_since_ms,
            overrides=len(self.reconciler.overrides.items),
            site=self.site,
            connected=self.link.connected,
            coordinator=self.link.current,
            desired_revision=self.reconciler.desired.revision,
            applied_revision=self.reconciler.applied_revision,
            driver=self.driver,
            agent_version=self.version,
            last_error="; ".join(errors),
            started_unix_ms=self.started_ms,
            **self._sync_status(),
        )

    def _sync_status(self) -> dict[str, Any]:
        if self.sync is None:
            return {}
        states = collections.Counter(st.state.value for st in self.sync.statuses.values())
        return {"sync_enabled": True, "sync_connected": self.sync.connected, "sync_region": self.sync.config.region,
                "sync_states": dict(states)}

    @grpc_errors
    async def ListPeerings(  # noqa: N802
        self, request: adm.ListPeeringsRequest, context: object
    ) -> adm.ListPeeringsResponse:
        """The rows after ``page_token``, in name order, until about PAGE_BYTES (a large desired state takes
        several pages)."""
        after = pieces.token_key(request.page_token)
        effective = self.reconciler.overrides.effective(self.reconciler.desired.peerings)
        observed = self.reconciler.observed
        overrides = self.reconciler.overrides.items

        def rows() -> Iterator[tuple[str, adm.LocalPeering]]:
            for name in sorted(n for n in set(effective) | set(observed) if n > after):
                lp = adm.LocalPeering()
                if name in effective:
                    lp.desired.CopyFrom(wire.peering_to_pb(effective[name]))
                if name in observed:
                    lp.observed.CopyFrom(wire.observed_to_pb(observed[name]))
                if name in overrides:
                    lp.override.CopyFrom(wire.override_to_pb(overrides[name]))
                yield name, lp

        taken, more = pieces.fit(rows(), lambda row: row[1].ByteSize(), pieces.PAGE_BYTES)
        out = adm.ListPeeringsResponse(revision=self.reconciler.desired.revision, peerings=[lp for _, lp in taken])
        if more:
            out.next_page_token = pieces.page_token(taken[-1][0])
        return out

    async def Resync(self, request: adm.ResyncRequest, context: object) -> adm.ResyncResponse:  # noqa: N802
        log.info("site %s: resync requested on the admin socket", self.site)
        await self.reconciler.reconcile_once()
        return adm.ResyncResponse(
            applied_revision=self.reconciler.applied_revision, peerings=len(self.reconciler.observed)
        )


    # ------------------------------------------------------------ local maintenance

    @grpc_errors
    async def DisablePeering(self, request: adm.DisablePeeringRequest, context: object) -> pb.Override:  # noqa: N802
        o = self.reconciler.overrides.disable(request.connection, self.reconciler.desired.peerings,
                                               request.ttl_seconds, request.reason)
        self.reconciler.overrides_changed(_describe("disabled locally", o), o.connection)
        return wire.override_to_pb(o)

    @grpc_errors
    async def EnablePeering(  # noqa: N802
        self, request: adm.EnablePeeringRequest, context: object
    ) -> adm.RemoveOverrideResponse:
        o = self.reconciler.overrides.enable(request.connection)
        self.reconciler.overrides_changed("enabled again locally (disable override removed)", o.connection)
        return adm.RemoveOverrideResponse(removed=wire.override_to_pb(o))

    @grpc_errors
    async def AddLocalPeering(self, request: adm.AddLocalPeeringRequest, context: object) -> pb.Override:  # noqa: N802
        if not request.HasField("peering"):
            raise InvalidArgument("is required", "peering")
        peering = wire.peering_from_pb(request.peering)
        o = self.reconciler.overrides.add(peering, self.reconciler.desired.peerings, request.ttl_seconds,
                                          request.reason)
        assert o.peering is not None
        target = o.peering.remote.address + (f" AS {o.peering.remote.asn}" if o.peering.type == m.ConnectionType.BGP
                                             else f" VNI {o.peering.vxlan.vni if o.peering.vxlan else '?'}")
        self.reconciler.overrides_changed(_describe(f"added locally: {o.peering.type} to {target}", o), o.connection)
        return wire.override_to_pb(o)

    @grpc_errors
    async def ListOverrides(  # noqa: N802
        self, request: adm.ListOverridesRequest, context: object
    ) -> adm.ListOverridesResponse:
        items = self.reconciler.overrides.items.values()
        return adm.ListOverridesResponse(overrides=[wire.override_to_pb(o) for o in items])

    @grpc_errors
    async def RemoveOverride(  # noqa: N802
        self, request: adm.RemoveOverrideRequest, context: object
    ) -> adm.RemoveOverrideResponse:
        o = self.reconciler.overrides.remove(request.connection)
        self.reconciler.overrides_changed(f"local {o.kind} override removed", o.connection)
        return adm.RemoveOverrideResponse(removed=wire.override_to_pb(o))

    @grpc_errors
    async def Journal(self, request: adm.JournalRequest, context: object) -> adm.JournalResponse:  # noqa: N802
        if request.limit < 0:
            raise InvalidArgument("must be 0 (all) or positive", "limit")
        entries = self.reconciler.journal.last(request.limit)
        return adm.JournalResponse(entries=[wire.journal_to_pb(e) for e in entries])

    # ------------------------------------------------------------ the host's logs and the region's health

    @grpc_errors
    async def ReadLogs(self, request: lpb.LogQuery, context: object) -> lpb.LogPage:  # noqa: N802
        book = self.link.remote.logs
        if book is None:
            raise FailedPrecondition("this agent has no log sources (isthmus-agent --log-file, --log-unit)")
        return await asyncio.to_thread(book.read, request)

    @grpc_errors
    async def ListLogSources(  # noqa: N802
        self, request: lpb.ListLogSourcesRequest, context: object
    ) -> lpb.ListLogSourcesResponse:
        book = self.link.remote.logs
        return book.list_sources() if book is not None else lpb.ListLogSourcesResponse(site=self.site)

    @grpc_errors
    async def GetHealth(self, request: lpb.GetHealthRequest, context: object) -> lpb.HealthReport:  # noqa: N802
        health = self.link.remote.health
        if health is None:
            raise FailedPrecondition("this agent checks no region's health (it runs without --os-cloud)")
        if health.report is None:
            raise Unavailable("the region's health has not been checked yet")
        return health.report


def _describe(what: str, o: m.Override) -> str:
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o.expires_ms / 1000)) if o.expires_ms else "removed"
    return f"{what} until {until}" + (f" ({o.reason})" if o.reason else "")


def prepare_socket_path(path: Path, group_gid: int | None) -> None:
    """Create the socket's directory (0700, or 0750 for the admin group) if missing; remove a stale socket."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        if group_gid is not None:
            os.chown(path.parent, -1, group_gid)
            os.chmod(path.parent, 0o750)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise FileExistsError(f"--admin-socket {path} exists and is not a socket; refusing to replace it")
        path.unlink()


class AdminSocket:
    """The admin socket: checks each client's SO_PEERCRED, then relays to the gRPC server's private socket.

    gRPC does not show a servicer the peer's credentials, so the agent owns the
    public socket itself. Root, the agent's own user and members of the admin
    group are admitted; anyone else is refused and logged (even if the file
    system would let them connect, e.g. after a careless chmod).
    """

    def __init__(self, path: Path, inner: Path, group: str = "") -> None:
        self.path = path
        self.inner = inner
        self.group = group
        self.group_gid = grp.getgrnam(group).gr_gid if group else None
        self.server: asyncio.AbstractServer | None = None
        self.grpc: grpc.aio.Server | None = None
        self.refused = 0

    def admitted(self, uid: int, gid: int) -> bool:
        if uid in (0, os.geteuid()):
            return True
        if self.group_gid is None:
            return False
        if gid == self.group_gid:
            return True
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return False
        return self.group_gid in os.getgrouplist(name, gid)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        if not self.admitted(uid, gid):
            self.refused += 1
            log.warning("refused an admin socket connection from uid %d gid %d (pid %d): only root and %s",
                        uid, gid, pid, f"group {self.group}" if self.group else "the agent's user are admitted")
            writer.close()
            return
        try:
            inner_reader, inner_writer = await asyncio.open_unix_connection(str(self.inner))
        except OSError as exc:
            log.warning("admin socket: cannot reach the admin server: %s", exc)
            writer.close()
            return
        await asyncio.gather(_pump(reader, inner_writer), _pump(inner_reader, writer))

    async def start(self, servicer: AgentAdmin) -> None:
        prepare_socket_path(self.path, self.group_gid)
        self.inner.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.inner.unlink(missing_ok=True)
        self.grpc = grpc.aio.server()
        admin_pb2_grpc.add_AgentAdminServicer_to_server(servicer, self.grpc)
        self.grpc.add_insecure_port(f"unix:{self.inner}")
        await self.grpc.start()
        os.chmod(self.inner, 0o600)
        self.server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        if self.group_gid is not None:
            os.chown(self.path, -1, self.group_gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)
        log.info("admin socket at %s (mode %s%s)", self.path, "0660" if self.group else "0600",
                 f", group {self.group}" if self.group else "")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.grpc is not None:
            await self.grpc.stop(1)
        self.path.unlink(missing_ok=True)
        self.inner.unlink(missing_ok=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
