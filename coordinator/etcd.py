"""A private etcd server as a child process: the coordinator's embedded default, and the tests' etcd."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

ETCD_PACKAGE_HINT = "install Debian's etcd-server package (apt-get install etcd-server)"


class EtcdMissing(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # The etcd child must not outlive a coordinator that was killed: PR_SET_PDEATHSIG = 1.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class EmbeddedEtcd:
    """One etcd member on free loopback ports, with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, binary: str = "etcd") -> None:
        self.data_dir = Path(data_dir)
        self.binary = binary
        self.client_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "etcd.log"

    def start(self, timeout: float = 20.0) -> str:
        """Start etcd and wait until it answers; returns ``host:port`` of its client URL."""
        exe = shutil.which(self.binary)
        if exe is None:
            raise EtcdMissing(f"the etcd binary {self.binary!r} was not found on PATH; {ETCD_PACKAGE_HINT}")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        last_error = ""
        for _ in range(3):  # a free port can be taken between choosing and binding it
            self.client_port, peer_port = free_port(), free_port()
            client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{peer_port}"
            cmd = [
                exe,
                "--name", "isthmus",
                "--data-dir", str(self.data_dir / "member"),
                "--listen-client-urls", client,
                "--advertise-client-urls", client,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"isthmus={peer}",
                "--auto-compaction-mode", "revision",
                # History serves resuming agents (a delta from their revision) and watches; older
                # revisions only grow the database. A compacted revision falls back to a snapshot.
                "--auto-compaction-retention", "10000",
            ]
            logf = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child)
            setpriv = shutil.which("setpriv")
            if setpriv:
                # util-linux sets the death signal and execs etcd: no Python runs in the forked child, where
                # gRPC's threads in this process (the coordinator's, a test's) could make it crash before exec.
                self.proc = subprocess.Popen([setpriv, "--pdeathsig", "TERM", "--", *cmd], stdout=logf,
                                             stderr=subprocess.STDOUT, env=_etcd_env())
            else:
                self.proc = subprocess.Popen(
                    cmd, stdout=logf, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, env=_etcd_env()
                )
            logf.close()
            if self._wait_ready(timeout):
                log.info("embedded etcd (pid %d) serving on %s, data in %s", self.proc.pid, client, self.data_dir)
                return self.endpoint
            last_error = self._tail()
            self.stop()
        raise RuntimeError(f"embedded etcd did not start; last lines of {self.log_path}:\n{last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.5) as s:
                    s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    if b'"health":"true"' in s.recv(4096):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


def _etcd_env() -> dict[str, str]:
    # ETCD_* variables in the coordinator's environment would silently reconfigure the child.
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
