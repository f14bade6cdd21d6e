"""The driver's side of a BGP speaker: starting one as a process of its own, and talking to it over its socket.

A speaker is never the agent's child for long: ``launch`` runs the speaker
module with ``--daemon``, which detaches and returns once it listens. From then
on the agent (this one or the next) reaches it only through its unix socket,
``SpeakerClient``: requests with answers, and the speaker's events. A speaker
whose socket closes is gone (or was stopped); its pid file and its log tell
who it was and its last complaint.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from isthmus.drivers.bgp.protocol import Event, HelloResult, Op, Request, Response

log = logging.getLogger(__name__)

SPEAKER_MODULE = "isthmus.drivers.bgp.speaker"
START_TIMEOUT = 30.0  # seconds for a speaker to import os-ken and listen
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
MAX_LINE = 16 * 1024 * 1024  # a state reply lists every received prefix
MAX_LOG = 4 * 1024 * 1024  # a speaker's log is rotated (one old copy) when it is started beyond this
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


# ---------------------------------------------------------------- errors of this package
#
#   SpeakerError          the speaker did not do what was asked
#   ├── SpeakerGone       it is not running (exited, never started, stopped answering)
#   └── SpeakerRefused    it answered ok=false (os-ken refused the operation)
#
# They stay inside the bgp driver: apply/observe turn them into peering states.


class SpeakerError(Exception):
    """The speaker did not do what was asked."""


class SpeakerGone(SpeakerError):
    """The speaker is not running or stopped answering."""


class SpeakerRefused(SpeakerError):
    """The speaker answered with an error (os-ken refused the operation)."""


@dataclass(frozen=True)
class SpeakerPaths:
    """Where one endpoint's speaker keeps its socket, pid and log, in the driver's state directory."""

    socket: Path
    pid: Path
    log: Path

    @classmethod
    def of(cls, state_dir: Path, endpoint: str) -> SpeakerPaths:
        stem = f"speaker-{endpoint.replace('/', '-')}"
        sock = state_dir / f"{stem}.sock"
        if len(str(sock)) > MAX_SOCKET_PATH:  # long names: a short socket name that is still the endpoint's
            sock = state_dir / f"speaker-{hashlib.sha256(endpoint.encode()).hexdigest()[:16]}.sock"
        return cls(sock, state_dir / f"{stem}.pid", state_dir / f"{stem}.log")

    def pid_of(self) -> int:
        try:
            return int(self.pid.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0


def alive(pid: int) -> bool:
    """``pid`` is a running process (not a zombie waiting for a parent that does not reap)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def last_complaint(log_path: Path, pid: int) -> str:
    """The last WARNING/ERROR line speaker ``pid`` wrote to its log ("" if none)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    mark = f" pid {pid} "
    for line in reversed(lines):
        if mark in line and (" ERROR " in line or " WARNING " in line or " CRITICAL " in line):
            return line.split(mark, 1)[1].split(": ", 1)[-1]
    return ""


def gone_text(paths: SpeakerPaths, pid: int, how: str = "is gone") -> str:
    last = last_complaint(paths.log, pid)
    return f"the BGP speaker (pid {pid}) {how}" + (f": {last}" if last else "")


async def launch(endpoint: str, paths: SpeakerPaths, asn: int, router_id: str, address: str, port: int,
                 log_level: str) -> None:
    """Start the speaker of ``endpoint`` as a process of its own and wait until it listens.

    Raises SpeakerGone (with its exit code and last complaint) when it could not start.
    """
    with contextlib.suppress(OSError):
        if paths.log.stat().st_size > MAX_LOG:
            paths.log.replace(paths.log.with_suffix(".log.1"))
    args = [sys.executable, "-m", SPEAKER_MODULE, "--daemon", "--endpoint", endpoint, "--asn", str(asn),
            "--router-id", router_id, "--listen-host", address, "--listen-port", str(port),
            "--socket", str(paths.socket), "--pid-file", str(paths.pid), "--log-level", log_level]
    try:
        fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise SpeakerGone(f"cannot open the BGP speaker's log {paths.log}: {exc.strerror}") from None
    try:
        # start_new_session: a Ctrl-C or SIGTERM meant for the agent's process group never reaches it.
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd,
                                                    start_new_session=True)
    except OSError as exc:
        raise SpeakerGone(f"cannot start the BGP speaker ({sys.executable}): {exc}") from None
    finally:
        os.close(fd)
    try:
        code = await asyncio.wait_for(proc.wait(), START_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        pid = paths.pid_of()
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise SpeakerGone(f"the BGP speaker was not ready within {START_TIMEOUT:g} s") from None
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        last = _last_line_of_failed_start(paths.log)
        raise SpeakerGone(f"the BGP speaker {how}" + (f": {last}" if last else ""))


def _last_line_of_failed_start(log_path: Path) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if " ERROR " in line or " CRITICAL " in line:
            return line.split(": ", 1)[-1]
    return ""


class SpeakerClient:
    """A connection to one running speaker: requests, its events (to ``on_event``), and when it closes.

    Use ``await SpeakerClient.connect(...)``; ``hello`` holds what the speaker said it holds then.
    """

    def __init__(self, label: str, paths: SpeakerPaths, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_event: Callable[[SpeakerClient, Event], None]) -> None:
        self.label = label
        self.paths = paths
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self.closed = asyncio.Event()
        self.stopping = False  # asked to stop: its going is no surprise
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self.hello: HelloResult | None = None
        self._task = asyncio.create_task(self._read(), name=f"bgp-speaker-{label}")

    @classmethod
    async def connect(cls, label: str, paths: SpeakerPaths,
                      on_event: Callable[[SpeakerClient, Event], None]) -> SpeakerClient:
        """Connect to the speaker on ``paths.socket`` and read its hello.

        Raises SpeakerGone when nothing answers there (no file, nobody listening, no hello).
        """
        try:
            reader, writer = await asyncio.open_unix_connection(str(paths.socket), limit=MAX_LINE)
        except OSError as exc:
            raise SpeakerGone(f"no BGP speaker answers on {paths.socket}: {exc.strerror or exc}") from None
        client = cls(label, paths, reader, writer, on_event)
        try:
            client.hello = cast(HelloResult, await client.request("hello"))
        except SpeakerError as exc:
            await client.close()
            raise SpeakerGone(f"the BGP speaker on {paths.socket} did not say hello: {exc}") from None
        return client

    @property
    def pid(self) -> int:
        return self.hello["pid"] if self.hello is not None else 0

    @property
    def running(self) -> bool:
        return not self.closed.is_set()

    def exit_text(self) -> str:
        """How the speaker ended, for logs and peering errors."""
        return gone_text(self.paths, self.pid)

    async def request(self, op: Op, args: Mapping[str, Any] | None = None, timeout: float = REQUEST_TIMEOUT) -> Any:
        """Send ``op`` with ``args`` and return its result.

        Raises SpeakerRefused when the speaker answers with an error; SpeakerGone when
        it is not connected, goes meanwhile or does not answer within ``timeout``
        (then it is killed: a speaker that stopped answering cannot be trusted with sessions).
        """
        if not self.running:
            raise SpeakerGone(self.exit_text())
        self._next_id += 1
        req = Request(id=self._next_id, op=op, args=dict(args or {}))
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[req["id"]] = fut
        try:
            self._writer.write(json.dumps(req).encode() + b"\n")
            await self._writer.drain()
            resp = await asyncio.wait_for(fut, timeout)
        except (BrokenPipeError, ConnectionResetError):
            raise SpeakerGone(self.exit_text()) from None
        except TimeoutError:
            log.warning("bgp speaker %s (pid %d) did not answer %s within %g s; killing it",
                        self.label, self.pid, op, timeout)
            await self.kill()
            raise SpeakerGone(f"the BGP speaker did not answer {op} within {timeout:g} s") from None
        finally:
            self._pending.pop(req["id"], None)
        if not resp.get("ok"):
            raise SpeakerRefused(resp.get("error") or f"{op} failed")
        return resp.get("result")

    async def close(self) -> None:
        """Hang up; the speaker goes on as it is."""
        self.stopping = True
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), STOP_TIMEOUT)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End the speaker: its sessions get a Cease (Administrative Shutdown); killed if it does not exit."""
        self.stopping = True
        if self.running:
            with contextlib.suppress(SpeakerError):
                await self.request("shutdown", timeout=timeout)
        pid = self.pid
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if alive(pid):
            log.warning("bgp speaker %s (pid %d) did not exit within %g s; killing it", self.label, pid, timeout)
        await self.kill()

    async def kill(self) -> None:
        """Kill the speaker at once and forget its files."""
        self.stopping = True
        pid = self.pid
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
            while alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        self._writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), STOP_TIMEOUT)
        forget(self.paths, pid)

    async def _read(self) -> None:
        try:
            while True:
                try:
                    line = await self._reader.readline()
                except ValueError:  # a line over MAX_LINE: the protocol is broken
                    log.error("bgp speaker %s (pid %d) wrote a line over %d bytes; hanging up",
                              self.label, self.pid, MAX_LINE)
                    return
                except OSError:
                    return
                if not line:
                    return
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("bgp speaker %s (pid %d): not a protocol line: %.200r", self.label, self.pid, line)
                    continue
                if not isinstance(msg, dict):
                    continue
                if "event" in msg:
                    self._on_event(self, cast(Event, msg))
                elif isinstance(msg.get("id"), int):
                    fut = self._pending.get(msg["id"])
                    if fut is not None and not fut.done():
                        fut.set_result(cast(Response, msg))
        finally:
            self._writer.close()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(SpeakerGone(self.exit_text()))
            self.closed.set()


def forget(paths: SpeakerPaths, pid: int) -> None:
    """Remove the pid file and socket of speaker ``pid`` once it is gone (not those of a newer one)."""
    if alive(pid):
        return
    if paths.pid_of() in (pid, 0):
        paths.pid.unlink(missing_ok=True)
        paths.socket.unlink(missing_ok=True)
