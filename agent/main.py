"""isthmus-agent: holds one site's desired peerings, realizes them through drivers, reports back."""

from __future__ import annotations

import argparse
import asyncio
import grp
import logging
import os
import re
import signal
import sys
from pathlib import Path

import isthmus
from isthmus.agent.admin import AdminSocket, AgentAdmin
from isthmus.agent.journal import Journal
from isthmus.agent.link import CoordinatorLink, TlsFiles
from isthmus.agent.logs import LogBook, Source
from isthmus.agent.overrides import Overrides
from isthmus.agent.reconciler import Reconciler
from isthmus.agent.redact import Redactor
from isthmus.agent.state import StateError, StateFile
from isthmus.agent.telemetry import AgentMetrics
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument
from isthmus.core.metrics import MetricsServer, parse_listen
from isthmus.drivers import base as drivers

log = logging.getLogger("isthmus.agent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="isthmus-agent",
        description="Run one site's isthmus agent: receive the site's desired peerings from a coordinator, "
        "persist them, realize them through drivers, report what is observed.",
        epilog="Example: isthmus-agent --site region-one --coordinator 10.0.0.5:7800,10.0.0.6:7800 "
        "--driver fake --state-dir /var/lib/isthmus/agent --admin-socket /run/isthmus/agent.sock",
    )
    p.add_argument("--site", required=True, help="name of the site this agent serves (a DNS label)")
    p.add_argument("--coordinator", default=os.environ.get("ISTHMUS_COORDINATOR", "127.0.0.1:7800"),
                   help="HOST:PORT[,HOST:PORT...] of the coordinators, tried in turn "
                   "(default $ISTHMUS_COORDINATOR or 127.0.0.1:7800)")
    p.add_argument("--driver", default="fake",
                   help="comma-separated drivers; each connection type goes to the first that handles it "
                   f"(installed: {', '.join(drivers.available()) or 'none'}; default fake)")
    p.add_argument("--driver-opt", action="append", default=[], metavar="DRIVER.KEY=VALUE",
                   help="an option for one driver, e.g. fake.connect_delay=0.5 (repeatable)")
    p.add_argument("--state-dir", default=os.environ.get("STATE_DIRECTORY", "/var/lib/isthmus/agent"),
                   help="where the desired state is persisted (default $STATE_DIRECTORY or /var/lib/isthmus/agent)")
    p.add_argument("--admin-socket", default=os.environ.get("ISTHMUS_ADMIN_SOCKET", "/run/isthmus/agent.sock"),
                   help="unix socket of the local admin API (default $ISTHMUS_ADMIN_SOCKET or "
                   "/run/isthmus/agent.sock)")
    p.add_argument("--admin-group", default=os.environ.get("ISTHMUS_ADMIN_GROUP", ""),
                   help="a group whose members may use the admin socket besides root (socket 0660, "
                   "directory 0750); default: root only (0600 in a 0700 directory)")
    p.add_argument("--reconcile-interval", type=float, default=10.0,
                   help="seconds between periodic re-observations (default 10)")
    p.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats (default 5)")
    p.add_argument("--journal-size", type=int, default=1000,
                   help="events kept in the local journal (STATE_DIR/journal.jsonl; default 1000)")
    p.add_argument("--tls-ca", default="", help="PEM CA that signed the coordinators' certificates (enables TLS)")
    p.add_argument("--tls-cert", default="", help="PEM client certificate of this agent")
    p.add_argument("--tls-key", default="", help="PEM private key of this agent")
    g = p.add_argument_group("multisite sync (keypairs, security groups, images in this site's OpenStack region)")
    g.add_argument("--os-cloud", default=os.environ.get("OS_CLOUD", ""),
                   help="clouds.yaml entry this agent uses to reach its region's OpenStack; enables sync "
                   "(default $OS_CLOUD; empty: no sync)")
    g.add_argument("--os-region", default=os.environ.get("OS_REGION_NAME", ""),
                   help="OpenStack region name of this site (default $OS_REGION_NAME, else the site name)")
    g.add_argument("--os-config", default=os.environ.get("OS_CLIENT_CONFIG_FILE", ""),
                   help="path of the clouds.yaml to read (default: openstacksdk's search path)")
    g.add_argument("--source-cloud", action="append", default=[], metavar="SITE=CLOUD",
                   help="clouds.yaml entry for image sources in another OpenStack (default: --os-cloud with the "
                   "source's region name; repeatable)")
    g.add_argument("--sync-interval", type=float, default=60.0,
                   help="seconds between re-checks of each synced resource, repairing drift (default 60)")
    g.add_argument("--inventory-interval", type=float, default=15.0,
                   help="seconds between image list reports to the coordinator (default 15)")
    g.add_argument("--sync-workers", type=int, default=4, help="sync tasks run at once (default 4)")
    g.add_argument("--usage-interval", type=float, default=30.0,
                   help="seconds between quota usage reads of the projects with a global quota (default 30)")
    g.add_argument("--address-interval", type=float, default=30.0,
                   help="seconds between reads of the region's ports, floating IPs, routers and subnets for the "
                   "global address view (default 30)")
    g.add_argument("--capacity-interval", type=float, default=60.0,
                   help="seconds between capacity reads (default 60)")
    g.add_argument("--health-interval", type=float, default=30.0,
                   help="seconds between checks of the region's endpoints, compute services and network agents "
                   "(default 30)")
    g = p.add_argument_group("logs of this host's OpenStack services, read on demand (isthmusctl logs)")
    g.add_argument("--log-file", action="append", default=[], metavar="SERVICE=PATH",
                   help="a log file the operators may read as SERVICE, e.g. "
                   "neutron-server=/var/log/neutron/neutron-server.log (repeatable)")
    g.add_argument("--log-unit", action="append", default=[], metavar="SERVICE=UNIT",
                   help="a systemd unit whose journal the operators may read as SERVICE, e.g. "
                   "nova-api=nova-api.service (repeatable; read with journalctl -o json)")
    g.add_argument("--redact", action="append", default=[], metavar="REGEX",
                   help="mask what this pattern matches in every line before it leaves the host, besides the "
                   "passwords, tokens and keys oslo.log masks (repeatable)")
    p.add_argument("--metrics-listen", default=os.environ.get("ISTHMUS_METRICS_LISTEN", ""), metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (e.g. 127.0.0.1:9101; default: off)")
    p.add_argument("--log-level", default=os.environ.get("ISTHMUS_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"], help="log level (default info)")
    p.add_argument("--version", action="version", version=f"isthmus-agent {isthmus.__version__}")
    a = p.parse_args(argv)
    try:
        m.check_name(a.site, "--site")
    except InvalidArgument as exc:
        p.error(str(exc))
    if a.admin_group:
        try:
            grp.getgrnam(a.admin_group)
        except KeyError:
            p.error(f"--admin-group {a.admin_group}: no such group")
    a.coordinators = [c.strip() for c in a.coordinator.split(",") if c.strip()]
    if not a.coordinators:
        p.error("--coordinator: give at least one HOST:PORT")
    a.drivers = [d.strip() for d in a.driver.split(",") if d.strip()]
    if not a.drivers:
        p.error("--driver: give at least one driver")
    a.driver_options = {}
    for opt in a.driver_opt:
        key, sep, value = opt.partition("=")
        name, dot, sub = key.partition(".")
        if not sep or not dot or not sub:
            p.error(f"--driver-opt {opt!r}: expected DRIVER.KEY=VALUE")
        a.driver_options.setdefault(name, {})[sub] = value
    a.source_clouds = []
    for opt in a.source_cloud:
        site, sep, cloud = opt.partition("=")
        if not sep or not site or not cloud:
            p.error(f"--source-cloud {opt!r}: expected SITE=CLOUD")
        a.source_clouds.append((site, cloud))
    if min(a.sync_interval, a.inventory_interval, a.usage_interval, a.address_interval, a.capacity_interval) <= 0 \
            or a.sync_workers < 1:
        p.error("the --*-interval options must be positive, --sync-workers at least 1")
    a.log_sources = log_sources(p, a.log_file, a.log_unit)
    for pattern in a.redact:
        try:
            re.compile(pattern)
        except re.error as exc:
            p.error(f"--redact {pattern!r}: {exc}")
    if a.health_interval <= 0:
        p.error("--health-interval must be positive")
    if a.os_config and not Path(a.os_config).is_file():
        p.error(f"--os-config {a.os_config}: no such file")
    if a.metrics_listen:
        try:
            parse_listen(a.metrics_listen)
        except ValueError as exc:
            p.error(f"--metrics-listen: {exc}")
    if a.reconcile_interval <= 0 or a.heartbeat <= 0:
        p.error("--reconcile-interval and --heartbeat must be positive")
    return a


def log_sources(p: argparse.ArgumentParser, files: list[str], units: list[str]) -> list[Source]:
    out: list[Source] = []
    for flag, kind, values in (("--log-file", "file", files), ("--log-unit", "journald", units)):
        for opt in values:
            name, sep, where = opt.partition("=")
            if not sep or not name or not where:
                p.error(f"{flag} {opt!r}: expected SERVICE={'PATH' if kind == 'file' else 'UNIT'}")
            if any(s.service == name for s in out):
                p.error(f"{flag} {opt!r}: the log source {name} is given twice")
            out.append(Source(name, kind, where))
    return out


def make_drivers(args: argparse.Namespace) -> list[drivers.Driver]:
    out = []
    for name in args.drivers:
        cls = drivers.load(name)
        ctx = drivers.DriverContext(args.site, Path(args.state_dir) / name, args.driver_options.get(name, {}))
        out.append(cls(ctx))
    return out


async def run(args: argparse.Namespace) -> int:
    os.umask(0o077)  # the state file and the admin socket are the agent's alone
    state_file = StateFile(Path(args.state_dir))
    try:
        state = state_file.load(args.site)
        overrides = Overrides(Path(args.state_dir) / "overrides.json", site=args.site)
        active = make_drivers(args)
    except (StateError, ValueError, drivers.UnknownDriver, drivers.DriverError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    journal = Journal(Path(args.state_dir) / "journal.jsonl", limit=args.journal_size)
    reconciler = Reconciler(args.site, active, overrides, journal, interval=args.reconcile_interval)
    reconciler.note("agent", f"started: {len(state.peerings)} persisted peerings at rev {state.revision}, "
                    f"{len(overrides.items)} local overrides")
    reconciler.set_desired(state)
    # Apply what is on disk before any coordinator answers: the site keeps its peerings across restarts.
    await reconciler.reconcile_once()
    link = CoordinatorLink(args.site, args.coordinators, reconciler, state_file, ",".join(args.drivers),
                           TlsFiles(args.tls_ca, args.tls_cert, args.tls_key), heartbeat=args.heartbeat)
    if args.log_sources:
        link.remote.logs = LogBook(args.site, args.log_sources, Redactor(args.redact))
    admin = AgentAdmin(args.site, reconciler, link, ",".join(args.drivers), isthmus.__version__)
    admin_socket = AdminSocket(Path(args.admin_socket), Path(args.state_dir) / "admin-grpc.sock", args.admin_group)
    try:
        await admin_socket.start(admin)
    except (OSError, RuntimeError) as exc:
        log.error("cannot serve the admin socket %s: %s", args.admin_socket, exc)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(reconciler.run(), name="reconciler"),
             asyncio.create_task(link.run(), name="link")]
    worker = None
    if args.os_cloud:
        from isthmus.agent.multisite.sync import CloudConfig, SyncWorker

        try:
            worker = SyncWorker(args.site, args.coordinators,
                                CloudConfig(args.os_cloud, args.os_region or args.site, args.os_config,
                                            tuple(args.source_clouds)),
                                Path(args.state_dir), TlsFiles(args.tls_ca, args.tls_cert, args.tls_key),
                                interval=args.sync_interval, inventory_interval=args.inventory_interval,
                                workers=args.sync_workers, note=reconciler.note,
                                usage_interval=args.usage_interval, address_interval=args.address_interval,
                                capacity_interval=args.capacity_interval)
        except (ValueError, OSError) as exc:
            log.error("cannot start the sync worker: %s", exc)
            return 2
        admin.sync = worker
        tasks.append(asyncio.create_task(worker.run(), name="sync"))
        from isthmus.agent.multisite.health import RegionHealth

        link.remote.health = RegionHealth(args.site, args.os_region or args.site, worker.region.conn,
                                          args.health_interval, note=reconciler.note,
                                          capacity=worker.views.last_capacity)
        tasks.append(asyncio.create_task(link.remote.health.run(), name="health"))
    metrics = None
    if args.metrics_listen:
        telemetry = AgentMetrics(args.site, reconciler, link, worker)
        reconciler.observe_pass = telemetry.reconcile_seconds.observe
        host, port = parse_listen(args.metrics_listen)
        metrics = MetricsServer(telemetry.registry, host, port)
        try:
            bound = await metrics.start()
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s", args.metrics_listen, exc)
            return 2
        log.info("Prometheus metrics on http://%s:%d/metrics", host or "*", bound)
    await stop.wait()
    reconciler.note("agent", "stopping (the dataplane is left as it is)")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await admin_socket.stop()
    if metrics is not None:
        await metrics.stop()
    for d in active:
        await d.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
