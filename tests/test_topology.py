"""Topology policies on their own: validation, expansion (pairs, names, VNIs, what they skip and why), the
session-reset rule against the bgp driver's, and the declarative documents."""

from __future__ import annotations

import dataclasses

import pytest

from isthmus.core import model as m
from isthmus.core import topology as t
from isthmus.core.errors import InvalidArgument, IsthmusError
from isthmus.core.wire import topology as twire
from isthmus.ctl import documents as d
from isthmus.drivers.bgp.driver import NeighborConfig


def sites(*names: str, **labels: str) -> list[m.Site]:
    return [m.Site(n, m.SiteKind.REGION, labels=dict(labels)) for n in names]


def endpoints(*names: str, prefix: str = "10.0.0.") -> dict[m.EndpointRef, m.Endpoint]:
    eps = [m.validate_endpoint(m.Endpoint(n, "gw", f"{prefix}{i}", 64512)) for i, n in enumerate(names, start=1)]
    return {e.ref: e for e in eps}


def policy(kind: t.PolicyKind = t.PolicyKind.FULL_MESH, **kw: object) -> t.Policy:
    base: dict[str, object] = {"name": "p", "kind": kind, "endpoint": "gw", "sites": ("a", "b", "c", "d")}
    return t.validate_policy(t.Policy(**{**base, **kw}))  # type: ignore[arg-type]


ALL = ("a", "b", "c", "d")


def test_full_mesh_joins_every_pair_once() -> None:
    out = t.expand(policy(), sites(*ALL), endpoints(*ALL), [])
    assert sorted(out.connections) == ["p-a-b", "p-a-c", "p-a-d", "p-b-c", "p-b-d", "p-c-d"]
    conn = out.connections["p-a-b"]
    assert conn.policy == "p" and conn.bgp is not None and conn.bgp.address_families == ("ipv4-unicast",)
    assert m.validate_connection(conn) == conn  # what the registry stores, so the leader sees no difference


def test_hub_and_spoke_meshes_the_hubs_and_joins_each_spoke_to_every_hub() -> None:
    p = policy(t.PolicyKind.HUB_AND_SPOKE, sites=(), selector={"role": "edge"}, hubs=("a", "b"))
    # The hubs carry no label: named hubs are members whatever their labels.
    out = t.expand(p, sites("a", "b") + sites("c", "d", role="edge") + sites("x", role="lab"),
                   endpoints(*ALL, "x"), [])
    assert out.members == ["a", "b", "c", "d"]
    assert sorted(out.connections) == ["p-a-b", "p-a-c", "p-a-d", "p-b-c", "p-b-d"]
    assert all(c.a.site in ("a", "b") for c in out.connections.values())


def test_route_reflectors_mesh_and_mark_their_clients() -> None:
    p = policy(t.PolicyKind.ROUTE_REFLECTOR, reflectors=("a",))
    out = t.expand(p, sites(*ALL), endpoints(*ALL), [])
    assert sorted(out.connections) == ["p-a-b", "p-a-c", "p-a-d"]
    assert {c.bgp.reflector for c in out.connections.values() if c.bgp} == {"a"}
    two = t.expand(policy(t.PolicyKind.ROUTE_REFLECTOR, reflectors=("a", "b")), sites(*ALL), endpoints(*ALL), [])
    assert two.connections["p-a-b"].bgp.reflector == ""  # type: ignore[union-attr]  # reflectors are peers
    assert two.connections["p-b-c"].bgp.reflector == "b"  # type: ignore[union-attr]


def test_the_reflector_end_makes_its_client_an_os_ken_route_reflector_client() -> None:
    out = t.expand(policy(t.PolicyKind.ROUTE_REFLECTOR, reflectors=("a",)), sites(*ALL), endpoints(*ALL), [])
    at_reflector = t.plan_site("a", out.connections.values(), endpoints(*ALL))["p-a-b"]
    at_client = t.plan_site("b", out.connections.values(), endpoints(*ALL))["p-a-b"]
    assert NeighborConfig.of(at_reflector)[0].rr_client and not NeighborConfig.of(at_client)[0].rr_client


def test_skipped_pairs_say_why_and_an_explicit_connection_wins() -> None:
    eps = endpoints("a", "b", "c")
    explicit = m.Connection("mine", m.EndpointRef("a", "gw"), m.EndpointRef("b", "gw"), m.ConnectionType.BGP)
    squatter = m.Connection("p-b-c", m.EndpointRef("x", "gw"), m.EndpointRef("y", "gw"), m.ConnectionType.BGP)
    out = t.expand(policy(), sites(*ALL), eps, [explicit, squatter])
    assert sorted(out.connections) == ["p-a-c"]
    assert "a - b: explicit bgp connection mine joins these endpoints and wins over the policy" in out.notes
    assert "b - c: the name p-b-c is taken by connection p-b-c" in out.notes
    assert "a - d: site d has no endpoint gw" in out.notes


def test_where_two_policies_join_a_pair_the_first_by_name_makes_it() -> None:
    first, second = policy(), dataclasses.replace(policy(), name="q")
    out = t.expand_all([second, first], sites(*ALL), endpoints(*ALL), [])
    assert len(out["p"].connections) == 6 and not out["q"].connections
    assert "a - b: bgp connection p-a-b of policy p joins these endpoints" in out["q"].notes
    # Once q's connection of a pair is stored, q keeps it.
    stored = dataclasses.replace(t.expand(second, sites(*ALL), endpoints(*ALL), []).connections["q-a-b"], version=9)
    again = t.expand_all([first, second], sites(*ALL), endpoints(*ALL), [stored])
    assert "q-a-b" in again["q"].connections and "p-a-b" not in again["p"].connections


def test_vxlan_connections_take_free_vnis_of_the_pool_and_keep_them() -> None:
    pool = t.VxlanPool(100, 103)
    p = policy(types=(m.ConnectionType.VXLAN,), vxlan=pool, sites=("a", "b", "c"))
    other = m.Connection("o", m.EndpointRef("x", "gw"), m.EndpointRef("y", "gw"), m.ConnectionType.VXLAN,
                         vxlan=m.VxlanParams(101))
    out = t.expand(p, sites(*ALL), endpoints(*ALL), [other], reserved_vnis=[100])
    assert {n: c.vxlan.vni for n, c in out.connections.items() if c.vxlan} == {"p-a-b": 102, "p-a-c": 103}
    assert any("the VNI pool 100..103 is used up" in n for n in out.notes)
    # Once stored, a connection keeps its VNI when the pool frees a lower one.
    again = t.expand(p, sites(*ALL), endpoints(*ALL), list(out.connections.values()))
    assert {n: c.vxlan.vni for n, c in again.connections.items() if c.vxlan}["p-a-c"] == 103


def test_long_names_become_a_digest_that_is_still_a_name() -> None:
    long = "s" * 40
    name = t.connection_name("p" * 60, long, long + "x", m.ConnectionType.BGP, True)
    m.check_name(name, "name")
    assert name != t.connection_name("p" * 60, long, long + "y", m.ConnectionType.BGP, True)


@pytest.mark.parametrize(("change", "field"), [
    ({"kind": t.PolicyKind.HUB_AND_SPOKE}, "hubs"),
    ({"reflectors": ("a",)}, "reflectors"),
    ({"sites": ()}, "sites"),
    ({"types": (m.ConnectionType.VXLAN,)}, "vxlan.vni_first"),
    ({"bgp": m.BgpParams(hold_time=2)}, "bgp.hold_time"),
    ({"bgp": m.BgpParams(reflector="a")}, "bgp.reflector"),
    ({"vxlan": t.VxlanPool(5, 4)}, "vxlan"),
    ({"endpoint": "Bad"}, "endpoint"),
])
def test_bad_policies_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        policy(**change)
    assert exc.value.field == field


def test_a_policy_survives_json_and_the_wire() -> None:
    p = dataclasses.replace(policy(t.PolicyKind.HUB_AND_SPOKE, hubs=("a",), selector={"k": "v"},
                                   types=(m.ConnectionType.BGP, m.ConnectionType.VXLAN),
                                   vxlan=t.VxlanPool(10, 20, 4790, 1400), description="x"), version=7)
    assert t.policy_from_json(m.to_json(p), 7) == p
    assert twire.policy_from_pb(twire.policy_to_pb(p)) == p


def _peering(**bgp: object) -> m.DesiredPeering:
    eps = endpoints("a", "b")
    conn = m.validate_connection(m.Connection("c", m.EndpointRef("a", "gw"), m.EndpointRef("b", "gw"),
                                              m.ConnectionType.BGP, bgp=m.BgpParams(**bgp)))  # type: ignore[arg-type]
    return t.plan_site("a", [conn], eps)["c"]


@pytest.mark.parametrize("change", [
    {"hold_time": 30}, {"graceful_restart": 10}, {"address_families": ("ipv4-unicast", "l2vpn-evpn")},
    {"reflector": "a"}, {"import_prefixes": ("10.0.0.0/8 le 24",)}, {"max_prefixes": 100},
])
def test_plan_says_a_session_resets_exactly_when_the_bgp_driver_recreates_the_neighbor(
        change: dict[str, object]) -> None:
    old, new = _peering(), _peering(**change)
    driver_recreates = NeighborConfig.of(old)[0] != NeighborConfig.of(new)[0]
    assert t.resets(old, new) == driver_recreates
    assert t.changed_fields(old, new) == [f"bgp.{next(iter(change))}"]


def test_documents_name_the_field_of_what_is_wrong() -> None:
    def error(raw: object) -> str:
        with pytest.raises(IsthmusError) as exc:
            d.parse_document(raw)
        return str(exc.value)

    assert error({"kind": "Site", "spec": {"name": "a", "kind": "region", "labels": {"k": 1}}}).startswith(
        "labels.k: 1 is not text")
    assert error({"kind": "Connection", "spec": {"name": "c", "a": {"site": "a", "name": "gw"}, "b": {
        "site": "b", "name": "gw"}, "type": "bgp", "policy": "p"}}).startswith("policy: unknown field (set by")
    assert error({"kind": "Endpoint", "spec": {"site": "a", "name": "gw", "asn": 1}}) == "address: is required"
    assert error({"kind": "Router", "spec": {}}).startswith("kind: 'Router' is not one of")
    assert error({"kind": "Policy", "spec": {"name": "p", "kind": "star", "endpoint": "gw"}}).startswith(
        "kind: 'star' is not one of full-mesh")


def test_a_document_written_by_get_parses_back_to_the_same_object() -> None:
    p = policy(t.PolicyKind.ROUTE_REFLECTOR, reflectors=("a",), bgp=m.BgpParams(hold_time=0))
    conn = m.validate_connection(m.Connection("c", m.EndpointRef("a", "gw"), m.EndpointRef("b", "gw"),
                                              m.ConnectionType.VXLAN, vxlan=m.VxlanParams(9)))
    for kind, obj in (("Policy", p), ("Connection", conn), ("Site", sites("a", k="v")[0])):
        assert d.parse_document(d.document_of(kind, obj)) == (kind, obj)
