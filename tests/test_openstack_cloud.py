"""The two-region OpenStack of openstack_cloud.py, as agents reach it: openstacksdk with its clouds.yaml.

In each region keypairs, images, security groups and networks work, and what is made in one region is not
seen in the other. The cloud starts once for the session (about 15 s with a cached template).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from openstack_cloud import ADMIN_CLOUD, REGION_CLOUDS, REGION_SERVICES, REGIONS, TwoRegionCloud

# openstacksdk 4.x warns about its own internals on every connection and resource, whatever the caller does
# (an InfluxDB notice without InfluxDB configured, ...): ignored where raised inside openstacksdk only, as the
# agent and the neutron driver do (cloud/session.py, quiet_openstacksdk).
pytestmark = [pytest.mark.filterwarnings(f"ignore::openstack.warnings.RemovedInSDK{v}0Warning:openstack")
              for v in (5, 6)]


def other(region: str) -> str:
    return next(r for r in REGIONS if r != region)


def unique(what: str) -> str:
    return f"isthmus-test-{what}-{uuid.uuid4().hex[:8]}"


def ssh_public_key(folder: Path) -> str:
    """A real ed25519 public key (nova refuses made-up ones)."""
    path = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "isthmus-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return Path(f"{path}.pub").read_text().strip()


def test_the_catalog_has_each_service_once_per_region(two_region_cloud: TwoRegionCloud,
                                                      regions: dict[str, Any]) -> None:
    for name, conn in regions.items():
        expected = two_region_cloud.region(name).endpoints
        for kind in ("compute", "image", "network"):
            assert conn.session.get_endpoint(service_type=kind, region_name=name, interface="public") \
                .rstrip("/") == expected[kind], (name, kind)
    one, two = (two_region_cloud.region(r).endpoints for r in REGIONS)
    assert not set(one.values()) & set(two.values())
    # The clouds pinned to one region are the same cloud.
    pinned = two_region_cloud.connect("RegionTwo", cloud=REGION_CLOUDS["RegionTwo"])
    try:
        assert pinned.config.region_name == "RegionTwo" and pinned.network.get_endpoint().rstrip("/") \
            .removesuffix("/v2.0") == two["network"]
    finally:
        pinned.close()
    text = two_region_cloud.clouds_yaml.read_text()
    assert f"  {ADMIN_CLOUD}:" in text and oct(two_region_cloud.clouds_yaml.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("region", REGIONS)
def test_keypairs(regions: dict[str, Any], region: str, tmp_path: Path) -> None:
    conn, elsewhere = regions[region], regions[other(region)]
    key, name = ssh_public_key(tmp_path), unique("key")
    made = conn.compute.create_keypair(name=name, public_key=key)
    try:
        assert made.public_key == key and made.fingerprint
        assert name in {k.name for k in conn.compute.keypairs()}
        assert name not in {k.name for k in elsewhere.compute.keypairs()}
    finally:
        conn.compute.delete_keypair(name, ignore_missing=False)
    assert name not in {k.name for k in conn.compute.keypairs()}


@pytest.mark.parametrize("region", REGIONS)
def test_images(regions: dict[str, Any], region: str) -> None:
    conn, elsewhere = regions[region], regions[other(region)]
    data = bytes(512) + secrets.token_bytes(7680)  # a zeroed boot sector, then noise: 8 KiB of raw disk
    image = conn.image.create_image(unique("image"), data=data, disk_format="raw", container_format="bare",
                                    wait=True, timeout=60, validate_checksum=True)
    try:
        image = conn.image.wait_for_status(image, "active", wait=60)
        assert image.size == len(data) and image.checksum == hashlib.md5(data, usedforsecurity=False).hexdigest()
        assert (image.hash_algo, image.hash_value) == ("sha512", hashlib.sha512(data).hexdigest())
        got = conn.image.download_image(image)
        body = got if isinstance(got, bytes) else got.content
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
        assert image.id in {i.id for i in conn.image.images()}
        assert image.id not in {i.id for i in elsewhere.image.images()}
        assert elsewhere.image.find_image(image.id) is None
    finally:
        conn.image.delete_image(image, ignore_missing=False)
    assert conn.image.find_image(image.id) is None


@pytest.mark.parametrize("region", REGIONS)
def test_security_groups(regions: dict[str, Any], region: str) -> None:
    conn, elsewhere = regions[region], regions[other(region)]
    group = conn.network.create_security_group(name=unique("sg"), description="isthmus test")
    try:
        rule = conn.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv4", protocol="udp",
            port_range_min=4789, port_range_max=4789, remote_ip_prefix="192.0.2.0/24")
        seen = conn.network.get_security_group(group.id)
        assert rule.id in {r["id"] for r in seen.security_group_rules}
        assert (rule.protocol, rule.port_range_min, rule.remote_ip_prefix) == ("udp", 4789, "192.0.2.0/24")
        assert elsewhere.network.find_security_group(group.id) is None
    finally:
        conn.network.delete_security_group(group, ignore_missing=False)
    assert conn.network.find_security_group(group.id) is None


@pytest.mark.parametrize("region", REGIONS)
def test_networks_and_subnets(regions: dict[str, Any], region: str) -> None:
    conn, elsewhere = regions[region], regions[other(region)]
    net = conn.network.create_network(name=unique("net"))
    try:
        subnet = conn.network.create_subnet(network_id=net.id, name=net.name, ip_version=4, cidr="10.81.0.0/24",
                                            gateway_ip="10.81.0.1", enable_dhcp=False)
        assert (subnet.cidr, subnet.gateway_ip) == ("10.81.0.0/24", "10.81.0.1")
        net = conn.network.get_network(net.id)
        assert net.subnet_ids == [subnet.id]
        assert net.provider_network_type == "vxlan" and 1000 <= net.provider_segmentation_id <= 1999
        assert elsewhere.network.find_network(net.id) is None
        assert net.id not in {n.id for n in elsewhere.network.networks()}
    finally:
        conn.network.delete_network(net, ignore_missing=False)  # takes its subnet along
    assert conn.network.find_network(net.id) is None


def test_cloud_processes_are_its_own_sessions(two_region_cloud: TwoRegionCloud) -> None:
    """What stop() relies on: every service leads its own session, and all of them are alive (those a test added
    with add_neutron_server included)."""
    names = {s.name for s in two_region_cloud.services}
    assert {"mariadbd", "keystone"} | {f"{svc} ({r})" for svc in REGION_SERVICES for r in REGIONS} <= names
    for service in two_region_cloud.services:
        assert service.alive(), service.failure("is not running")
        assert os.getsid(service.pid) == service.pid, service.name


def test_down_leaves_alone_a_folder_that_holds_no_cloud(tmp_path: Path) -> None:
    """`make openstack-down` with a mistyped DIR must not remove someone's folder."""
    (tmp_path / "precious").write_text("keep me")
    res = subprocess.run([sys.executable, "-m", "tests.openstack_cloud", "down", "--dir", str(tmp_path)],
                         cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "holds no cloud" in res.stderr
    assert (tmp_path / "precious").read_text() == "keep me"
