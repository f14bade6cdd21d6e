"""isthmus-coordinator: the API and agent-stream server, keeping its state in etcd."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import isthmus
from isthmus.coordinator.agents import AgentService
from isthmus.coordinator.api import (
    BorderGatewayService,
    ConnectionService,
    EndpointService,
    SiteService,
    StatusService,
)
from isthmus.coordinator.auth import Auth, TokenFile, describe_mode, secure, trim_audit
from isthmus.coordinator.border import BorderRegistry
from isthmus.coordinator.etcd import EmbeddedEtcd, EtcdMissing
from isthmus.coordinator.events import (
    DEFAULT_MAX_PER_SITE,
    DEFAULT_RETENTION_S,
    TRIM_EVERY,
    EventService,
    trimmer,
)
from isthmus.coordinator.events import record as record_event
from isthmus.coordinator.expander import expand_policies
from isthmus.coordinator.health import HealthService
from isthmus.coordinator.leader import Membership, collect_garbage
from isthmus.coordinator.logs import LogService
from isthmus.coordinator.multisite.sync import RegionAgentService, SyncService
from isthmus.coordinator.multisite.sync_planner import SyncPlanner
from isthmus.coordinator.multisite.sync_registry import SyncRegistry
from isthmus.coordinator.multisite.views import GlobalViewService
from isthmus.coordinator.multisite.views_planner import ViewsPlanner
from isthmus.coordinator.planner import Planner
from isthmus.coordinator.policies import PolicyService
from isthmus.coordinator.registry import Registry
from isthmus.coordinator.store import EtcdTls, Store
from isthmus.coordinator.telemetry import CoordinatorMetrics
from isthmus.core.errors import Unavailable
from isthmus.core.flags import duration
from isthmus.core.metrics import MetricsServer, parse_listen
from isthmus.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    api_pb2,
    api_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    l2gw_pb2,
    l2gw_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
    views_pb2,
    views_pb2_grpc,
)

log = logging.getLogger("isthmus.coordinator")

DEFAULT_LISTEN = "127.0.0.1:7800"

MAX_MESSAGE_BYTES = 4 * 1024 * 1024

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Long-lived agent streams: ping idle connections, and let agents ping us every 10 s.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class ConfigError(Exception):
    pass


@dataclass
class Options:
    listen: list[str]
    advertise: str
    etcd_endpoints: list[str]
    data_dir: Path
    tls_cert: str
    tls_key: str
    tls_ca: str
    insecure: bool
    lease_ttl: int
    ready_file: str
    token_file: str = ""
    write_rate: float = 0.0
    etcd_ca: str = ""
    etcd_cert: str = ""
    etcd_key: str = ""
    event_retention_s: int = DEFAULT_RETENTION_S
    event_max_per_site: int = DEFAULT_MAX_PER_SITE
    metrics_listen: str = ""
    refusal_window: float = 10.0


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="isthmus-coordinator",
        description="Serve the isthmus API and the site agents' streams; keep global state in etcd.",
        epilog="Example: isthmus-coordinator --data-dir /var/lib/isthmus/coordinator "
        "(starts a private etcd on loopback) or --etcd-endpoints 10.0.0.1:2379,10.0.0.2:2379.",
    )
    p.add_argument("--listen", default=DEFAULT_LISTEN,
                   help=f"HOST:PORT or unix:PATH to serve gRPC on, comma-separated for several (default "
                   f"{DEFAULT_LISTEN}); a unix socket reaches agents in other network namespaces of this host")
    p.add_argument("--advertise", default="", help="address agents and status views show for this coordinator "
                   "(default: the --listen address)")
    p.add_argument("--etcd-endpoints", default="", help="HOST:PORT[,HOST:PORT...] of an etcd cluster; "
                   "without it a private etcd child process is started in --data-dir")
    p.add_argument("--data-dir", default=os.environ.get("STATE_DIRECTORY", "/var/lib/isthmus/coordinator"),
                   help="directory of the embedded etcd's data (default $STATE_DIRECTORY or "
                   "/var/lib/isthmus/coordinator)")
    p.add_argument("--tls-cert", default="", help="PEM certificate of this server")
    p.add_argument("--tls-key", default="", help="PEM private key of this server")
    p.add_argument("--tls-ca", default="", help="PEM CA bundle; when given, clients must present a "
                   "certificate it signed (mutual TLS)")
    p.add_argument("--insecure", action="store_true", help="allow plain text on a non-loopback address "
                   "(development only: anyone who reaches the port can reconfigure every site)")
    p.add_argument("--token-file", default="", help="bearer tokens, one 'NAME ROLE TOKEN' per line (TOKEN may be "
                   "sha256:HEX of the token; ROLE viewer, operator or admin); re-read when it changes")
    p.add_argument("--write-rate", type=float, default=50.0, help="writes per second allowed per caller, bursts of "
                   "twice that (default 50; 0: no limit)")
    p.add_argument("--refusal-window", type=float, default=10.0, metavar="SECONDS",
                   help="refused calls are audited as one event per caller, method and reason per window of this "
                        "many seconds, with their count (default 10)")
    p.add_argument("--etcd-ca", default="", help="PEM CA of the etcd cluster's certificates (enables TLS to etcd)")
    p.add_argument("--etcd-cert", default="", help="PEM client certificate for etcd")
    p.add_argument("--etcd-key", default="", help="PEM private key of --etcd-cert")
    p.add_argument("--event-retention", type=duration, default=DEFAULT_RETENTION_S, metavar="DURATION",
                   help="how long the sites' events are kept: seconds, or 30s, 15m, 2h, 7d (default 7d; 0: no "
                   "age limit)")
    p.add_argument("--event-max-per-site", type=int, default=DEFAULT_MAX_PER_SITE, metavar="N",
                   help=f"events kept per site, the newest (default {DEFAULT_MAX_PER_SITE}; 0: no count limit)")
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (e.g. 127.0.0.1:9100; default: off)")
    p.add_argument("--lease-ttl", type=int, default=10, help="seconds an agent's presence, and this "
                   "coordinator's leadership, outlive a coordinator that died (default 10)")
    p.add_argument("--ready-file", default="", help="write the HOST:PORT actually served to this file once ready "
                   "(useful with --listen 127.0.0.1:0)")
    p.add_argument("--log-level", default=os.environ.get("ISTHMUS_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"], help="log level (default info)")
    p.add_argument("--version", action="version", version=f"isthmus-coordinator {isthmus.__version__}")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    listens = [x.strip() for x in a.listen.split(",") if x.strip()]
    if not listens:
        p.error("--listen: give at least one address")
    exposed = [x for x in listens if not _is_loopback(x)]
    if exposed and not a.tls_cert and not a.insecure:
        p.error(f"--listen {exposed[0]} is not a loopback address: give --tls-cert/--tls-key (and --tls-ca), "
                "or --insecure to serve plain text anyway")
    if a.metrics_listen:
        try:
            parse_listen(a.metrics_listen)
        except ValueError as exc:
            p.error(f"--metrics-listen: {exc}")
    if a.event_max_per_site < 0:
        p.error("--event-max-per-site must be 0 or more")
    if a.lease_ttl < 2:
        p.error("--lease-ttl must be at least 2 seconds")
    endpoints = [e.strip() for e in a.etcd_endpoints.split(",") if e.strip()]
    if a.tls_ca and not a.tls_cert:
        p.error("--tls-ca needs --tls-cert and --tls-key (mutual TLS)")
    if bool(a.etcd_cert) != bool(a.etcd_key) or (a.etcd_cert and not a.etcd_ca):
        p.error("--etcd-cert and --etcd-key go together, with --etcd-ca")
    if a.token_file and not Path(a.token_file).is_file():
        p.error(f"--token-file {a.token_file} does not exist")
    return Options(listens, a.advertise, endpoints, Path(a.data_dir), a.tls_cert, a.tls_key, a.tls_ca,
                   a.insecure, a.lease_ttl, a.ready_file, a.token_file, a.write_rate, a.etcd_ca, a.etcd_cert,
                   a.etcd_key, a.event_retention, a.event_max_per_site, a.metrics_listen,
                   max(0.01, a.refusal_window))


def _is_loopback(hostport: str) -> bool:
    if hostport.startswith("unix:"):
        return True  # reachable only through the file system (mode of the socket's directory)
    host = hostport.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credentials(opts: Options) -> grpc.ServerCredentials | None:
    if not opts.tls_cert:
        return None
    key = Path(opts.tls_key).read_bytes()
    cert = Path(opts.tls_cert).read_bytes()
    ca = Path(opts.tls_ca).read_bytes() if opts.tls_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


class Coordinator:
    """Everything one coordinator process runs, in start and stop order."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.etcd: EmbeddedEtcd | None = None
        self.store: Store | None = None
        self.planner: Planner | None = None
        self.registry: Registry | None = None
        self.sync_planner: SyncPlanner | None = None
        self.views: ViewsPlanner | None = None
        self.metrics: MetricsServer | None = None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.agents: AgentService | None = None
        self.address = ""
        self.membership: Membership | None = None
        self.auth: Auth | None = None

    async def start(self) -> str:
        endpoints = self.opts.etcd_endpoints
        if not endpoints:
            self.etcd = EmbeddedEtcd(self.opts.data_dir / "etcd")
            endpoints = [await asyncio.to_thread(self.etcd.start)]
        etcd_tls = EtcdTls(self.opts.etcd_ca, self.opts.etcd_cert, self.opts.etcd_key) if self.opts.etcd_ca else None
        self.store = Store(endpoints, tls=etcd_tls)
        await self.store.connect()
        self.planner = Planner(self.store)
        await self.planner.start()
        registry = self.registry = Registry(self.store, self.planner)
        self.sync_planner = SyncPlanner(self.store)
        await self.sync_planner.start()
        sync_registry = SyncRegistry(self.store, self.sync_planner)
        registry.site_guards.append(sync_registry.site_guard)
        store = self.store
        self.views = ViewsPlanner(self.store, self.planner, self.sync_planner.wake_all,
                                  event=lambda kind, level, message: record_event(store, kind, level, message))
        await self.views.start()

        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        creds = _credentials(self.opts)
        addresses = []
        for listen in self.opts.listen:
            if listen.startswith("unix:"):
                Path(listen[5:]).unlink(missing_ok=True)  # a stale socket of a previous run
            port = self.server.add_secure_port(listen, creds) if creds else self.server.add_insecure_port(listen)
            addresses.append(listen if listen.startswith("unix:") else f"{listen.rsplit(':', 1)[0]}:{port}")
        self.address = addresses[0]
        tokens = TokenFile(Path(self.opts.token_file)) if self.opts.token_file else None
        self.auth = Auth(self.store, mutual_tls=bool(self.opts.tls_ca), tokens=tokens, coordinator=self.address,
                         write_rate=self.opts.write_rate, write_burst=max(1, int(self.opts.write_rate * 2)),
                         refusal_window=self.opts.refusal_window)
        self.agents = AgentService(self.store, self.planner, self.opts.advertise or self.address, self.opts.lease_ttl,
                                   auth=self.auth)
        self.status = StatusService(self.store, self.planner, self.agents.events)
        guarded = [
            (api_pb2, "SiteService", SiteService(registry), api_pb2_grpc.add_SiteServiceServicer_to_server),
            (api_pb2, "EndpointService", EndpointService(registry),
             api_pb2_grpc.add_EndpointServiceServicer_to_server),
            (api_pb2, "ConnectionService", ConnectionService(registry),
             api_pb2_grpc.add_ConnectionServiceServicer_to_server),
            (api_pb2, "StatusService", self.status, api_pb2_grpc.add_StatusServiceServicer_to_server),
            (l2gw_pb2, "BorderGatewayService", BorderGatewayService(BorderRegistry(self.store), self.store,
                                                                    self.planner),
             l2gw_pb2_grpc.add_BorderGatewayServiceServicer_to_server),
            (agent_pb2, "AgentService", self.agents, agent_pb2_grpc.add_AgentServiceServicer_to_server),
            (sync_pb2, "SyncService", SyncService(sync_registry),
             sync_pb2_grpc.add_SyncServiceServicer_to_server),
            (sync_pb2, "RegionAgentService", RegionAgentService(self.store, self.sync_planner, self.auth,
                                                                self.views, self.opts.lease_ttl),
             sync_pb2_grpc.add_RegionAgentServiceServicer_to_server),
            (views_pb2, "GlobalViewService", GlobalViewService(self.store, self.views),
             views_pb2_grpc.add_GlobalViewServiceServicer_to_server),
            (events_pb2, "EventService", EventService(self.store), events_pb2_grpc.add_EventServiceServicer_to_server),
            (logs_pb2, "LogService", LogService(self.agents, self.auth),
             logs_pb2_grpc.add_LogServiceServicer_to_server),
            (logs_pb2, "HealthService", HealthService(self.store, self.planner),
             logs_pb2_grpc.add_HealthServiceServicer_to_server),
            (topology_pb2, "PolicyService", PolicyService(self.store),
             topology_pb2_grpc.add_PolicyServiceServicer_to_server),
        ]
        for module, name, servicer, add in guarded:
            methods = [mth.name for mth in module.DESCRIPTOR.services_by_name[name].methods]
            add(secure(servicer, name, methods, self.auth), self.server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        services = [
            api_pb2.DESCRIPTOR.services_by_name[n].full_name
            for n in ("SiteService", "EndpointService", "ConnectionService", "StatusService")
        ] + [agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
             l2gw_pb2.DESCRIPTOR.services_by_name["BorderGatewayService"].full_name,
             sync_pb2.DESCRIPTOR.services_by_name["SyncService"].full_name,
             sync_pb2.DESCRIPTOR.services_by_name["RegionAgentService"].full_name,
             views_pb2.DESCRIPTOR.services_by_name["GlobalViewService"].full_name,
             events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
             logs_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
             logs_pb2.DESCRIPTOR.services_by_name["HealthService"].full_name,
             topology_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name]
        reflection.enable_server_reflection([*services, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        await self.server.start()
        self.membership = Membership(self.store, self.opts.advertise or self.address, self.opts.lease_ttl,
                                     jobs=[("garbage-collection", 300.0, collect_garbage),
                                           ("policy-expansion", 1.0, expand_policies),
                                           ("audit-trim", 600.0, trim_audit),
                                           ("event-trim", TRIM_EVERY, trimmer(self.opts.event_retention_s,
                                                                              self.opts.event_max_per_site))])
        await self.membership.start()
        for name in ["", *services]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("isthmus-coordinator %s serving on %s (%s), etcd %s", isthmus.__version__, ", ".join(addresses),
                 "TLS" if creds else "plain text", ",".join(endpoints))
        (log.info if self.auth.enforce else log.warning)("%s", describe_mode(self.auth, addresses))
        if self.opts.insecure and not creds:
            exposed = [a for a in addresses if not _is_loopback(a)]
            if exposed:
                log.warning("--insecure: serving PLAIN TEXT on %s: anyone on that network can read and change "
                            "every site's configuration; use only on a closed development network",
                            ", ".join(exposed))
        if self.opts.metrics_listen:
            telemetry = CoordinatorMetrics(self)
            self.agents.push_seconds = telemetry.push_seconds
            host, port = parse_listen(self.opts.metrics_listen)
            self.metrics = MetricsServer(telemetry.registry, host, port)
            bound = await self.metrics.start()
            log.info("Prometheus metrics on http://%s:%d/metrics", host or "*", bound)
        if self.opts.ready_file:
            Path(self.opts.ready_file).write_text(self.address + "\n")
        return self.address

    async def stop(self, grace: float = 5.0) -> None:
        log.info("shutting down")
        await self.health.enter_graceful_shutdown()
        if self.agents is not None:
            self.agents.close_all()
        if self.membership is not None:
            await self.membership.stop()
        if self.auth is not None:
            with contextlib.suppress(Exception):
                await self.auth.flush()
        if self.server is not None:
            await self.server.stop(grace)
        if self.agents is not None:
            await self.agents.drain(timeout=max(grace, 1.0))
        if self.planner is not None:
            await self.planner.stop()
        if self.sync_planner is not None:
            await self.sync_planner.stop()
        if self.views is not None:
            await self.views.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.store is not None:
            await self.store.close()
        if self.etcd is not None:
            await self.etcd.astop()
        log.info("stopped")


async def serve(opts: Options) -> int:
    coordinator = Coordinator(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await coordinator.start()
    except (EtcdMissing, Unavailable, RuntimeError, OSError) as exc:
        log.error("cannot start: %s", exc)
        await coordinator.stop(grace=0)
        return 1
    await stop.wait()
    await coordinator.stop()
    return 0


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    sys.exit(asyncio.run(serve(opts)))


if __name__ == "__main__":
    main()
