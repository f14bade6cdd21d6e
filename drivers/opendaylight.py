"""The opendaylight driver: BGP peerings realized as neighbors of OpenDaylight's BGP plugin (bgpcep), over RESTCONF.

The agent speaks no BGP itself: it asks the controller to add, change and remove
neighbors of a BGP protocol instance of the openconfig model, exactly as the
bgpcep user guide gives the resources and JSON bodies:

- protocol instance (local AS and router id), created with ``POST`` on
  ``.../network-instance=global-bgp/protocols`` and changed with ``PUT`` on its
  ``.../bgp/global/config``:
  https://docs.opendaylight.org/projects/bgpcep/en/latest/bgp/bgp-user-guide-protocol-configuration.html
  and the families of the speaker:
  https://docs.opendaylight.org/projects/bgpcep/en/latest/bgp/bgp-user-guide-ip-unicast-family.html
- neighbor (``neighbor-address``, ``config`` with ``peer-type``, ``peer-as``,
  ``auth-password``, ``timers/config/hold-time``, ``transport/config``,
  ``afi-safis``), created with ``POST`` on ``.../bgp/neighbors``:
  https://docs.opendaylight.org/projects/bgpcep/en/latest/bgp/bgp-user-guide-bgp-peering.html
  ("Existing neighbor configuration can be reconfigured anytime": replaced with
  ``PUT`` on ``.../neighbors/neighbor=ADDRESS``, removed with ``DELETE`` there,
  RFC 8040 sections 4.5 and 4.7, https://www.rfc-editor.org/rfc/rfc8040).
- session state: ``GET .../bgp/neighbors?content=nonconfig``, whose
  ``state/session-state`` is the FSM state (IDLE ... ESTABLISHED):
  https://docs.opendaylight.org/projects/bgpcep/en/latest/bgp/bgp-user-guide-operational-state.html

Current OpenDaylight serves only RFC 8040 RESTCONF (``/rests/data/...``); the
older "bierman02" RESTCONF (``/restconf/config/...`` and
``/restconf/operational/...``, removed from the docs in 2023, BGPCEP-1024)
is used with ``opendaylight.restconf=bierman02`` for releases that still have it.

What isthmus owns: a neighbor is isthmus's only when its ``config/description``
reads ``isthmus:<site>:<connection>``; any other neighbor, even at a desired
address, is never changed or removed (that peering shows ERROR instead). A
protocol instance is removed only when isthmus created it (recorded in
``STATE_DIR/opendaylight-owned.json``, per controller URL) and no neighbor is
left in it; the AS and router id of an instance isthmus did not create are
never changed.

Mapping: one protocol instance per local endpoint, named by the ``instance``
option (default ``isthmus-{site}-{endpoint}``; give a fixed name such as
``bgp-example`` to use one existing instance). Its router id is the endpoint's
router id (or its IPv4 address); it enables IPv4 and IPv6 unicast plus the
families its neighbors ask for. Each BGP peering is one neighbor: the remote
address and AS (``peer-type`` INTERNAL when the AS numbers are equal, else
EXTERNAL), the hold time, the address families (default from the remote
address), the local address as ``transport/config/local-address``, and the TCP
MD5 password from ``bgp.password_ref`` (``file:/PATH`` or ``env:NAME``, read on
the agent host at every apply, sent as ``auth-password``, never logged). An
administratively DOWN peering has no neighbor and shows DOWN.

Observed state: ESTABLISHED only when the controller reports the neighbor's
session-state ESTABLISHED; CONNECTING with the state it reports (or saying it
reports none yet) otherwise; ERROR when the neighbor is missing or differs on
the controller, or when the controller refused it (with its error-message).

Options (``--driver-opt opendaylight.KEY=VALUE``):
  url            base URL of the controller, e.g. https://odl:8181 (required)
  username       user for HTTP basic authentication
  password_file  file holding that user's password (read at every request)
  password_env   or: environment variable holding it
  ca             PEM file of the CA that signed the controller's certificate (https)
  timeout        seconds per HTTP request (default 5)
  retries        extra attempts after a connection error, timeout or 5xx (default 3, backoff 0.25 s doubling)
  restconf       rfc8040 (default) or bierman02
  instance       name of the protocol instance of a local endpoint; {site} and {endpoint} are replaced
                 (default isthmus-{site}-{endpoint})

Errors: a 401/403 or an unusable option is a terminal DriverError (every peering
shows ERROR until fixed); an unreachable controller, a timeout or a 5xx after
the retries is a DriverError the agent retries with backoff; a 4xx answer to
one neighbor or instance shows as the ERROR of the peerings concerned, with the
controller's error-message.

The HTTP client and its errors are ``isthmus.drivers.rest``'s, the record of
what isthmus created ``isthmus.drivers.ownership``'s (both shared with the onos
driver).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from isthmus.core.model import (
    AdminState,
    ConnectionType,
    DesiredPeering,
    ObservedPeering,
    PeeringState,
    default_address_families,
)
from isthmus.drivers.base import Driver, DriverContext, DriverError, StateClock
from isthmus.drivers.ownership import OwnedRecord, canonical_address, observations
from isthmus.drivers.rest import (
    ControllerAuthFailed,
    ControllerClient,
    ControllerRefused,
    Reply,
    member,
    refused,
    uninterrupted,
)
from isthmus.drivers.secrets import SecretError, read_secret

log = logging.getLogger(__name__)


class _PeeringError(Exception):
    """One peering cannot be realized; the others go on."""


# ---------------------------------------------------------------- RESTCONF resources of bgpcep

NETWORK_INSTANCE = "global-bgp"
BGP_IDENTIFIER = "openconfig-policy-types:BGP"
MARKER = "isthmus"
ODL_OPTIONS = ("restconf", "instance")
DEFAULT_INSTANCE = "isthmus-{site}-{endpoint}"
BASE_FAMILIES = frozenset({"IPV4-UNICAST", "IPV6-UNICAST"})  # of an instance isthmus creates
DEFAULT_FAMILIES = frozenset({"IPV4-UNICAST"})  # of an instance configured without afi-safis
FAMILIES = {"ipv4-unicast": "IPV4-UNICAST", "ipv6-unicast": "IPV6-UNICAST", "l2vpn-evpn": "L2VPN-EVPN"}


def _key(value: str) -> str:
    return quote(value, safe="")


class Restconf:
    """The URLs of bgpcep's resources in one RESTCONF flavour: ``rfc8040`` (/rests/data) or ``bierman02``."""

    def __init__(self, flavour: str) -> None:
        if flavour not in ("rfc8040", "bierman02"):
            raise ValueError(flavour)
        self.flavour = flavour
        if flavour == "rfc8040":
            self._ni = ("/openconfig-network-instance:network-instances/"
                        f"network-instance={NETWORK_INSTANCE}")
        else:
            self._ni = f"/openconfig-network-instance:network-instances/network-instance/{NETWORK_INSTANCE}"

    def _config(self, path: str) -> str:
        return f"/rests/data{path}" if self.flavour == "rfc8040" else f"/restconf/config{path}"

    def _read_config(self, path: str) -> str:
        return f"/rests/data{path}?content=config" if self.flavour == "rfc8040" else f"/restconf/config{path}"

    def _bgp(self, instance: str) -> str:
        if self.flavour == "rfc8040":
            return (f"{self._ni}/openconfig-network-instance:protocols/protocol={BGP_IDENTIFIER},{_key(instance)}"
                    "/bgp-openconfig-extensions:bgp")
        return f"{self._ni}/openconfig-network-instance:protocols/protocol/{BGP_IDENTIFIER}/{_key(instance)}/bgp"

    def protocols(self) -> str:
        """POST target of a new protocol instance."""
        if self.flavour == "rfc8040":
            return self._config(f"{self._ni}/protocols")
        return self._config(f"{self._ni}/openconfig-network-instance:protocols")

    def read_protocols(self) -> str:
        """GET of the configuration of every protocol instance (with their neighbors)."""
        if self.flavour == "rfc8040":
            return self._read_config(f"{self._ni}/protocols")
        return self._read_config(f"{self._ni}/openconfig-network-instance:protocols")

    def protocol(self, instance: str) -> str:
        if self.flavour == "rfc8040":
            return self._config(f"{self._ni}/openconfig-network-instance:protocols/protocol="
                                f"{BGP_IDENTIFIER},{_key(instance)}")
        return self._config(f"{self._ni}/openconfig-network-instance:protocols/protocol/{BGP_IDENTIFIER}/"
                            f"{_key(instance)}")

    def global_config(self, instance: str) -> str:
        return self._config(f"{self._bgp(instance)}/global/config")

    def global_afi_safis(self, instance: str) -> str:
        return self._config(f"{self._bgp(instance)}/global/afi-safis")

    def neighbors(self, instance: str) -> str:
        """POST target of a new neighbor."""
        return self._config(f"{self._bgp(instance)}/neighbors")

    def neighbor(self, instance: str, address: str) -> str:
        sep = "=" if self.flavour == "rfc8040" else "/"
        return self._config(f"{self._bgp(instance)}/neighbors/neighbor{sep}{_key(address)}")

    def neighbors_state(self, instance: str) -> str:
        """GET of the operational state of an instance's neighbors."""
        if self.flavour == "rfc8040":
            return f"/rests/data{self._bgp(instance)}/neighbors?content=nonconfig"
        return f"/restconf/operational{self._bgp(instance)}/neighbors"

    def qualified(self, name: str) -> str:
        """The member name of a PUT body of bgp-openconfig-extensions' ``name`` (module-qualified, RFC 7951)."""
        return f"bgp-openconfig-extensions:{name}" if self.flavour == "rfc8040" else name


def _identity(value: Any) -> str:
    """An identityref's name without its module prefix."""
    return str(value).rsplit(":", 1)[-1] if value is not None else ""


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _families_of(container: Any) -> frozenset[str]:
    items = member(container, "afi-safi") if isinstance(container, dict) else None
    return frozenset(_identity(member(i, "afi-safi-name")) for i in items or [] if isinstance(i, dict))


def _afi_safis(families: Iterable[str]) -> dict[str, Any]:
    return {"afi-safi": [{"afi-safi-name": f"openconfig-bgp-types:{f}"} for f in sorted(families)]}


@dataclass(frozen=True)
class Neighbor:
    """One neighbor, in the fields isthmus sets, as isthmus wants it or as the controller has it."""

    address: str
    peer_as: int | None
    peer_type: str
    hold_time: float | None
    local_address: str
    families: frozenset[str]
    description: str
    password: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, entry: Any) -> Neighbor | None:
        """The neighbor of a RESTCONF ``neighbor`` list entry; None when it has no usable address."""
        if not isinstance(entry, dict):
            return None
        try:
            address = canonical_address(str(member(entry, "neighbor-address")))
        except ValueError:
            return None
        config = member(entry, "config") or {}
        timers = member(member(entry, "timers"), "config") or {}
        transport = member(member(entry, "transport"), "config") or {}
        local = str(member(transport, "local-address") or "")
        try:
            local = canonical_address(local) if local else ""
        except ValueError:
            pass
        return cls(
            address=address,
            peer_as=_int(member(config, "peer-as")),
            peer_type=_identity(member(config, "peer-type")),
            hold_time=_float(member(timers, "hold-time")),
            local_address=local,
            families=_families_of(member(entry, "afi-safis")),
            description=str(member(config, "description") or ""),
            password=str(member(config, "auth-password") or ""),
        )

    def body(self) -> dict[str, Any]:
        """The ``neighbor`` list entry, as in the bgpcep user guide's peering examples."""
        config: dict[str, Any] = {"peer-type": self.peer_type, "peer-as": self.peer_as,
                                  "description": self.description}
        if self.password:
            config["auth-password"] = self.password
        transport: dict[str, Any] = {"passive-mode": False}
        if self.local_address:
            transport["local-address"] = self.local_address
        return {
            "neighbor-address": self.address,
            "config": config,
            "timers": {"config": {"hold-time": int(self.hold_time) if self.hold_time is not None else 90}},
            "transport": {"config": transport},
            "afi-safis": _afi_safis(self.families),
        }

    def differences(self, have: Neighbor) -> list[str]:
        """What ``have`` (the controller's) lacks of this one, for messages; the password is never shown."""
        out = []
        if have.peer_as != self.peer_as:
            out.append(f"peer-as {have.peer_as} (want {self.peer_as})")
        if have.peer_type != self.peer_type:
            out.append(f"peer-type {have.peer_type or 'unset'} (want {self.peer_type})")
        if have.hold_time != self.hold_time:
            out.append(f"hold-time {have.hold_time} (want {self.hold_time})")
        if have.local_address != self.local_address:
            out.append(f"local-address {have.local_address or 'unset'} (want {self.local_address})")
        if have.families != self.families:
            out.append(f"afi-safis {','.join(sorted(have.families)) or 'none'} "
                       f"(want {','.join(sorted(self.families))})")
        if have.description != self.description:
            out.append(f"description {have.description!r} (want {self.description!r})")
        if have.password != self.password:
            out.append("auth-password differs")
        return out


@dataclass
class Instance:
    """One BGP protocol instance as the controller has it."""

    name: str
    asn: int | None
    router_id: str
    families: frozenset[str]
    neighbors: dict[str, Neighbor]  # by canonical address


@dataclass(frozen=True)
class _Wanted:
    """What one peering needs: its instance (with AS and router id) and, when up, its neighbor."""

    connection: str
    instance: str
    asn: int
    router_id: str
    neighbor: Neighbor | None  # None: administratively down


def _parse_protocols(doc: Any) -> dict[str, Instance]:
    """The BGP instances in a GET of ``protocols`` (either flavour, with or without module prefixes)."""
    out: dict[str, Instance] = {}
    protocols = member(doc, "protocols") if isinstance(doc, dict) else None
    items = member(protocols, "protocol") if isinstance(protocols, dict) else member(doc, "protocol")
    for item in items or []:
        if not isinstance(item, dict) or _identity(member(item, "identifier")) != "BGP":
            continue
        name = str(member(item, "name") or "")
        bgp = member(item, "bgp") or {}
        glob = member(bgp, "global") or {}
        config = member(glob, "config") or {}
        neighbors = {}
        for entry in member(member(bgp, "neighbors"), "neighbor") or []:
            n = Neighbor.from_json(entry)
            if n is not None:
                neighbors[n.address] = n
        # No afi-safis means IPv4 unicast only (OpenConfigMappingUtil.getAfiSafiWithDefault in bgpcep).
        families = _families_of(member(glob, "afi-safis")) or DEFAULT_FAMILIES
        out[name] = Instance(name, _int(member(config, "as")), str(member(config, "router-id") or ""), families,
                             neighbors)
    return out


def _parse_sessions(doc: Any) -> dict[str, str]:
    """Session state by canonical neighbor address, from a GET of the neighbors' operational state."""
    out: dict[str, str] = {}
    neighbors = member(doc, "neighbors") if isinstance(doc, dict) else None
    for entry in member(neighbors, "neighbor") or []:
        if not isinstance(entry, dict):
            continue
        try:
            address = canonical_address(str(member(entry, "neighbor-address")))
        except ValueError:
            continue
        state = member(member(entry, "state"), "session-state")
        if state:
            out[address] = _identity(state)
    return out


class OpenDaylightDriver(Driver):
    """Realizes BGP peerings as neighbors of OpenDaylight's BGP plugin over RESTCONF (see the module docstring).

    Options (``context.options``): url, username, password_file, password_env, ca,
    timeout, retries, restconf, instance.
    """

    name = "opendaylight"
    handles = frozenset({ConnectionType.BGP})

    def __init__(self, context: DriverContext) -> None:
        """``context``: the site (part of the ownership marker), the state directory (record of the
        instances it created) and the options.

        Raises DriverError(terminal=True) naming the option for an unknown or
        unusable option, a password on the command line, an unreadable password or
        CA file. Contacts no controller yet (``apply`` does).
        """
        super().__init__(context)
        self.client = ControllerClient(self.name, context.options, ODL_OPTIONS)
        flavour = context.options.get("restconf", "rfc8040")
        if flavour not in ("rfc8040", "bierman02"):
            raise DriverError(f"opendaylight.restconf: {flavour!r} is not rfc8040 or bierman02", terminal=True)
        self.api = Restconf(flavour)
        self.instance_template = context.options.get("instance", DEFAULT_INSTANCE)
        probe = self.instance_template.replace("{site}", "s").replace("{endpoint}", "e")
        if not probe.strip() or "{" in probe or "}" in probe or "/" in probe:
            raise DriverError(f"opendaylight.instance: {self.instance_template!r} is not a name "
                              "(placeholders: {site}, {endpoint}; no '/')", terminal=True)
        self.marker_head = f"{MARKER}:{context.site}:"
        self.record = OwnedRecord(context.state_dir / "opendaylight-owned.json", self.client.url)
        self._wanted: dict[str, _Wanted] = {}
        self._errors: dict[str, str] = {}
        self._names: tuple[str, ...] = ()
        self._clock = StateClock()

    # ------------------------------------------------------------ on the event loop

    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        """Make the controller's neighbors match ``peerings`` (keyed by connection name, all BGP).

        Creates missing instances and neighbors, replaces neighbors that differ,
        removes isthmus's neighbors of peerings no longer listed (or held DOWN) and
        the instances isthmus created once they are empty. A peering the controller
        refuses (4xx), whose password cannot be read or whose neighbor belongs to
        someone else is recorded and shown ERROR by ``observe``; the others go on.

        Raises ControllerAuthFailed (a terminal DriverError) for 401/403,
        ControllerUnavailable (a DriverError to retry) when the controller does not
        answer, times out or keeps failing with 5xx, DriverError when the ownership
        record cannot be read or written.
        """
        wanted, errors = self._plan(peerings)
        errors.update(await self._apply_wanted(wanted))
        for name, text in errors.items():
            if text != self._errors.get(name):  # once, not every pass
                log.warning("site %s: connection %s: %s", self.context.site, name, text)
        self._wanted = wanted
        self._errors = errors
        self._names = tuple(peerings)
        self._clock.keep(peerings)

    async def observe(self) -> dict[str, ObservedPeering]:
        """The state of every peering of the last ``apply``, keyed by connection name, read from the controller.

        ESTABLISHED when the controller reports the neighbor's session ESTABLISHED;
        CONNECTING with the session state it reports otherwise; DOWN for a peering
        held down whose neighbor is absent; ERROR when ``apply`` failed for it or
        the neighbor is missing or differs on the controller.

        Raises ControllerAuthFailed or ControllerUnavailable (DriverErrors) when
        the controller cannot be read.
        """
        states = await self._states(dict(self._wanted))
        return observations(self._names, self._errors, states, self._clock, self.name)

    async def close(self) -> None:
        """Stop waiting between retries and close the connections; the controller's configuration stays as it is."""
        await self.client.aclose()

    # ------------------------------------------------------------ planning (no I/O but reading secrets)

    def instance_name(self, endpoint: str) -> str:
        """The protocol instance of local endpoint ``endpoint``."""
        return self.instance_template.replace("{site}", self.context.site).replace("{endpoint}", endpoint)

    def _plan(self, peerings: Mapping[str, DesiredPeering]) -> tuple[dict[str, _Wanted], dict[str, str]]:
        wanted: dict[str, _Wanted] = {}
        errors: dict[str, str] = {}
        speakers: dict[str, tuple[int, str, str]] = {}  # instance -> (AS, router id, first connection)
        addresses: dict[tuple[str, str], str] = {}  # (instance, neighbor) -> connection
        for name in sorted(peerings):
            try:
                w = self._wanted_of(peerings[name])
                first = speakers.setdefault(w.instance, (w.asn, w.router_id, name))
                if first[:2] != (w.asn, w.router_id):
                    raise _PeeringError(
                        f"instance {w.instance} is AS {first[0]} router id {first[1]} for connection {first[2]}; "
                        f"this one wants AS {w.asn} router id {w.router_id} (one speaker per instance; "
                        "give the endpoints distinct instances with opendaylight.instance=...{endpoint}...)")
                if w.neighbor is not None:
                    other = addresses.setdefault((w.instance, w.neighbor.address), name)
                    if other != name:
                        raise _PeeringError(f"connection {other} already has neighbor {w.neighbor.address} "
                                            f"in instance {w.instance}")
                wanted[name] = w
            except (_PeeringError, SecretError) as exc:
                errors[name] = str(exc)
        return wanted, errors

    def _wanted_of(self, p: DesiredPeering) -> _Wanted:
        """What peering ``p`` needs; raises _PeeringError, or SecretError for its password."""
        instance = self.instance_name(p.local.name)
        try:
            local = ipaddress.ip_address(p.local.address)
            remote = canonical_address(p.remote.address)
        except ValueError:
            raise _PeeringError(f"{p.local.address!r} -> {p.remote.address!r} is not an address pair") from None
        router_id = p.local.router_id or (str(local) if local.version == 4 else "")
        if not router_id:
            raise _PeeringError(f"local endpoint {p.local.site}/{p.local.name} has the IPv6 address {local} and no "
                                "router id; give it one (a dotted quad)")
        if p.admin_state == AdminState.DOWN:
            return _Wanted(p.connection, instance, p.local.asn, router_id, None)
        bgp = p.bgp
        families = (bgp.address_families if bgp is not None else ()) or default_address_families(remote)
        password = read_secret(bgp.password_ref) if bgp is not None and bgp.password_ref else ""
        neighbor = Neighbor(
            address=remote,
            peer_as=p.remote.asn,
            peer_type="INTERNAL" if p.remote.asn == p.local.asn else "EXTERNAL",
            hold_time=float(bgp.hold_time if bgp is not None else 90),
            local_address=str(local),
            families=frozenset(FAMILIES[f] for f in families if f in FAMILIES),
            description=f"{self.marker_head}{p.connection}",
            password=password,
        )
        return _Wanted(p.connection, instance, p.local.asn, router_id, neighbor)

    # ------------------------------------------------------------ talking to the controller

    def _mine(self, n: Neighbor) -> bool:
        return n.description.startswith(self.marker_head)

    async def _read(self) -> dict[str, Instance]:
        reply = await self.client.request("GET", self.api.read_protocols())
        if reply.status == 404:  # no protocol configured at all
            return {}
        if not reply.ok:
            raise refused(reply, "reading the BGP instances")
        return _parse_protocols(reply.json())

    def _redact(self, text: str, wanted: Iterable[_Wanted]) -> str:
        """``text`` without any password isthmus sent (a controller may echo a rejected value)."""
        for w in wanted:
            if w.neighbor is not None and w.neighbor.password:
                text = text.replace(w.neighbor.password, "***")
        return text

    async def _write(self, method: str, path: str, body: Any, what: str) -> Reply:
        reply = await self.client.request(method, path, body)
        if reply.ok or (method == "POST" and reply.status == 409 and reply.attempts > 1):
            # a 409 after a retried POST: the first attempt did create it
            return reply
        if method == "DELETE" and reply.status == 404:
            return reply
        raise refused(reply, what)

    async def _apply_wanted(self, wanted: dict[str, _Wanted]) -> dict[str, str]:
        site, url = self.context.site, self.client.url
        record = self.record.load()
        created = set(record.get("instances", []))
        have = await self._read()
        errors: dict[str, str] = {}
        by_instance: dict[str, list[_Wanted]] = {}
        for w in wanted.values():
            by_instance.setdefault(w.instance, []).append(w)
        keep = {(w.instance, w.neighbor.address) for w in wanted.values() if w.neighbor is not None}

        # Removals first, so that a neighbor moving between connections or instances frees its place.
        for inst in have.values():
            for address, n in list(inst.neighbors.items()):
                if not self._mine(n):
                    continue
                if (inst.name, address) in keep:
                    continue
                try:
                    await self._write("DELETE", self.api.neighbor(inst.name, address), None,
                                f"removing neighbor {address} from instance {inst.name}")
                except ControllerAuthFailed:
                    raise
                except ControllerRefused as exc:
                    log.warning("site %s: cannot remove neighbor %s (%s) from instance %s on %s: %s", site, address,
                                n.description[len(self.marker_head):], inst.name, url, exc.message)
                    continue
                del inst.neighbors[address]
                log.info("site %s: removed neighbor %s (%s) from instance %s on %s", site, address,
                         n.description[len(self.marker_head):], inst.name, url)

        for instance, ws in sorted(by_instance.items()):
            try:
                await self._ensure_instance(instance, ws, have, created)
            except ControllerAuthFailed:
                raise
            except ControllerRefused as exc:
                text = f"the controller refused instance {instance}: {exc.status}: {self._redact(exc.message, ws)}"
                errors.update({w.connection: text for w in ws})
                continue
            except _PeeringError as exc:
                errors.update({w.connection: str(exc) for w in ws})
                continue
            inst = have[instance]
            for w in ws:
                if w.neighbor is None:
                    continue
                try:
                    await self._ensure_neighbor(inst, w.neighbor)
                except ControllerAuthFailed:
                    raise
                except ControllerRefused as exc:
                    errors[w.connection] = (f"the controller refused neighbor {w.neighbor.address} in instance "
                                            f"{instance}: {exc.status}: {self._redact(exc.message, [w])}")
                except _PeeringError as exc:
                    errors[w.connection] = str(exc)

        # Instances isthmus created that no peering needs any more and that hold no neighbor.
        for name in sorted(created - by_instance.keys()):
            left = have.get(name)
            if left is None:
                created.discard(name)
            elif not left.neighbors:
                try:
                    await self._write("DELETE", self.api.protocol(name), None, f"removing instance {name}")
                except ControllerAuthFailed:
                    raise
                except ControllerRefused as exc:
                    log.warning("site %s: cannot remove instance %s on %s: %s", site, name, url, exc.message)
                    continue
                created.discard(name)
                log.info("site %s: removed instance %s on %s", site, name, url)
        if created != set(record.get("instances", [])):
            self.record.save({"instances": created})
        return errors

    async def _ensure_instance(self, name: str, ws: list[_Wanted], have: dict[str, Instance],
                               created: set[str]) -> None:
        site, url = self.context.site, self.client.url
        asn, router_id = ws[0].asn, ws[0].router_id
        needed = frozenset().union(*(w.neighbor.families for w in ws if w.neighbor is not None))
        families = BASE_FAMILIES | needed
        inst = have.get(name)
        body: dict[str, Any]
        if inst is None:
            body = {"protocol": [{
                "identifier": BGP_IDENTIFIER,
                "name": name,
                "bgp-openconfig-extensions:bgp": {"global": {
                    "config": {"router-id": router_id, "as": asn},
                    "apply-policy": {"config": {
                        "import-policy": ["default-odl-import-policy"],
                        "export-policy": ["default-odl-export-policy"],
                        "default-export-policy": "REJECT-ROUTE",
                        "default-import-policy": "REJECT-ROUTE",
                    }},
                    "afi-safis": _afi_safis(families),
                }},
            }]}
            async def create() -> None:
                await self._write("POST", self.api.protocols(), body, f"creating instance {name}")
                created.add(name)
                self.record.save({"instances": created})  # at once: it is ours even if a later step fails

            await uninterrupted(create())
            have[name] = Instance(name, asn, router_id, families, {})
            log.info("site %s: created BGP instance %s (AS %d, router id %s) on %s", site, name, asn, router_id, url)
            return
        ours = name in created
        if (inst.asn, inst.router_id) != (asn, router_id):
            if not ours:
                raise _PeeringError(f"instance {name} on the controller is AS {inst.asn} router id {inst.router_id}, "
                                    f"not AS {asn} router id {router_id}; it was not created by isthmus, so it is "
                                    "left alone")
            body = {self.api.qualified("config"): {"router-id": router_id, "as": asn}}
            await self._write("PUT", self.api.global_config(name), body, f"changing instance {name}")
            log.info("site %s: changed BGP instance %s to AS %d router id %s (was AS %s router id %s) on %s", site,
                     name, asn, router_id, inst.asn, inst.router_id, url)
            inst.asn, inst.router_id = asn, router_id
        if inst.families != families:
            if ours:
                body = {self.api.qualified("afi-safis"): _afi_safis(families)}
                await self._write("PUT", self.api.global_afi_safis(name), body,
                                  f"changing the families of instance {name}")
                log.info("site %s: instance %s on %s now enables %s", site, name, url, ", ".join(sorted(families)))
                inst.families = families
            elif not needed <= inst.families:
                missing = ", ".join(sorted(needed - inst.families))
                raise _PeeringError(f"instance {name} (not created by isthmus) does not enable {missing}")

    async def _ensure_neighbor(self, inst: Instance, want: Neighbor) -> None:
        site, url = self.context.site, self.client.url
        conn = want.description[len(self.marker_head):]
        got = inst.neighbors.get(want.address)
        if got is None:
            await self._write("POST", self.api.neighbors(inst.name), {"neighbor": [want.body()]},
                              f"adding neighbor {want.address} to instance {inst.name}")
            log.info("site %s: added neighbor %s (AS %s) to instance %s on %s for connection %s", site, want.address,
                     want.peer_as, inst.name, url, conn)
        elif not self._mine(got):
            raise _PeeringError(f"neighbor {want.address} in instance {inst.name} exists and is not isthmus's "
                                f"(description {got.description!r}); it is left alone")
        elif got != want:
            why = "; ".join(want.differences(got))
            await self._write("PUT", self.api.neighbor(inst.name, want.address),
                              {self.api.qualified("neighbor"): [want.body()]},
                              f"changing neighbor {want.address} in instance {inst.name}")
            log.info("site %s: changed neighbor %s in instance %s on %s for connection %s (%s)", site, want.address,
                     inst.name, url, conn, why)
        else:
            return
        inst.neighbors[want.address] = want

    async def _states(self, wanted: dict[str, _Wanted]) -> dict[str, tuple[PeeringState, str]]:
        have = await self._read()
        sessions: dict[str, dict[str, str]] = {}
        for instance in sorted({w.instance for w in wanted.values() if w.neighbor is not None and w.instance in have}):
            reply = await self.client.request("GET", self.api.neighbors_state(instance))
            if reply.status == 404:
                sessions[instance] = {}
            elif reply.ok:
                sessions[instance] = _parse_sessions(reply.json())
            else:
                raise refused(reply, f"reading the neighbor state of instance {instance}")
        out: dict[str, tuple[PeeringState, str]] = {}
        for name, w in wanted.items():
            inst = have.get(w.instance)
            if inst is None:
                out[name] = (PeeringState.ERROR, f"instance {w.instance} is missing on the controller")
                continue
            if w.neighbor is None:
                got = next((n for n in inst.neighbors.values()
                            if self._mine(n) and n.description == f"{self.marker_head}{name}"), None)
                out[name] = ((PeeringState.DOWN, "") if got is None else
                             (PeeringState.ERROR, f"neighbor {got.address} is still configured in instance "
                                                  f"{w.instance}"))
                continue
            address = w.neighbor.address
            got = inst.neighbors.get(address)
            if got is None:
                out[name] = (PeeringState.ERROR, f"neighbor {address} is missing in instance {w.instance}")
            elif not self._mine(got):
                out[name] = (PeeringState.ERROR, f"neighbor {address} in instance {w.instance} is not isthmus's")
            elif got != w.neighbor:
                out[name] = (PeeringState.ERROR, f"neighbor {address} in instance {w.instance} differs: "
                                                 f"{'; '.join(w.neighbor.differences(got))}")
            else:
                session = sessions.get(w.instance, {}).get(address, "")
                if session == "ESTABLISHED":
                    out[name] = (PeeringState.ESTABLISHED, "")
                elif session:
                    out[name] = (PeeringState.CONNECTING, f"the controller reports session state {session}")
                else:
                    out[name] = (PeeringState.CONNECTING, "the controller reports no session state yet")
        return out
