"""Test hosts as network namespaces: created by the test, removed afterwards (also when it fails).

Uses iproute2's `ip` (test scaffolding only; isthmus itself talks netlink through pyroute2).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_unavailable() -> str:
    """Why network namespaces cannot be used here ("" when they can)."""
    if os.geteuid() != 0:
        return "needs root and CAP_NET_ADMIN to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's ip (Debian package iproute2)"
    probe = f"isthmus-probe-{os.getpid()}"
    res = ip("netns", "add", probe, check=False)
    if res.returncode != 0:
        return f"cannot create a network namespace (CAP_NET_ADMIN missing?): {res.stderr.strip()}"
    ip("netns", "delete", probe, check=False)
    return ""


class Netns:
    """One network namespace with loopback up."""

    def __init__(self, name: str) -> None:
        self.name = name
        ip("netns", "add", name)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ip("-n", self.name, *args, check=check)

    def run(self, args: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *args], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def popen(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            return subprocess.Popen(["ip", "netns", "exec", self.name, *args], stdout=f, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)

    def pids(self) -> list[int]:
        out = ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    def ping(self, address: str, count: int = 1, timeout: int = 1) -> bool:
        args = ["ping", "-c", str(count), "-W", str(timeout), address]
        return self.run(args, check=False, timeout=count * timeout + 5).returncode == 0

    def delete(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ip("netns", "delete", self.name, check=False)


def veth(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """A veth pair with one end in each namespace, both up."""
    tmp = f"vt{uuid.uuid4().hex[:10]}"
    ip("link", "add", tmp, "type", "veth", "peer", "name", a_if, "netns", a.name)
    ip("link", "set", tmp, "netns", b.name)
    b.ip("link", "set", tmp, "name", b_if)
    a.ip("link", "set", a_if, "up")
    b.ip("link", "set", b_if, "up")


class Lab:
    """The namespaces of one test, named uniquely, all deleted at the end."""

    def __init__(self) -> None:
        self.prefix = f"ist{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"
        self.spaces: list[Netns] = []

    def netns(self, name: str) -> Netns:
        ns = Netns(f"{self.prefix}-{name}")
        self.spaces.append(ns)
        return ns

    def close(self) -> None:
        for ns in reversed(self.spaces):
            ns.delete()


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()
