"""A real three-member etcd cluster on loopback (Debian's etcd-server), for the fault tests.

Each member is a process the test starts (through the ``procs`` fixture, which stops them all at teardown) with
the data in the test's temporary directory. Members can be killed and started again on the same ports and data.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
from aetcd import rpc as etcd_rpc

from conftest import Proc, wait_for
from isthmus.coordinator.etcd import free_port


class EtcdCluster:
    """Three members (heartbeat 100 ms, election timeout 1 s); ``members[i]`` is member i's process."""

    def __init__(self, base: Path, procs: Callable[..., Proc]) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.procs = procs
        self.client = [free_port() for _ in range(3)]
        self.peer = [free_port() for _ in range(3)]
        token = uuid.uuid4().hex
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer))
        self.members: list[Proc] = []
        self.commands: list[list[str]] = []
        for i in range(3):
            self.commands.append([
                "etcd", "--name", f"m{i}", "--data-dir", str(base / f"m{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{self.client[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.client[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[i]}",
                "--initial-cluster", initial, "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
                "--heartbeat-interval", "100", "--election-timeout", "1000",
            ])
            self.members.append(procs(f"etcd-m{i}", self.commands[i], base / f"etcd-m{i}.log"))
        wait_for(lambda: self.leader_index() >= 0, 30, "the etcd cluster to elect a leader")

    @property
    def endpoints(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.client)

    def leader_index(self) -> int:
        """Index of the member that is the raft leader (-1 if none answers)."""
        ids = {}
        leader = 0
        for i, port in enumerate(self.client):
            if not self.members[i].alive():
                continue
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    st = etcd_rpc.MaintenanceStub(ch).Status(etcd_rpc.StatusRequest(), timeout=2)
            except grpc.RpcError:
                continue
            ids[st.header.member_id] = i
            leader = st.leader
        return ids.get(leader, -1)

    def endpoint(self, i: int) -> str:
        return f"127.0.0.1:{self.client[i]}"

    def kill(self, i: int) -> None:
        self.members[i].stop(signal.SIGKILL)

    def start(self, i: int) -> None:
        """Member i again, on its ports and data (it rejoins the cluster)."""
        assert not self.members[i].alive()
        self.members[i] = self.procs(f"etcd-m{i}", self.commands[i], self.base / f"etcd-m{i}.log")

    def has_leader(self, i: int) -> bool | None:
        """Whether member i knows a leader (None: it does not answer)."""
        try:
            with grpc.insecure_channel(self.endpoint(i)) as ch:
                return bool(etcd_rpc.MaintenanceStub(ch).Status(etcd_rpc.StatusRequest(), timeout=2).leader)
        except grpc.RpcError:
            return None
