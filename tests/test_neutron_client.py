"""The Neutron side's coordinator client, run where it runs: Debian's /usr/bin/python3 (its own protobuf and
grpcio), isthmus installed with --no-deps --target, against a coordinator with mutual TLS and tokens."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Proc, coordinator_cmd, ctl, wait_for
from isthmus.core import pki
from neutron_isthmus import install_plugin

SYSTEM_PYTHON = "/usr/bin/python3"

SNIPPET = """
import json, sys
from isthmus.neutron_plugin.client import Coordinator, CoordinatorError, Settings
settings, calls = json.loads(sys.argv[1]), json.loads(sys.argv[2])
coordinator = Coordinator(Settings(**settings))
for service, method, request in calls:
    try:
        answer = coordinator.call(service, method, request, on_behalf_of="keystone user=u1 project=p1")
        print(json.dumps({"ok": answer}))
    except CoordinatorError as exc:
        print(json.dumps({"code": exc.code, "message": exc.message}))
"""


def system_python_versions() -> str:
    code = "import grpc, google.protobuf as p; print(grpc.__version__, p.__version__)"
    res = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    return res.stdout.strip() if res.returncode == 0 else ""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not system_python_versions():
        pytest.skip("Debian's python3-grpcio and python3-protobuf are not installed (`make test` installs them)")
    return install_plugin(tmp_path_factory.mktemp("isthmus-site"))


def run(site: Path, settings: dict[str, Any], *calls: tuple[str, str, dict[str, Any]]) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(site)
    res = subprocess.run([SYSTEM_PYTHON, "-c", SNIPPET, json.dumps(settings), json.dumps(calls)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_in_neutrons_python_with_mutual_tls_a_token_and_refusals(site: Path, etcd: str, tmp_path: Path,
                                                                 procs: Callable[..., Proc]) -> None:
    versions = system_python_versions()
    assert not versions.startswith("1.85"), f"the system Python has isthmus' own grpcio ({versions}): not a test"
    d = tmp_path / "pki"
    pki.init_ca(d)
    pki.issue(d, "coordinator", "c1", ips=["127.0.0.1"])
    pki.issue(d, "operator", "neutron", role="admin")
    pki.issue(d, "operator", "reader", role="viewer")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"neutron-token admin sha256:{hashlib.sha256(b'neutron-s3cret').hexdigest()}\n")
    tokens.chmod(0o600)
    ready = tmp_path / "addr"
    procs("coordinator", coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd) + [
        "--tls-cert", str(d / "coordinator-c1.pem"), "--tls-key", str(d / "coordinator-c1.key"),
        "--tls-ca", str(d / "ca.pem"), "--token-file", str(tokens)], tmp_path / "coord.log")
    address = str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the TLS coordinator"))

    def tls(name: str) -> dict[str, Any]:
        return {"address": address, "ca_file": str(d / "ca.pem"), "cert_file": str(d / f"operator-{name}.pem"),
                "key_file": str(d / f"operator-{name}.key")}

    made, listed, invalid, missing = run(
        site, tls("neutron"),
        ("SiteService", "CreateSite", {"name": "region-one", "kind": "SITE_KIND_REGION"}),
        ("SiteService", "ListSites", {}),
        ("SiteService", "CreateSite", {"name": "Not A Name", "kind": "SITE_KIND_REGION"}),
        ("BorderGatewayService", "GetL2Gateway", {"id": "nope"}))
    assert "ok" in made, made
    assert made["ok"]["name"] == "region-one" and made["ok"]["kind"] == "SITE_KIND_REGION"
    assert [s["name"] for s in listed["ok"]["sites"]] == ["region-one"]
    assert invalid["code"] == "INVALID_ARGUMENT" and invalid["message"].startswith("name: ")
    assert missing["code"] == "NOT_FOUND"

    (refused,) = run(site, tls("reader"), ("SiteService", "CreateSite", {"name": "r2", "kind": "SITE_KIND_REGION"}))
    assert refused["code"] == "PERMISSION_DENIED"
    token_file = tmp_path / "neutron.token"
    token_file.write_text("neutron-s3cret\n")
    # A token (admin) wins over the certificate's role (viewer).
    (with_token,) = run(site, {**tls("reader"), "token_file": str(token_file)},
                        ("SiteService", "CreateSite", {"name": "region-two", "kind": "SITE_KIND_REGION"}))
    assert "ok" in with_token, with_token
    assert with_token["ok"]["name"] == "region-two"
    (down,) = run(site, {"address": "127.0.0.1:1", "timeout": 2}, ("SiteService", "ListSites", {}))
    assert down["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")

    admin = ["--coordinator", address, "--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / "operator-neutron.pem"),
             "--tls-key", str(d / "operator-neutron.key")]
    events = json.loads(ctl(*admin, "audit", "-o", "json").stdout)
    writes = [e for e in events if e["method"].endswith("/CreateSite") and e.get("allowed")]
    assert {(e["who"], e.get("on_behalf_of")) for e in writes} == {
        ("user:neutron", "keystone user=u1 project=p1"), ("token:neutron-token", "keystone user=u1 project=p1")}
