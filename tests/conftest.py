"""Shared fixtures: a real etcd server, in-process coordinators, agent processes, condition waits."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from isthmus.coordinator.etcd import EmbeddedEtcd, free_port
from isthmus.coordinator.main import Coordinator, Options
from isthmus.coordinator.registry import ROOT
from isthmus.coordinator.store import Delete, Store
from neutron_isthmus import NeutronIsthmus, install_plugin, neutron_conf, register_region
from openstack_cloud import REGIONS, CloudError, TwoRegionCloud, _token, missing_packages

BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- async tests without a plugin


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no plugin needed)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        kwargs = {n: pyfuncitem.funcargs[n] for n in names}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=120))
        return True
    return None


# ---------------------------------------------------------------- waiting on conditions


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming what was last seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 (shown if the deadline passes)
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


async def await_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
        except Exception as exc:  # noqa: BLE001
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


# ---------------------------------------------------------------- etcd


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real etcd server for the session (Debian's etcd-server)."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian package etcd-server); `make deps` installs it")
    server = EmbeddedEtcd(tmp_path_factory.mktemp("etcd"))
    endpoint = server.start()
    yield endpoint
    server.stop()


@pytest.fixture
def etcd(etcd_server: str) -> str:
    """The session's etcd, emptied of isthmus keys before the test."""

    async def wipe() -> None:
        store = Store([etcd_server])
        await store.connect()
        await store.txn([], [Delete(ROOT, prefix=True)])
        await store.close()

    asyncio.run(wipe())
    return etcd_server


@contextlib.asynccontextmanager
async def running_coordinator(etcd_endpoint: str, tmp: Path, lease_ttl: int = 5) -> AsyncIterator[Coordinator]:
    """A coordinator in this event loop, on a free loopback port, against ``etcd_endpoint``."""
    opts = Options(
        listen=["127.0.0.1:0"], advertise="", etcd_endpoints=[etcd_endpoint], data_dir=tmp,
        tls_cert="", tls_key="", tls_ca="", insecure=False, lease_ttl=lease_ttl, ready_file="",
    )
    coordinator = Coordinator(opts)
    await coordinator.start()
    try:
        yield coordinator
    finally:
        await coordinator.stop(grace=0.5)


# ---------------------------------------------------------------- processes


class Proc:
    """A child process of the suite with its log file; stopped (and reaped) at teardown."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log = log
        self._logf = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, args, log, env)
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.stop()


def coordinator_cmd(data_dir: Path, ready: Path, etcd_endpoint: str = "", port: int = 0) -> list[str]:
    cmd = [str(BIN / "isthmus-coordinator"), "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
           "--ready-file", str(ready), "--lease-ttl", "3"]
    if etcd_endpoint:
        cmd += ["--etcd-endpoints", etcd_endpoint]
    return cmd


@pytest.fixture
def coordinator(etcd: str, tmp_path: Path, procs: Callable[..., Proc]) -> str:
    """A coordinator process against the session's etcd; its HOST:PORT."""
    ready = tmp_path / "addr"
    procs("coordinator", coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd), tmp_path / "coord.log")
    return str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator"))


def agent_cmd(site: str, coordinator: str, base: Path, *extra: str) -> list[str]:
    return [str(BIN / "isthmus-agent"), "--site", site, "--coordinator", coordinator,
            "--driver", "fake", "--state-dir", str(base / site / "state"),
            "--admin-socket", str(base / site / "admin.sock"), "--heartbeat", "1",
            "--reconcile-interval", "2", *extra]


def ctl(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(BIN / "isthmusctl"), *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        pytest.fail(f"isthmusctl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def rpc_code(exc: BaseException) -> grpc.StatusCode:
    assert isinstance(exc, grpc.RpcError), exc
    return exc.code()  # type: ignore[no-any-return]


@pytest.fixture
def port() -> int:
    return free_port()


# ---------------------------------------------------------------- network namespaces


@pytest.fixture(scope="session")
def netns_reason() -> str:
    from netns import netns_unavailable

    return netns_unavailable()


@pytest.fixture
def lab(netns_reason: str) -> Iterator[Any]:
    """Network namespaces for this test (``lab.netns(name)``), removed afterwards even on failure."""
    if netns_reason:
        pytest.skip(netns_reason)
    from netns import lab as make_lab

    with make_lab() as the_lab:
        yield the_lab


# ---------------------------------------------------------------- the two-region OpenStack (openstack_cloud.py)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the cloud runs, SIGTERM ends the session like Ctrl-C, so the fixture's teardown (and atexit) run."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def two_region_cloud() -> Iterator[TwoRegionCloud]:
    """MariaDB, Keystone and per region glance-api, nova-api and neutron-server (Debian's), for the session."""
    missing = missing_packages() + ([] if shutil.which("ssh-keygen") else ["openssh-client"])
    if missing:
        pytest.skip(f"the two-region OpenStack needs the Debian packages {' '.join(missing)} "
                    f"(`.ci/run` installs them; `apt-get install -y {' '.join(missing)}`)")
    cloud = TwoRegionCloud()
    with sigterm_as_interrupt():
        try:
            cloud.start()
        except CloudError as exc:
            pytest.fail(f"the two-region OpenStack did not start: {exc}", pytrace=False)
        try:
            yield cloud
        finally:
            base = cloud.base
            cloud.stop()
            assert base is not None and not base.exists(), f"{base} is left behind"


@pytest.fixture(scope="session")
def regions(two_region_cloud: TwoRegionCloud) -> Iterator[dict[str, Any]]:
    """An openstacksdk connection per region, through the cloud's clouds.yaml."""
    conns = {name: two_region_cloud.connect(name) for name in REGIONS}
    yield conns
    for conn in conns.values():
        conn.close()


# ---------------------------------------------------------------- isthmus inside Neutron (neutron_isthmus.py)


@pytest.fixture(scope="session")
def neutron(two_region_cloud: TwoRegionCloud) -> NeutronIsthmus:
    """A second neutron-server of RegionOne with isthmus loaded by configuration only (networking-l2gw's driver
    and the infrastructure API), for the session; each test starts the coordinator it reaches."""
    if shutil.which("neutron-db-manage") is None or not Path("/usr/lib/python3/dist-packages/networking_l2gw").is_dir():
        pytest.skip("needs Debian's python3-networking-l2gw (`make test` installs it)")
    base = two_region_cloud.base
    assert base is not None
    site = install_plugin(base / "isthmus-site")
    socket = base / "isthmus" / "coordinator.sock"
    socket.parent.mkdir(exist_ok=True)
    url = two_region_cloud.add_neutron_server("RegionOne", "neutron-isthmus", neutron_conf(site, socket),
                                              env={"PYTHONPATH": str(site)}, subprojects=["networking-l2gw"])
    token = _token(two_region_cloud.auth_url, two_region_cloud.password)
    register_region(two_region_cloud.auth_url, token, url)  # the openstack CLI finds it through the catalog
    return NeutronIsthmus(url, socket, site, token)


def start_neutron_coordinator(etcd: str, neutron: NeutronIsthmus, tmp: Path,
                              procs: Callable[..., Proc]) -> tuple[Proc, str]:
    """A coordinator on ``etcd``, on loopback and on the socket neutron-server reaches; its process and
    HOST:PORT. ``tmp`` must be new for each one started."""
    neutron.socket.unlink(missing_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    ready = tmp / "addr"
    cmd = coordinator_cmd(tmp / "coord", ready, etcd_endpoint=etcd)
    cmd[cmd.index("--listen") + 1] += f",unix:{neutron.socket}"
    proc = procs("coordinator", cmd, tmp / "coord.log")
    return proc, str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator"))


@pytest.fixture
def neutron_coordinator(etcd: str, neutron: NeutronIsthmus, tmp_path: Path, procs: Callable[..., Proc]) -> str:
    """A coordinator on the session's (emptied) etcd that the Neutron test bed reaches; its HOST:PORT."""
    return start_neutron_coordinator(etcd, neutron, tmp_path / "neutron-coordinator", procs)[1]
