"""A small real OpenStack on this machine, from Debian's packages: MariaDB, one Keystone, and for each of two
regions its own glance-api, nova-api and neutron-server, on loopback ports, reached through a clouds.yaml.

Used by the tests (``TwoRegionCloud``) and by people (``python -m tests.openstack_cloud up|down --dir DIR``).
Only the standard library is imported here; openstacksdk only inside ``TwoRegionCloud.connect``.

The databases are migrated once into a template MariaDB data directory, cached per version of the packages
under ``~/.cache/isthmus/openstack`` (``ISTHMUS_OPENSTACK_CACHE``: another folder, or ``off``); each cloud
starts from a copy of it, so a start costs little more than the services' own start.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import concurrent.futures
import contextlib
import getpass
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGIONS = ("RegionOne", "RegionTwo")
ADMIN_CLOUD = "isthmus-admin"  # both regions; pick one with region_name
REGION_CLOUDS = {"RegionOne": "isthmus-region-one", "RegionTwo": "isthmus-region-two"}
ADMIN_USER = ADMIN_PROJECT = "admin"
REGION_SERVICES = ("glance-api", "nova-api", "neutron-server")  # each region's own; see TwoRegionCloud.stop_service

# The Debian package that brings each program used here (the rest come with them as dependencies:
# mariadb-client, python3-pymysql, which is checked apart as it is a module, not a program).
APT_PACKAGES = ("mariadb-server", "keystone", "glance-api", "nova-api", "neutron-server")
PACKAGES = {
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-server",
    "mariadb-dump": "mariadb-server",
    "keystone-manage": "keystone",
    "keystone-wsgi-public": "keystone",
    "glance-manage": "glance-api",
    "glance-api": "glance-api",
    "nova-manage": "nova-api",
    "nova-api": "nova-api",
    "neutron-db-manage": "neutron-server",
    "neutron-server": "neutron-server",
}
VERSIONED_PACKAGES = ("mariadb-server", "python3-pymysql", "keystone", "python3-keystone", "glance-api",
                      "python3-glance", "nova-api", "python3-nova", "neutron-server", "python3-neutron")
SYSTEM_PYTHON_MODULES = Path("/usr/lib/python3/dist-packages")

# Bump when what goes into the template changes (databases, bootstrap): old templates are then not used.
# (The package versions and MYSQLD_OPTIONS are part of a template's key already.)
TEMPLATE_FORMAT = 1
MARKER = "ISTHMUS_OPENSTACK_DIR"  # in the environment of every process started for a cloud: how `down` finds them
RUN_PREFIX = "isthmus-openstack-"
MYSQLD_OPTIONS = (
    # Throw-away data: no durability, small files, quick start and stop.
    "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=64M", "--innodb-flush-method=nosync", "--innodb-file-per-table=0",
    "--skip-log-bin", "--max-connections=500", "--skip-name-resolve",
    "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
)


class CloudError(RuntimeError):
    """The cloud could not be started (or stopped); the message says which service and shows its log."""


def missing_packages() -> list[str]:
    """The Debian packages this cloud needs that are not installed (empty when all are)."""
    missing = {pkg for prog, pkg in PACKAGES.items() if _find_binary(prog) is None}
    if not (SYSTEM_PYTHON_MODULES / "pymysql").is_dir():
        missing.add("python3-pymysql")
    return sorted(missing, key=(*APT_PACKAGES, "python3-pymysql").index)


def _find_binary(name: str) -> str | None:
    # Debian's programs, not a same-named one a virtualenv may put first on PATH.
    for folder in ("/usr/sbin", "/usr/bin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return shutil.which(name)


def _binary(name: str) -> str:
    path = _find_binary(name)
    if path is None:
        raise CloudError(f"{name} is not installed (Debian package {PACKAGES.get(name, name)})")
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open until all are chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"


def _child_env(marker: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    # Debian's services run on the system interpreter: nothing of a virtualenv may leak into them.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP") and not k.startswith("OS_")}
    env[MARKER] = str(marker)
    env.update(extra or {})
    return env


# ---------------------------------------------------------------- processes


@dataclass
class Service:
    """One long-running process of the cloud, leader of its own session, logging to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: int  # its start time (/proc/PID/stat): tells it from a later process given the same pid

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def failure(self, what: str) -> CloudError:
        state = "is running" if self.alive() else f"exited with {self.popen.returncode}"
        first = ""
        with contextlib.suppress(OSError), open(self.log, errors="replace") as f:
            first = next((line.strip() for line in f if " ERROR " in line or " CRITICAL " in line), "")
        return CloudError(f"{self.name}: {what} ({state})" + (f"; its first error: {first}" if first else "")
                          + f"; the end of {self.log}:\n{_tail(self.log)}")


def _spawn(name: str, argv: Sequence[str], log: Path, env: dict[str, str], tied: bool) -> Service:
    """Start ``argv`` in a new session; ``tied``: killed by the kernel when this process dies."""
    if tied and (setpriv := _find_binary("setpriv")):
        # PR_SET_PDEATHSIG through util-linux rather than a preexec_fn (unsafe with threads). It fires when
        # the *thread* that forked ends, so services are only ever spawned from the thread calling start().
        argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True, close_fds=True)
    stat = _stat(popen.pid)
    return Service(name, popen, log, stat.started if stat else 0)


@dataclass(frozen=True)
class _Stat:
    state: str
    session: int
    started: int


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ", comm may hold spaces
        return _Stat(fields[0], int(fields[3]), int(fields[19]))
    except (OSError, ValueError, IndexError):  # gone meanwhile
        return None


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _cloud_processes(leaders: Sequence[tuple[int, int]], marker: Path | None) -> list[int]:
    """The live processes of a cloud: those in the sessions its services lead (the workers they forked
    included), and any other carrying its marker in the environment. ``leaders``: (pid, start time) of
    its services; a pid now held by a later process does not count. ``marker`` None: the sessions only
    (one service of a cloud whose other processes carry the same marker)."""
    sessions = set()
    for pid, started in leaders:
        stat = _stat(pid)
        if stat is None or stat.started == started:  # a session outlives its leader; its id is not reused then
            sessions.add(pid)
    want = f"{MARKER}={marker}".encode() if marker is not None else None
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat.state == "Z":
            continue
        if stat.session in sessions:
            found.append(pid)
            continue
        if want is None:
            continue
        try:
            # setproctitle (neutron's workers) overwrites this area: the sessions above are the main way.
            with open(f"/proc/{pid}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return found


def _stop_processes(leaders: Sequence[tuple[int, int]], marker: Path | None, grace: float,
                    children: Sequence[Service] = ()) -> None:
    """SIGTERM to every process of the cloud, SIGKILL to those left after ``grace`` s.
    ``children``: the services that are this process's own children, to be reaped.
    ``marker`` None: only the sessions of ``leaders`` (see _cloud_processes)."""
    for pid in _cloud_processes(leaders, marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (left := _cloud_processes(leaders, marker)) and time.monotonic() < deadline:
        _reap(children)
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (left := _cloud_processes(leaders, marker)) and time.monotonic() < deadline:
        _reap(children)
        time.sleep(0.05)
    _reap(children)
    if left:
        what = f"the cloud in {marker}" if marker is not None else f"the sessions {[p for p, _ in leaders]}"
        raise CloudError(f"processes {left} of {what} did not stop")


def _reap(services: Sequence[Service]) -> None:
    for s in services:
        s.popen.poll()


def _read_leaders(base: Path) -> list[tuple[int, int]]:
    """The (pid, start time) of the services listed in ``base``/pids."""
    leaders = []
    with contextlib.suppress(OSError):
        for line in (base / "pids").read_text().splitlines():
            pid, started, *_ = line.split()
            leaders.append((int(pid), int(started)))
    return leaders


@dataclass(frozen=True)
class _Recipe:
    """How a region's service was started: what ``TwoRegionCloud.start_service`` needs to start it again."""

    argv: tuple[str, ...]
    log: Path
    env: dict[str, str]
    url: str  # answers (HTTP < 500) once the service is up


# ---------------------------------------------------------------- MariaDB


@dataclass
class MariaDB:
    datadir: Path
    port: int
    socket: Path
    service: Service | None = None

    def url(self, database: str) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}?charset=utf8mb4"

    def argv(self) -> list[str]:
        return [_binary("mariadbd"), "--no-defaults", f"--user={getpass.getuser()}", f"--datadir={self.datadir}",
                f"--socket={self.socket}", f"--pid-file={self.datadir}/mariadbd.pid", f"--port={self.port}",
                "--bind-address=127.0.0.1", *MYSQLD_OPTIONS]

    def client(self, *args: str) -> list[str]:
        return [_binary("mariadb"), "--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", str(self.port),
                "-u", "root", *args]

    def answers(self) -> bool:
        """The server sends its greeting (protocol 10): it accepts clients."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                greeting = s.recv(64)
        except OSError:
            return False
        return len(greeting) > 4 and greeting[4] == 10


def _socket_path(folder: Path) -> Path:
    path = folder / "mariadbd.sock"
    if len(str(path)) < 100:  # sun_path is 108 bytes
        return path
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"isthmus-mariadbd-{digest}.sock"


# ---------------------------------------------------------------- configuration files


@dataclass
class Region:
    """One region's services: their ports and (once started) endpoints."""

    name: str
    key: str  # "r1": in database names and folders
    glance_port: int
    nova_port: int
    neutron_port: int

    @property
    def endpoints(self) -> dict[str, str]:
        return {"image": f"http://127.0.0.1:{self.glance_port}",
                "compute": f"http://127.0.0.1:{self.nova_port}/v2.1",
                "network": f"http://127.0.0.1:{self.neutron_port}"}

    @property
    def databases(self) -> dict[str, str]:
        return {"glance": f"glance_{self.key}", "nova_api": f"nova_api_{self.key}",
                "nova_cell0": f"nova_cell0_{self.key}", "neutron": f"neutron_{self.key}"}


# MariaDB answers before any service starts: an error connecting is no reason to retry for 100 s (oslo.db's default).
DB_RETRIES = "max_retries = 2\nretry_interval = 1"


def _authtoken(keystone: str, password: str, region: str) -> str:
    return f"""\
[keystone_authtoken]
www_authenticate_uri = {keystone}/v3
auth_url = {keystone}/v3
auth_type = password
username = {ADMIN_USER}
password = {password}
project_name = {ADMIN_PROJECT}
user_domain_name = Default
project_domain_name = Default
# keystone-manage bootstrap makes no internal endpoint; the default interface would find none.
interface = public
region_name = {region}
"""


def _keystone_conf(db: MariaDB, base: Path) -> str:
    return f"""\
[DEFAULT]
use_stderr = true
[database]
connection = {db.url("keystone")}
{DB_RETRIES}
[identity]
# Lowest bcrypt cost: every password authentication of the tests pays it.
password_hash_rounds = 4
[fernet_tokens]
key_repository = {base}/fernet-keys
[fernet_receipts]
key_repository = {base}/fernet-keys
[credential]
key_repository = {base}/credential-keys
"""


def _glance_conf(db: MariaDB, base: Path, region: Region, keystone: str, password: str) -> str:
    return f"""\
[DEFAULT]
bind_host = 127.0.0.1
bind_port = {region.glance_port}
# 0: serve in this one process, no forked workers
workers = 0
enabled_backends = fs:file
use_stderr = true
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {base}/images
[os_glance_staging_store]
filesystem_store_datadir = {base}/staging
[os_glance_tasks_store]
filesystem_store_datadir = {base}/tasks
[database]
connection = {db.url(region.databases["glance"])}
{DB_RETRIES}
[paste_deploy]
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini
[oslo_concurrency]
lock_path = {base}/lock
{_authtoken(keystone, password, region.name)}"""


def _nova_conf(db: MariaDB, base: Path, region: Region, keystone: str, password: str) -> str:
    # [database] is cell0's database: only the API runs, and cell0 is its one cell. The cell0 mapping is a
    # template filled from it (see _migration_tasks), so the same migrated databases serve any port.
    return f"""\
[DEFAULT]
transport_url = fake://
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = {region.nova_port}
osapi_compute_workers = 1
state_path = {base}
use_stderr = true
[api]
auth_strategy = keystone
[api_database]
connection = {db.url(region.databases["nova_api"])}
{DB_RETRIES}
[database]
connection = {db.url(region.databases["nova_cell0"])}
{DB_RETRIES}
[oslo_concurrency]
lock_path = {base}/lock
[oslo_messaging_notifications]
driver = noop
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
{_authtoken(keystone, password, region.name)}"""


def _neutron_conf(db: MariaDB, base: Path, region: Region, keystone: str, password: str) -> str:
    return f"""\
[DEFAULT]
auth_strategy = keystone
core_plugin = ml2
service_plugins = router
bind_host = 127.0.0.1
bind_port = {region.neutron_port}
transport_url = fake://
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
api_paste_config = /etc/neutron/api-paste.ini
state_path = {base}
use_stderr = true
[database]
connection = {db.url(region.databases["neutron"])}
{DB_RETRIES}
[oslo_concurrency]
lock_path = {base}/lock
{_authtoken(keystone, password, region.name)}"""


ML2_INI = """\
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers =
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199
[ml2_type_vxlan]
vni_ranges = 1000:1999
"""


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _write_configs(base: Path, db: MariaDB, regions: Sequence[Region], keystone: str, password: str) -> None:
    _write(base / "keystone" / "keystone.conf", _keystone_conf(db, base / "keystone"))
    for r in regions:
        folder = base / r.key
        _write(folder / "glance-api.conf", _glance_conf(db, folder / "glance", r, keystone, password))
        _write(folder / "nova.conf", _nova_conf(db, folder / "nova", r, keystone, password))
        _write(folder / "neutron.conf", _neutron_conf(db, folder / "neutron", r, keystone, password))
        _write(folder / "ml2.ini", ML2_INI)


def _write_key_repository(folder: Path) -> None:
    """What ``keystone-manage fernet_setup`` writes (a staged key 0 and a primary key 1), without its 3 s start."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("0", "1"):
        _write(folder / name, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())


# ---------------------------------------------------------------- one-shot commands


class _Commands:
    """Runs one-shot commands (migrations), logging to files; ``kill()`` ends those still running."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self.running: set[subprocess.Popen[bytes]] = set()
        self.lock = threading.Lock()
        self.killed = False

    def run(self, name: str, argv: Sequence[str], log: Path, timeout: float = 300) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n$ {' '.join(argv)}\n".encode())
            out.flush()
            with self.lock:
                if self.killed:
                    raise CloudError(f"{name}: not run, the start was abandoned")
                popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=_child_env(self.marker), start_new_session=True)
                self.running.add(popen)
            try:
                rc = popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(popen.pid, signal.SIGKILL)
                popen.wait()
                raise CloudError(f"{name} did not finish within {timeout:.0f} s; the end of {log}:\n"
                                 f"{_tail(log)}") from None
            finally:
                with self.lock:
                    self.running.discard(popen)
        if rc != 0:
            raise CloudError(f"{name} failed with exit status {rc}; the end of {log}:\n{_tail(log)}")

    def pipe(self, name: str, producer: Sequence[str], consumer: Sequence[str], log: Path) -> None:
        """``producer | consumer`` (a database copied with mariadb-dump)."""
        with open(log, "ab") as out:
            env = _child_env(self.marker)
            with self.lock:
                p1 = subprocess.Popen(list(producer), stdout=subprocess.PIPE, stderr=out, env=env,
                                      start_new_session=True)
                p2 = subprocess.Popen(list(consumer), stdin=p1.stdout, stdout=out, stderr=out, env=env,
                                      start_new_session=True)
                self.running.update((p1, p2))
            assert p1.stdout is not None
            p1.stdout.close()
            try:
                rcs = (p2.wait(120), p1.wait(120))
            except subprocess.TimeoutExpired:
                for p in (p1, p2):
                    _kill_group(p.pid, signal.SIGKILL)
                    p.wait()
                raise CloudError(f"{name} did not finish within 120 s; the end of {log}:\n{_tail(log)}") from None
            finally:
                with self.lock:
                    self.running.difference_update((p1, p2))
        if any(rcs):
            raise CloudError(f"{name} failed with exit status {rcs}; the end of {log}:\n{_tail(log)}")

    def kill(self) -> None:
        with self.lock:
            self.killed = True
            for popen in self.running:
                _kill_group(popen.pid, signal.SIGKILL)


def _in_parallel(tasks: dict[str, Callable[[], None]], commands: _Commands) -> None:
    """Run the tasks in threads; the first failure (or an interrupt) kills the others' commands and is raised."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(task) for task in tasks.values()]
        first: BaseException | None = None
        try:
            for fut in concurrent.futures.as_completed(futures):
                exc = fut.exception()
                if exc is not None and first is None:
                    first = exc
                    commands.kill()
        except BaseException:
            commands.kill()
            raise
    if first is not None:
        raise first


# ---------------------------------------------------------------- the template data directory


def _package_versions() -> str:
    """The installed versions of the packages whose databases the template holds ("" if unknown)."""
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f", "${Package}=${Version}\n", *VERSIONED_PACKAGES],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout


def _cache_root() -> Path | None:
    setting = os.environ.get("ISTHMUS_OPENSTACK_CACHE", "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting:
        return Path(setting)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "isthmus" / "openstack"


def _template_key() -> str | None:
    """What a cached template must match; None when the package versions cannot be known (no caching then)."""
    versions = _package_versions()
    if not versions:
        return None
    text = f"format {TEMPLATE_FORMAT}\nuser {getpass.getuser()}\n{' '.join(MYSQLD_OPTIONS)}\n{versions}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build_template(dest: Path, regions: Sequence[Region], commands: _Commands, tied: bool) -> None:
    """Into ``dest``: a MariaDB data directory (``mysql``) with every database migrated and Keystone bootstrapped,
    and the admin password (``admin-password``); the server is stopped cleanly afterwards."""
    started = time.monotonic()
    marker = commands.marker  # the cloud's folder: the logs go there, with those of its services
    logs = marker / "logs"
    (port,) = free_ports(1)
    db = MariaDB(dest / "mysql", port, _socket_path(dest))
    commands.run("mariadb-install-db", [
        _binary("mariadb-install-db"), "--no-defaults", f"--user={getpass.getuser()}", f"--datadir={db.datadir}",
        "--auth-root-authentication-method=normal", "--skip-test-db", "--innodb-log-file-size=8M",
    ], logs / "mariadb-install-db.log")
    db.service = _spawn("mariadbd", db.argv(), logs / "mariadbd.log", _child_env(marker), tied)
    try:
        _wait_for({"mariadbd": (db.service, db.answers)}, 60)
        password = secrets.token_urlsafe(24)
        # Configurations with made-up service ports: only the database settings matter to the migrations.
        _write_configs(dest / "conf", db, regions, "http://127.0.0.1:9", password)
        _write_key_repository(dest / "conf" / "keystone" / "fernet-keys")  # bootstrap insists on one
        first, *others = regions
        names = ["keystone", *first.databases.values(), *(d for r in others for d in r.databases.values())]
        commands.run("creating the databases", db.client("-e", "".join(f"CREATE DATABASE {n};" for n in names)),
                     logs / "mariadb.log")
        conf = dest / "conf"
        keystone_conf = ["--config-file", str(conf / "keystone" / "keystone.conf")]

        def keystone() -> None:
            manage = [_binary("keystone-manage"), *keystone_conf]
            commands.run("keystone-manage db_sync", [*manage, "db_sync"], logs / "keystone-manage.log")
            commands.run("keystone-manage bootstrap", [
                *manage, "bootstrap", "--bootstrap-password", password, "--bootstrap-username", ADMIN_USER,
                "--bootstrap-project-name", ADMIN_PROJECT, "--bootstrap-role-name", "admin",
                "--bootstrap-region-id", first.name], logs / "keystone-manage.log")

        # The first region's databases are migrated; the others' are copies of them (a second of dumps
        # instead of half a minute of migrations).
        tasks = {"keystone": keystone, **_migration_tasks(commands, db, conf / first.key, first, logs)}
        _in_parallel(tasks, commands)
        copies = {}
        for other in others:
            for kind, name in other.databases.items():
                source = first.databases[kind]
                copies[name] = (lambda s=source, n=name: commands.pipe(
                    f"copying database {s} to {n}", [_binary("mariadb-dump"), *db.client()[1:], s],
                    db.client(n), logs / "mariadb-dump.log"))
        _in_parallel(copies, commands)
        _write(dest / "admin-password", password)
    finally:
        # A clean shutdown: the data directory is copied from afterwards.
        _kill_group(db.service.pid, signal.SIGTERM)
        try:
            db.service.popen.wait(60)
        except subprocess.TimeoutExpired:
            _kill_group(db.service.pid, signal.SIGKILL)
            db.service.popen.wait()
            raise db.service.failure("did not shut down within 60 s") from None
    if db.service.popen.returncode != 0:
        raise db.service.failure("unclean shutdown of the template database")
    shutil.rmtree(dest / "conf", ignore_errors=True)
    _write(dest / "built", f"{time.monotonic() - started:.1f} s\n")


def _migration_tasks(commands: _Commands, db: MariaDB, conf: Path, region: Region,
                     logs: Path) -> dict[str, Callable[[], None]]:
    glance = ["--config-file", str(conf / "glance-api.conf")]
    nova = ["--config-file", str(conf / "nova.conf")]
    neutron = ["--config-file", str(conf / "neutron.conf"), "--config-file", str(conf / "ml2.ini")]

    def glance_sync() -> None:
        commands.run("glance-manage db_sync", [_binary("glance-manage"), *glance, "db_sync"],
                     logs / f"glance-manage-{region.key}.log")

    def nova_sync() -> None:
        manage = [_binary("nova-manage"), *nova]
        log = logs / f"nova-manage-{region.key}.log"
        commands.run("nova-manage api_db sync", [*manage, "api_db", "sync"], log)
        # A URL template filled from each nova-api's own [database] connection, so the mapping stays right in
        # every copy of this database, whatever its port or name.
        commands.run("nova-manage cell_v2 map_cell0", [
            *manage, "cell_v2", "map_cell0", "--database_connection",
            "{scheme}://{username}@{hostname}:{port}/{path}?{query}"], log)
        commands.run("nova-manage db sync", [*manage, "db", "sync"], log)

    def neutron_sync() -> None:
        commands.run("neutron-db-manage upgrade head", [_binary("neutron-db-manage"), *neutron, "upgrade", "head"],
                     logs / f"neutron-db-manage-{region.key}.log")

    return {"glance": glance_sync, "nova": nova_sync, "neutron": neutron_sync}


def _template(regions: Sequence[Region], scratch: Path, commands: _Commands, tied: bool) -> tuple[Path, bool]:
    """A built template (its folder, and whether it is a cached one to be copied rather than used up)."""
    root, key = _cache_root(), _template_key()
    if root is None or key is None:
        _build_template(scratch, regions, commands, tied)
        return scratch, False
    final = root / f"template-{key}"
    if (final / "built").exists():
        return final, True
    root.mkdir(parents=True, exist_ok=True)
    for other in root.glob("building-*"):  # of a test process killed while it built one
        with contextlib.suppress(OSError, ValueError):
            if not Path(f"/proc/{int((other / 'owner').read_text())}").exists():
                shutil.rmtree(other, ignore_errors=True)
    building = Path(tempfile.mkdtemp(prefix=f"building-{key}-", dir=root))
    _write(building / "owner", f"{os.getpid()}\n")
    try:
        _build_template(building, regions, commands, tied)
        try:
            building.rename(final)
        except OSError:  # another session built it at the same time: use theirs
            if not (final / "built").exists():
                raise
        else:
            (final / "owner").unlink()
    finally:
        shutil.rmtree(building, ignore_errors=True)
    # Templates of other package versions are never used again.
    for old in root.glob("template-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final, True


# ---------------------------------------------------------------- waiting


def _http_answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            # Short: a port can accept connections before anything reads them (oslo.service's parent).
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:  # 300 Multiple Choices, 401: it answers
            exc.read()
            return exc.code < 500
        except OSError:
            return False
        return True

    return check


# oslo.service's launcher re-forks a worker that dies at once, forever: its parent never exits.
_WORKER_DIED = re.compile(rb"oslo_service\.service \[-\] Child \d+ exited with status [1-9]")


def _wait_for(checks: dict[str, tuple[Service, Callable[[], bool]]], timeout: float,
              watch: Sequence[Service] = ()) -> None:
    """Poll each service's check until all pass; a service that exits (or whose workers do), or misses the
    deadline, is the error. ``watch``: other services starting meanwhile, whose failure is the error too."""
    deadline = time.monotonic() + timeout
    pending = dict(checks)
    read_logs = time.monotonic() + 1
    while pending:
        starting = [service for service, _ in pending.values()] + list(watch)
        for service in starting:
            if not service.alive():
                raise service.failure("exited while starting")
        if time.monotonic() > read_logs:
            for service in starting:
                if _WORKER_DIED.search(_tail(service.log, 20000).encode()):
                    raise service.failure("its worker process died while starting")
            read_logs = time.monotonic() + 1
        for name, (_, check) in list(pending.items()):
            if check():
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            name, (service, _) = next(iter(pending.items()))
            others = [n for n in pending if n != name]
            raise service.failure(f"did not answer within {timeout:.0f} s"
                                  + (f" (nor did {', '.join(others)})" if others else ""))
        time.sleep(0.1)


# ---------------------------------------------------------------- Keystone's catalog


def _api(method: str, url: str, body: dict[str, Any] | None = None,
         token: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
            return (json.loads(text) if text else {}), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise CloudError(f"{method} {url} answered {exc.code}: {detail}") from exc


def _token(identity: str, password: str) -> str:
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": ADMIN_USER, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": ADMIN_PROJECT, "domain": {"id": "default"}}}}}
    _, headers = _api("POST", f"{identity}/auth/tokens", body)
    return headers["X-Subject-Token"]


def _register(identity: str, token: str, regions: Sequence[Region]) -> None:
    """The regions, services and public endpoints (identity in every region too)."""
    have = {r["id"] for r in _api("GET", f"{identity}/regions", token=token)[0]["regions"]}
    for region in regions:
        if region.name not in have:
            _api("POST", f"{identity}/regions", {"region": {"id": region.name}}, token)
    names = {"identity": "keystone", "compute": "nova", "image": "glance", "network": "neutron"}
    services = {s["type"]: s["id"] for s in _api("GET", f"{identity}/services", token=token)[0]["services"]}
    for kind, name in names.items():
        if kind not in services:
            made = _api("POST", f"{identity}/services", {"service": {"type": kind, "name": name}}, token)[0]
            services[kind] = made["service"]["id"]
    for region in regions:
        for kind, url in {"identity": identity, **region.endpoints}.items():
            _api("POST", f"{identity}/endpoints", {"endpoint": {
                "service_id": services[kind], "interface": "public", "region_id": region.name, "url": url}}, token)


# ---------------------------------------------------------------- the cloud


class TwoRegionCloud:
    """MariaDB, Keystone and two regions' glance-api, nova-api and neutron-server, all in ``base``.

    ``base`` is removed by ``stop()``; without one, a fresh folder (in /dev/shm where there is one) is used.
    ``tied`` (tests): the cloud does not outlive this process, however it ends: ``stop()`` at exit (atexit;
    the fixture also turns SIGTERM into KeyboardInterrupt), the kernel's SIGKILL to each service when this
    process dies (PR_SET_PDEATHSIG), and a watchdog process that stops what is left and removes ``base`` when
    this process is gone (SIGKILL). Not tied (``up``): the services run on in their own sessions.
    """

    def __init__(self, base: Path | None = None, *, tied: bool = True, timeout: float = 180.0) -> None:
        self.base = base
        self.tied = tied
        self.timeout = timeout
        self.regions: list[Region] = []
        self.password = ""
        self.keystone_port = 0
        self.services: list[Service] = []
        self.timings: dict[str, float] = {}  # seconds from the start until each stage was done
        self._recipes: dict[str, _Recipe] = {}  # by service name, for start_service
        self._restarts = 0
        self._thread: threading.Thread | None = None  # the one that called start(): see _spawn
        self._commands = _Commands(Path("/nonexistent"))
        self._watchdog: _Watchdog | None = None
        self._stopped = False

    # ------------------------------------------------------------ what users of a started cloud need

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.keystone_port}/v3"

    @property
    def clouds_yaml(self) -> Path:
        assert self.base is not None
        return self.base / "clouds.yaml"

    def region(self, name: str) -> Region:
        return next(r for r in self.regions if r.name == name)

    def connect(self, region: str, cloud: str = ADMIN_CLOUD) -> Any:
        """An openstacksdk Connection to ``region`` through this cloud's clouds.yaml."""
        import openstack.config
        import openstack.connection

        config = openstack.config.OpenStackConfig(config_files=[str(self.clouds_yaml)], vendor_files=[])
        return openstack.connection.Connection(config=config.get_one(cloud=cloud, region_name=region))

    # ------------------------------------------------------------ start and stop

    def start(self) -> TwoRegionCloud:
        """Start everything; raises CloudError (everything stopped again) naming the service that failed."""
        if missing := missing_packages():
            raise CloudError(f"Debian packages missing: {' '.join(missing)}")
        started = time.monotonic()
        if self.base is None:
            _sweep_abandoned()
            shm = Path("/dev/shm")
            parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
            self.base = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=parent))
        else:
            self.base = self.base.absolute()
            self.base.mkdir(parents=True, exist_ok=True)
        if self.tied:
            _write(self.base / "owner", f"{os.getpid()}\n")
            atexit.register(self.stop)
            self._watchdog = _Watchdog(self.base)
        self._commands = _Commands(self.base)
        self._thread = threading.current_thread()
        try:
            self._start(started)
        except BaseException:
            self.stop(keep=not self.tied)
            raise
        return self

    def _start(self, started: float) -> None:
        assert self.base is not None and self._commands is not None
        base, logs = self.base, self.base / "logs"
        ports = free_ports(2 + 3 * len(REGIONS))
        db_port, self.keystone_port = ports[:2]
        self.regions = [Region(name, f"r{i + 1}", *ports[2 + 3 * i:5 + 3 * i]) for i, name in enumerate(REGIONS)]

        template, cached = _template(self.regions, base / "template", self._commands, self.tied)
        self.timings["template"] = time.monotonic() - started
        db = MariaDB(base / "mysql", db_port, _socket_path(base))
        if cached:
            shutil.copytree(template / "mysql", db.datadir, symlinks=True)
        else:
            (template / "mysql").rename(db.datadir)
        self.password = (template / "admin-password").read_text().strip()
        if not cached:
            shutil.rmtree(template, ignore_errors=True)
        keystone = f"http://127.0.0.1:{self.keystone_port}"
        _write_configs(base, db, self.regions, keystone, self.password)
        for repo in ("fernet-keys", "credential-keys"):
            _write_key_repository(base / "keystone" / repo)

        env = _child_env(base)
        db.service = self._spawn("mariadbd", db.argv(), logs / "mariadbd.log", env)
        _wait_for({"mariadbd": (db.service, db.answers)}, 60)
        self.timings["mariadb"] = time.monotonic() - started

        # Keystone and the six services start together: they need Keystone only for requests, not to start.
        ks_env = _child_env(base, {"OS_KEYSTONE_CONFIG_FILES": str(base / "keystone" / "keystone.conf")})
        ks = self._spawn("keystone", [_binary("keystone-wsgi-public"), "--host", "127.0.0.1", "--port",
                                      str(self.keystone_port)], logs / "keystone.log", ks_env)
        checks: dict[str, tuple[Service, Callable[[], bool]]] = {}
        for r in self.regions:
            conf = base / r.key
            for name, argv, url in (
                ("glance-api", [_binary("glance-api"), "--config-file", str(conf / "glance-api.conf")],
                 r.endpoints["image"] + "/"),
                ("nova-api", [_binary("nova-api"), "--config-file", str(conf / "nova.conf")],
                 r.endpoints["compute"].removesuffix("/v2.1") + "/"),
                ("neutron-server", [_binary("neutron-server"), "--config-file", str(conf / "neutron.conf"),
                                    "--config-file", str(conf / "ml2.ini")], r.endpoints["network"] + "/"),
            ):
                service = self._spawn(f"{name} ({r.name})", argv, logs / f"{name}-{r.key}.log", env)
                checks[service.name] = (service, _http_answers(url))
                self._recipes[service.name] = _Recipe(tuple(argv), service.log, env, url)

        _wait_for({"keystone": (ks, _http_answers(f"{keystone}/v3"))}, self.timeout,
                  watch=[service for service, _ in checks.values()])
        token = _token(self.auth_url, self.password)
        _register(self.auth_url, token, self.regions)
        self.timings["keystone"] = time.monotonic() - started
        _wait_for(checks, self.timeout)
        self.timings["services"] = time.monotonic() - started
        self._write_clouds_yaml()
        self._check_through_keystone(token, checks)
        self.timings["ready"] = time.monotonic() - started

    def _spawn(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str]) -> Service:
        service = _spawn(name, argv, log, env, self.tied)
        self.services.append(service)
        self._write_pids()
        return service

    def _write_pids(self) -> None:
        assert self.base is not None
        _write(self.base / "pids", "".join(f"{s.pid} {s.started} {s.name}\n" for s in self.services), 0o644)

    # ------------------------------------------------------------ one service down and up again (fault tests)

    def _region_service(self, name: str, region: str) -> Service:
        full = f"{name} ({region})"
        if (name not in REGION_SERVICES and full not in self._recipes) or region not in REGIONS:
            raise ValueError(f"{name!r} of {region!r}: a service is one of {', '.join(REGION_SERVICES)} "
                             f"(or one add_neutron_server started) and a region one of {', '.join(REGIONS)}")
        found = next((s for s in self.services if s.name == full), None)
        if found is None:
            raise CloudError(f"{full} is not part of this cloud (is it started?)")
        return found

    def stop_service(self, name: str, region: str) -> None:
        """Stop ``name`` (glance-api, nova-api, neutron-server, or one add_neutron_server started) of ``region``,
        the workers it forked included, and return once they are gone; the rest of the cloud runs on. Nothing if
        it is stopped."""
        service = self._region_service(name, region)
        if not service.alive():
            return
        # Its session only: every process of the cloud carries the same marker.
        _stop_processes([(service.pid, service.started)], None, grace=10, children=[service])
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.popen.wait(1)

    def start_service(self, name: str, region: str) -> None:
        """Start again a service ``stop_service`` stopped (nothing if it runs) and return once it answers.

        Raises CloudError (showing its log) when it exits or does not answer within the cloud's timeout.
        Call it from the thread that started the cloud: a tied service dies with the thread that spawned it.
        """
        service = self._region_service(name, region)
        if service.alive():
            return
        if self.tied and self._thread is not threading.current_thread():
            raise CloudError(f"start_service({name!r}, {region!r}) from thread {threading.current_thread().name}: "
                             f"call it from {self._thread.name if self._thread else 'the thread that called start()'}")
        recipe = self._recipes[service.name]
        # A log of its own: _wait_for reads the log for a dead worker, which the stop may have written.
        self._restarts += 1
        log = recipe.log.with_name(f"{recipe.log.stem}-restart{self._restarts}.log")
        again = _spawn(service.name, recipe.argv, log, recipe.env, self.tied)
        self.services[self.services.index(service)] = again
        self._write_pids()
        _wait_for({again.name: (again, _http_answers(recipe.url))}, self.timeout)

    def add_neutron_server(self, region: str, name: str, conf: str, *, env: dict[str, str] | None = None,
                           subprojects: Sequence[str] = ()) -> str:
        """Another neutron-server of ``region`` on the same database, with ``conf`` read after the region's own
        configuration (its options win), started and answering; its URL. ``subprojects``: neutron-db-manage
        ``--subproject`` migrations run first (e.g. networking-l2gw's tables). Stopped with the cloud."""
        assert self.base is not None
        r = self.region(region)
        folder, logs = self.base / r.key, self.base / "logs"
        (port,) = free_ports(1)
        extra = _write(folder / f"{name}.conf", f"[DEFAULT]\nbind_port = {port}\n{conf}")
        files = ["--config-file", str(folder / "neutron.conf"), "--config-file", str(folder / "ml2.ini")]
        for sub in subprojects:
            self._commands.run(f"neutron-db-manage --subproject {sub} upgrade head",
                               [_binary("neutron-db-manage"), *files, "--subproject", sub, "upgrade", "head"],
                               logs / f"neutron-db-manage-{name}.log")
        service_env = _child_env(self.base, env)
        argv = [_binary("neutron-server"), *files, "--config-file", str(extra)]
        url = f"http://127.0.0.1:{port}"
        service = self._spawn(f"{name} ({region})", argv, logs / f"{name}.log", service_env)
        self._recipes[service.name] = _Recipe(tuple(argv), service.log, service_env, url + "/")
        _wait_for({service.name: (service, _http_answers(url + "/"))}, self.timeout)
        return url

    def _check_through_keystone(self, token: str, checks: dict[str, tuple[Service, Callable[[], bool]]]) -> None:
        """One authenticated request to each service, as a client would make it: proves its keystonemiddleware
        works (and pays its first validation now rather than in a test)."""
        paths = {"image": "/v2/images", "compute": "/os-keypairs", "network": "/v2.0/networks"}
        services = {name: service for name, (service, _) in checks.items()}
        names = {"image": "glance-api", "compute": "nova-api", "network": "neutron-server"}

        def one(region: Region, kind: str) -> None:
            url = region.endpoints[kind] + paths[kind]
            try:
                _api("GET", url, token=token)
            except CloudError as exc:
                service = services[f"{names[kind]} ({region.name})"]
                raise service.failure(f"an authenticated GET {url} failed: {exc}") from None

        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            for fut in [pool.submit(one, r, kind) for r in self.regions for kind in paths]:
                fut.result()

    def _write_clouds_yaml(self) -> None:
        def entry(name: str, region: str, all_regions: bool) -> str:
            q = json.dumps  # a JSON string is a YAML double-quoted scalar
            regions = f"    regions: [{', '.join(q(r.name) for r in self.regions)}]\n" if all_regions else ""
            return (f"  {name}:\n    auth:\n      auth_url: {q(self.auth_url)}\n      username: {q(ADMIN_USER)}\n"
                    f"      password: {q(self.password)}\n      project_name: {q(ADMIN_PROJECT)}\n"
                    f"      user_domain_name: Default\n      project_domain_name: Default\n"
                    f"    identity_api_version: 3\n    interface: public\n    region_name: {q(region)}\n{regions}")

        text = "# Written by tests/openstack_cloud.py; removed with the cloud.\nclouds:\n"
        text += entry(ADMIN_CLOUD, self.regions[0].name, True)
        text += "".join(entry(REGION_CLOUDS[r.name], r.name, False) for r in self.regions)
        _write(self.clouds_yaml, text)

    def stop(self, keep: bool = False) -> None:
        """Stop every process of the cloud and remove its folder (``keep``: leave the folder, for its logs)."""
        if self._stopped or self.base is None:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self._commands is not None:
            self._commands.kill()
        try:
            # A test's cloud is thrown away whole: nothing to wait for a clean shutdown for.
            _stop_processes([(s.pid, s.started) for s in self.services], self.base, grace=0 if self.tied else 10,
                            children=self.services)
        finally:
            for s in self.services:
                with contextlib.suppress(Exception):
                    s.popen.wait(1)
            if not keep:
                shutil.rmtree(self.base, ignore_errors=True)
            if self._watchdog is not None:
                self._watchdog.dismiss()

    def __enter__(self) -> TwoRegionCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Watchdog:
    """A process outside the test's process tree that stops the cloud and removes its folder once the test
    process is gone without doing so itself (SIGKILL): it waits for the end of a pipe only this process
    writes to. (PR_SET_PDEATHSIG alone would miss the workers the services fork, and leave the folder.)"""

    def __init__(self, base: Path) -> None:
        read, self._write = os.pipe()  # not inherited by the services (O_CLOEXEC, close_fds)
        try:
            self._popen = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "watch", "--dir", str(base)], stdin=read,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                env=_child_env(Path("/nonexistent")))
        finally:
            os.close(read)

    def dismiss(self) -> None:
        """The cloud was stopped as it should: the watchdog leaves without doing anything."""
        with contextlib.suppress(OSError):
            os.write(self._write, b"done")
        with contextlib.suppress(OSError):
            os.close(self._write)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(10)


def _watch(base: Path) -> int:
    said = sys.stdin.buffer.read()  # until the test process closes the pipe, or dies
    if said != b"done":
        with contextlib.suppress(CloudError):
            _stop_processes(_read_leaders(base), base, grace=3)
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _sweep_abandoned() -> None:
    """Remove the folders of fixture clouds whose test process died without cleaning up (SIGKILL, power)."""
    for parent in {Path("/dev/shm"), Path(tempfile.gettempdir())}:
        try:
            folders = list(parent.glob(f"{RUN_PREFIX}*"))
        except OSError:
            continue
        for folder in folders:
            try:
                owner = int((folder / "owner").read_text())
            except (OSError, ValueError):
                continue
            if not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(CloudError):
                    _stop_processes(_read_leaders(folder), folder, grace=0)
                shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- command line


def _up(base: Path) -> int:
    base = base.absolute()
    if (base / "pids").exists():
        if _cloud_processes(_read_leaders(base), base):
            print(f"a cloud is already running in {base}; `down --dir {base}` first", file=sys.stderr)
            return 1
        shutil.rmtree(base)  # what a stopped or failed one left
    elif base.exists() and any(base.iterdir()):
        print(f"{base} is not empty and holds no cloud: choose another --dir", file=sys.stderr)
        return 1
    cloud = TwoRegionCloud(base, tied=False)
    try:
        cloud.start()
    except CloudError as exc:
        print(f"{exc}\n\nthe processes are stopped; the logs are in {base}/logs (`down --dir {base}` removes them)",
              file=sys.stderr)
        return 1
    t = cloud.timings
    clouds = cloud.clouds_yaml
    print(f"""\
A two-region OpenStack runs in {cloud.base}, ready in {t['ready']:.1f} s (databases ready at {t['mariadb']:.1f} s, \
Keystone's catalog at {t['keystone']:.1f} s, all services answering at {t['services']:.1f} s).
  Keystone:  {cloud.auth_url}  (user {ADMIN_USER}, project {ADMIN_PROJECT}; the password is in {clouds})""")
    for r in cloud.regions:
        print(f"  {r.name}: " + ", ".join(f"{k} {v}" for k, v in r.endpoints.items()))
    print(f"""
Use it with openstacksdk (or the openstack CLI) through its clouds.yaml:
  export OS_CLIENT_CONFIG_FILE={clouds}
  openstack --os-cloud {ADMIN_CLOUD} --os-region-name RegionTwo network list
  python3 -c 'import openstack; print(list(openstack.connect(cloud="{ADMIN_CLOUD}", region_name="RegionOne")\
.compute.keypairs()))'
An agent names the cloud ({ADMIN_CLOUD}) and its region (RegionOne or RegionTwo) in its configuration;
{REGION_CLOUDS['RegionOne']} and {REGION_CLOUDS['RegionTwo']} are the same cloud pinned to one region.
Logs: {cloud.base}/logs.  Stop and remove it all: python3 -m tests.openstack_cloud down --dir {base}""")
    return 0


def _down(base: Path) -> int:
    base = base.absolute()
    if base.exists() and not (base / "pids").exists() and any(base.iterdir()):
        print(f"{base} holds no cloud (no pids file): left as it is", file=sys.stderr)
        return 1
    _stop_processes(_read_leaders(base), base, grace=10)
    if base.exists():
        shutil.rmtree(base)
        print(f"stopped the cloud in {base} and removed it")
    else:
        print(f"nothing in {base}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.openstack_cloud",
                                     description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "start the cloud; it keeps running after this command returns"),
                            ("down", "stop the cloud and remove its folder")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--dir", type=Path, default=Path(".openstack"), help="its folder (default .openstack)")
    watch = sub.add_parser("watch")  # internal: see _Watchdog
    watch.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "watch":
        return _watch(args.dir)
    if args.command == "up":
        if missing := missing_packages():
            print(f"missing Debian packages: {' '.join(missing)} (apt-get install -y {' '.join(missing)})",
                  file=sys.stderr)
            return 1
        return _up(args.dir)
    return _down(args.dir)


if __name__ == "__main__":
    sys.exit(main())
