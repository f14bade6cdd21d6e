"""Validation of single objects: ranges, formats, defaults."""

from __future__ import annotations

import pytest

from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument


def ep(**kw: object) -> m.Endpoint:
    base: dict[str, object] = dict(site="r1", name="gw", address="192.0.2.1", asn=65001)
    base.update(kw)
    return m.Endpoint(**base)  # type: ignore[arg-type]


def conn(**kw: object) -> m.Connection:
    base: dict[str, object] = dict(name="c", a=m.EndpointRef("r1", "gw"), b=m.EndpointRef("r2", "gw"),
                                   type=m.ConnectionType.BGP)
    base.update(kw)
    return m.Connection(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("asn", [1, 64496, 64512, 65534, 65536, 131072, 4_200_000_000, 4_294_967_294])
def test_asn_in_range_is_accepted(asn: int) -> None:
    assert m.validate_endpoint(ep(asn=asn)).asn == asn


@pytest.mark.parametrize("asn", [0, 23456, 65535, 65552, 131071, checks.MAX_ASN, checks.MAX_ASN + 1, -1])
def test_asn_out_of_range_or_reserved_names_the_field(asn: int) -> None:
    with pytest.raises(InvalidArgument) as exc:
        m.validate_endpoint(ep(asn=asn))
    assert exc.value.field == "asn"


@pytest.mark.parametrize("address", ["", "10.0.0.256", "fe80::1::2", "0.0.0.0", "224.0.0.1", "::", "ff02::1",
                                     "127.0.0.1", "::1", "169.254.1.1", "fe80::1", "255.255.255.255", "0.1.2.3",
                                     "240.0.0.1", "::ffff:192.0.2.1", "192.0.2.1%eth0"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        m.validate_endpoint(ep(address=address))
    assert exc.value.field == "address"


def test_address_is_canonical_and_router_id_defaults_to_ipv4() -> None:
    v6 = m.validate_endpoint(ep(address="FD00:0:0::0001", router_id="10.1.1.1"))
    assert v6.address == "fd00::1"
    assert m.validate_endpoint(ep(address="192.0.2.9")).router_id == "192.0.2.9"
    assert m.validate_endpoint(ep(address="fd00::9")).router_id == ""


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a" * 64, "a.b", "a\n", "a b", "a\x00"])
def test_names_are_dns_labels(name: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        m.validate_site(m.Site(name, m.SiteKind.REGION))
    assert exc.value.field == "name"


def test_cell_needs_a_parent_and_only_cells_have_one() -> None:
    with pytest.raises(InvalidArgument, match="parent"):
        m.validate_site(m.Site("c1", m.SiteKind.CELL))
    with pytest.raises(InvalidArgument, match="parent"):
        m.validate_site(m.Site("r1", m.SiteKind.REGION, parent="r0"))
    assert m.validate_site(m.Site("c1", m.SiteKind.CELL, parent="r1")).parent == "r1"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(b=m.EndpointRef("r1", "other")), "b.site"),
        (dict(b=m.EndpointRef("r1", "gw")), "b"),
        (dict(bgp=m.BgpParams(hold_time=2)), "bgp.hold_time"),
        (dict(bgp=m.BgpParams(hold_time=70000)), "bgp.hold_time"),
        (dict(bgp=m.BgpParams(password_ref="hunter2")), "bgp.password_ref"),
        (dict(bgp=m.BgpParams(address_families=("ipv4-multicast",))), "bgp.address_families"),
        (dict(vxlan=m.VxlanParams(vni=5)), "vxlan"),
        (dict(type=m.ConnectionType.VXLAN), "vxlan.vni"),
        (dict(type=m.ConnectionType.VXLAN, vxlan=m.VxlanParams(vni=m.MAX_VNI + 1)), "vxlan.vni"),
        (dict(type=m.ConnectionType.VXLAN, vxlan=m.VxlanParams(vni=7, udp_port=0)), "vxlan.udp_port"),
        (dict(type=m.ConnectionType.VXLAN, vxlan=m.VxlanParams(vni=7, mtu=100)), "vxlan.mtu"),
        (dict(type=m.ConnectionType.VXLAN, vxlan=m.VxlanParams(vni=7), bgp=m.BgpParams()), "bgp"),
    ],
)
def test_bad_connections_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        m.validate_connection(conn(**kw))
    assert exc.value.field == field


def test_connection_defaults() -> None:
    bgp = m.validate_connection(conn())
    assert bgp.bgp == m.BgpParams(hold_time=90)
    vx = m.validate_connection(conn(type=m.ConnectionType.VXLAN, vxlan=m.VxlanParams(vni=42)))
    assert vx.vxlan == m.VxlanParams(vni=42, udp_port=4789, mtu=1450)
    assert m.validate_connection(conn(bgp=m.BgpParams(hold_time=0))).bgp.hold_time == 0  # type: ignore[union-attr]
    ok = m.validate_connection(conn(bgp=m.BgpParams(password_ref="file:/etc/isthmus/peer.key")))
    assert ok.bgp is not None and ok.bgp.password_ref == "file:/etc/isthmus/peer.key"


def test_json_round_trip() -> None:
    c = m.validate_connection(conn(bgp=m.BgpParams(address_families=("ipv4-unicast", "l2vpn-evpn"))))
    assert m.connection_from_json(m.to_json(c)) == c
    e = m.validate_endpoint(ep(properties={"rack": "a1"}))
    assert m.endpoint_from_json(m.to_json(e)) == e


def test_advertised_prefixes_are_validated_and_canonical() -> None:
    e = m.validate_endpoint(ep(properties={"bgp.advertise": "10.1.0.0/16, 2001:DB8::/32"}))
    assert e.properties["bgp.advertise"] == "10.1.0.0/16,2001:db8::/32"
    with pytest.raises(InvalidArgument) as exc:
        m.validate_endpoint(ep(properties={"bgp.advertise": "10.1.0.1/16"}))
    assert exc.value.field == "properties.bgp.advertise"


@pytest.mark.parametrize("router_id", ["0.0.0.0", "255.255.255.255", "1.2.3", "r1", "::1"])
def test_router_ids_are_bgp_identifiers(router_id: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        m.validate_endpoint(ep(router_id=router_id))
    assert exc.value.field == "router_id"


@pytest.mark.parametrize(("labels", "field", "text"), [
    ({f"k{i}": "v" for i in range(checks.MAP_ENTRIES + 1)}, "labels", "the budget is 64"),
    ({f"k{i}": "v" * 1000 for i in range(9)}, "labels", "the budget is 8192"),
    ({"k": "v" * (checks.MAP_VALUE + 1)}, "labels.k", "the budget is 1024"),
    ({"k": "line\nbreak"}, "labels.k", "a control character"),
    ({"k": "zero\u200bwidth"}, "labels.k", "a control character"),
    ({"bad key": "v"}, "labels", "key 'bad key'"),
])
def test_maps_have_a_budget_and_hold_text(labels: dict[str, str], field: str, text: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        m.validate_site(m.Site("r1", m.SiteKind.REGION, labels=labels))
    assert exc.value.field == field and text in exc.value.message


def test_errors_show_only_a_short_prefix_of_a_bad_value() -> None:
    with pytest.raises(InvalidArgument) as exc:
        m.validate_site(m.Site("x" * 100_000, m.SiteKind.REGION))
    assert len(str(exc.value)) < 200 and "100000 characters" in str(exc.value)
    with pytest.raises(InvalidArgument) as exc:
        m.validate_site(m.Site("r1", m.SiteKind.REGION, description="d" * 10_000_000))
    assert len(str(exc.value)) < 200


@pytest.mark.parametrize(("seconds", "valid"), [
    (0, True), (1, False), (2, False), (3, True), (9, True), (10, True), (90, True), (65535, True), (65536, False),
])
def test_one_hold_time_rule_for_the_api_the_cli_and_the_bgp_driver(seconds: int, valid: bool) -> None:
    """HOLD_TIME_RULE (RFC 4271: 0 or 3..65535) is applied the same by the coordinator's validation, isthmusctl's
    --hold-time and the bgp driver, which offers the value as given (its speaker adapts os-ken to 0 and 3..9)."""
    import argparse

    from isthmus.ctl.flags import hold_time
    from isthmus.drivers.bgp.driver import speaker_hold_time

    assert m.valid_hold_time(seconds) == valid
    if valid:
        assert m.validate_connection(conn(bgp=m.BgpParams(hold_time=seconds))).bgp == m.BgpParams(hold_time=seconds)
        assert hold_time(str(seconds)) == seconds
        assert speaker_hold_time(seconds) == seconds
        return
    with pytest.raises(InvalidArgument, match=f"{seconds} must be 0 or 3..65535 seconds") as exc:
        m.validate_connection(conn(bgp=m.BgpParams(hold_time=seconds)))
    assert exc.value.field == "bgp.hold_time"
    with pytest.raises(argparse.ArgumentTypeError, match=f"{seconds} is not 0 or 3..65535 seconds"):
        hold_time(str(seconds))
    with pytest.raises(ValueError, match=f"hold time {seconds} is not 0 or 3..65535 seconds"):
        speaker_hold_time(seconds)


@pytest.mark.parametrize(("text", "canonical", "accepts", "refuses"), [
    ("10.0.0.0/8", "10.0.0.0/8", ["10.0.0.0/8"], ["10.1.0.0/16", "11.0.0.0/8"]),
    ("10.0.0.0/8 le 24", "10.0.0.0/8 le 24", ["10.0.0.0/8", "10.1.2.0/24"], ["10.1.2.0/25", "0.0.0.0/0"]),
    ("10.0.0.0/8 ge 16", "10.0.0.0/8 ge 16", ["10.1.0.0/16", "10.1.2.3/32"], ["10.0.0.0/8"]),
    ("10.0.0.0/8 ge 8", "10.0.0.0/8 le 32", ["10.0.0.0/8", "10.1.2.3/32"], ["11.0.0.0/8"]),
    ("0.0.0.0/0", "0.0.0.0/0", ["0.0.0.0/0"], ["10.0.0.0/8"]),
    ("2001:db8::/32 le 48", "2001:db8::/32 le 48", ["2001:db8:1::/48"], ["2001:db8:1::/64", "10.0.0.0/8"]),
])
def test_import_rules_are_prefix_list_entries(text: str, canonical: str, accepts: list[str],
                                              refuses: list[str]) -> None:
    import ipaddress

    rule = m.ImportRule.parse(text)
    assert str(rule) == canonical and m.ImportRule.parse(canonical) == rule
    for prefix in accepts:
        assert m.import_accepts((rule,), ipaddress.ip_network(prefix)), prefix
    for prefix in refuses:
        assert not m.import_accepts((rule,), ipaddress.ip_network(prefix)), prefix
    valid = m.validate_connection(conn(bgp=m.BgpParams(import_prefixes=(text,), max_prefixes=10)))
    assert valid.bgp is not None and valid.bgp.import_prefixes == (canonical,)


def test_no_import_rule_accepts_everything_but_the_default_route() -> None:
    import ipaddress

    assert m.import_accepts((), ipaddress.ip_network("198.51.100.0/24"))
    assert not m.import_accepts((), ipaddress.ip_network("0.0.0.0/0"))
    assert not m.import_accepts((), ipaddress.ip_network("::/0"))
    for bad in ("10.0.0.1/8", "10.0.0.0/8 le 4", "10.0.0.0/8 ge 33", "10.0.0.0/8 le", "x"):
        with pytest.raises(InvalidArgument) as exc:
            m.validate_connection(conn(bgp=m.BgpParams(import_prefixes=(bad,))))
        assert exc.value.field == "bgp.import_prefixes"


def test_bgp_install_is_true_or_false() -> None:
    def endpoint(value: str) -> m.Endpoint:
        return m.validate_endpoint(m.Endpoint("r1", "gw", "192.0.2.1", 65001, properties={m.INSTALL_PROPERTY: value}))

    assert endpoint(" False ").properties[m.INSTALL_PROPERTY] == "false"
    assert endpoint("true").properties[m.INSTALL_PROPERTY] == "true"
    with pytest.raises(InvalidArgument) as exc:
        endpoint("no")
    assert exc.value.field == "properties.bgp.install"
