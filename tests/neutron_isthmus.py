"""A neutron-server of RegionOne with isthmus loaded by configuration only, for the Neutron tests.

It runs beside the cloud's own RegionOne neutron-server, on the same database, with networking-l2gw and
isthmus' service driver (and API extension) from neutron.conf, and the isthmus package installed the way
docs/neutron.md tells an operator to: ``pip install --no-deps --target DIR``, DIR on neutron's path, so
neutron-server keeps its own protobuf and grpcio.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def install_plugin(target: Path) -> Path:
    """isthmus without its dependencies into ``target``, as on a neutron-server host; ``target``."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    return target


REGION = "RegionOne-isthmus"  # in Keystone's catalog: the identity endpoint and this neutron-server


def register_region(identity: str, token: str, url: str) -> None:
    """A catalog region whose network endpoint is this neutron-server, so clients (the openstack CLI) find it
    the way they find any Neutron; the cloud's own regions are left as they are."""
    def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(f"{identity}{path}", data=json.dumps(body).encode() if body else None,
                                     headers={"X-Auth-Token": token, "Content-Type": "application/json"},
                                     method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
            return json.loads(text) if text else {}

    call("POST", "/regions", {"region": {"id": REGION}})
    services = {s["type"]: s["id"] for s in call("GET", "/services")["services"]}
    for kind, endpoint in (("identity", identity), ("network", url)):
        call("POST", "/endpoints", {"endpoint": {"service_id": services[kind], "interface": "public",
                                                 "region_id": REGION, "url": endpoint}})


def neutron_conf(site: Path, socket: Path) -> str:
    """The lines docs/neutron.md gives an operator: networking-l2gw with isthmus' driver, and the
    infrastructure API (service plugin, and the folder of its extension descriptor)."""
    return f"""\
service_plugins = router,l2gw,isthmus.neutron_plugin.infrastructure.InfrastructurePlugin
api_extensions_path = {site / "isthmus" / "neutron_plugin" / "extensions"}
[service_providers]
service_provider = L2GW:isthmus:isthmus.neutron_plugin.l2gw.IsthmusL2gwDriver:default
[isthmus]
coordinator = unix:{socket}
timeout = 5
"""


@dataclass
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def error(self) -> str:
        fault = self.body.get("NeutronError") or {}
        return str(fault.get("message", self.body))


@dataclass
class NeutronIsthmus:
    url: str
    socket: Path     # where the coordinator must listen (unix:PATH) for this neutron-server to reach it
    site: Path       # the isthmus package as installed for neutron
    token: str       # an admin Keystone token

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Answer:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is None:
            token = self.token
        if token:
            headers["X-Auth-Token"] = token
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/v2.0{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read()
                return Answer(resp.status, json.loads(text) if text else {})
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                parsed = json.loads(text) if text else {}
            except ValueError:
                parsed = {"raw": text.decode(errors="replace")}
            return Answer(exc.code, parsed)
