"""isthmus inside Neutron: networking-l2gw's REST API through isthmus' service driver, on a real neutron-server.

A second neutron-server of RegionOne (Debian's, with python3-networking-l2gw) loads isthmus by configuration
only; each test starts a coordinator on the unix socket that neutron-server is configured to reach (the
``neutron`` and ``neutron_coordinator`` fixtures in conftest.py, shared with test_neutron_infra.py).
"""

from __future__ import annotations

import pytest
from neutron_isthmus import NeutronIsthmus

from conftest import ctl


@pytest.fixture
def coordinator(neutron_coordinator: str) -> str:
    """The coordinator the Neutron test bed reaches (conftest.py), under the name these tests use."""
    return neutron_coordinator


def seed_devices(c: tuple[str, ...]) -> dict[str, str]:
    """Two regions with a VTEP gateway device each; their ids."""
    ids = {}
    for n, site in enumerate(("region-one", "region-two"), start=1):
        ctl(*c, "site", "create", site, "--kind", "region")
        out = ctl(*c, "gateway-device", "create", f"{site}/gw", "--type", "router_vtep", "--tunnel-ip",
                  f"192.0.2.{n}", "-o", "json").stdout
        import json
        ids[site] = json.loads(out)["id"]
    return ids


def test_border_form_over_rest_creates_the_gateway_in_isthmus(neutron: NeutronIsthmus, coordinator: str) -> None:
    c = ("--coordinator", coordinator)
    ids = seed_devices(c)
    body = {"l2_gateway": {"name": "border", "devices": [
        {"device_id": ids["region-one"], "segmentation_id": 5000},
        {"device_id": ids["region-two"], "segmentation_id": 5000}]}}
    made = neutron.request("POST", "/l2-gateways", body)
    assert made.status == 201, made.error
    gw = made.body["l2_gateway"]
    listed = ctl(*c, "l2-gateway", "get", gw["id"], "-o", "json").stdout
    assert ids["region-one"] in listed and "5000" in listed
