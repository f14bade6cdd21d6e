"""``openstack infra ...``: the openstack CLI's commands for isthmus' infrastructure API in Neutron.

An OSC plugin (entry points ``openstack.cli.extension`` and ``openstack.infra.v1``, see pyproject.toml):
``openstack infra site|endpoint|connection create|list|show|set|delete``. It speaks to Neutron's
``/v2.0/infra`` resources with the user's Keystone session, through the same network endpoint as
``openstack network ...`` (the catalog's, or ``network_endpoint_override`` in clouds.yaml). It runs in the
openstack CLI's own Python (osc_lib, openstacksdk) and imports nothing of isthmus but this package.
"""

from __future__ import annotations

import argparse
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from osc_lib import exceptions
from osc_lib.cli import format_columns, parseractions
from osc_lib.command import command

from isthmus.neutron_plugin import infra_forms as forms

LOG = logging.getLogger(__name__)

# The OSC plugin interface (openstackclient.common.clientmanager.get_plugin_modules)
API_NAME = "infra"
API_VERSION_OPTION = "os_infra_api_version"
DEFAULT_API_VERSION = "1"
API_VERSIONS = {"1": "isthmus.neutron_plugin.osc.InfraClient"}
PREFIX = "/infra"


class InfraClient:
    """The infrastructure resources over Neutron's REST API, through a keystoneauth adapter of the network
    service (openstacksdk's network proxy, which holds the session, the region and any endpoint override)."""

    def __init__(self, network: Any) -> None:
        self.network = network

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"raise_exc": False, "headers": {"Accept": "application/json"}}
        if body is not None:
            kwargs["json"] = body
        response = self.network.request(f"{PREFIX}{path}", method, **kwargs)
        if response.status_code >= 400:
            try:
                fault = response.json().get("NeutronError") or {}
                message = fault.get("message") or response.text
            except ValueError:
                message = response.text
            raise exceptions.CommandError(f"{message} (HTTP {response.status_code})")
        return response.json() if response.content else {}

    def list(self, collection: str, **filters: Any) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode([(k, v) for k, v in filters.items() if v is not None], doseq=True)
        answer = self._request("GET", f"/{collection}" + (f"?{query}" if query else ""))
        items: list[dict[str, Any]] = answer[collection]
        return items

    def show(self, collection: str, id: str) -> dict[str, Any]:
        return self._one(self._request("GET", f"/{collection}/{urllib.parse.quote(id, safe=':')}"))

    def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._one(self._request("POST", f"/{collection}", {_singular(collection): body}))

    def update(self, collection: str, id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._one(self._request("PUT", f"/{collection}/{urllib.parse.quote(id, safe=':')}",
                                       {_singular(collection): body}))

    def delete(self, collection: str, id: str) -> None:
        self._request("DELETE", f"/{collection}/{urllib.parse.quote(id, safe=':')}")

    @staticmethod
    def _one(answer: dict[str, Any]) -> dict[str, Any]:
        (item,) = answer.values()
        return dict(item)


def _singular(collection: str) -> str:
    return collection[:-1]


def make_client(instance: Any) -> InfraClient:
    """The plugin's client for ``client_manager.infra``: Neutron's network endpoint of the user's session."""
    return InfraClient(instance.network)


def build_option_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--os-infra-api-version", metavar="<infra-api-version>", default=DEFAULT_API_VERSION,
                        help=f"isthmus infrastructure API version, default={DEFAULT_API_VERSION}")
    return parser


# ---------------------------------------------------------------- output, the way OSC's network commands show it

class ObservedColumn(format_columns.DictColumn):
    """A connection's ends, one line: ``a=ESTABLISHED (region-one:gw), b=...``; the whole dict in -f json/yaml."""

    def human_readable(self) -> str:
        ends = self._value or {}
        return ", ".join(f"{end}={e.get('state')} ({e.get('endpoint')})" + (f": {e['error']}" if e.get("error") else "")
                         for end, e in sorted(ends.items()))


FORMATTERS: dict[str, Any] = {
    "labels": format_columns.DictColumn, "properties": format_columns.DictColumn,
    "bgp": format_columns.DictColumn, "vxlan": format_columns.DictColumn, "observed": ObservedColumn,
}


def _show(item: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    names = tuple(sorted(item))
    return names, tuple(FORMATTERS[n](item[n]) if n in FORMATTERS and item[n] is not None else item[n]
                        for n in names)


def _rows(items: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str | Callable[[dict[str, Any]], Any]]]
          ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """(headers, rows) of a Lister: each column a header and an attribute name or a function of the item."""
    headers = tuple(h for h, _ in columns)
    rows = []
    for item in items:
        row = []
        for _, what in columns:
            value = what(item) if callable(what) else item.get(what)
            row.append(FORMATTERS[what](value) if isinstance(what, str) and what in FORMATTERS and value is not None
                       else value)
        rows.append(tuple(row))
    return headers, rows


def _endpoint_id(value: str) -> str:
    """An endpoint as the user names it: SITE:NAME, or SITE/NAME as isthmusctl does."""
    value = value.replace("/", forms.SEPARATOR, 1) if forms.SEPARATOR not in value else value
    try:
        forms.split_endpoint_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _client(cmd: command.Command) -> InfraClient:
    client: InfraClient = cmd.app.client_manager.infra
    return client


def _delete_each(cmd: command.Command, collection: str, ids: Sequence[str]) -> None:
    """Delete each; go on after a failure and fail at the end naming the ones not deleted (as OSC does)."""
    failed = []
    for id in ids:
        try:
            _client(cmd).delete(collection, id)
        except exceptions.CommandError as exc:
            LOG.error("Failed to delete %s %s: %s", _singular(collection), id, exc)
            failed.append(id)
    if failed:
        raise exceptions.CommandError(f"{len(failed)} of {len(ids)} {collection} failed to delete: {', '.join(failed)}")


def _add_key_values(parser: argparse.ArgumentParser, flag: str, dest: str, what: str) -> None:
    parser.add_argument(flag, metavar="<key=value>", action=parseractions.KeyValueAction, dest=dest,
                        help=f"{what} (repeat for more)")


# ---------------------------------------------------------------- sites

SITES = "sites"


class CreateSite(command.ShowOne):
    """Create an isthmus site: a region, a cell of a region, an OpenStack instance or an external peer."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>", help="The site's name (a DNS label)")
        parser.add_argument("--kind", required=True, choices=["region", "cell", "instance", "external"],
                            help="What the site is")
        parser.add_argument("--parent", metavar="<region>", help="A cell's region")
        _add_key_values(parser, "--label", "labels", "A label of the site")
        parser.add_argument("--description", metavar="<description>", help="Description of the site")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        body = {"name": parsed_args.name, "kind": parsed_args.kind}
        for key in ("parent", "labels", "description"):
            if getattr(parsed_args, key) is not None:
                body[key] = getattr(parsed_args, key)
        return _show(_client(self).create(SITES, body))


class ListSite(command.Lister):
    """List isthmus sites and their agents' state."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--kind", choices=["region", "cell", "instance", "external"],
                            help="Only sites of this kind")
        parser.add_argument("--parent", metavar="<region>", help="Only the cells of this region")
        parser.add_argument("--long", action="store_true", default=False, help="List additional fields in output")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        sites = _client(self).list(SITES, kind=parsed_args.kind, parent=parsed_args.parent)
        columns: list[tuple[str, Any]] = [
            ("Name", "name"), ("Kind", "kind"), ("Parent", "parent"), ("Agent State", "agent_state"),
            ("Peerings", lambda s: f"{s.get('peerings_established', 0)}/{s.get('peerings_desired', 0)}")]
        if parsed_args.long:
            columns += [("Agent Host", "agent_host"), ("Driver", "driver"), ("Labels", "labels"),
                        ("Description", "description")]
        return _rows(sites, columns)


class ShowSite(command.ShowOne):
    """Show an isthmus site and its agent's state."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("site", metavar="<site>", help="Site to show (name)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        return _show(_client(self).show(SITES, parsed_args.site))


class SetSite(command.Command):
    """Set an isthmus site's labels or description (its kind and parent are fixed)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("site", metavar="<site>", help="Site to modify (name)")
        _add_key_values(parser, "--label", "labels", "A label to add or replace")
        parser.add_argument("--no-label", action="store_true", help="Remove every label (before any --label)")
        parser.add_argument("--description", metavar="<description>", help="Description of the site")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> None:
        body: dict[str, Any] = {}
        if parsed_args.labels or parsed_args.no_label:
            current = {} if parsed_args.no_label else _client(self).show(SITES, parsed_args.site)["labels"]
            body["labels"] = {**current, **(parsed_args.labels or {})}
        if parsed_args.description is not None:
            body["description"] = parsed_args.description
        if body:
            _client(self).update(SITES, parsed_args.site, body)


class DeleteSite(command.Command):
    """Delete isthmus site(s) (each must have no endpoints and no cells left)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("sites", metavar="<site>", nargs="+", help="Site(s) to delete (name)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> None:
        _delete_each(self, SITES, parsed_args.sites)


# ---------------------------------------------------------------- endpoints

ENDPOINTS = "endpoints"


class CreateEndpoint(command.ShowOne):
    """Create an isthmus endpoint: an address with a BGP AS in a site."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>", help="The endpoint's name (a DNS label, unique in its site)")
        parser.add_argument("--site", metavar="<site>", required=True, help="The endpoint's site")
        parser.add_argument("--address", metavar="<ip-address>", required=True, help="IPv4 or IPv6 address")
        parser.add_argument("--asn", metavar="<asn>", type=int, required=True, help="BGP AS number")
        parser.add_argument("--role", choices=["local", "remote"],
                            help="local (default): realized by the site's agent; remote: an external peer")
        parser.add_argument("--router-id", metavar="<a.b.c.d>", help="BGP router id (default: an IPv4 address)")
        _add_key_values(parser, "--property", "properties", "A property of the endpoint")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        body = {"name": parsed_args.name, "site": parsed_args.site, "address": parsed_args.address,
                "asn": parsed_args.asn}
        for key in ("role", "router_id", "properties"):
            if getattr(parsed_args, key) is not None:
                body[key] = getattr(parsed_args, key)
        return _show(_client(self).create(ENDPOINTS, body))


class ListEndpoint(command.Lister):
    """List isthmus endpoints."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--site", metavar="<site>", help="Only the endpoints of this site")
        parser.add_argument("--role", choices=["local", "remote"], help="Only endpoints of this role")
        parser.add_argument("--long", action="store_true", default=False, help="List additional fields in output")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        endpoints = _client(self).list(ENDPOINTS, site=parsed_args.site, role=parsed_args.role)
        columns: list[tuple[str, Any]] = [("ID", "id"), ("Site", "site"), ("Name", "name"), ("Address", "address"),
                                          ("ASN", "asn"), ("Role", "role")]
        if parsed_args.long:
            columns += [("Router ID", "router_id"), ("Properties", "properties")]
        return _rows(endpoints, columns)


class ShowEndpoint(command.ShowOne):
    """Show an isthmus endpoint."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("endpoint", metavar="<site:name>", type=_endpoint_id, help="Endpoint to show")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        return _show(_client(self).show(ENDPOINTS, parsed_args.endpoint))


class SetEndpoint(command.Command):
    """Set an isthmus endpoint's address, AS, router id or properties (its site, name and role are fixed)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("endpoint", metavar="<site:name>", type=_endpoint_id, help="Endpoint to modify")
        parser.add_argument("--address", metavar="<ip-address>", help="IPv4 or IPv6 address")
        parser.add_argument("--asn", metavar="<asn>", type=int, help="BGP AS number")
        parser.add_argument("--router-id", metavar="<a.b.c.d>", help="BGP router id")
        _add_key_values(parser, "--property", "properties", "A property to add or replace")
        parser.add_argument("--no-property", action="store_true", help="Remove every property (before any --property)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> None:
        body: dict[str, Any] = {k: getattr(parsed_args, k) for k in ("address", "asn", "router_id")
                                if getattr(parsed_args, k) is not None}
        if parsed_args.properties or parsed_args.no_property:
            current = {} if parsed_args.no_property else \
                _client(self).show(ENDPOINTS, parsed_args.endpoint)["properties"]
            body["properties"] = {**current, **(parsed_args.properties or {})}
        if body:
            _client(self).update(ENDPOINTS, parsed_args.endpoint, body)


class DeleteEndpoint(command.Command):
    """Delete isthmus endpoint(s) (each must be used by no connection)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("endpoints", metavar="<site:name>", nargs="+", type=_endpoint_id,
                            help="Endpoint(s) to delete")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> None:
        _delete_each(self, ENDPOINTS, parsed_args.endpoints)


# ---------------------------------------------------------------- connections

CONNECTIONS = "connections"


def _add_connection_params(parser: argparse.ArgumentParser) -> None:
    bgp = parser.add_argument_group("BGP parameters")
    bgp.add_argument("--hold-time", metavar="<seconds>", type=int, help="0 or 3..65535 (default 90)")
    bgp.add_argument("--password-ref", metavar="<ref>", help="The secret's reference: file:/PATH or env:NAME")
    bgp.add_argument("--address-family", metavar="<family>", action="append", dest="address_families",
                     help="ipv4-unicast, ipv6-unicast or l2vpn-evpn (repeat for more)")
    vxlan = parser.add_argument_group("VXLAN parameters")
    vxlan.add_argument("--vni", metavar="<vni>", type=int, help="1..16777215, unique across connections")
    vxlan.add_argument("--udp-port", metavar="<port>", type=int, help="UDP port (default 4789)")
    vxlan.add_argument("--mtu", metavar="<mtu>", type=int, help="576..9216 (default 1450)")
    state = parser.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true", help="Enable the connection (default)")
    state.add_argument("--disable", action="store_true", help="Disable the connection (its peerings go down)")
    parser.add_argument("--description", metavar="<description>", help="Description of the connection")


def _connection_params(parsed_args: argparse.Namespace, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PUT/POST attributes the flags give; bgp/vxlan merged into ``current``'s (a PUT replaces them whole)."""
    body: dict[str, Any] = {}
    bgp = {k: v for k, v in (("hold_time", parsed_args.hold_time), ("password_ref", parsed_args.password_ref),
                             ("address_families", parsed_args.address_families)) if v is not None}
    vxlan = {k: v for k, v in (("vni", parsed_args.vni), ("udp_port", parsed_args.udp_port),
                               ("mtu", parsed_args.mtu)) if v is not None}
    if bgp:
        body["bgp"] = {**((current or {}).get("bgp") or {}), **bgp}
    if vxlan:
        body["vxlan"] = {**((current or {}).get("vxlan") or {}), **vxlan}
    if parsed_args.enable or parsed_args.disable:
        body["admin_state_up"] = bool(parsed_args.enable)
    if parsed_args.description is not None:
        body["description"] = parsed_args.description
    return body


class CreateConnection(command.ShowOne):
    """Create an isthmus connection: a BGP session or a VXLAN tunnel between endpoints of two sites."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>", help="The connection's name (a DNS label)")
        parser.add_argument("--type", required=True, choices=["bgp", "vxlan"], help="Connection type")
        parser.add_argument("--a", metavar="<site:name>", required=True, type=_endpoint_id, help="One end")
        parser.add_argument("--b", metavar="<site:name>", required=True, type=_endpoint_id, help="The other end")
        _add_connection_params(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        body = {"name": parsed_args.name, "type": parsed_args.type, "a": parsed_args.a, "b": parsed_args.b,
                **_connection_params(parsed_args)}
        return _show(_client(self).create(CONNECTIONS, body))


class ListConnection(command.Lister):
    """List isthmus connections and their observed state."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--type", choices=["bgp", "vxlan"], help="Only connections of this type")
        parser.add_argument("--status", metavar="<status>",
                            help="Only connections in this state: ESTABLISHED, CONNECTING, PENDING, DISCONNECTED, "
                                 "DOWN or ERROR")
        parser.add_argument("--long", action="store_true", default=False, help="List additional fields in output")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        conns = _client(self).list(CONNECTIONS, type=parsed_args.type, status=parsed_args.status)
        columns: list[tuple[str, Any]] = [
            ("Name", "name"), ("Type", "type"), ("A", "a"), ("B", "b"),
            ("Admin State", lambda c: "UP" if c.get("admin_state_up") else "DOWN"), ("Status", "status")]
        if parsed_args.long:
            columns += [("BGP", "bgp"), ("VXLAN", "vxlan"), ("Description", "description")]
        return _rows(conns, columns)


class ShowConnection(command.ShowOne):
    """Show an isthmus connection and what each end observes."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("connection", metavar="<connection>", help="Connection to show (name)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        return _show(_client(self).show(CONNECTIONS, parsed_args.connection))


class SetConnection(command.Command):
    """Set an isthmus connection's parameters, state or description (its type and ends are fixed)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("connection", metavar="<connection>", help="Connection to modify (name)")
        _add_connection_params(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> None:
        needs_current = any(getattr(parsed_args, k) is not None for k in
                            ("hold_time", "password_ref", "address_families", "vni", "udp_port", "mtu"))
        current = _client(self).show(CONNECTIONS, parsed_args.connection) if needs_current else None
        body = _connection_params(parsed_args, current)
        if body:
            _client(self).update(CONNECTIONS, parsed_args.connection, body)


class DeleteConnection(command.Command):
    """Delete isthmus connection(s)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("connections", metavar="<connection>", nargs="+", help="Connection(s) to delete (name)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> None:
        _delete_each(self, CONNECTIONS, parsed_args.connections)
