"""The agent's local admin socket: gRPC over a unix socket, served whether or not a coordinator answers."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import grpc
import grpc.aio

from isthmus import convert
from isthmus import model as m
from isthmus.agent.link import CoordinatorLink
from isthmus.agent.reconciler import Reconciler
from isthmus.edge import grpc_errors
from isthmus.errors import InvalidArgument
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc
from isthmus.v1 import types_pb2 as pb

log = logging.getLogger(__name__)


class AgentAdmin(admin_pb2_grpc.AgentAdminServicer):
    def __init__(self, site: str, reconciler: Reconciler, link: CoordinatorLink, driver: str, version: str) -> None:
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
        )

    async def ListPeerings(  # noqa: N802
        self, request: adm.ListPeeringsRequest, context: object
    ) -> adm.ListPeeringsResponse:
        effective = self.reconciler.overrides.effective(self.reconciler.desired.peerings)
        observed = self.reconciler.observed
        overrides = self.reconciler.overrides.items
        out = adm.ListPeeringsResponse(revision=self.reconciler.desired.revision)
        for name in sorted(set(effective) | set(observed)):
            lp = adm.LocalPeering()
            if name in effective:
                lp.desired.CopyFrom(convert.peering_to_pb(effective[name]))
            if name in observed:
                lp.observed.CopyFrom(convert.observed_to_pb(observed[name]))
            if name in overrides:
                lp.override.CopyFrom(convert.override_to_pb(overrides[name]))
            out.peerings.append(lp)
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
        return convert.override_to_pb(o)

    @grpc_errors
    async def EnablePeering(  # noqa: N802
        self, request: adm.EnablePeeringRequest, context: object
    ) -> adm.RemoveOverrideResponse:
        o = self.reconciler.overrides.enable(request.connection)
        self.reconciler.overrides_changed("enabled again locally (disable override removed)", o.connection)
        return adm.RemoveOverrideResponse(removed=convert.override_to_pb(o))

    @grpc_errors
    async def AddLocalPeering(self, request: adm.AddLocalPeeringRequest, context: object) -> pb.Override:  # noqa: N802
        if not request.HasField("peering"):
            raise InvalidArgument("is required", "peering")
        peering = convert.peering_from_pb(request.peering)
        o = self.reconciler.overrides.add(peering, self.reconciler.desired.peerings, request.ttl_seconds,
                                          request.reason)
        assert o.peering is not None
        target = o.peering.remote.address + (f" AS {o.peering.remote.asn}" if o.peering.type == m.ConnectionType.BGP
                                             else f" VNI {o.peering.vxlan.vni if o.peering.vxlan else '?'}")
        self.reconciler.overrides_changed(_describe(f"added locally: {o.peering.type} to {target}", o), o.connection)
        return convert.override_to_pb(o)

    @grpc_errors
    async def ListOverrides(  # noqa: N802
        self, request: adm.ListOverridesRequest, context: object
    ) -> adm.ListOverridesResponse:
        items = self.reconciler.overrides.items.values()
        return adm.ListOverridesResponse(overrides=[convert.override_to_pb(o) for o in items])

    @grpc_errors
    async def RemoveOverride(  # noqa: N802
        self, request: adm.RemoveOverrideRequest, context: object
    ) -> adm.RemoveOverrideResponse:
        o = self.reconciler.overrides.remove(request.connection)
        self.reconciler.overrides_changed(f"local {o.kind} override removed", o.connection)
        return adm.RemoveOverrideResponse(removed=convert.override_to_pb(o))

    @grpc_errors
    async def Journal(self, request: adm.JournalRequest, context: object) -> adm.JournalResponse:  # noqa: N802
        if request.limit < 0:
            raise InvalidArgument("must be 0 (all) or positive", "limit")
        entries = self.reconciler.journal.last(request.limit)
        return adm.JournalResponse(entries=[convert.journal_to_pb(e) for e in entries])


def _describe(what: str, o: m.Override) -> str:
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o.expires_ms / 1000)) if o.expires_ms else "removed"
    return f"{what} until {until}" + (f" ({o.reason})" if o.reason else "")


def prepare_socket_path(path: Path) -> None:
    """Create the socket's directory (0700 if we create it) and remove a stale socket file."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise FileExistsError(f"--admin-socket {path} exists and is not a socket; refusing to replace it")
        path.unlink()


async def serve_admin(servicer: AgentAdmin, path: Path) -> grpc.aio.Server:
    prepare_socket_path(path)
    server = grpc.aio.server()
    admin_pb2_grpc.add_AgentAdminServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    os.chmod(path, 0o600)
    log.info("admin socket at %s (mode 0600)", path)
    return server
