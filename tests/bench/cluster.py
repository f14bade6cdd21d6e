"""The system under test: an etcd child (EmbeddedEtcd) and one isthmus-coordinator process against it.

The coordinator is a process of its own so that the load process (this one,
with its simulated agents and API clients) and the coordinator never share a
GIL. Every child dies with this process (PR_SET_PDEATHSIG) and is stopped by
``close`` (also on failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import grpc
import grpc.aio
from aetcd import rpc

from isthmus.coordinator.etcd import EmbeddedEtcd, free_port
from isthmus.coordinator.store import prefix_end

BIN = Path(sys.executable).parent

# Each client channel gets a TCP connection of its own, as separate hosts would: by default gRPC shares one
# connection between all channels of a process that have the same target and arguments.
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)

SETPRIV = shutil.which("setpriv")  # util-linux: sets the parent-death signal, then execs the command
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded before any fork: the child only calls into it


def _die_with_parent() -> None:
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child with its own process group and log file, killed when this process dies.

    With setpriv the death signal is set without a Python ``preexec_fn`` (which
    forces a fork() that gRPC's fork handlers complain about); without it, in
    the child before exec.
    """
    with open(log, "ab") as logf:
        if SETPRIV:
            return subprocess.Popen([SETPRIV, "--pdeathsig", "KILL", "--", *args], stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})})
        return subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent, env={**os.environ, **(env or {})})


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0, sig: int = signal.SIGTERM) -> float:
    """Signal, wait up to ``timeout``, then kill the process group; returns the seconds it took to exit."""
    t0 = time.monotonic()
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return time.monotonic() - t0


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@functools.cache
def coordinator_help() -> str:
    try:
        return subprocess.run([str(BIN / "isthmus-coordinator"), "--help"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def default_coordinator_args() -> list[str]:
    """Options the benchmark gives the coordinator on top of its defaults.

    ``--write-rate 0``: the per-caller write limit (50/s by default, and every
    unauthenticated client is the same caller) would otherwise be what the
    API scenarios measure.
    """
    return ["--write-rate", "0"] if "--write-rate" in coordinator_help() else []


class Cluster:
    """etcd plus one coordinator process, in ``work``; the coordinator can be restarted on its port."""

    def __init__(self, work: Path, log_level: str = "info", profile_dir: Path | None = None,
                 name: str = "coordinator", extra_args: list[str] | None = None) -> None:
        self.work = work
        self.extra_args = default_coordinator_args() if extra_args is None else extra_args
        self.log_level = log_level
        self.profile_dir = profile_dir
        self.name = name
        self.etcd = EmbeddedEtcd(work / "etcd")
        self.etcd_endpoint = ""
        self.port = 0
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._channels: list[grpc.aio.Channel] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def etcd_pid(self) -> int:
        return self.etcd.proc.pid if self.etcd.proc is not None else 0

    @property
    def coordinator_pid(self) -> int:
        return self.coordinator.pid if self.coordinator is not None else 0

    @property
    def log_path(self) -> Path:
        return self.work / f"{self.name}.log"

    def start_etcd(self) -> str:
        # In this (the main) thread: PR_SET_PDEATHSIG fires when the thread that forked the child ends.
        self.work.mkdir(parents=True, exist_ok=True)
        self.etcd_endpoint = self.etcd.start()
        return self.etcd_endpoint

    async def start_coordinator(self, timeout: float = 60.0) -> str:
        """Start (or restart, on the same port) the coordinator; returns its address once it serves."""
        if not self.port:
            self.port = free_port()
        ready = self.work / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        self.starts += 1
        args = ["--listen", self.address, "--etcd-endpoints", self.etcd_endpoint,
                "--data-dir", str(self.work / "coordinator-data"), "--ready-file", str(ready),
                "--log-level", self.log_level, *self.extra_args]
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            out = self.profile_dir / f"{self.name}-{self.starts}.prof"
            cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "isthmus.coordinator.main", *args]
        else:
            cmd = [str(BIN / "isthmus-coordinator"), *args]
        self.coordinator = spawn(cmd, self.log_path)
        await self.wait_ready(timeout)
        return self.address

    async def wait_ready(self, timeout: float = 60.0) -> None:
        ready = self.work / f"{self.name}.ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.coordinator is not None
            if self.coordinator.poll() is not None:
                raise RuntimeError(f"the coordinator exited with {self.coordinator.returncode}:\n"
                                   f"{tail(self.log_path)}")
            if ready.exists() and ready.read_text().strip():
                return
            await asyncio.sleep(0.005)
        raise RuntimeError(f"the coordinator was not ready within {timeout}s:\n{tail(self.log_path)}")

    async def stop_coordinator(self, timeout: float = 30.0) -> float:
        """SIGTERM and wait (the graceful path: streams end first); returns the seconds it took."""
        if self.coordinator is None:
            return 0.0
        proc, self.coordinator = self.coordinator, None
        return await asyncio.to_thread(stop_process, proc, timeout)

    def channel(self, target: str = "") -> grpc.aio.Channel:
        """A client channel with a TCP connection of its own (closed by ``close``)."""
        # etcd batches watch events up to its own limit, beyond gRPC's default 4 MiB of a client
        ch = grpc.aio.insecure_channel(target or self.address,
                                       options=[OWN_CONNECTION, ("grpc.max_receive_message_length", 64 << 20)])
        self._channels.append(ch)
        return ch

    async def close(self) -> None:
        """Stop the processes and close the channels; bounded, and the processes go whatever happens."""
        try:
            channels, self._channels = self._channels, []
            await asyncio.wait_for(asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True), 10)
        except TimeoutError:
            pass
        finally:
            self.kill()

    def kill(self) -> None:
        """Synchronously: SIGTERM the coordinator (SIGKILL after 10 s), then stop etcd."""
        if self.coordinator is not None:
            proc, self.coordinator = self.coordinator, None
            stop_process(proc, timeout=10)
        self.etcd.stop()


# ---------------------------------------------------------------- raw etcd, the reference


class Channels(Protocol):
    """Where the reference clients get their channels: a Cluster, or a load process's own (loadproc.py)."""

    etcd_endpoint: str

    def channel(self, target: str = "") -> grpc.aio.Channel: ...


class RawEtcd:
    """etcd's own v3 stubs (``aetcd.rpc``) on a grpc.aio channel, as coordinator/store.py uses them."""

    def __init__(self, cluster: Channels, endpoint: str = "") -> None:
        self.channel = cluster.channel(endpoint or cluster.etcd_endpoint)
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)

    async def put(self, key: str, value: bytes) -> int:
        resp = await self.kv.Put(rpc.PutRequest(key=key.encode(), value=value), timeout=30)
        return int(resp.header.revision)

    async def revision(self) -> int:
        resp = await self.kv.Range(rpc.RangeRequest(key=b"\0", count_only=True), timeout=30)
        return int(resp.header.revision)

    async def txn_puts(self, items: list[tuple[str, bytes]]) -> int:
        req = rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k.encode(), value=v))
                                      for k, v in items])
        resp = await self.kv.Txn(req, timeout=30)
        return int(resp.header.revision)

    async def count(self, prefix: str) -> int:
        resp = await self.kv.Range(rpc.RangeRequest(key=prefix.encode(), range_end=prefix_end(prefix.encode()),
                                                    count_only=True), timeout=30)
        return int(resp.count)

    async def range_prefix(self, prefix: str) -> list[rpc.KeyValue]:
        resp = await self.kv.Range(rpc.RangeRequest(key=prefix.encode(), range_end=prefix_end(prefix.encode()),
                                                    keys_only=True), timeout=30)
        return list(resp.kvs)

    async def revoke(self, lease: int) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # already gone
            await self.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease), timeout=30)

    async def delete_prefix(self, prefix: str) -> None:
        await self.kv.DeleteRange(rpc.DeleteRangeRequest(key=prefix.encode(),
                                                         range_end=prefix_end(prefix.encode())), timeout=30)

    async def db_size(self) -> int:
        resp = await self.maintenance.Status(rpc.StatusRequest(), timeout=30)
        return int(resp.dbSize)

    async def written(self, prefix: str, start: int, end: int) -> dict[str, list[int]]:
        """What was written under ``prefix`` in revisions ``start``..``end``: {kind: [puts, value bytes]}, the
        kind being the first path element after ``prefix`` (empty if etcd compacted that history)."""
        out: dict[str, list[int]] = {}
        if end < start:
            return out
        req = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=prefix.encode(), range_end=prefix_end(prefix.encode()), start_revision=start))

        async def requests() -> object:
            yield req
            await asyncio.Event().wait()  # keep the stream open until cancelled

        call = self.watch.Watch(requests())
        try:
            async for resp in call:
                if resp.compact_revision or resp.canceled:
                    return {}
                for ev in resp.events:
                    if ev.type == rpc.Event.PUT:
                        kind = ev.kv.key.decode()[len(prefix):].split("/", 1)[0]
                        row = out.setdefault(kind, [0, 0])
                        row[0] += 1
                        row[1] += len(ev.kv.key) + len(ev.kv.value)
                    if ev.kv.mod_revision >= end:
                        return out
        finally:
            call.cancel()
        return out


class RawWatcher:
    """One client watching one key on etcd directly; notes when it sees each revision."""

    def __init__(self, cluster: Channels, key: str) -> None:
        self.etcd = RawEtcd(cluster)
        self.key = key
        self.seen: dict[int, float] = {}  # revision -> perf_counter when this watcher received it
        self.created = asyncio.Event()
        self.progress: asyncio.Event | None = None  # set on every event (shared by a group of watchers)
        self._requests: asyncio.Queue[rpc.WatchRequest | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._requests.put_nowait(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=self.key.encode())))
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.key}")

    async def _run(self) -> None:
        async def requests() -> object:
            while (item := await self._requests.get()) is not None:
                yield item

        call = self.etcd.watch.Watch(requests())
        try:
            async for resp in call:
                if resp.created:
                    self.created.set()
                now = time.perf_counter()
                for ev in resp.events:
                    self.seen.setdefault(int(ev.kv.mod_revision), now)
                if resp.events and self.progress is not None:
                    self.progress.set()
        finally:
            call.cancel()

    def failed(self) -> BaseException | None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception() or RuntimeError(f"the watch on {self.key} ended")
        return None

    async def stop(self) -> None:
        self._requests.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._task


async def quiesce(etcd: RawEtcd, quiet: float = 0.3, timeout: float = 60.0) -> float:
    """Wait until etcd's revision stands still for ``quiet`` seconds (status write-backs done)."""
    t0 = time.monotonic()
    last = -1
    while time.monotonic() - t0 < timeout:
        rev = await etcd.revision()
        if rev == last:
            break
        last = rev
        await asyncio.sleep(quiet)
    return time.monotonic() - t0


async def wait_seen(watchers: list[RawWatcher], revision: int, timeout: float) -> list[float]:
    """perf_counter times at which each watcher saw ``revision``; raises TimeoutError naming the laggards."""
    deadline = time.monotonic() + timeout
    progress = asyncio.Event()
    for w in watchers:
        w.progress = progress
    try:
        while True:
            missing = [w for w in watchers if revision not in w.seen]
            if not missing:
                return [w.seen[revision] for w in watchers]
            for w in missing:
                if (exc := w.failed()) is not None:
                    raise RuntimeError(f"watch on {w.key} failed: {exc!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(missing)} of {len(watchers)} watchers did not see rev {revision} "
                                   f"within {timeout}s (first: {missing[0].key})")
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), min(left, 1.0))
    finally:
        for w in watchers:
            w.progress = None
