"""isthmusctl without a coordinator: flag parsing, objects built from flags, tables, errors.

(Waiting on an l2-gateway-connection is tested against a fake BorderGatewayService on a real gRPC server.)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from isthmus.core import border, edge, flags
from isthmus.core import model as m
from isthmus.core.wire import border as border_wire
from isthmus.core.wire import network as wire
from isthmus.ctl import border as ctl_border
from isthmus.ctl import client as ctl_client
from isthmus.ctl import flags as ctl_flags
from isthmus.ctl import local as ctl_local
from isthmus.ctl import main as ctl
from isthmus.ctl import network as ctl_network
from isthmus.ctl import render as ctl_render
from isthmus.ctl import status as ctl_status
from isthmus.ctl import watch as ctl_watch
from isthmus.v1 import admin_pb2, api_pb2, l2gw_pb2_grpc
from isthmus.v1 import l2gw_pb2 as l2
from isthmus.v1 import types_pb2 as pb


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run isthmusctl expecting a usage error (exit 2); return its stderr."""
    with pytest.raises(SystemExit) as exc:
        ctl.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------- K=V and SITE/NAME


@pytest.mark.parametrize("text, pair", [("a=b", ("a", "b")), ("k=", ("k", "")), ("a=b=c", ("a", "b=c"))])
def test_key_value_splits_at_the_first_equals_sign(text: str, pair: tuple[str, str]) -> None:
    assert ctl_flags.key_value(text) == pair


@pytest.mark.parametrize("text", ["foo", "=v", ""])
def test_key_value_rejects_text_without_a_key(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        ctl_flags.key_value(text)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["site", "create", "x", "--kind", "region", "--label", "foo"], "--label"),
        (["site", "update", "x", "--label", "=v"], "--label"),
        (["endpoint", "create", "s/e", "--address", "192.0.2.1", "--asn", "1", "--property", "p"],
         "--property"),
        (["endpoint", "update", "s/e", "--property", "nothing"], "--property"),
    ],
)
def test_a_pair_without_equals_sign_is_a_usage_error_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    err = usage_error(capsys, argv)
    assert f"argument {flag}: expected KEY=VALUE" in err


def test_endpoint_ref_parses_site_and_name() -> None:
    assert ctl_flags.endpoint_ref("region-one/gw") == m.EndpointRef("region-one", "gw")


@pytest.mark.parametrize("text", ["gw", "/gw", "region-one/", "a/b/c", ""])
def test_endpoint_ref_rejects_anything_but_site_slash_name(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="SITE/NAME"):
        ctl_flags.endpoint_ref(text)


def test_bad_site_name_is_a_usage_error_naming_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, ["endpoint", "get", "gw"])
    assert "argument SITE/NAME: expected SITE/NAME, got 'gw'" in err
    err = usage_error(capsys, ["connection", "create", "c", "--a", "one", "--b", "two/gw", "--type", "bgp"])
    assert "argument --a: expected SITE/NAME, got 'one'" in err


@pytest.mark.parametrize("value", ["-1", "4294967296", "12x"])
def test_asn_that_protobuf_cannot_hold_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    err = usage_error(capsys, ["endpoint", "create", "s/e", "--address", "192.0.2.1", "--asn", value])
    assert "argument --asn:" in err


def test_asn_zero_reaches_the_coordinator_which_names_the_field() -> None:
    args = ctl.parse_args(["endpoint", "create", "s/e", "--address", "192.0.2.1", "--asn", "0"])
    assert wire.endpoint_to_pb(ctl_network.new_endpoint(args)).asn == 0


# ---------------------------------------------------------------- global options


@pytest.mark.parametrize(
    "argv",
    [
        ["-o", "json", "--coordinator", "c:1", "--timeout", "3", "site", "list"],
        ["site", "list", "-o", "json", "--coordinator", "c:1", "--timeout", "3"],
        ["site", "-o", "json", "list", "--coordinator", "c:1", "--timeout", "3"],
    ],
)
def test_global_options_are_accepted_before_and_after_the_command(argv: list[str]) -> None:
    args = ctl.parse_args(argv)
    assert (args.output, args.coordinator, args.timeout, args.command) == ("json", "c:1", 3.0, "site list")


def test_global_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ctl_client.ENV_COORDINATOR, raising=False)
    monkeypatch.delenv(ctl_client.ENV_ADMIN_SOCKET, raising=False)
    args = ctl.parse_args(["local", "status"])
    assert (args.coordinator, args.socket, args.output, args.timeout) == (
        ctl_client.DEFAULT_COORDINATOR, ctl_client.DEFAULT_ADMIN_SOCKET, "table", ctl_client.DEFAULT_TIMEOUT,
    )
    monkeypatch.setenv(ctl_client.ENV_COORDINATOR, "coord.example:7800")
    monkeypatch.setenv(ctl_client.ENV_ADMIN_SOCKET, "/tmp/agent.sock")
    args = ctl.parse_args(["local", "status"])
    assert (args.coordinator, args.socket) == ("coord.example:7800", "/tmp/agent.sock")
    assert ctl.parse_args(["local", "status", "--socket", "/x.sock"]).socket == "/x.sock"
    assert ctl.parse_args(["local", "--socket", "/y.sock", "peerings"]).socket == "/y.sock"


def test_a_client_certificate_needs_its_key_and_a_ca(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, ["--tls-cert", "c.pem", "site", "list"])
    assert "--tls-cert and --tls-key go together" in err
    err = usage_error(capsys, ["--tls-cert", "c.pem", "--tls-key", "k.pem", "site", "list"])
    assert "--tls-cert needs --tls-ca" in err


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    usage_error(capsys, [])
    usage_error(capsys, ["site"])


# ---------------------------------------------------------------- --help everywhere


def test_every_parsed_command_has_a_handler() -> None:
    examples = {
        "site create": ["x", "--kind", "region"],
        "endpoint create": ["s/e", "--address", "192.0.2.1", "--asn", "1"],
        "connection create": ["c", "--a", "s/e", "--b", "t/e", "--type", "bgp"],
        "site get": ["x"], "site update": ["x"], "site delete": ["x"],
        "endpoint get": ["s/e"], "endpoint update": ["s/e"], "endpoint delete": ["s/e"],
        "connection get": ["c"], "connection update": ["c"], "connection delete": ["c"],
        "local disable": ["c"], "local enable": ["c"], "local remove-override": ["c"],
        "local add": ADD_ARGV[2:],
        "gateway-device create": ["s/gw", "--type", "router_vtep", "--tunnel-ip", "192.0.2.1"],
        "gateway-device get": ["d"], "gateway-device update": ["d"], "gateway-device delete": ["d"],
        "l2-gateway create": ["blue", "--project", "p", "--device", "d=100"],
        "l2-gateway get": ["g"], "l2-gateway update": ["g"], "l2-gateway delete": ["g"],
        "l2-gateway-connection create": ["g", "--network", "n"],
        "l2-gateway-connection get": ["c"], "l2-gateway-connection delete": ["c"],
        "l2-gateway-connection status": ["c"],
        "sync create": ["k", "--kind", "keypair"], "sync update": ["k"], "sync show": ["k"], "sync delete": ["k"],
        "sync pause": ["k"], "sync resume": ["k"], "sync abort": ["k"], "sync rollback": ["k"],
        "image ensure": ["ubuntu", "--region", "two"], "image list": ["--region", "two"],
        "quota show": ["p"], "quota set": ["p", "cores", "--hard", "10"], "quota unset": ["p"],
        "address lookup": ["10.0.0.1"],
        "routing-domain create": ["d", "--network", "one:n"], "routing-domain update": ["d"],
        "routing-domain show": ["d"], "routing-domain delete": ["d"],
        "logs": ["--site", "s"],
        "policy create": ["p", "--kind", "full-mesh", "--endpoint", "gw", "--site", "a"],
        "policy show": ["p"], "policy delete": ["p"],
        "apply": ["-f", "x.yaml"], "diff": ["-f", "x.yaml"], "plan": ["-f", "x.yaml"],
    }
    for command in ctl.COMMANDS:
        assert ctl.parse_args([*command.split(), *examples.get(command, [])]).command == command


@pytest.mark.parametrize("command", ["", "site", "endpoint", "connection", "local", "gateway-device", "l2-gateway",
                                     "l2-gateway-connection", *ctl.COMMANDS])
def test_help_works_for_every_command(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exc:
        ctl.main([*command.split(), "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: isthmusctl {command}".rstrip())
    assert "--coordinator ADDR" in out
    if command.endswith("create") or command in ("local add", "local disable"):
        assert f"examples:\n  isthmusctl {command} " in out
    if command.startswith("local"):
        assert "--socket PATH" in out


def test_help_of_local_add_says_what_it_is_for(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ctl.main(["local", "add", "--help"])
    assert "new remote endpoint" in capsys.readouterr().out.replace("\n", " ")


def test_help_explains_every_flag() -> None:
    parsers = [ctl.build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            else:
                assert action.help, f"{parser.prog} {action.option_strings or action.dest} has no help"


# ---------------------------------------------------------------- objects built from flags


def test_site_update_merges_labels_and_keeps_the_version_read() -> None:
    current = m.Site("one", m.SiteKind.REGION, labels={"az": "a", "tier": "1"}, description="d", version=7)
    argv = ["site", "update", "one", "--label", "az=b", "--label", "new=x", "--remove-label", "tier"]
    updated = ctl_network.updated_site(current, ctl.parse_args(argv))
    assert updated == m.Site("one", m.SiteKind.REGION, labels={"az": "b", "new": "x"}, description="d",
                             version=7)
    assert wire.site_to_pb(updated).version == 7


def test_site_update_sends_the_version_given_and_can_clear_the_description() -> None:
    current = m.Site("one", m.SiteKind.REGION, labels={"az": "a"}, description="d", version=7)
    argv = ["site", "update", "one", "--description", "", "--version", "3"]
    updated = ctl_network.updated_site(current, ctl.parse_args(argv))
    assert (updated.labels, updated.description, updated.version) == ({"az": "a"}, "", 3)


def test_endpoint_update_changes_only_the_fields_given() -> None:
    current = m.Endpoint("one", "gw", "2001:db8::1", 64512, router_id="10.0.0.1", properties={"a": "1"},
                         version=4)
    args = ctl.parse_args(["endpoint", "update", "one/gw", "--asn", "64513", "--property", "b=2"])
    assert ctl_network.updated_endpoint(current, args) == m.Endpoint(
        "one", "gw", "2001:db8::1", 64513, router_id="10.0.0.1", properties={"a": "1", "b": "2"}, version=4
    )


def test_endpoint_update_lets_a_derived_router_id_follow_the_address() -> None:
    current = m.Endpoint("one", "gw", "192.0.2.1", 64512, router_id="192.0.2.1", version=4)
    argv = ["endpoint", "update", "one/gw", "--address", "192.0.2.9"]
    moved = ctl_network.updated_endpoint(current, ctl.parse_args(argv))
    assert (moved.address, moved.router_id) == ("192.0.2.9", "")
    argv = ["endpoint", "update", "one/gw", "--address", "192.0.2.9", "--router-id", "192.0.2.1"]
    assert ctl_network.updated_endpoint(current, ctl.parse_args(argv)).router_id == "192.0.2.1"


def test_connection_update_changes_bgp_params_and_keeps_the_rest() -> None:
    current = m.Connection(
        "one-two", m.EndpointRef("one", "gw"), m.EndpointRef("two", "gw"), m.ConnectionType.BGP,
        bgp=m.BgpParams(hold_time=90, address_families=("ipv4-unicast",)), description="main", version=9,
    )
    args = ctl.parse_args(["connection", "update", "one-two", "--hold-time", "0", "--admin-state", "down"])
    updated = ctl_network.updated_connection(current, args)
    assert updated.bgp == m.BgpParams(hold_time=0, address_families=("ipv4-unicast",))
    assert (updated.vxlan, updated.admin_state, updated.description, updated.version) == (
        None, m.AdminState.DOWN, "main", 9,
    )
    request = wire.connection_to_pb(updated)
    assert request.bgp.HasField("hold_time") and request.bgp.hold_time == 0
    assert not request.HasField("vxlan")


def test_connection_update_without_param_flags_sends_the_params_read() -> None:
    current = m.Connection(
        "l2", m.EndpointRef("one", "v"), m.EndpointRef("two", "v"), m.ConnectionType.VXLAN,
        vxlan=m.VxlanParams(vni=100, mtu=1400), version=2,
    )
    updated = ctl_network.updated_connection(current, ctl.parse_args(["connection", "update", "l2", "--mtu", "1500"]))
    assert (updated.bgp, updated.vxlan) == (None, m.VxlanParams(vni=100, mtu=1500))
    assert ctl_network.updated_connection(current, ctl.parse_args(["connection", "update", "l2"])) == current


def test_connection_create_sends_params_only_for_the_flags_given() -> None:
    args = ctl.parse_args(["connection", "create", "c", "--a", "one/gw", "--b", "two/gw", "--type", "bgp"])
    assert ctl_network.new_connection(args) == m.Connection(
        "c", m.EndpointRef("one", "gw"), m.EndpointRef("two", "gw"), m.ConnectionType.BGP
    )
    argv = ["connection", "create", "c", "--a", "one/v", "--b", "two/v", "--type", "vxlan", "--vni", "7",
            "--address-family", "l2vpn-evpn", "--address-family", "ipv4-unicast"]
    conn = ctl_network.new_connection(ctl.parse_args(argv))
    assert conn.vxlan == m.VxlanParams(vni=7)
    assert conn.bgp is not None and conn.bgp.address_families == ("l2vpn-evpn", "ipv4-unicast")


# ---------------------------------------------------------------- border gateway from flags


@pytest.mark.parametrize("text, pair", [("d1=100", ("d1", 100)), ("d1", ("d1", None)), ("d1=0", ("d1", 0))])
def test_device_segment_is_an_id_with_an_optional_segmentation_id(text: str, pair: tuple[str, int | None]) -> None:
    assert ctl_flags.device_segment(text) == pair


@pytest.mark.parametrize("text, error", [("", "expected DEVICE_ID or DEVICE_ID=SEGID"),
                                         ("=100", "expected DEVICE_ID or DEVICE_ID=SEGID"),
                                         ("d1=x", "segmentation id of d1: 'x' is not an integer"),
                                         ("d1=4294967296", "segmentation id of d1: 4294967296 is out of range")])
def test_device_segment_rejects_a_missing_id_or_a_bad_number(text: str, error: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=error):
        ctl_flags.device_segment(text)


def test_gateway_device_create_builds_the_device() -> None:
    argv = ["gateway-device", "create", "s1/gw", "--type", "hw_vtep", "--tunnel-ip", "192.0.2.1",
            "--tunnel-ip", "2001:db8::1", "--management", "segment_bridge=br-{network_id}"]
    dev = ctl_border.new_gateway_device(ctl.parse_args(argv))
    assert dev == border.GatewayDevice("", "s1", "gw", border.DeviceType.HW_VTEP, ("192.0.2.1", "2001:db8::1"),
                                       {"segment_bridge": "br-{network_id}"})
    request = border_wire.device_to_pb(dev)
    assert (request.type, request.id) == (l2.GATEWAY_DEVICE_TYPE_HW_VTEP, "")


@pytest.mark.parametrize(
    "argv, flag",
    [(["gateway-device", "create", "s1/gw", "--type", "vtep", "--tunnel-ip", "192.0.2.1"], "--type"),
     (["gateway-device", "create", "s1/gw", "--type", "hw_vtep"], "--tunnel-ip"),
     (["gateway-device", "create", "gw", "--type", "hw_vtep", "--tunnel-ip", "192.0.2.1"], "SITE/NAME"),
     (["gateway-device", "update", "d", "--management", "x"], "--management"),
     (["l2-gateway", "create", "blue", "--device", "d=1"], "--project"),
     (["l2-gateway", "create", "blue", "--project", "p"], "--device"),
     (["l2-gateway", "create", "blue", "--project", "p", "--device", "d=x"], "--device"),
     (["l2-gateway-connection", "create", "g"], "--network"),
     (["l2-gateway-connection", "create", "g", "--network", "n", "--segmentation-id", "-1"], "--segmentation-id"),
     (["l2-gateway-connection", "status", "c", "--wait-timeout", "0"], "--wait-timeout")],
)
def test_border_flag_errors_are_usage_errors_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    assert flag in usage_error(capsys, argv)


def test_gateway_device_update_replaces_tunnel_ips_and_merges_management() -> None:
    current = border.GatewayDevice("d1", "s1", "gw", border.DeviceType.ROUTER_VTEP, ("192.0.2.1",),
                                   {"segment_bridge": "br{segmentation_id}", "rack": "7"}, version=5)
    argv = ["gateway-device", "update", "d1", "--management", "rack=8", "--remove-management", "segment_bridge"]
    updated = ctl_border.updated_gateway_device(current, ctl.parse_args(argv))
    assert (updated.tunnel_ips, updated.management, updated.version) == (("192.0.2.1",), {"rack": "8"}, 5)
    argv = ["gateway-device", "update", "d1", "--tunnel-ip", "192.0.2.9", "--version", "3"]
    moved = ctl_border.updated_gateway_device(current, ctl.parse_args(argv))
    assert (moved.tunnel_ips, moved.management, moved.version) == (("192.0.2.9",), current.management, 3)
    assert border_wire.device_to_pb(moved).type == l2.GATEWAY_DEVICE_TYPE_ROUTER_VTEP, "the type read is sent back"


def test_l2_gateway_create_takes_segmentation_ids_per_device_or_for_all() -> None:
    argv = ["l2-gateway", "create", "blue", "--project", "p1", "--device", "d1=100", "--device", "d2",
            "--segmentation-id", "200"]
    gw = ctl_border.new_l2_gateway(ctl.parse_args(argv))
    assert gw == border.L2Gateway("", "blue", "p1", (border.DeviceRef("d1", 100), border.DeviceRef("d2", 200)))
    request = border_wire.gateway_to_pb(gw)
    assert [(d.device_id, d.segmentation_id) for d in request.devices] == [("d1", 100), ("d2", 200)]


@pytest.mark.parametrize("argv, text", [
    (["l2-gateway", "create", "blue", "--project", "p1", "--device", "d1=100", "--device", "d2"],
     "--device d2: give DEVICE_ID=SEGID, or --segmentation-id"),
    (["l2-gateway", "update", "g", "--add-device", "d3"], "--add-device d3: give DEVICE_ID=SEGID"),
])
def test_a_device_without_segmentation_id_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], text: str
) -> None:
    assert text in usage_error(capsys, argv)


def test_l2_gateway_update_adds_removes_and_changes_devices_at_the_version_read() -> None:
    current = border.L2Gateway("g", "blue", "p1", (border.DeviceRef("d1", 100), border.DeviceRef("d2", 100)),
                               version=7)
    argv = ["l2-gateway", "update", "g", "--add-device", "d3=100", "--add-device", "d1=101",
            "--remove-device", "d2", "--name", "blue2"]
    updated = ctl_border.updated_l2_gateway(current, ctl.parse_args(argv))
    assert updated == border.L2Gateway("g", "blue2", "p1", (border.DeviceRef("d1", 101), border.DeviceRef("d3", 100)),
                                       version=7)
    argv = ["l2-gateway", "update", "g", "--add-device", "d3", "--segmentation-id", "100", "--version", "2"]
    assert ctl_border.updated_l2_gateway(current, ctl.parse_args(argv)).devices[-1] == border.DeviceRef("d3", 100)
    assert ctl_border.updated_l2_gateway(current, ctl.parse_args(argv)).version == 2
    assert ctl_border.updated_l2_gateway(current, ctl.parse_args(["l2-gateway", "update", "g"])) == current


def test_l2_gateway_update_refuses_to_remove_a_device_it_does_not_have() -> None:
    current = border.L2Gateway("g", "blue", "p1", (border.DeviceRef("d1", 100),))
    with pytest.raises(ctl_client.CtlError, match="--remove-device: l2-gateway g has no device d7, d9"):
        ctl_border.updated_l2_gateway(current, ctl.parse_args(["l2-gateway", "update", "g", "--remove-device", "d9",
                                                        "--remove-device", "d7"]))


def test_l2_connection_create_sends_a_segmentation_id_only_when_given() -> None:
    plain = ctl_border.new_l2_connection(
        ctl.parse_args(["l2-gateway-connection", "create", "g", "--network", "net-blue"]))
    assert plain == border.L2GatewayConnection("", "g", "net-blue")
    argv = ["l2-gateway-connection", "create", "g", "--network", "net-blue", "--segmentation-id", "100",
            "--project", "p1"]
    request = border_wire.l2conn_to_pb(ctl_border.new_l2_connection(ctl.parse_args(argv)))
    assert (request.l2_gateway_id, request.network_id, request.segmentation_id, request.project_id) == (
        "g", "net-blue", 100, "p1")
    assert border_wire.l2conn_from_pb(request).explicit_segmentation_id


def test_l2_connection_status_waits_only_when_asked() -> None:
    args = ctl.parse_args(["l2-gateway-connection", "status", "c"])
    assert (args.id, args.wait_complete, args.wait_timeout) == ("c", False, 60.0)
    args = ctl.parse_args(["l2-gateway-connection", "status", "c", "--wait-complete", "--wait-timeout", "5"])
    assert (args.wait_complete, args.wait_timeout) == (True, 5.0)


# ---------------------------------------------------------------- local overrides from flags

ADD_ARGV = ["local", "add", "dc", "--type", "bgp", "--local-address", "192.0.2.1", "--local-asn", "64512",
            "--remote-address", "198.51.100.9", "--remote-asn", "64999"]


@pytest.mark.parametrize(
    "text, value",
    [("0", 0), ("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), (" 5m ", 300),
     ("0s", 0), (f"{flags.MAX_TTL_DAYS}d", flags.MAX_TTL_DAYS * 86400)],
)
def test_duration_is_seconds_or_a_number_with_a_unit(text: str, value: int) -> None:
    assert flags.duration(text) == value


@pytest.mark.parametrize("text", ["", "m", "-5", "1.5h", "10w", "1h30m", "2 h", "五m", "１s"])
def test_duration_rejects_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="30s, 15m, 2h, 1d"):
        flags.duration(text)


def test_a_duration_beyond_the_bound_is_refused_with_the_way_to_never_expire() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="use 0 for no expiry"):
        flags.duration(f"{flags.MAX_TTL_DAYS + 1}d")


@pytest.mark.parametrize(
    "argv",
    [["local", "disable", "one-two", "--ttl", "soon"], [*ADD_ARGV, "--ttl", "-1"],
     ["local", "disable", "one-two", "--ttl", "99999999999d"]],
)
def test_a_bad_ttl_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert "argument --ttl: " in usage_error(capsys, argv)


@pytest.mark.parametrize(
    "argv, flag",
    [(["local", "journal", "--limit", "-1"], "--limit"), ([*ADD_ARGV[:-2]], "--remote-asn"),
     ([*ADD_ARGV, "--type", "gre"], "--type"), ([*ADD_ARGV[:-1], "70000000000"], "--remote-asn")],
)
def test_local_flag_errors_are_usage_errors_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    assert flag in usage_error(capsys, argv)


def test_local_add_builds_a_bgp_peering_with_only_the_flags_given() -> None:
    request = ctl_local.add_local_peering_request(ctl.parse_args(ADD_ARGV))
    assert (request.ttl_seconds, request.reason) == (0, "")
    peering = wire.peering_from_pb(request.peering)
    assert peering == m.DesiredPeering(
        "dc", m.ConnectionType.BGP,
        local=m.Endpoint("", "", "192.0.2.1", 64512, role=m.EndpointRole.LOCAL),
        remote=m.Endpoint("", "", "198.51.100.9", 64999, role=m.EndpointRole.REMOTE),
    )
    assert request.peering.local.role == pb.ENDPOINT_ROLE_LOCAL
    assert request.peering.remote.role == pb.ENDPOINT_ROLE_REMOTE
    assert not request.peering.HasField("bgp") and not request.peering.HasField("vxlan")


def test_local_add_passes_bgp_params_ttl_and_reason() -> None:
    argv = [*ADD_ARGV, "--router-id", "10.0.0.1", "--hold-time", "0", "--password-ref", "env:PEER",
            "--address-family", "ipv4-unicast", "--address-family", "l2vpn-evpn", "--ttl", "2h",
            "--reason", "dc link"]
    request = ctl_local.add_local_peering_request(ctl.parse_args(argv))
    assert (request.ttl_seconds, request.reason) == (7200, "dc link")
    assert request.peering.local.router_id == "10.0.0.1"
    assert request.peering.bgp.HasField("hold_time") and request.peering.bgp.hold_time == 0
    assert wire.peering_from_pb(request.peering).bgp == m.BgpParams(0, "env:PEER",
                                                                       ("ipv4-unicast", "l2vpn-evpn"))


def test_local_add_builds_a_vxlan_peering() -> None:
    argv = [*ADD_ARGV, "--type", "vxlan", "--vni", "5001", "--mtu", "1400"]
    peering = wire.peering_from_pb(ctl_local.add_local_peering_request(ctl.parse_args(argv)).peering)
    assert (peering.type, peering.bgp, peering.vxlan) == (
        m.ConnectionType.VXLAN, None, m.VxlanParams(vni=5001, mtu=1400),
    )


def test_local_disable_request() -> None:
    args = ctl.parse_args(["local", "disable", "one-two", "--ttl", "15m", "--reason", "optics"])
    assert ctl_local.disable_peering_request(args) == admin_pb2.DisablePeeringRequest(
        connection="one-two", ttl_seconds=900, reason="optics"
    )
    plain = ctl_local.disable_peering_request(ctl.parse_args(["local", "disable", "one-two", "--ttl", "0"]))
    assert (plain.ttl_seconds, plain.reason) == (0, "")


def test_local_journal_limit_defaults_to_50() -> None:
    assert ctl.parse_args(["local", "journal"]).limit == 50
    assert ctl.parse_args(["local", "journal", "--limit", "0"]).limit == 0


# ---------------------------------------------------------------- tables and other text


def test_format_table_aligns_columns_and_shows_empty_cells_as_dashes() -> None:
    text = ctl_render.format_table(("NAME", "KIND", "X"), [["region-one", "region", "1"], ["c", "", "22"]])
    assert text.splitlines() == [
        "NAME        KIND    X",
        "region-one  region  1",
        "c           -       22",
    ]


def test_format_table_with_no_rows_is_the_header() -> None:
    assert ctl_render.format_table(("A", "B"), []) == "A  B"


def test_format_fields_aligns_values() -> None:
    text = ctl_render.format_fields([("site", "one"), ("applied-revision", "5"), ("last-error", "")])
    assert text.splitlines() == [
        "site:             one",
        "applied-revision: 5",
        "last-error:",
    ]


@pytest.mark.parametrize(
    "age, text",
    [(0, "0s"), (5.9, "5s"), (59, "59s"), (60, "1m"), (180, "3m"), (3599, "59m"), (3600, "1h"),
     (86399, "23h"), (2 * 86400 + 5, "2d"), (-3, "0s")],
)
def test_format_age(age: float, text: str) -> None:
    assert ctl_render.format_age(age) == text


def _endpoint(site: str, address: str, asn: int) -> pb.Endpoint:
    return pb.Endpoint(site=site, name="gw", address=address, asn=asn, role=pb.ENDPOINT_ROLE_LOCAL)


def _peering(name: str, state: int | None, admin: int = pb.ADMIN_STATE_UP) -> api_pb2.PeeringStatus:
    desired = pb.DesiredPeering(
        connection=name, type=pb.CONNECTION_TYPE_BGP, admin_state=admin,
        local=_endpoint("one", "192.0.2.1", 64512), remote=_endpoint("two", "192.0.2.2", 64513),
    )
    if state is None:
        return api_pb2.PeeringStatus(desired=desired)
    observed = pb.ObservedPeering(connection=name, state=state, since_unix_ms=1_000_000)
    return api_pb2.PeeringStatus(desired=desired, observed=observed)


def test_peering_row_shows_desired_and_observed_in_lowercase() -> None:
    row = ctl_render.peering_row(_peering("one-two", pb.PEERING_STATE_ESTABLISHED), now=1_000 + 180)
    assert row == [
        "one-two", "bgp", "192.0.2.1 AS 64512", "two/gw 192.0.2.2 AS 64513", "up", "yes", "",
        "established", "0", "", "3m",
    ]
    assert len(row) == len(ctl_render.PEERING_COLUMNS)


def test_peering_row_of_a_peering_no_longer_desired() -> None:
    observed = pb.ObservedPeering(connection="old", state=pb.PEERING_STATE_ERROR, error="boom\n  at line 2")
    row = ctl_render.peering_row(admin_pb2.LocalPeering(observed=observed), now=0)
    assert row == ["old", "", "", "", "", "no", "", "error", "0", "boom at line 2", ""]


def test_peering_row_counts_received_prefixes_of_bgp_only() -> None:
    p = _peering("one-two", pb.PEERING_STATE_ESTABLISHED)
    p.observed.received_prefixes.extend(["10.0.0.0/24", "10.0.1.0/24"])
    assert _column(ctl_render.peering_row(p, now=0), "RECEIVED") == "2"
    p.desired.type = pb.CONNECTION_TYPE_VXLAN
    assert _column(ctl_render.peering_row(p, now=0), "RECEIVED") == ""


def _column(row: list[str], name: str) -> str:
    return row[ctl_render.PEERING_COLUMNS.index(name)]


def test_peering_row_marks_a_peering_disabled_at_the_site() -> None:
    p = _peering("one-two", pb.PEERING_STATE_DOWN)
    p.override.CopyFrom(pb.Override(connection="one-two", kind=pb.OVERRIDE_KIND_DISABLE))
    assert _column(ctl_render.peering_row(p, now=0), "LOCAL-OVERRIDE") == "disabled (until enabled)"
    p.override.expires_unix_ms = 1_000_000 + 300_000
    assert _column(ctl_render.peering_row(p, now=1_000), "LOCAL-OVERRIDE") == "disabled (expires in 5m)"
    assert _column(ctl_render.peering_row(p, now=2_000), "LOCAL-OVERRIDE") == "disabled (expired)"


def test_peering_row_of_a_peering_added_at_the_site_shows_no_placeholder_names() -> None:
    added = _added_override()
    local = admin_pb2.LocalPeering(
        desired=added.peering, override=added,
        observed=pb.ObservedPeering(connection="dc", state=pb.PEERING_STATE_ESTABLISHED),
    )
    row = ctl_render.peering_row(local, now=0)
    assert row[:7] == ["dc", "bgp", "192.0.2.1 AS 64512", "198.51.100.9 AS 64999", "up", "yes", "added locally"]
    # As the coordinator shows it: overridden and observed, not desired by the coordinator.
    status = api_pb2.PeeringStatus(override=added)
    assert ctl_render.peering_row(status, now=0)[:7] == [
        "dc", "bgp", "192.0.2.1 AS 64512", "198.51.100.9 AS 64999", "up", "no", "added locally",
    ]


def test_peering_row_says_when_a_peering_added_at_the_site_replaces_the_coordinators() -> None:
    status = _peering("dc", pb.PEERING_STATE_ESTABLISHED)
    status.override.CopyFrom(_added_override())
    row = ctl_render.peering_row(status, now=0)
    assert row[3] == "two/gw 192.0.2.2 AS 64513"
    assert _column(row, "LOCAL-OVERRIDE") == "added locally, replacing the coordinator's"


def test_status_row_counts_established_of_desired_peerings() -> None:
    st = api_pb2.SiteStatus(
        site="one", defined=True, connected=True, driver="fake", coordinator="c1", desired_revision=5,
        applied_revision=4, peerings=[_peering("a", pb.PEERING_STATE_ESTABLISHED), _peering("b", None)],
    )
    assert ctl_status.status_row(st) == ["one", "connected", "5", "4", "1/2", "fake", "c1"]
    assert ctl_status.status_row(api_pb2.SiteStatus(site="x", connected=True))[:2] == ["x", "undefined site"]


def test_a_disconnected_sites_row_is_its_last_report_and_says_how_old() -> None:
    st = api_pb2.SiteStatus(
        site="one", defined=True, connected=False, driver="fake", coordinator="c1", desired_revision=5,
        applied_revision=5, agent_version="0.1.0", last_report_unix_ms=1_000_000, disconnected_since_unix_ms=1_060_000,
        peerings=[_peering("a", pb.PEERING_STATE_ESTABLISHED)],
    )
    assert ctl_status.status_row(st, now=1_360) == ["one", "disconnected for 5m", "5", "5", "1/1", "fake", "c1"]
    st.disconnected_since_unix_ms = 0  # its session was not seen to end (the coordinator died)
    assert ctl_status.status_row(st, now=1_000 + 7200)[1] == "disconnected, last report 2h ago"
    assert ctl_status.not_established([st]) == ["one (disconnected)"]
    details = ctl_status.site_details(st, now=1_360)
    assert details.splitlines()[0].startswith("one has no agent connected: OBSERVED is what its agent last "
                                              "reported at ")
    never = api_pb2.SiteStatus(site="two", defined=True, peerings=[_peering("a", None)])
    assert ctl_status.status_row(never, now=0)[:5] == ["two", "disconnected", "0", "0", "0/1"]


def test_overridden_peerings_are_not_waited_for() -> None:
    disabled = _peering("held", pb.PEERING_STATE_DOWN)
    disabled.override.CopyFrom(pb.Override(connection="held", kind=pb.OVERRIDE_KIND_DISABLE))
    added = api_pb2.PeeringStatus(
        override=_added_override(),
        observed=pb.ObservedPeering(connection="dc", state=pb.PEERING_STATE_CONNECTING),
    )
    # The coordinator desires a peering of the same name as one added at the site: the site's wins.
    clash = _peering("clash", pb.PEERING_STATE_CONNECTING)
    clash.override.CopyFrom(pb.Override(connection="clash", kind=pb.OVERRIDE_KIND_ADD))
    st = api_pb2.SiteStatus(site="one", defined=True, desired_revision=5, applied_revision=5,
                            peerings=[disabled, added, clash, _peering("b", pb.PEERING_STATE_CONNECTING)])
    assert ctl_status.not_established([st]) == ["one/b (connecting)"]


def test_not_established_names_each_peering_and_revision_behind() -> None:
    st = api_pb2.SiteStatus(
        site="one", defined=True, connected=True, desired_revision=5, applied_revision=4,
        peerings=[
            _peering("a", pb.PEERING_STATE_ESTABLISHED), _peering("b", pb.PEERING_STATE_CONNECTING),
            _peering("c", None), _peering("off", None, admin=pb.ADMIN_STATE_DOWN),
        ],
    )
    undefined = api_pb2.SiteStatus(site="ghost", connected=True)
    assert ctl_status.not_established([st, undefined]) == [
        "one (applied revision 4 < 5)", "one/b (connecting)", "one/c (unreported)",
    ]
    done = api_pb2.SiteStatus(site="one", defined=True, desired_revision=5, applied_revision=5,
                              peerings=[_peering("a", pb.PEERING_STATE_ESTABLISHED)])
    assert ctl_status.not_established([done]) == []


def _added_override(expires_ms: int = 0) -> pb.Override:
    peering = pb.DesiredPeering(
        connection="dc", type=pb.CONNECTION_TYPE_BGP, admin_state=pb.ADMIN_STATE_UP,
        local=pb.Endpoint(site="local", name="local", address="192.0.2.1", asn=64512,
                          role=pb.ENDPOINT_ROLE_LOCAL),
        remote=pb.Endpoint(site="remote", name="remote", address="198.51.100.9", asn=64999,
                           role=pb.ENDPOINT_ROLE_REMOTE),
        bgp=pb.BgpParams(hold_time=90),
    )
    return pb.Override(connection="dc", kind=pb.OVERRIDE_KIND_ADD, peering=peering, reason="dc link",
                       created_unix_ms=1_000_000, expires_unix_ms=expires_ms)


def test_override_rows_describe_kind_detail_age_and_expiry() -> None:
    disable = pb.Override(connection="one-two", kind=pb.OVERRIDE_KIND_DISABLE, reason="new optics\ntoday",
                          created_unix_ms=1_000_000, expires_unix_ms=1_000_000 + 900_000)
    now = 1_000 + 120
    assert ctl_render.override_row(disable, now) == ["one-two", "disable", "", "new optics today", "2m ago", "in 13m"]
    assert ctl_render.override_row(_added_override(), now) == [
        "dc", "add", "bgp to 198.51.100.9 AS 64999", "dc link", "2m ago", "never",
    ]
    assert ctl_render.override_row(disable, now=1_000 + 900)[-1] == "expired"
    text = ctl_render.format_table(ctl_render.OVERRIDE_COLUMNS, [ctl_render.override_row(_added_override(), now)])
    assert text.splitlines()[0].split() == ["CONNECTION", "KIND", "DETAIL", "REASON", "CREATED", "EXPIRES"]


def test_override_row_of_a_vxlan_peering_names_its_vni() -> None:
    o = _added_override()
    o.peering.type = pb.CONNECTION_TYPE_VXLAN
    o.peering.ClearField("bgp")
    o.peering.vxlan.vni = 5001
    assert ctl_render.override_row(o, now=1_000)[2] == "vxlan to 198.51.100.9 VNI 5001"


def test_an_expiry_just_set_shows_the_whole_ttl() -> None:
    assert ctl_render.format_expiry(1_000_000 + 900_000, now=1_000.2) == "in 15m"
    assert ctl_render.format_expiry(0, now=1_000) == "never"


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the test (time.tzset reads TZ)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_journal_lines_show_local_time_kind_connection_and_message(utc: None) -> None:
    entries = [
        pb.JournalEntry(seq=1, time_unix_ms=1_700_000_000_000, kind="link", message="lost coordinator c1"),
        pb.JournalEntry(seq=2, time_unix_ms=1_700_000_061_500, kind="override", connection="one-two",
                        message="disabled locally\nuntil removed"),
    ]
    assert ctl_render.format_journal(entries).splitlines() == [
        "TIME                 KIND      CONNECTION  MESSAGE",
        "2023-11-14 22:13:20  link      -           lost coordinator c1",
        "2023-11-14 22:14:21  override  one-two     disabled locally until removed",
    ]


def test_local_status_says_whether_and_since_when_the_site_is_cut_off() -> None:
    st = admin_pb2.AgentStatus(site="one", partitioned=True, link_down_since_unix_ms=1_000_000, overrides=2,
                               last_error="UNAVAILABLE: refused\n")
    fields = dict(ctl_local.agent_status_fields(st, now=1_000 + 300))
    assert (fields["partitioned"], fields["link-down-since"], fields["overrides"]) == ("yes", "5m ago", "2")
    assert fields["last-error"] == "UNAVAILABLE: refused"
    connected = dict(ctl_local.agent_status_fields(admin_pb2.AgentStatus(site="one", connected=True), now=1_000))
    assert (connected["partitioned"], connected["link-down-since"], connected["overrides"]) == ("no", "", "0")


def test_status_of_a_site_adds_its_local_overrides_and_last_ten_events(utc: None) -> None:
    disabled = _peering("one-two", pb.PEERING_STATE_DOWN)
    disabled.override.CopyFrom(pb.Override(connection="one-two", kind=pb.OVERRIDE_KIND_DISABLE))
    journal = [pb.JournalEntry(seq=i, time_unix_ms=1_700_000_000_000 + i * 1000, kind="peering",
                               connection="one-two", message=f"event {i}") for i in range(1, 13)]
    st = api_pb2.SiteStatus(site="one", peerings=[disabled], journal=journal,
                            overrides=[pb.Override(connection="one-two", kind=pb.OVERRIDE_KIND_DISABLE)])
    lines = ctl_status.site_details(st, now=0).splitlines()
    assert lines[0].split()[:7] == ["CONNECTION", "TYPE", "LOCAL", "REMOTE", "ADMIN", "DESIRED", "LOCAL-OVERRIDE"]
    assert "disabled (until enabled)" in lines[1]
    assert lines[2:4] == ["", "local overrides at one:"]
    assert [line.split() for line in lines[4:6]] == [list(ctl_render.OVERRIDE_COLUMNS),
                                                    ["one-two", "disable", "-", "-", "-", "never"]]
    assert lines[6:8] == ["", "recent events at one (from its agent):"]
    assert lines[8].split() == list(ctl_render.JOURNAL_COLUMNS)
    assert [line.split()[-1] for line in lines[9:]] == [str(i) for i in range(3, 13)]
    quiet = ctl_status.site_details(api_pb2.SiteStatus(site="one", peerings=[disabled]), now=0)
    assert len(quiet.splitlines()) == 2


def test_coordinator_row_marks_the_leader() -> None:
    c = api_pb2.CoordinatorInfo(id="c1", address="10.0.0.5:7800", leader=True, version="0.1.0",
                                started_unix_ms=1_000_000, agents=3)
    assert ctl_status.coordinator_row(c, now=1_000 + 7200) == ["c1", "10.0.0.5:7800", "yes", "3", "0.1.0", "2h"]
    assert ctl_status.coordinator_row(api_pb2.CoordinatorInfo(id="c2"), now=0)[2:4] == ["", "0"]


def test_event_line_names_revision_type_kind_and_object() -> None:
    put = api_pb2.WatchEvent(type=api_pb2.PUT, revision=12, site=pb.Site(name="one"))
    gone = api_pb2.WatchEvent(type=api_pb2.DELETE, revision=13, endpoint=pb.Endpoint(site="one", name="gw"))
    status = api_pb2.WatchEvent(type=api_pb2.PUT, revision=14, status=api_pb2.SiteStatus(site="two"))
    assert [ctl_watch.event_line(e).split() for e in (put, gone, status)] == [
        ["12", "put", "site", "one"], ["13", "delete", "endpoint", "one/gw"], ["14", "put", "status", "two"],
    ]
    assert ctl_watch.event_line(put).index("site") == ctl_watch.WATCH_HEADER.index("KIND")


def test_message_json_keeps_proto_field_names() -> None:
    msg = pb.Endpoint(site="one", name="gw", router_id="10.0.0.1", role=pb.ENDPOINT_ROLE_REMOTE)
    assert ctl_render.message_json(msg) == {"site": "one", "name": "gw", "router_id": "10.0.0.1",
                                     "role": "ENDPOINT_ROLE_REMOTE"}


def test_border_rows() -> None:
    dev = l2.GatewayDevice(id="d1", site="s1", name="gw", type=l2.GATEWAY_DEVICE_TYPE_ROUTER_VTEP,
                           tunnel_ips=["192.0.2.1", "2001:db8::1"], management={"b": "2", "a": "1"}, version=4)
    assert ctl_border.gateway_device_row(dev) == ["d1", "s1", "gw", "router_vtep", "192.0.2.1,2001:db8::1", "a=1,b=2",
                                                  "4"]
    gw = l2.L2Gateway(id="g", name="blue", project_id="p1", version=9, devices=[
        l2.L2GatewayDeviceRef(device_id="d1", segmentation_id=100), l2.L2GatewayDeviceRef(device_id="d2")])
    assert ctl_border.l2_gateway_row(gw) == ["g", "blue", "p1", "d1=100,d2", "9"]
    conn = l2.L2GatewayConnection(id="c", l2_gateway_id="g", network_id="net-blue", segmentation_id=100,
                                  project_id="p1", version=11)
    assert ctl_border.l2_connection_row(conn) == ["c", "g", "net-blue", "100", "p1", "11"]
    assert len(ctl_border.gateway_device_row(dev)) == len(ctl_border.GATEWAY_DEVICE_COLUMNS)
    assert len(ctl_border.l2_gateway_row(gw)) == len(ctl_border.L2_GATEWAY_COLUMNS)
    assert len(ctl_border.l2_connection_row(conn)) == len(ctl_border.L2_CONNECTION_COLUMNS)


def _tunnel(remote: str, state: int | None, error: str = "") -> l2.TunnelStatus:
    t = l2.TunnelStatus(peering=f"l2gw-c-gw-{remote}-gw", local_device="gw", remote_site=remote, remote_device="gw")
    if state is not None:
        t.observed.CopyFrom(pb.ObservedPeering(connection=t.peering, state=state, error=error,
                                               since_unix_ms=1_000_000))
    return t


def _l2_status(complete: bool) -> l2.L2GatewayConnectionStatus:
    up = pb.PEERING_STATE_ESTABLISHED
    st = l2.L2GatewayConnectionStatus(
        connection=l2.L2GatewayConnection(id="c", l2_gateway_id="g", network_id="net-blue", segmentation_id=100,
                                          project_id="p1", version=3),
        sites=[l2.SiteTunnels(site="s1", agent_connected=True, complete=complete,
                              tunnels=[_tunnel("s2", up),
                                       _tunnel("s3", up if complete else pb.PEERING_STATE_ERROR,
                                               "" if complete else "isx100: bridge brs100\ndoes not exist")]),
               l2.SiteTunnels(site="s2", agent_connected=True, complete=True,
                              tunnels=[_tunnel("s1", up), _tunnel("s3", up)])],
    )
    if complete:
        st.sites.append(l2.SiteTunnels(site="s3", agent_connected=True, complete=True,
                                       tunnels=[_tunnel("s1", up), _tunnel("s2", up)]))
    else:
        st.sites.append(l2.SiteTunnels(site="s3", tunnels=[_tunnel("s1", None), _tunnel("s2", None)]))
        st.missing_sites.extend(["s1", "s3"])
    return st


def test_l2_status_shows_each_sites_tunnels_then_complete() -> None:
    lines = ctl_border.format_l2_status(_l2_status(True), now=1_000 + 120).splitlines()
    assert lines[0].split() == list(ctl_border.L2_CONNECTION_COLUMNS)
    assert lines[1].split() == ["c", "g", "net-blue", "100", "p1", "3"]
    assert lines[3].split() == list(ctl_border.TUNNEL_COLUMNS)
    assert lines[4].split() == ["s1", "connected", "gw", "s2/gw", "established", "-", "2m", "l2gw-c-gw-s2-gw"]
    assert len(lines) == 3 + 1 + 6 + 2 and lines[-2:] == ["", "complete"]


def test_l2_status_names_the_missing_sites_and_why() -> None:
    st = _l2_status(False)
    assert ctl_border.missing_sites(st) == ["s1 (to s3/gw: error)", "s3 (agent disconnected)"]
    text = ctl_border.format_l2_status(st, now=1_000)
    assert text.splitlines()[-1] == "missing sites: s1 (to s3/gw: error), s3 (agent disconnected)"
    rows = {tuple(r[:4]): r for r in ctl_border.tunnel_rows(st, now=1_000)}
    assert rows[("s1", "connected", "gw", "s3/gw")][4:6] == ["error", "isx100: bridge brs100 does not exist"]
    assert rows[("s3", "disconnected", "gw", "s1/gw")][4:7] == ["unreported", "", ""]
    lonely = l2.L2GatewayConnectionStatus(sites=[l2.SiteTunnels(site="s1", agent_connected=True)],
                                          missing_sites=["s1"])
    assert ctl_border.missing_sites(lonely) == ["s1 (no tunnels)"]
    assert ctl_border.tunnel_rows(lonely, now=0)[0][5].startswith("no tunnels")


class FakeBorder(l2gw_pb2_grpc.BorderGatewayServiceServicer):
    """Answers GetL2GatewayConnectionStatus with the statuses given, in turn, repeating the last."""

    def __init__(self, *statuses: l2.L2GatewayConnectionStatus) -> None:
        self.statuses = list(statuses)
        self.calls = 0
        self.request_ids: list[str] = []
        self.unavailable = ""  # answer UNAVAILABLE with this message, as the coordinator's edge does

    def GetL2GatewayConnectionStatus(self, request: l2.GetByIdRequest, context: grpc.ServicerContext  # noqa: N802
                                     ) -> l2.L2GatewayConnectionStatus:
        self.calls += 1
        self.request_ids += [v for k, v in context.invocation_metadata() if k == edge.REQUEST_ID_KEY]
        if self.unavailable:
            context.set_trailing_metadata(((edge.ANSWERED_BY_KEY, "UNAVAILABLE"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, self.unavailable)
        return self.statuses[min(self.calls, len(self.statuses)) - 1]


def serve_fake_border(fake: FakeBorder) -> tuple[grpc.Server, str]:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    l2gw_pb2_grpc.add_BorderGatewayServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def fake_border() -> Iterator[tuple[FakeBorder, str]]:
    fake = FakeBorder()
    server, address = serve_fake_border(fake)
    yield fake, address
    server.stop(None)


def test_l2_status_wait_complete_waits_then_shows_complete(
    capsys: pytest.CaptureFixture[str], fake_border: tuple[FakeBorder, str]
) -> None:
    fake, address = fake_border
    fake.statuses = [_l2_status(False), _l2_status(True)]
    argv = ["--coordinator", address, "l2-gateway-connection", "status", "c", "--wait-complete"]
    assert ctl.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "complete" and fake.calls == 2


def test_l2_status_exit_code_is_zero_unless_the_wait_runs_out(
    capsys: pytest.CaptureFixture[str], fake_border: tuple[FakeBorder, str]
) -> None:
    fake, address = fake_border
    fake.statuses = [_l2_status(False)]
    assert ctl.main(["--coordinator", address, "l2-gateway-connection", "status", "c"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("missing sites: s1 ")
    argv = ["--coordinator", address, "l2-gateway-connection", "status", "c", "--wait-complete",
            "--wait-timeout", "0.3"]
    assert ctl.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("isthmusctl: error: l2-gateway-connection c not complete after 0.3s: missing sites: "
                            "s1 (to s3/gw: error), s3 (agent disconnected)\n")


# ---------------------------------------------------------------- errors


class FakeRpcError(grpc.RpcError):
    """Follows the grpc.Call side of the errors that sync stubs raise."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_describe_rpc_error_is_one_line_with_the_code() -> None:
    exc = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "asn: 0 is out of range\n1..4294967295")
    assert ctl_render.describe_rpc_error(exc, "hint") == "INVALID_ARGUMENT: asn: 0 is out of range 1..4294967295"


def test_describe_rpc_error_adds_the_hint_when_unavailable() -> None:
    exc = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    assert ctl_render.describe_rpc_error(exc, "is it running?") == "UNAVAILABLE: connection refused (is it running?)"


def test_describe_rpc_error_gives_no_hint_when_a_server_answered_unavailable() -> None:
    exc = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "etcd has no leader")
    exc.trailing_metadata = lambda: ((edge.ANSWERED_BY_KEY, "UNAVAILABLE"),)  # type: ignore[attr-defined]
    assert ctl_render.describe_rpc_error(exc, "is it running?") == "UNAVAILABLE: etcd has no leader"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections for as long as the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_coordinator_is_one_error_line_naming_its_address(
    capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    address = f"127.0.0.1:{closed_port}"
    assert ctl.main(["--coordinator", address, "--timeout", "5", "site", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("isthmusctl: error: UNAVAILABLE: ")
    assert f"coordinator running at {address}?" in err


def test_the_next_coordinator_is_asked_when_one_cannot_be_reached(
    capsys: pytest.CaptureFixture[str], closed_port: int, fake_border: tuple[FakeBorder, str]
) -> None:
    fake, address = fake_border
    fake.statuses = [_l2_status(True)]
    argv = ["--coordinator", f"127.0.0.1:{closed_port}, {address}", "l2-gateway-connection", "status", "c"]
    assert ctl.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "complete"
    assert fake.calls == 1 and len(fake.request_ids) == 1 and len(fake.request_ids[0]) == 36  # a UUID


def test_a_coordinators_own_unavailable_is_its_answer_without_a_hint(
    capsys: pytest.CaptureFixture[str], fake_border: tuple[FakeBorder, str]
) -> None:
    first, address = fake_border
    first.unavailable = "etcd has lost quorum: 1 of 3 members answer and none has a leader"
    second = FakeBorder(_l2_status(True))
    server, other = serve_fake_border(second)
    try:
        assert ctl.main(["--coordinator", f"{address},{other}", "l2-gateway-connection", "status", "c"]) == 1
    finally:
        server.stop(None)
    # Every coordinator shares the one etcd: asking the next would only double the wait.
    assert (first.calls, second.calls) == (1, 0)
    assert capsys.readouterr().err == f"isthmusctl: error: UNAVAILABLE: {first.unavailable}\n"


def test_coordinator_lists_are_comma_separated(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_client.coordinator_list(" a:1, b:2 ,,unix:/run/c.sock") == ["a:1", "b:2", "unix:/run/c.sock"]
    assert ctl.parse_args(["--coordinator", "a:1,b:2", "site", "list"]).coordinator == "a:1,b:2"
    assert "--coordinator: give at least one HOST:PORT" in usage_error(capsys, ["--coordinator", " , ", "site",
                                                                                  "list"])


def test_an_absent_admin_socket_is_one_error_line_naming_the_socket(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = f"{tmp_path}/agent.sock"
    assert ctl.main(["local", "--socket", path, "status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("isthmusctl: error: UNAVAILABLE: ") and f"admin socket {path}?" in err


def test_an_unreadable_ca_file_is_one_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert ctl.main(["--tls-ca", f"{tmp_path}/missing.pem", "site", "list"]) == 1
    assert capsys.readouterr().err.startswith("isthmusctl: error: --tls-ca: cannot read ")
