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
from isthmus.agent.link import CoordinatorLink
from isthmus.agent.reconciler import Reconciler
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc

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
        desired = self.reconciler.desired
        observed = self.reconciler.observed
        out = adm.ListPeeringsResponse(revision=desired.revision)
        for name in sorted(set(desired.peerings) | set(observed)):
            lp = adm.LocalPeering()
            if name in desired.peerings:
                lp.desired.CopyFrom(convert.peering_to_pb(desired.peerings[name]))
            if name in observed:
                lp.observed.CopyFrom(convert.observed_to_pb(observed[name]))
            out.peerings.append(lp)
        return out

    async def Resync(self, request: adm.ResyncRequest, context: object) -> adm.ResyncResponse:  # noqa: N802
        log.info("site %s: resync requested on the admin socket", self.site)
        await self.reconciler.reconcile_once()
        return adm.ResyncResponse(
            applied_revision=self.reconciler.applied_revision, peerings=len(self.reconciler.observed)
        )


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
