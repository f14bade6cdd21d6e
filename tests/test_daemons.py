"""Start-up behaviour of the daemons an operator meets first: errors, refusals, health, TLS."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import BIN, Proc, agent_cmd, wait_for
from isthmus.v1 import admin_pb2, admin_pb2_grpc


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_coordinator_without_etcd_binary_names_the_package(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path)}  # no etcd anywhere on this PATH
    res = run([str(BIN / "isthmus-coordinator"), "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")], env)
    assert res.returncode == 1
    assert "etcd-server" in res.stderr and "not found" in res.stderr


def test_coordinator_refuses_plain_text_off_loopback(tmp_path: Path) -> None:
    res = run([str(BIN / "isthmus-coordinator"), "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)])
    assert res.returncode == 2
    assert "--insecure" in res.stderr and "--tls-cert" in res.stderr


def test_health_and_reflection(coordinator: str) -> None:
    channel = grpc.insecure_channel(coordinator)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "isthmus.v1.ConnectionService", "isthmus.v1.AgentService"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                             timeout=5))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"isthmus.v1.SiteService", "isthmus.v1.StatusService", "grpc.health.v1.Health"} <= names


def test_unknown_driver_lists_the_available_ones(tmp_path: Path) -> None:
    res = run(agent_cmd("region-one", "127.0.0.1:1", tmp_path)[:-4] + ["--driver", "fake,nosuch"])
    assert res.returncode == 2
    assert "unknown driver 'nosuch'" in res.stderr and "fake" in res.stderr


def test_state_dir_of_another_site_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "region-one" / "state"
    state.mkdir(parents=True)
    (state / "desired.json").write_text(json.dumps({"format": 1, "site": "region-two", "revision": 3,
                                                    "peerings": []}))
    res = run(agent_cmd("region-one", "127.0.0.1:1", tmp_path))
    assert res.returncode == 2 and "holds the state of site 'region-two'" in res.stderr


def test_second_agent_for_a_site_is_refused_until_the_first_is_gone(coordinator: str, tmp_path: Path,
                                                                     procs: Callable[..., Proc]) -> None:
    first = procs("first", agent_cmd("region-one", coordinator, tmp_path / "a"), tmp_path / "first.log")
    sock1 = tmp_path / "a" / "region-one" / "admin.sock"
    wait_for(lambda: sock1.exists() and admin_pb2_grpc.AgentAdminStub(grpc.insecure_channel(f"unix:{sock1}"))
             .Status(admin_pb2.AgentStatusRequest(), timeout=2).connected, 20, "the first agent to connect")
    procs("second", agent_cmd("region-one", coordinator, tmp_path / "b"), tmp_path / "second.log")
    wait_for(lambda: "ALREADY_EXISTS" in (tmp_path / "second.log").read_text(), 20,
             "the second agent to be refused")
    assert "already has a connected agent" in (tmp_path / "second.log").read_text()
    first.stop()
    sock2 = tmp_path / "b" / "region-one" / "admin.sock"
    wait_for(lambda: admin_pb2_grpc.AgentAdminStub(grpc.insecure_channel(f"unix:{sock2}"))
             .Status(admin_pb2.AgentStatusRequest(), timeout=2).connected, 40, "the second agent to take over")
