"""The onos driver: BGP peerings realized as peers of the BGP speakers of ONOS's router application (SDN-IP).

ONOS's router application does not speak eBGP itself. A BGP speaker (Quagga,
FRR, or isthmus's bgp driver on that host) is attached to the SDN data plane at
a connect point, and ONOS, told where the speaker sits and which external peers
it talks to, carries the BGP traffic between them and learns the routes. This
driver keeps that configuration: one entry of ``bgpSpeakers`` per local
endpoint, whose ``peers`` are the remote addresses of the endpoint's peerings.

The configuration is the router application's network configuration,
``apps/org.onosproject.router/bgp``, read with ``GET`` and written as a whole
with ``POST`` on ``/onos/v1/network/configuration/apps/org.onosproject.router/bgp``
(a 404 when there is none yet):

- REST API of the network configuration service:
  https://wiki.onosproject.org/display/ONOS/The+Network+Configuration+Service
  and its implementation, web/api/src/main/java/org/onosproject/rest/resources/NetworkConfigWebResource.java
  in https://github.com/opennetworkinglab/onos (GET 200 or 404, POST 200,
  errors as ``{"code": N, "message": "..."}``, utils/rest/.../AbstractMapper.java)
- the ``bgp`` object: ``{"bgpSpeakers": [{"name", "connectPoint": "DEVICE/PORT",
  "vlan" (optional), "peers": ["ADDRESS", ...]}]}``, the SDN-IP page of the ONOS
  wiki (https://wiki.onosproject.org/pages/viewpage.action?pageId=4162813,
  "Network configuration file"), apps/routing-api/src/main/java/org/onosproject/routing/config/BgpConfig.java
  and tools/tutorials/sdnip/configs/network-cfg.json in the ONOS repository.

Because the object is written whole, every write is read-modify-write: the
driver reads it, changes only its own speakers and peers, keeps everything
else (other speakers, other peers, unknown fields) as read, and writes only
when something changed. ONOS offers no version check on this resource, so a
change made by someone else between the read and the write (a fraction of a
second) can be lost; the next pass puts isthmus's part back, but not theirs.

What isthmus owns, recorded per controller URL in ``STATE_DIR/onos-owned.json``:
the speakers it created and the peers it added. A peer that was already in a
speaker is used but never removed; a speaker isthmus did not create is never
moved (a different connect point makes its peerings ERROR) nor removed.

Mapping: the speaker of a local endpoint is named by the ``speaker`` option
(default ``isthmus-{site}-{endpoint}``); its connect point comes from the
endpoint property ``onos.connect_point`` (e.g. ``of:00000000000000a3/1``) or the
``connect_point`` option, its VLAN from ``onos.vlan`` or the ``vlan`` option.
The AS numbers, router id, hold time, address families and password of a
peering belong to the BGP speaker, not to ONOS: this API has no place for them
and they are not sent. An administratively DOWN peering has no peer entry and
shows DOWN.

Observed state: ONOS does not expose BGP session state through this API (nor
through any documented REST resource of the router application), so a peering
shows ESTABLISHED when ONOS has its configuration (the speaker at the wanted
connect point, with the peer) and ERROR when it is missing or was refused. It
says that ONOS carries the session, not that the session is up.

Options (``--driver-opt onos.KEY=VALUE``):
  url            base URL of ONOS, e.g. http://onos:8181 (required)
  username       user for HTTP basic authentication (ONOS's default is onos)
  password_file  file holding that user's password (read at every request)
  password_env   or: environment variable holding it
  ca             PEM file of the CA that signed the controller's certificate (https)
  timeout        seconds per HTTP request (default 5)
  retries        extra attempts after a connection error, timeout or 5xx (default 3, backoff 0.25 s doubling)
  speaker        name of the speaker of a local endpoint; {site} and {endpoint} are replaced
                 (default isthmus-{site}-{endpoint})
  connect_point  connect point of speakers whose endpoint has no onos.connect_point property
  vlan           VLAN of speakers whose endpoint has no onos.vlan property (default none)

Errors: a 401/403, any 4xx to the write of the configuration (it carries every
peering) or an unusable option is a terminal DriverError (every peering shows
ERROR, with ONOS's message); an unreachable controller, a timeout or a 5xx after
the retries is a DriverError the agent retries with backoff; a peering that
cannot be mapped (no connect point, a peer already in another speaker) shows
ERROR alone.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from isthmus.core.model import AdminState, ConnectionType, DesiredPeering, ObservedPeering, PeeringState
from isthmus.drivers.base import Driver, DriverContext, DriverError, StateClock
from isthmus.drivers.ownership import OwnedRecord, canonical_address, observations
from isthmus.drivers.rest import ControllerClient, refused, uninterrupted

log = logging.getLogger(__name__)

CONFIG_PATH = "/onos/v1/network/configuration/apps/org.onosproject.router/bgp"
ONOS_OPTIONS = ("speaker", "connect_point", "vlan")
DEFAULT_SPEAKER = "isthmus-{site}-{endpoint}"
CONNECT_POINT_PROPERTY = "onos.connect_point"
VLAN_PROPERTY = "onos.vlan"
_NO_VLAN = ("", "None", "NONE", "-1")  # how ONOS writes "no VLAN" (VlanId.NONE), or none at all


class _PeeringError(Exception):
    """One peering cannot be realized; the others go on."""


def _check_connect_point(text: str, where: str) -> str:
    device, sep, port = text.rpartition("/")
    if not sep or not device or not port or any(c.isspace() for c in text):
        raise ValueError(f"{where}: {text!r} is not a connect point DEVICE/PORT (e.g. of:00000000000000a3/1)")
    return text


def _check_vlan(text: str, where: str) -> str:
    if text in _NO_VLAN:
        return ""
    try:
        vlan = int(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a VLAN id") from None
    if not 1 <= vlan <= 4094:
        raise ValueError(f"{where}: {text} is out of range 1..4094")
    return str(vlan)


def _vlan_of(entry: Mapping[str, Any]) -> str:
    value = entry.get("vlan")
    text = "" if value is None else str(value)
    return "" if text in _NO_VLAN else text


def _peers_of(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's peers by canonical address (the value as ONOS has it; unparsable ones by their text)."""
    out: dict[str, Any] = {}
    for value in entry.get("peers") or []:
        try:
            out[canonical_address(str(value))] = value
        except ValueError:
            out[str(value)] = value
    return out


@dataclass
class _Speaker:
    """What the peerings of one local endpoint need: a speaker at a connect point with these peers."""

    name: str
    connect_point: str
    vlan: str
    up: dict[str, str] = field(default_factory=dict)  # peer address -> connection


@dataclass(frozen=True)
class _Wanted:
    connection: str
    speaker: str
    connect_point: str
    vlan: str
    address: str
    up: bool


class OnosDriver(Driver):
    """Realizes BGP peerings as peers of BGP speakers in ONOS's router application (see the module docstring).

    Options (``context.options``): url, username, password_file, password_env, ca,
    timeout, retries, speaker, connect_point, vlan.
    """

    name = "onos"
    handles = frozenset({ConnectionType.BGP})

    def __init__(self, context: DriverContext) -> None:
        """``context``: the site, the state directory (record of what it created) and the options.

        Raises DriverError(terminal=True) naming the option for an unknown or
        unusable option, a password on the command line, an unreadable password or
        CA file. Contacts no controller yet (``apply`` does).
        """
        super().__init__(context)
        opts = context.options
        self.client = ControllerClient(self.name, opts, ONOS_OPTIONS)
        self.speaker_template = opts.get("speaker", DEFAULT_SPEAKER)
        probe = self.speaker_template.replace("{site}", "s").replace("{endpoint}", "e")
        if not probe.strip() or "{" in probe or "}" in probe or any(c.isspace() for c in probe):
            raise DriverError(f"onos.speaker: {self.speaker_template!r} is not a name "
                              "(placeholders: {site}, {endpoint}; no spaces)", terminal=True)
        try:
            self.connect_point = (_check_connect_point(opts["connect_point"], "onos.connect_point")
                                  if "connect_point" in opts else "")
            self.vlan = _check_vlan(opts["vlan"], "onos.vlan") if "vlan" in opts else ""
        except ValueError as exc:
            raise DriverError(str(exc), terminal=True) from None
        self.record = OwnedRecord(context.state_dir / "onos-owned.json", self.client.url)
        self._wanted: dict[str, _Wanted] = {}
        self._errors: dict[str, str] = {}
        self._names: tuple[str, ...] = ()
        self._clock = StateClock()

    # ------------------------------------------------------------ on the event loop

    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        """Make ONOS's BGP speakers match ``peerings`` (keyed by connection name, all BGP).

        Reads the router application's ``bgp`` configuration, adds the missing
        speakers and peers, removes the peers isthmus added for peerings no longer
        listed (or held DOWN) and the speakers isthmus created once they have no
        peer, and writes the object back only when it changed. A peering that
        cannot be mapped is recorded and shown ERROR by ``observe``.

        Raises ControllerAuthFailed for 401/403 and ControllerRefused for a 4xx
        to the write (terminal DriverErrors, with ONOS's message),
        ControllerUnavailable (a DriverError to retry) when ONOS does not answer,
        times out or keeps failing with 5xx, DriverError when the ownership record
        cannot be read or written.
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
        """The state of every peering of the last ``apply``, keyed by connection name, read from ONOS.

        ESTABLISHED when ONOS has the speaker at the wanted connect point with the
        peer (ONOS exposes no session state here: see the module docstring); DOWN
        for a peering held down whose peer is absent; ERROR otherwise, or with the
        reason ``apply`` failed for it.

        Raises ControllerAuthFailed or ControllerUnavailable (DriverErrors) when
        ONOS cannot be read.
        """
        states = await self._states(dict(self._wanted))
        return observations(self._names, self._errors, states, self._clock, self.name)

    async def close(self) -> None:
        """Stop waiting between retries and close the connections; ONOS's configuration stays as it is."""
        await self.client.aclose()

    # ------------------------------------------------------------ planning (no I/O)

    def speaker_name(self, endpoint: str) -> str:
        """The speaker of local endpoint ``endpoint``."""
        return self.speaker_template.replace("{site}", self.context.site).replace("{endpoint}", endpoint)

    def _plan(self, peerings: Mapping[str, DesiredPeering]) -> tuple[dict[str, _Wanted], dict[str, str]]:
        wanted: dict[str, _Wanted] = {}
        errors: dict[str, str] = {}
        speakers: dict[str, tuple[str, str, str]] = {}  # speaker -> (connect point, vlan, first connection)
        peers: dict[str, tuple[str, str]] = {}  # address -> (speaker, connection)
        for name in sorted(peerings):
            try:
                w = self._wanted_of(peerings[name])
                first = speakers.setdefault(w.speaker, (w.connect_point, w.vlan, name))
                if first[:2] != (w.connect_point, w.vlan):
                    raise _PeeringError(
                        f"speaker {w.speaker} is at {first[0]}{' vlan ' + first[1] if first[1] else ''} for "
                        f"connection {first[2]}; this one wants {w.connect_point}"
                        f"{' vlan ' + w.vlan if w.vlan else ''}")
                other = peers.setdefault(w.address, (w.speaker, name))
                if other[1] != name:
                    raise _PeeringError(f"connection {other[1]} already has peer {w.address} (speaker {other[0]}); "
                                        "ONOS keeps one speaker per peer")
                wanted[name] = w
            except _PeeringError as exc:
                errors[name] = str(exc)
        return wanted, errors

    def _wanted_of(self, p: DesiredPeering) -> _Wanted:
        where = f"local endpoint {p.local.site}/{p.local.name}"
        try:
            address = canonical_address(p.remote.address)
        except ValueError:
            raise _PeeringError(f"remote address {p.remote.address!r} is not an IP address") from None
        try:
            if CONNECT_POINT_PROPERTY in p.local.properties:
                cp = _check_connect_point(p.local.properties[CONNECT_POINT_PROPERTY],
                                          f"{where} property {CONNECT_POINT_PROPERTY}")
            else:
                cp = self.connect_point
            vlan = (_check_vlan(p.local.properties[VLAN_PROPERTY], f"{where} property {VLAN_PROPERTY}")
                    if VLAN_PROPERTY in p.local.properties else self.vlan)
        except ValueError as exc:
            raise _PeeringError(str(exc)) from None
        if not cp:
            raise _PeeringError(f"{where} has no {CONNECT_POINT_PROPERTY} property and onos.connect_point is not "
                                "set: ONOS must know where the BGP speaker is attached (DEVICE/PORT)")
        return _Wanted(p.connection, self.speaker_name(p.local.name), cp, vlan, address,
                       p.admin_state == AdminState.UP)

    # ------------------------------------------------------------ talking to ONOS

    async def _read(self) -> dict[str, Any]:
        reply = await self.client.request("GET", CONFIG_PATH)
        if reply.status == 404:  # no bgp configuration yet
            return {}
        if not reply.ok:
            raise refused(reply, "reading apps/org.onosproject.router/bgp")
        doc = reply.json()
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            raise DriverError(f"ONOS answered apps/org.onosproject.router/bgp with {type(doc).__name__}, "
                              "not an object")
        return doc

    async def _apply_wanted(self, wanted: dict[str, _Wanted]) -> dict[str, str]:
        site, url = self.context.site, self.client.url
        record = self.record.load()
        created = set(record.get("speakers", []))
        added = {k.split(":", 1)[1]: set(v) for k, v in record.items() if k.startswith("peers:")}
        current = await self._read()
        doc = copy.deepcopy(current)
        entries = doc.get("bgpSpeakers")
        if not isinstance(entries, list):
            entries = []
        want: dict[str, _Speaker] = {}
        for w in wanted.values():
            spk = want.setdefault(w.speaker, _Speaker(w.speaker, w.connect_point, w.vlan))
            if w.up:
                spk.up[w.address] = w.connection
        errors: dict[str, str] = {}
        changes: list[str] = []

        # Removals: peers isthmus added that no peering wants here any more, then its empty speakers.
        for entry in [e for e in entries if isinstance(e, dict)]:
            name = str(entry.get("name", ""))
            mine = added.get(name, set())
            keep = want[name].up if name in want else {}
            peers = _peers_of(entry)
            gone = {a for a in peers if a in mine and a not in keep}
            if gone:
                entry["peers"] = [v for a, v in peers.items() if a not in gone]
                mine -= gone
                changes += [f"removed peer {a} from speaker {name}" for a in sorted(gone)]
        for entry in list(entries):
            name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
            if name in created and name not in want and not entry.get("peers"):
                entries.remove(entry)
                created.discard(name)
                added.pop(name, None)
                changes.append(f"removed speaker {name}")
        present = {str(e.get("name", "")) for e in entries if isinstance(e, dict)}
        for name in list(created):
            if name not in present and name not in want:  # removed by someone else
                created.discard(name)
                added.pop(name, None)

        # Additions.
        holder = {a: str(e.get("name", "")) for e in entries if isinstance(e, dict) for a in _peers_of(e)}
        for name, spk in sorted(want.items()):
            conns = [w.connection for w in wanted.values() if w.speaker == name]
            found: dict[str, Any] | None = next(
                (e for e in entries if isinstance(e, dict) and e.get("name") == name), None)
            if found is None:
                entry = {"name": name, "connectPoint": spk.connect_point, "peers": []}
                if spk.vlan:
                    entry["vlan"] = spk.vlan
                entries.append(entry)
                created.add(name)
                changes.append(f"created speaker {name} at {spk.connect_point}")
            else:
                entry = found
                if entry.get("connectPoint") != spk.connect_point or _vlan_of(entry) != spk.vlan:
                    if name not in created:
                        text = (f"speaker {name} (not created by isthmus) is at {entry.get('connectPoint')}"
                                f"{' vlan ' + _vlan_of(entry) if _vlan_of(entry) else ''}, not {spk.connect_point}"
                                f"{' vlan ' + spk.vlan if spk.vlan else ''}; it is left alone")
                        errors.update({c: text for c in conns})
                        continue
                    changes.append(f"moved speaker {name} from {entry.get('connectPoint')} to {spk.connect_point}")
                    entry["connectPoint"] = spk.connect_point
                    if spk.vlan:
                        entry["vlan"] = spk.vlan
                    else:
                        entry.pop("vlan", None)
            peers = _peers_of(entry)
            for address, conn in sorted(spk.up.items()):
                if address in peers:
                    continue  # there already: isthmus's, or someone else's that it uses but never removes
                other = holder.get(address)
                if other is not None and other != name:
                    errors[conn] = f"peer {address} is already a peer of speaker {other}; ONOS keeps one per peer"
                    continue
                entry.setdefault("peers", []).append(address)
                added.setdefault(name, set()).add(address)
                changes.append(f"added peer {address} to speaker {name} for connection {conn}")

        if entries or "bgpSpeakers" in doc:
            doc["bgpSpeakers"] = entries
        new_record: dict[str, set[str]] = {"speakers": created}
        new_record.update({f"peers:{k}": v for k, v in added.items() if v})
        old_record = {k: set(v) for k, v in record.items() if v}

        async def write() -> None:
            if doc != current:
                reply = await self.client.request("POST", CONFIG_PATH, doc)
                if not reply.ok:
                    raise refused(reply, "writing apps/org.onosproject.router/bgp")
                for change in changes:
                    log.info("site %s: %s on %s", site, change, url)
            if {k: v for k, v in new_record.items() if v} != old_record:
                self.record.save(new_record)

        await uninterrupted(write())
        return errors

    async def _states(self, wanted: dict[str, _Wanted]) -> dict[str, tuple[PeeringState, str]]:
        doc = await self._read()
        entries = {str(e.get("name", "")): e for e in doc.get("bgpSpeakers") or [] if isinstance(e, dict)}
        out: dict[str, tuple[PeeringState, str]] = {}
        for name, w in wanted.items():
            entry = entries.get(w.speaker)
            if entry is None:
                out[name] = (PeeringState.ERROR, f"speaker {w.speaker} is missing on ONOS")
                continue
            if entry.get("connectPoint") != w.connect_point:
                out[name] = (PeeringState.ERROR, f"speaker {w.speaker} is at {entry.get('connectPoint')}, "
                                                 f"not {w.connect_point}")
                continue
            present = w.address in _peers_of(entry)
            if not w.up:
                out[name] = ((PeeringState.DOWN, "") if not present else
                             (PeeringState.ERROR, f"peer {w.address} of speaker {w.speaker} was not added by "
                                                  "isthmus, which cannot hold it down"))
            elif present:
                out[name] = (PeeringState.ESTABLISHED, "")
            else:
                out[name] = (PeeringState.ERROR, f"peer {w.address} is missing from speaker {w.speaker} on ONOS")
        return out
