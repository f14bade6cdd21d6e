"""The coordinator's address index (coordinator/addresses.py): validation, deltas, lookups and conflicts,
and a property test against a brute-force model."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.coordinator.multisite.addresses import (
    KINDS,
    AddressDelta,
    AddressIndex,
    AddressRecord,
    SequenceError,
    check_delta,
    check_record,
)


def rec(kind: str = "port", id: str = "p1", region: str = "r1", network: str = "n1", **fields: Any) -> AddressRecord:
    return check_record({"kind": kind, "id": id, "region": region, "project": "proj", "network": network, **fields})


def port(id: str, region: str, network: str, *ips: str, mac: str = "") -> AddressRecord:
    return rec("port", id, region, network, ips=list(ips), mac=mac)


def subnet(id: str, region: str, network: str, cidr: str) -> AddressRecord:
    return rec("subnet", id, region, network, cidr=cidr)


def fip(id: str, region: str, network: str, ip: str) -> AddressRecord:
    return rec("floating_ip", id, region, network, ips=[ip])


def full(region: str, *records: AddressRecord, seq: int = 1) -> AddressDelta:
    return AddressDelta(region, seq, tuple(records), full=True)


def ids(records: Iterable[AddressRecord]) -> list[tuple[str, str, str]]:
    return [(r.region, r.kind, r.id) for r in records]


def index(*deltas: AddressDelta, domains: dict[str, list[tuple[str, str]]] | None = None) -> AddressIndex:
    ix = AddressIndex()
    for d in deltas:
        ix.apply(d)
    if domains is not None:
        ix.set_domains(domains)
    return ix


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("fields", "message"), [
    ({"ips": ["10.0.0.1", "10.0.0.300"]}, "ips[1]: '10.0.0.300' is not an IP address"),
    ({"ips": ["fe80::1%eth0"]}, "ips[0]: 'fe80::1%eth0' is not an IP address"),
    ({"ips": [10]}, "ips[0]: 10 is not an IP address"),
    ({"ips": "10.0.0.1"}, "ips: must be a list"),
    ({"ips": ["2001:db8::1", "2001:DB8::0001"]}, "ips[1]: 2001:db8::1 is listed twice"),
    ({"mac": "fa:16:3e:00:00"}, "mac: 'fa:16:3e:00:00' is not a MAC address"),
    ({"mac": "fa:16-3e:00:00:01"}, "mac: 'fa:16-3e:00:00:01' is not a MAC address"),
    ({"kind": "router"}, "kind: 'router' is not one of port, floating_ip, router_gateway, subnet"),
    ({"id": ""}, "id: is required"),
    ({"network": None}, "network: must be a string, not NoneType"),
    ({"region": ""}, "region: is required"),
    ({"port_id": "x"}, "port_id: unknown field"),
    ({"kind": "floating_ip", "ips": ["203.0.113.1", "203.0.113.2"]}, "ips: a floating IP has exactly one address"),
    ({"kind": "floating_ip", "ips": [], "mac": "fa:16:3e:00:00:01"}, "ips: a floating IP has exactly one"),
    ({"kind": "router_gateway", "mac": "fa:16:3e:00:00:01"}, "mac: only a port has a MAC address"),
    ({"cidr": "10.0.0.0/24"}, "cidr: only a subnet has a CIDR"),
    ({"kind": "subnet"}, "cidr: is required"),
    ({"kind": "subnet", "cidr": "10.0.0.1/24"}, "cidr: '10.0.0.1/24' is not a CIDR (10.0.0.1/24 has host bits set)"),
    ({"kind": "subnet", "cidr": "10.0.0.0"}, "cidr: '10.0.0.0' is not a CIDR"),
    ({"kind": "subnet", "cidr": "10.0.0.0/33"}, "cidr: '10.0.0.0/33' is not a CIDR"),
    ({"kind": "subnet", "cidr": "10.0.0.0/24", "ips": ["10.0.0.1"]}, "ips: a subnet has no addresses"),
])
def test_a_bad_record_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as exc:
        rec(**fields)
    assert str(exc.value).startswith(message), str(exc.value)


def test_a_record_is_normalized() -> None:
    r = rec(ips=["2001:DB8::0001", "10.0.0.1"], mac="FA-16-3E-0A-0B-0C")
    assert r.ips == ("2001:db8::1", "10.0.0.1") and r.mac == "fa:16:3e:0a:0b:0c"
    assert rec(mac="fa16.3e0a.0b0c").mac == rec(mac="FA163E0A0B0C").mac == "fa:16:3e:0a:0b:0c"
    # neutron's own form of a subnet's range is kept, only validated
    assert rec("subnet", "s1", cidr="2001:DB8::/64").cidr == "2001:DB8::/64"


def test_records_and_deltas_survive_json() -> None:
    r = rec(ips=["10.0.0.1", "2001:db8::1"], mac="fa:16:3e:00:00:01", device="vm-1", name="eth0")
    assert AddressRecord.from_json(r.to_json()) == r
    s = subnet("s1", "r1", "n1", "10.0.0.0/24")
    assert "ips" not in s.to_json() and "mac" not in s.to_json()
    assert AddressRecord.from_json(s.to_json()) == s
    d = AddressDelta("r1", 7, (r, s), (("port", "p9"),), full=False)
    assert AddressDelta.from_json(d.to_json()) == d
    assert check_delta(d.to_json()) == d


def test_a_bad_delta_is_refused_naming_the_field() -> None:
    good = {"kind": "port", "id": "p1", "network": "n1", "ips": ["10.0.0.1"]}
    assert check_delta({"region": "r1", "seq": 1, "upserts": [good]}).upserts[0].region == "r1"
    cases = [
        ({"region": "r1", "seq": 1, "upserts": [good, {**good, "id": "p2", "ips": ["10.0.0.1", "x"]}]},
         "upserts[1].ips[1]: 'x' is not an IP address"),
        ({"region": "r1", "seq": 1, "upserts": [{**good, "region": "r2"}]},
         "upserts[0].region: 'r2' is not the delta's region 'r1'"),
        ({"region": "r1", "seq": 1, "upserts": [good, good]}, "upserts[1]: port p1 is listed twice"),
        ({"region": "r1", "seq": 1, "upserts": [good], "removes": [["port", "p1"]]},
         "removes[0]: port p1 is also upserted"),
        ({"region": "r1", "seq": 1, "removes": [["port"]]}, "removes[0]: ['port'] is not [kind, id]"),
        ({"region": "r1", "seq": 1, "removes": [["vm", "x"]]}, "removes[0]: 'vm' is not one of"),
        ({"region": "r1", "seq": -1}, "seq: -1 is not a sequence number"),
        ({"region": "r1", "seq": True}, "seq: True is not a sequence number"),
        ({"region": "r1", "seq": 1, "full": "yes"}, "full: must be true or false"),
        ({"seq": 1}, "region: is required"),
    ]
    for d, message in cases:
        with pytest.raises(ValueError) as exc:
            check_delta(d)
        assert str(exc.value).startswith(message), (d, str(exc.value))


# ---------------------------------------------------------------- deltas


def test_an_upsert_moves_a_port_to_its_new_address() -> None:
    ix = index(full("r1", port("p1", "r1", "n1", "10.0.0.5", mac="fa:16:3e:00:00:01")))
    assert ids(ix.lookup("10.0.0.5")) == [("r1", "port", "p1")]
    changed = ix.apply(AddressDelta("r1", 2, (port("p1", "r1", "n1", "10.0.0.6", mac="fa:16:3e:00:00:02"),)))
    assert changed == 1
    assert ix.lookup("10.0.0.5") == [] and ix.lookup("fa:16:3e:00:00:01") == []
    assert ids(ix.lookup("10.0.0.6")) == ids(ix.lookup("fa:16:3e:00:00:02")) == [("r1", "port", "p1")]
    assert ids(ix.lookup("10.0.0.0/24")) == [("r1", "port", "p1")]
    # the same record again changes nothing
    assert ix.apply(AddressDelta("r1", 3, (port("p1", "r1", "n1", "10.0.0.6", mac="fa:16:3e:00:00:02"),))) == 0


def test_removes_and_full_resync_drop_records() -> None:
    ix = index(full("r1", port("p1", "r1", "n1", "10.0.0.1"), port("p2", "r1", "n1", "10.0.0.2"),
                    subnet("s1", "r1", "n1", "10.0.0.0/24")),
               full("r2", port("p1", "r2", "n1", "10.0.0.1")))
    assert ix.apply(AddressDelta("r1", 2, removes=(("port", "p1"), ("port", "unknown")))) == 1
    assert ids(ix.lookup("10.0.0.1")) == [("r1", "subnet", "s1"), ("r2", "port", "p1")]
    assert ix.apply(full("r1", port("p3", "r1", "n1", "10.0.0.3"), seq=3)) == 3  # p2 and s1 go, p3 comes
    assert ids(ix.lookup("10.0.0.0/16")) == [("r1", "port", "p3"), ("r2", "port", "p1")]
    assert ix.stats() == {"port": 2, "floating_ip": 0, "router_gateway": 0, "subnet": 0, "regions": 2,
                          "ips": 2, "macs": 0}
    ix.drop_region("r1")
    assert ids(ix.lookup("10.0.0.0/16")) == [("r2", "port", "p1")] and ix.last_seq("r1") == 0
    assert len(ix) == 1


def test_deltas_out_of_order_are_refused_and_repeats_ignored() -> None:
    ix = AddressIndex()
    with pytest.raises(SequenceError, match="no full resync"):
        ix.apply(AddressDelta("r1", 1, (port("p1", "r1", "n1", "10.0.0.1"),)))
    ix.apply(full("r1", port("p1", "r1", "n1", "10.0.0.1"), seq=5))
    assert ix.last_seq("r1") == 5
    # a repeat of the last delta, whatever it holds, is ignored
    assert ix.apply(AddressDelta("r1", 5, (port("p2", "r1", "n1", "10.0.0.2"),))) == 0
    assert ix.lookup("10.0.0.2") == []
    with pytest.raises(ValueError, match="delta 4 is out of order .* last applied delta is 5"):
        ix.apply(AddressDelta("r1", 4, (port("p2", "r1", "n1", "10.0.0.2"),)))
    assert ix.apply(AddressDelta("r1", 9, (port("p2", "r1", "n1", "10.0.0.2"),))) == 1  # gaps are allowed
    # a restarted agent numbers from 1 again: its full resync is taken
    assert ix.apply(full("r1", port("p3", "r1", "n1", "10.0.0.3"), seq=1)) == 3
    assert ix.last_seq("r1") == 1 and ids(ix.lookup("10.0.0.0/24")) == [("r1", "port", "p3")]
    assert ix.apply(full("r1", port("p3", "r1", "n1", "10.0.0.3"), seq=1)) == 0


def test_a_bad_delta_leaves_the_index_unchanged() -> None:
    ix = index(full("r1", port("p1", "r1", "n1", "10.0.0.1")))
    bad_ip = AddressRecord("port", "p3", "r1", "proj", "n1", ("10.0.0.999",))
    with pytest.raises(ValueError, match=r"upserts\[1\]\.ips\[0\]: '10.0.0.999' is not an IP address"):
        ix.apply(AddressDelta("r1", 2, (port("p2", "r1", "n1", "10.0.0.2"), bad_ip), (("port", "p1"),)))
    with pytest.raises(ValueError, match=r"upserts\[0\]\.region: 'r2' is not the delta's region 'r1'"):
        ix.apply(AddressDelta("r1", 2, (port("p2", "r2", "n1", "10.0.0.2"),)))
    with pytest.raises(ValueError, match="is listed twice"):
        ix.apply(full("r1", port("p2", "r1", "n1", "10.0.0.2"), port("p2", "r1", "n1", "10.0.0.3"), seq=2))
    assert ids(ix.lookup("10.0.0.0/24")) == [("r1", "port", "p1")] and ix.last_seq("r1") == 1


# ---------------------------------------------------------------- lookups


def test_lookup_by_ip_mac_and_cidr() -> None:
    ix = index(full("r1", port("p1", "r1", "n1", "10.0.0.5", "2001:db8::1", mac="fa:16:3e:aa:bb:cc"),
                    port("p2", "r1", "n1", "10.0.1.5"),
                    subnet("s4", "r1", "n1", "10.0.0.0/24"), subnet("s6", "r1", "n1", "2001:db8::/64"),
                    subnet("big", "r1", "n1", "10.0.0.0/16"),
                    fip("f1", "r1", "ext", "203.0.113.7")))
    assert ids(ix.lookup("10.0.0.5")) == [("r1", "port", "p1"), ("r1", "subnet", "big"), ("r1", "subnet", "s4")]
    assert ids(ix.lookup(" 2001:DB8::0001 ")) == [("r1", "port", "p1"), ("r1", "subnet", "s6")]
    assert ids(ix.lookup("2001:db8::99")) == [("r1", "subnet", "s6")]
    assert ids(ix.lookup("FA:16:3E:AA:BB:CC")) == ids(ix.lookup("fa-16-3e-aa-bb-cc")) == [("r1", "port", "p1")]
    assert ids(ix.lookup("10.0.0.0/24")) == [("r1", "port", "p1"), ("r1", "subnet", "big"), ("r1", "subnet", "s4")]
    assert ids(ix.lookup("10.0.1.0/24")) == [("r1", "port", "p2"), ("r1", "subnet", "big")]
    assert ids(ix.lookup("10.0.0.0/8")) == [("r1", "port", "p1"), ("r1", "port", "p2"), ("r1", "subnet", "big"),
                                            ("r1", "subnet", "s4")]
    assert ids(ix.lookup("2001:db8::/32")) == [("r1", "port", "p1"), ("r1", "subnet", "s6")]
    assert ids(ix.lookup("2001:db8::/127")) == [("r1", "port", "p1"), ("r1", "subnet", "s6")]
    assert ids(ix.lookup("203.0.113.7")) == [("r1", "floating_ip", "f1")]
    assert ix.lookup("10.9.9.9") == [] and ix.lookup("fa:16:3e:00:00:00") == [] and ix.lookup("192.0.2.0/24") == []
    for query in ("10.0.0.300", "router1", "10.0.0.0/40", "", "fe80::1%eth0"):
        with pytest.raises(ValueError, match=f"query {query!r} is not an IP address, a MAC address or a CIDR"):
            ix.lookup(query)


# ---------------------------------------------------------------- conflicts


def summary(ix: AddressIndex) -> list[tuple[str, str, str, list[tuple[str, str, str]]]]:
    return [(c.kind, c.value, c.domain, ids(c.records)) for c in ix.conflicts()]


def test_the_same_ip_in_one_routing_domain_clashes() -> None:
    ix = index(full("r1", port("p1", "r1", "n1", "10.0.0.5")), full("r2", port("p9", "r2", "n7", "10.0.0.5")),
               domains={"blue": [("r1", "n1"), ("r2", "n7")]})
    assert summary(ix) == [("duplicate_ip", "10.0.0.5", "blue", [("r1", "port", "p1"), ("r2", "port", "p9")])]
    ix.apply(AddressDelta("r2", 2, (port("p9", "r2", "n7", "10.0.0.6"),)))
    assert summary(ix) == []


def test_the_same_ip_in_unrelated_domains_or_none_does_not_clash() -> None:
    deltas = (full("r1", port("p1", "r1", "n1", "10.0.0.5")), full("r2", port("p9", "r2", "n7", "10.0.0.5")))
    assert summary(index(*deltas, domains={"blue": [("r1", "n1")], "red": [("r2", "n7")]})) == []
    assert summary(index(*deltas)) == []
    assert summary(index(*deltas, domains={"blue": [("r1", "n1"), ("r2", "n1")]})) == []


def test_records_of_one_network_do_not_clash() -> None:
    # A floating IP and its own port (device_owner network:floatingip) hold the same address on one network.
    ix = index(full("r1", fip("f1", "r1", "ext", "203.0.113.7"), port("fport", "r1", "ext", "203.0.113.7"),
                    rec("router_gateway", "rt1", "r1", "ext", ips=["203.0.113.1"]),
                    port("gwport", "r1", "ext", "203.0.113.1")),
               domains={"blue": [("r1", "ext")]})
    assert summary(ix) == []


def test_a_floating_ip_in_two_regions_clashes_in_the_global_domain() -> None:
    ix = index(full("r1", fip("f1", "r1", "ext1", "203.0.113.7")),
               full("r2", fip("f2", "r2", "ext2", "203.0.113.7"), port("fport", "r2", "ext2", "203.0.113.7"),
                    rec("router_gateway", "rt", "r2", "ext2", ips=["203.0.113.9"])),
               full("r3", port("vm", "r3", "ext3", "203.0.113.9"), fip("f3", "r3", "ext3", "203.0.113.50")))
    assert summary(ix) == [
        ("duplicate_ip", "203.0.113.7", "global",
         [("r1", "floating_ip", "f1"), ("r2", "port", "fport"), ("r2", "floating_ip", "f2")]),
        # a port on another region's external network is in the global address space too
        ("duplicate_ip", "203.0.113.9", "global", [("r2", "router_gateway", "rt"), ("r3", "port", "vm")]),
    ]


def test_duplicate_ipv6_and_mac() -> None:
    ix = index(full("r1", port("p1", "r1", "n1", "2001:db8::5", mac="fa:16:3e:00:00:01")),
               full("r2", port("p2", "r2", "n2", "2001:DB8::0005", mac="FA:16:3E:00:00:01"),
                    port("p3", "r2", "n3", "2001:db8::5", mac="fa:16:3e:00:00:01")),
               domains={"l2": [("r1", "n1"), ("r2", "n2")]})
    assert summary(ix) == [
        ("duplicate_ip", "2001:db8::5", "l2", [("r1", "port", "p1"), ("r2", "port", "p2")]),
        ("duplicate_mac", "fa:16:3e:00:00:01", "l2", [("r1", "port", "p1"), ("r2", "port", "p2")]),
    ]


def test_a_network_in_two_domains_clashes_in_each() -> None:
    ix = index(full("r1", port("p1", "r1", "n1", "10.0.0.5")), full("r2", port("p2", "r2", "n2", "10.0.0.5")),
               full("r3", port("p3", "r3", "n3", "10.0.0.5")),
               domains={"a": [("r1", "n1"), ("r2", "n2")], "b": [("r1", "n1"), ("r3", "n3")]})
    assert summary(ix) == [
        ("duplicate_ip", "10.0.0.5", "a", [("r1", "port", "p1"), ("r2", "port", "p2")]),
        ("duplicate_ip", "10.0.0.5", "b", [("r1", "port", "p1"), ("r3", "port", "p3")]),
    ]


def test_overlapping_subnets_of_different_networks_clash() -> None:
    ix = index(full("r1", subnet("s1", "r1", "n1", "10.0.0.0/24"), subnet("s1b", "r1", "n1", "10.1.0.0/24"),
                    subnet("s1v6", "r1", "n1", "2001:db8::/64")),
               full("r2", subnet("s2", "r2", "n2", "10.0.0.128/25"), subnet("s2b", "r2", "n2", "10.2.0.0/24"),
                    subnet("s2v6", "r2", "n2", "2001:db8::/48"), subnet("s2c", "r2", "n2", "10.1.0.0/24")),
               full("r3", subnet("s3", "r3", "n3", "10.0.0.0/24")),
               domains={"blue": [("r1", "n1"), ("r2", "n2")]})
    assert summary(ix) == [
        ("overlapping_cidr", "10.0.0.0/24 ~ 10.0.0.128/25", "blue", [("r1", "subnet", "s1"), ("r2", "subnet", "s2")]),
        ("overlapping_cidr", "10.1.0.0/24 ~ 10.1.0.0/24", "blue", [("r1", "subnet", "s1b"), ("r2", "subnet", "s2c")]),
        ("overlapping_cidr", "2001:db8::/48 ~ 2001:db8::/64", "blue",
         [("r1", "subnet", "s1v6"), ("r2", "subnet", "s2v6")]),
    ]
    ix.set_domains({"blue": [("r1", "n1"), ("r2", "n2"), ("r3", "n3")]})
    assert ("overlapping_cidr", "10.0.0.0/24 ~ 10.0.0.0/24", "blue",
            [("r1", "subnet", "s1"), ("r3", "subnet", "s3")]) in summary(ix)
    ix.set_domains({})
    assert summary(ix) == []


def test_set_domains_refuses_bad_input() -> None:
    ix = AddressIndex()
    with pytest.raises(ValueError, match="reserved"):
        ix.set_domains({"global": [("r1", "n1")]})
    with pytest.raises(ValueError, match=r"domains\['blue'\]\[1\]: \('r1',\) is not \(region, network id\)"):
        ix.set_domains({"blue": [("r1", "n1"), ("r1",)]})  # type: ignore[list-item]


# ---------------------------------------------------------------- against a brute-force model

REGIONS = ["r1", "r2", "r3"]
NETWORKS = ["n1", "n2", "ext"]
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.130", "10.0.1.1", "2001:db8::1", "2001:db8::2", "2001:db8:0:1::1"]
MACS = ["fa:16:3e:00:00:01", "fa:16:3e:00:00:02"]
CIDRS = ["10.0.0.0/24", "10.0.0.128/25", "10.0.0.0/16", "10.0.1.0/24", "10.0.0.0/30", "2001:db8::/64",
         "2001:db8::/48", "2001:db8:0:1::/64"]
QUERIES = [*IPS, "10.0.0.3", "2001:db8::3", *MACS, *CIDRS, "10.0.0.0/31", "10.0.0.128/26", "0.0.0.0/0", "::/0",
           "2001:db8::/127"]


@st.composite
def records(draw: st.DrawFn, region: str) -> AddressRecord:
    kind = draw(st.sampled_from(KINDS))
    d: dict[str, Any] = {"kind": kind, "id": draw(st.sampled_from(["a", "b", "c"])), "region": region,
                         "project": "p", "network": draw(st.sampled_from(NETWORKS))}
    if kind == "port":
        d["ips"] = draw(st.lists(st.sampled_from(IPS), unique=True, max_size=2))
        d["mac"] = draw(st.sampled_from(["", *MACS]))
    elif kind == "floating_ip":
        d["ips"] = [draw(st.sampled_from(IPS))]
    elif kind == "router_gateway":
        d["ips"] = draw(st.lists(st.sampled_from(IPS), unique=True, max_size=2))
    else:
        d["cidr"] = draw(st.sampled_from(CIDRS))
    return check_record(d)


groups = st.lists(st.tuples(st.sampled_from(REGIONS), st.sampled_from(NETWORKS)), max_size=5)
domain_maps = st.dictionaries(st.sampled_from(["d1", "d2", "d3"]), groups, max_size=3)
Operation = tuple[str, str, bool, list[AddressRecord], list[tuple[str, str]], dict[str, list[tuple[str, str]]]]


@st.composite
def operations(draw: st.DrawFn) -> Operation:
    region = draw(st.sampled_from(REGIONS))
    which = draw(st.integers(0, 9))
    if which == 0:
        return ("drop", region, False, [], [], {})
    if which == 1:
        return ("domains", region, False, [], [], draw(domain_maps))
    upserts = draw(st.lists(records(region), max_size=4, unique_by=lambda r: (r.kind, r.id)))
    taken = {(r.kind, r.id) for r in upserts}
    removes = draw(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["a", "b", "c"])), max_size=2,
                            unique=True).map(lambda rs: [r for r in rs if r not in taken]))
    return ("delta", region, draw(st.booleans()), upserts, removes, {})


def model_lookup(state: dict[tuple[str, str, str], AddressRecord], query: str) -> list[tuple[str, str, str]]:
    out = []
    if "/" in query:
        q = ipaddress.ip_network(query)
        for r in state.values():
            held = any(ipaddress.ip_address(ip) in q for ip in r.ips if ipaddress.ip_address(ip).version == q.version)
            net = ipaddress.ip_network(r.cidr) if r.cidr else None
            if held or (net is not None and net.version == q.version and net.overlaps(q)):
                out.append(r)
    elif ":" in query and query in MACS:
        out = [r for r in state.values() if r.mac == query]
    else:
        ip = ipaddress.ip_address(query)
        out = [r for r in state.values()
               if query in r.ips or (r.cidr and ip.version == ipaddress.ip_network(r.cidr).version
                                     and ip in ipaddress.ip_network(r.cidr))]
    return [(r.region, r.kind, r.id) for r in sorted(out, key=lambda r: (r.region, KINDS.index(r.kind), r.id))]


def model_conflicts(state: dict[tuple[str, str, str], AddressRecord],
                    domains: dict[str, list[tuple[str, str]]]) -> set[tuple[str, str, str, frozenset[Any]]]:
    of: dict[tuple[str, str], set[str]] = {}
    for name, members in domains.items():
        for g in members:
            of.setdefault(g, set()).add(name)
    external = {(r.region, r.network) for r in state.values() if r.kind in ("floating_ip", "router_gateway")}

    def domains_of(r: AddressRecord, with_global: bool) -> set[str]:
        names = set(of.get((r.region, r.network), ()))
        return names | {"global"} if with_global and (r.region, r.network) in external else names

    out = set()
    names = {*domains, "global"}
    for kind, values, holds, with_global in (
        ("duplicate_ip", IPS, lambda r, v: v in r.ips, True),
        ("duplicate_mac", MACS, lambda r, v: r.mac == v, False),
    ):
        for value in values:
            for name in names:
                holders = [r for r in state.values() if holds(r, value) and name in domains_of(r, with_global)]
                if len({(r.region, r.network) for r in holders}) > 1:
                    out.add((kind, value, name, frozenset(r.key for r in holders)))
    subnets = [r for r in state.values() if r.kind == "subnet"]
    overlaps: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
    for name in names:
        inside = [r for r in subnets if name in domains_of(r, True)]
        for x in inside:
            for y in inside:
                nx, ny = ipaddress.ip_network(x.cidr), ipaddress.ip_network(y.cidr)
                if ((x.region, x.network) != (y.region, y.network) and nx.version == ny.version and nx.overlaps(ny)
                        and (nx.prefixlen, x.key) <= (ny.prefixlen, y.key)):
                    overlaps.setdefault((name, f"{nx} ~ {ny}"), set()).update((x.key, y.key))
    out |= {("overlapping_cidr", value, name, frozenset(keys)) for (name, value), keys in overlaps.items()}
    return out


def check_conflicts(ix: AddressIndex, state: dict[tuple[str, str, str], AddressRecord],
                    domains: dict[str, list[tuple[str, str]]]) -> None:
    got = ix.conflicts()
    assert [(c.kind, c.domain) for c in got] == sorted((c.kind, c.domain) for c in got)
    for c in got:
        assert list(c.records) == sorted(c.records, key=lambda r: (r.region, KINDS.index(r.kind), r.id))
        assert all(state[r.key] == r for r in c.records)  # the records as they are now
    want = model_conflicts(state, domains)
    assert {(c.kind, c.value, c.domain, frozenset(r.key for r in c.records)) for c in got} == want
    assert len(got) == len(want)


@settings(max_examples=300, deadline=None)
@given(st.lists(operations(), max_size=12), domain_maps, st.booleans())
def test_the_index_agrees_with_a_brute_force_model(
    ops: list[Operation], domains: dict[str, list[tuple[str, str]]], often: bool,
) -> None:
    ix = AddressIndex()
    ix.set_domains(domains)
    state: dict[tuple[str, str, str], AddressRecord] = {}
    seq: dict[str, int] = {}
    for op, region, is_full, upserts, removes, new_domains in ops:
        if op == "drop":
            ix.drop_region(region)
            seq.pop(region, None)
            state = {k: r for k, r in state.items() if r.region != region}
        elif op == "domains":
            ix.set_domains(new_domains)
            domains = new_domains
        else:
            is_full = is_full or region not in seq
            seq[region] = seq.get(region, 0) + 1
            before = dict(state)
            if is_full:
                state = {k: r for k, r in state.items() if r.region != region}
            for kind, id_ in removes:
                state.pop((region, kind, id_), None)
            state.update((r.key, r) for r in upserts)
            changed = ix.apply(AddressDelta(region, seq[region], tuple(upserts), tuple(removes), is_full))
            assert changed == sum(before.get(k) != state.get(k) for k in {*before, *state})
        if often:  # what conflicts() remembers between calls must follow every change
            check_conflicts(ix, state, domains)
    for query in QUERIES:
        assert ids(ix.lookup(query)) == model_lookup(state, query), query
    check_conflicts(ix, state, domains)
    check_conflicts(ix, state, domains)
    stats = ix.stats()
    assert {k: stats[k] for k in KINDS} == {k: sum(r.kind == k for r in state.values()) for k in KINDS}
    assert stats["regions"] == len(seq)
