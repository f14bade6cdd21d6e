"""The coordinator's in-memory index of every region's ports, floating IPs, router gateways and subnets.

Agents report their region's addresses as deltas (``AddressDelta``); the index answers lookups by IP, MAC or
CIDR and lists the addresses that clash within a routing domain (``Conflict``) without scanning every record.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

from sortedcontainers import SortedList

KINDS: Final = ("port", "floating_ip", "router_gateway", "subnet")
GLOBAL_DOMAIN: Final = "global"  # floating IPs and router gateways: one address space, whatever the domains

_KIND_ORDER: Final = {kind: i for i, kind in enumerate(KINDS)}
_GLOBAL_KINDS: Final = frozenset({"floating_ip", "router_gateway"})
_FIELDS: Final = frozenset({"kind", "id", "region", "project", "network", "ips", "mac", "cidr", "device", "name",
                            "network_name"})
_MAC_RE: Final = re.compile(r"[0-9a-f]{2}([:-]?)[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}")

Key: TypeAlias = tuple[str, str, str]  # (region, kind, id): OpenStack ids are unique within a region only
Group: TypeAlias = tuple[str, str]  # (region, network): records of one group never clash with each other
Holders: TypeAlias = "Key | set[Key]"  # one key, the common case, costs no set
_V = TypeVar("_V")
_Prepared: TypeAlias = tuple[Key, "AddressRecord", tuple[tuple[int, int], ...], "tuple[int, int, int] | None"]
_Bucket: TypeAlias = tuple[int, int, "list[AddressRecord]"]  # (first address, prefix length, subnets)
_Found: TypeAlias = tuple[tuple[Any, ...], "Conflict"]  # (sort key, conflict)


@dataclass(frozen=True, slots=True)
class AddressRecord:
    """One port, floating IP, router gateway or subnet of one region, as its agent reported it.

    ``ips``: a port's fixed IPs, a floating IP's address, a router gateway's external fixed IPs (none for a
    subnet). ``network``: for a floating IP or router gateway, the external network. ``device``: a port's
    device id or owner; a floating IP's port, if bound. Build records from reports with ``check_record``.
    """

    kind: str
    id: str
    region: str
    project: str
    network: str
    ips: tuple[str, ...] = ()
    mac: str = ""
    cidr: str = ""
    device: str = ""
    name: str = ""
    network_name: str = ""  # for people; the network id is what groups records

    @property
    def key(self) -> Key:
        return (self.region, self.kind, self.id)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "id": self.id, "region": self.region, "project": self.project,
                             "network": self.network}
        # Empty fields are left out: the index is written to etcd, 100,000 records and more.
        if self.ips:
            d["ips"] = list(self.ips)
        for name in ("mac", "cidr", "device", "name", "network_name"):
            if value := getattr(self, name):
                d[name] = value
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AddressRecord:
        """The inverse of ``to_json``, for records the coordinator wrote itself; reports go through ``check_record``."""
        return cls(sys.intern(d["kind"]), d["id"], sys.intern(d["region"]), sys.intern(d.get("project", "")),
                   sys.intern(d["network"]), tuple(d.get("ips", ())), d.get("mac", ""), d.get("cidr", ""),
                   d.get("device", ""), d.get("name", ""), sys.intern(d.get("network_name", "")))


@dataclass(frozen=True, slots=True)
class AddressDelta:
    """A change to one region's records, numbered by its agent; ``full``: the region holds exactly ``upserts``."""

    region: str
    seq: int
    upserts: tuple[AddressRecord, ...] = ()
    removes: tuple[tuple[str, str], ...] = ()  # (kind, id)
    full: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "seq": self.seq, "full": self.full,
                "upserts": [r.to_json() for r in self.upserts], "removes": [list(r) for r in self.removes]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AddressDelta:
        """The inverse of ``to_json``, unchecked; reports go through ``check_delta``."""
        return cls(d["region"], int(d["seq"]), tuple(AddressRecord.from_json(r) for r in d.get("upserts", ())),
                   tuple((str(k), str(i)) for k, i in d.get("removes", ())), bool(d.get("full", False)))


@dataclass(frozen=True, slots=True)
class Conflict:
    """Records whose IP or MAC is the same, or whose subnets overlap, within one routing domain."""

    kind: str  # "duplicate_ip" | "duplicate_mac" | "overlapping_cidr"
    value: str  # the IP, the MAC, or "10.0.0.0/24 ~ 10.0.0.128/25" (the larger first)
    domain: str  # the routing domain in which they clash; GLOBAL_DOMAIN for floating IPs and gateways
    records: tuple[AddressRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "domain": self.domain,
                "records": [r.to_json() for r in self.records]}


class SequenceError(ValueError):
    """A delta that does not follow the region's last applied one: the agent must send a full resync."""

    def __init__(self, region: str, seq: int, last: int | None) -> None:
        self.region, self.seq, self.last = region, seq, last
        if last is None:
            why = "no full resync of this region has been applied"
        else:
            why = f"the last applied delta is {last}"
        super().__init__(f"region {region!r}: delta {seq} is out of order ({why}); a full resync is needed")


# ---------------------------------------------------------------- validation of reports


def normalize_mac(text: str) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` for a MAC written with colons, dashes, dots (``aabb.ccdd.eeff``) or nothing."""
    low = text.lower()
    if not _MAC_RE.fullmatch(low):
        return None
    digits = low.replace(":", "").replace("-", "").replace(".", "")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def _text(d: Mapping[str, Any], name: str, where: str, required: bool = False) -> str:
    value = d.get(name, "")
    if not isinstance(value, str):
        raise ValueError(f"{where}{name}: must be a string, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{where}{name}: is required")
    return value


def _address(value: Any, field: str) -> str:
    # A scope ("fe80::1%eth0") is local to one host: neutron never reports one, and it cannot clash or be routed.
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"{field}: {value!r} is not an IP address")
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        raise ValueError(f"{field}: {value!r} is not an IP address") from None


def check_record(d: Mapping[str, Any], where: str = "") -> AddressRecord:
    """Validate and normalize one reported record; ``ValueError`` names the field (``where`` prefixes it).

    IPs come back in compressed form, a MAC in lower case with colons; a subnet's CIDR stays as reported
    (neutron's own form) but must be a network address with its prefix length.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"{where or 'record'}: must be an object, not {type(d).__name__}")
    unknown = sorted(str(k) for k in d if k not in _FIELDS)
    if unknown:
        raise ValueError(f"{where}{unknown[0]}: unknown field")
    kind = _text(d, "kind", where, required=True)
    if kind not in _KIND_ORDER:
        raise ValueError(f"{where}kind: {kind!r} is not one of {', '.join(KINDS)}")
    id_ = _text(d, "id", where, required=True)
    region = _text(d, "region", where, required=True)
    project = _text(d, "project", where)
    network = _text(d, "network", where, required=True)
    raw_ips = d.get("ips", ())
    if not isinstance(raw_ips, list | tuple):
        raise ValueError(f"{where}ips: must be a list of addresses, not {type(raw_ips).__name__}")
    ips: list[str] = []
    for i, value in enumerate(raw_ips):
        ip = _address(value, f"{where}ips[{i}]")
        if ip in ips:
            raise ValueError(f"{where}ips[{i}]: {ip} is listed twice")
        ips.append(ip)
    if kind == "floating_ip" and len(ips) != 1:
        raise ValueError(f"{where}ips: a floating IP has exactly one address, not {len(ips)}")
    if kind == "subnet" and ips:
        raise ValueError(f"{where}ips: a subnet has no addresses of its own (its range is cidr)")
    mac = _text(d, "mac", where)
    if mac:
        if kind != "port":
            raise ValueError(f"{where}mac: only a port has a MAC address")
        normal = normalize_mac(mac)
        if normal is None:
            raise ValueError(f"{where}mac: {mac!r} is not a MAC address")
        mac = normal
    cidr = _text(d, "cidr", where, required=kind == "subnet")
    if cidr:
        if kind != "subnet":
            raise ValueError(f"{where}cidr: only a subnet has a CIDR")
        try:
            if "/" not in cidr or "%" in cidr:
                raise ValueError("no prefix length")
            ipaddress.ip_network(cidr)  # strict: host bits set are an error, as in neutron
        except ValueError as exc:
            raise ValueError(f"{where}cidr: {cidr!r} is not a CIDR ({exc})") from None
    # Interned: a hundred thousand records name a few thousand networks, projects and a handful of regions.
    return AddressRecord(sys.intern(kind), id_, sys.intern(region), sys.intern(project), sys.intern(network),
                         tuple(ips), mac, cidr, _text(d, "device", where), _text(d, "name", where),
                         sys.intern(_text(d, "network_name", where)))


def check_delta(d: Mapping[str, Any]) -> AddressDelta:
    """Validate one reported delta; records may leave out ``region`` (the delta's), others must name it."""
    if not isinstance(d, Mapping):
        raise ValueError(f"delta: must be an object, not {type(d).__name__}")
    region = _text(d, "region", "", required=True)
    seq = d.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError(f"seq: {seq!r} is not a sequence number (an integer >= 0)")
    full = d.get("full", False)
    if not isinstance(full, bool):
        raise ValueError(f"full: must be true or false, not {full!r}")
    raw_upserts = d.get("upserts", ())
    if not isinstance(raw_upserts, list | tuple):
        raise ValueError(f"upserts: must be a list of records, not {type(raw_upserts).__name__}")
    upserts = []
    for i, raw in enumerate(raw_upserts):
        if isinstance(raw, Mapping) and "region" not in raw:
            raw = {**raw, "region": region}
        rec = check_record(raw, f"upserts[{i}].")
        if rec.region != region:
            raise ValueError(f"upserts[{i}].region: {rec.region!r} is not the delta's region {region!r}")
        upserts.append(rec)
    raw_removes = d.get("removes", ())
    if not isinstance(raw_removes, list | tuple):
        raise ValueError(f"removes: must be a list of [kind, id], not {type(raw_removes).__name__}")
    removes = []
    for i, item in enumerate(raw_removes):
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(x, str) and x for x in item)):
            raise ValueError(f"removes[{i}]: {item!r} is not [kind, id]")
        removes.append((sys.intern(item[0]), item[1]))
    delta = AddressDelta(sys.intern(region), seq, tuple(upserts), tuple(removes), full)
    _check_keys(delta)
    return delta


def _check_keys(delta: AddressDelta) -> set[Key]:
    """The upserts' keys; ``ValueError`` for a record listed twice, upserted and removed, or of another region."""
    keys: set[Key] = set()
    for i, rec in enumerate(delta.upserts):
        if rec.region != delta.region:
            raise ValueError(f"upserts[{i}].region: {rec.region!r} is not the delta's region {delta.region!r}")
        if rec.kind not in _KIND_ORDER:
            raise ValueError(f"upserts[{i}].kind: {rec.kind!r} is not one of {', '.join(KINDS)}")
        key = (delta.region, rec.kind, rec.id)
        if key in keys:
            raise ValueError(f"upserts[{i}]: {rec.kind} {rec.id} is listed twice")
        keys.add(key)
    for i, (kind, id_) in enumerate(delta.removes):
        if kind not in _KIND_ORDER:
            raise ValueError(f"removes[{i}]: {kind!r} is not one of {', '.join(KINDS)}")
        if (delta.region, kind, id_) in keys:
            raise ValueError(f"removes[{i}]: {kind} {id_} is also upserted")
    return keys


# ---------------------------------------------------------------- the index's parts


def _ip_value(text: str) -> tuple[int, int]:
    """(family, integer) of an address; inet_pton is about 8 times faster than ipaddress for a checked one."""
    if ":" in text:
        return 1, int.from_bytes(socket.inet_pton(socket.AF_INET6, text))
    return 0, int.from_bytes(socket.inet_pton(socket.AF_INET, text))


def _ip_text(family: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if family == 0 else ipaddress.IPv6Address(value))


def _cidr_text(family: int, start: int, prefixlen: int) -> str:
    return f"{_ip_text(family, start)}/{prefixlen}"


def _record_order(rec: AddressRecord) -> tuple[str, int, str]:
    return (rec.region, _KIND_ORDER[rec.kind], rec.id)


def _hold(table: dict[_V, Holders], value: _V, key: Key) -> int:
    """Add ``key`` to the holders of ``value`` (it is not among them); return how many hold it now."""
    held = table.get(value)
    if held is None:
        table[value] = key
        return 1
    if isinstance(held, tuple):
        table[value] = {held, key}
        return 2
    held.add(key)
    return len(held)


def _release(table: dict[_V, Holders], value: _V, key: Key) -> int:
    """Remove ``key`` from the holders of ``value`` (it is among them); return how many hold it still."""
    held = table[value]
    if isinstance(held, tuple):
        del table[value]
        return 0
    held.discard(key)
    if len(held) == 1:
        table[value] = next(iter(held))
        return 1
    return len(held)


def _keys(held: Holders | None) -> Iterable[Key]:
    if held is None:
        return ()
    return (held,) if isinstance(held, tuple) else held


class _Family:
    """What the index keeps for one IP version: addresses and subnets, by value and in order."""

    __slots__ = ("bits", "holders", "points", "shared", "dirty", "clashes", "nets", "net_order", "net_lens")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.holders: dict[int, Holders] = {}  # address -> records holding it
        self.points = SortedList()  # the addresses of holders, for ranges
        self.shared: set[int] = set()  # addresses held by more than one record
        self.dirty: set[int] = set()  # shared addresses whose holders changed since the last conflicts()
        self.clashes: dict[int, list[_Found]] = {}  # what conflicts() found for a shared address, until it is dirty
        self.nets: dict[tuple[int, int], Holders] = {}  # (first address, prefix length) -> subnets
        self.net_order: list[tuple[int, int]] = []  # the keys of nets, sorted (subnets are few: insort will do)
        self.net_lens: dict[int, int] = {}  # prefix length -> how many keys of nets have it

    def last(self, start: int, prefixlen: int) -> int:
        return start + (1 << (self.bits - prefixlen)) - 1

    def containing(self, start: int, prefixlen: int) -> Iterator[Key]:
        """Subnets equal to or larger than the block (start, prefixlen): one look-up per prefix length in use."""
        for plen in self.net_lens:
            if plen <= prefixlen:
                mask = ((1 << plen) - 1) << (self.bits - plen)
                yield from _keys(self.nets.get((start & mask, plen)))

    def within(self, start: int, prefixlen: int) -> Iterator[Key]:
        """Subnets equal to or inside the block (start, prefixlen)."""
        # Any subnet starting inside the block with a shorter prefix would start at a coarser boundary, i.e.
        # at ``start`` itself, which the lower bound excludes: the slice holds exactly the subnets inside.
        lo = bisect_left(self.net_order, (start, prefixlen))
        hi = bisect_right(self.net_order, (self.last(start, prefixlen), self.bits + 1))
        for net in self.net_order[lo:hi]:
            yield from _keys(self.nets[net])




def _parse(rec: AddressRecord, where: str) -> tuple[tuple[tuple[int, int], ...], tuple[int, int, int] | None]:
    """The record's addresses as (family, integer) and its subnet as (family, first address, prefix length)."""
    values: dict[tuple[int, int], None] = {}  # ordered and without repeats
    for j, text in enumerate(rec.ips):
        try:
            values[_ip_value(text)] = None
        except (OSError, ValueError, TypeError):
            raise ValueError(f"{where}ips[{j}]: {text!r} is not an IP address") from None
    net = None
    if rec.kind == "subnet":
        try:
            parsed = ipaddress.ip_network(rec.cidr)
        except (ValueError, TypeError):
            raise ValueError(f"{where}cidr: {rec.cidr!r} is not a CIDR") from None
        net = (0 if parsed.version == 4 else 1, int(parsed.network_address), parsed.prefixlen)
    return tuple(values), net


class AddressIndex:
    """Every region's address records, indexed by IP, MAC and CIDR, with the sets of shared IPs and MACs.

    Lookups cost a dictionary access (IP, MAC) or O(log n + k) (a CIDR with k addresses in it).
    ``conflicts`` re-examines only the shared addresses whose holders changed since its last call (all of
    them after the domains or the set of external networks changed), and the subnets when one changed.
    """

    def __init__(self) -> None:
        self._regions: dict[str, dict[Key, AddressRecord]] = {}
        self._seq: dict[str, int] = {}
        self._families = (_Family(32), _Family(128))
        self._macs: dict[str, Holders] = {}
        self._shared_macs: set[str] = set()
        self._dirty_macs: set[str] = set()
        self._mac_clashes: dict[str, list[_Found]] = {}
        self._overlaps_found: list[_Found] | None = None  # None: a subnet changed since the last conflicts()
        self._stale = False  # domains or external networks changed: every shared address must be looked at again
        self._external: dict[Group, int] = {}  # networks with floating IPs or gateways -> how many
        self._domains_of: dict[Group, tuple[str, ...]] = {}
        self._counts = dict.fromkeys(KINDS, 0)

    def __len__(self) -> int:
        return sum(self._counts.values())

    # ------------------------------------------------------------ changes

    def last_seq(self, region: str) -> int:
        """The seq of the region's last applied delta; 0 for a region never synced."""
        return self._seq.get(region, 0)

    def apply(self, delta: AddressDelta) -> int:
        """Apply one region's delta; return how many records were added, changed or removed.

        A delta that is not ``full`` must have a seq above the region's last (one equal to it is a repeat and
        is ignored) and must follow a full resync: otherwise ``SequenceError`` (a ``ValueError``) says the
        agent must send a full resync. A full delta is applied whatever its seq (agents restart their count).
        Any other ``ValueError`` names the bad part of the delta; the index is unchanged after either.
        """
        region = delta.region
        last = self._seq.get(region)
        if not delta.full:
            if last is None or delta.seq < last:
                raise SequenceError(region, delta.seq, last)
            if delta.seq == last:
                return 0
        if not isinstance(region, str) or not region:
            raise ValueError(f"region: {region!r} is not a region name")
        upserted = _check_keys(delta)
        records = self._regions.get(region, {})
        prepared: list[_Prepared] = []
        for i, rec in enumerate(delta.upserts):
            key = (region, rec.kind, rec.id)
            if records.get(key) != rec:  # unchanged records (most of a full resync) cost nothing more
                prepared.append((key, rec, *_parse(rec, f"upserts[{i}].")))
        # Nothing has changed so far; nothing below raises.
        records = self._regions.setdefault(region, records)
        changed = 0
        gone = dict.fromkeys(key for key in records if key not in upserted) if delta.full else {}
        gone.update(dict.fromkeys(key for key in ((region, kind, id_) for kind, id_ in delta.removes)
                                  if key in records))
        for key in gone:
            self._unindex(key, records.pop(key))
            changed += 1
        for key, rec, values, net in prepared:
            old = records.get(key)
            if old is not None:
                self._unindex(key, old)
            records[key] = rec
            self._index(key, rec, values, net)
            changed += 1
        self._seq[region] = delta.seq
        return changed

    def drop_region(self, region: str) -> None:
        """Forget the region's records and its seq (its next delta must be a full resync)."""
        for key, rec in self._regions.pop(region, {}).items():
            self._unindex(key, rec)
        self._seq.pop(region, None)

    def set_domains(self, domains: Mapping[str, Iterable[tuple[str, str]]]) -> None:
        """Replace the routing domains: name -> the (region, network id) in it; a network may be in several.

        GLOBAL_DOMAIN is not the caller's: it holds every network with a floating IP or router gateway on it.
        """
        of: dict[Group, set[str]] = {}
        for name, members in domains.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"domains: {name!r} is not a domain name")
            if name == GLOBAL_DOMAIN:
                raise ValueError(f"domains[{name!r}]: the name is reserved for floating IPs and router gateways")
            for i, member in enumerate(members):
                if (not isinstance(member, tuple | list) or len(member) != 2
                        or not all(isinstance(x, str) and x for x in member)):
                    raise ValueError(f"domains[{name!r}][{i}]: {member!r} is not (region, network id)")
                of.setdefault((member[0], member[1]), set()).add(name)
        domains_of = {group: tuple(sorted(names)) for group, names in of.items()}
        if domains_of != self._domains_of:  # callers may well set the same domains again and again
            self._domains_of = domains_of
            self._stale = True

    def _index(self, key: Key, rec: AddressRecord, values: tuple[tuple[int, int], ...],
               net: tuple[int, int, int] | None) -> None:
        self._counts[rec.kind] += 1
        for family, value in values:
            fam = self._families[family]
            if _hold(fam.holders, value, key) == 1:
                fam.points.add(value)
            else:
                fam.shared.add(value)
                if not self._stale:  # stale: conflicts() looks at every shared address anyway
                    fam.dirty.add(value)
        if rec.mac and _hold(self._macs, rec.mac, key) > 1:
            self._shared_macs.add(rec.mac)
            if not self._stale:
                self._dirty_macs.add(rec.mac)
        if net is not None:
            fam = self._families[net[0]]
            if _hold(fam.nets, net[1:], key) == 1:
                insort(fam.net_order, net[1:])
                fam.net_lens[net[2]] = fam.net_lens.get(net[2], 0) + 1
            self._overlaps_found = None
        if rec.kind in _GLOBAL_KINDS:
            group = (rec.region, rec.network)
            self._external[group] = self._external.get(group, 0) + 1
            if self._external[group] == 1:  # the network joins the global domain
                self._stale = True

    def _unindex(self, key: Key, rec: AddressRecord) -> None:
        values, net = _parse(rec, "")  # it parsed when it was indexed
        self._counts[rec.kind] -= 1
        for family, value in values:
            fam = self._families[family]
            held = _release(fam.holders, value, key)
            if held == 0:  # no clash is possible any more: what is remembered for it goes now
                fam.points.remove(value)
                fam.dirty.discard(value)
                fam.clashes.pop(value, None)
            else:
                if not self._stale:
                    fam.dirty.add(value)
                if held == 1:
                    fam.shared.discard(value)
        if rec.mac:
            held = _release(self._macs, rec.mac, key)
            if held == 0:
                self._dirty_macs.discard(rec.mac)
                self._mac_clashes.pop(rec.mac, None)
            else:
                if not self._stale:
                    self._dirty_macs.add(rec.mac)
                if held == 1:
                    self._shared_macs.discard(rec.mac)
        if net is not None:
            self._overlaps_found = None
            fam = self._families[net[0]]
            if _release(fam.nets, net[1:], key) == 0:
                del fam.net_order[bisect_left(fam.net_order, net[1:])]
                fam.net_lens[net[2]] -= 1
                if not fam.net_lens[net[2]]:
                    del fam.net_lens[net[2]]
        if rec.kind in _GLOBAL_KINDS:
            group = (rec.region, rec.network)
            self._external[group] -= 1
            if not self._external[group]:  # the network leaves the global domain
                del self._external[group]
                self._stale = True

    # ------------------------------------------------------------ questions

    def lookup(self, query: str) -> list[AddressRecord]:
        """The records an IP, a MAC or a CIDR (IPv4 or IPv6) finds, sorted by region, kind and id.

        An IP finds the records holding it and the subnets containing it; a MAC (any case, colons, dashes or
        dots) the ports with it; a CIDR the records with an address inside it and the subnets overlapping it.
        ``ValueError`` if the query is none of these.
        """
        keys: set[Key] = set()
        text = query.strip() if isinstance(query, str) else ""
        wrong = ValueError(f"query {query!r} is not an IP address, a MAC address or a CIDR")
        if "/" in text:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise wrong from None
            fam = self._families[0 if net.version == 4 else 1]
            start, plen = int(net.network_address), net.prefixlen
            for value in fam.points.irange(start, fam.last(start, plen)):
                keys.update(_keys(fam.holders[value]))
            keys.update(fam.containing(start, plen))
            keys.update(fam.within(start, plen))
        elif (mac := normalize_mac(text)) is not None:
            keys.update(_keys(self._macs.get(mac)))
        else:
            try:
                family, value = _ip_value(_address(text, "query"))
            except ValueError:
                raise wrong from None
            fam = self._families[family]
            keys.update(_keys(fam.holders.get(value)))
            keys.update(fam.containing(value, fam.bits))
        return sorted((self._record(key) for key in keys), key=_record_order)

    def conflicts(self) -> list[Conflict]:
        """Every clash, sorted by kind, domain and value.

        ``duplicate_ip``: one IP held in two or more networks (or regions) that share a routing domain;
        floating IPs, router gateways and the external networks they are on share GLOBAL_DOMAIN.
        ``duplicate_mac``: one MAC on ports of two or more networks sharing a routing domain (not the global
        one: it joins addresses, not layer 2). ``overlapping_cidr``: subnets of different networks sharing a
        domain whose ranges overlap, one conflict per pair of ranges. Records of one network of one region
        never clash with each other (a floating IP and its own port do not), nor do networks that share no
        domain.
        """
        stale, self._stale = self._stale, False
        found: list[_Found] = []
        for family, fam in enumerate(self._families):
            if stale:
                fam.clashes.clear()
            for value in fam.shared if stale else fam.dirty:
                fam.clashes.pop(value, None)
                if value in fam.shared:
                    clashes = self._clash("duplicate_ip", _ip_text(family, value), (family, value),
                                          _keys(fam.holders[value]), True)
                    if clashes:
                        fam.clashes[value] = clashes
            fam.dirty.clear()
            for clashes in fam.clashes.values():
                found += clashes
        if stale:
            self._mac_clashes.clear()
        for mac in self._shared_macs if stale else self._dirty_macs:
            self._mac_clashes.pop(mac, None)
            if mac in self._shared_macs:
                clashes = self._clash("duplicate_mac", mac, (mac,), _keys(self._macs[mac]), False)
                if clashes:
                    self._mac_clashes[mac] = clashes
        self._dirty_macs.clear()
        for clashes in self._mac_clashes.values():
            found += clashes
        if stale or self._overlaps_found is None:
            self._overlaps_found = self._overlaps()
        found += self._overlaps_found
        found.sort(key=lambda item: item[0])
        return [conflict for _, conflict in found]

    def stats(self) -> dict[str, int]:
        """Records per kind, regions, distinct IPs and MACs."""
        return {**self._counts, "regions": len(self._seq),
                "ips": sum(len(fam.holders) for fam in self._families), "macs": len(self._macs)}

    def _record(self, key: Key) -> AddressRecord:
        return self._regions[key[0]][key]

    def _domains(self, group: Group, with_global: bool) -> tuple[str, ...]:
        names = self._domains_of.get(group, ())
        if with_global and group in self._external:
            return (*names, GLOBAL_DOMAIN)
        return names

    def _clash(self, kind: str, value: str, order: tuple[Any, ...], keys: Iterable[Key],
               with_global: bool) -> list[_Found]:
        found: list[_Found] = []
        groups: dict[Group, list[AddressRecord]] = {}
        for key in keys:
            rec = self._record(key)
            groups.setdefault((rec.region, rec.network), []).append(rec)
        if len(groups) < 2:
            return found
        members: dict[str, list[Group]] = {}
        for group in groups:
            for name in self._domains(group, with_global):
                members.setdefault(name, []).append(group)
        for name, clashing in members.items():
            if len(clashing) > 1:
                recs = sorted((rec for group in clashing for rec in groups[group]), key=_record_order)
                found.append(((kind, name, *order), Conflict(kind, value, name, tuple(recs))))
        return found

    def _overlaps(self) -> list[_Found]:
        found: list[_Found] = []
        for family, fam in enumerate(self._families):
            # Each domain's subnets in (first address, prefix length) order, equal ranges in one bucket.
            buckets: dict[str, list[_Bucket]] = {}
            for start, plen in fam.net_order:
                here: dict[str, list[AddressRecord]] = {}
                for key in _keys(fam.nets[(start, plen)]):
                    rec = self._record(key)
                    for name in self._domains((rec.region, rec.network), True):
                        here.setdefault(name, []).append(rec)
                for name, recs in here.items():
                    buckets.setdefault(name, []).append((start, plen, recs))
            for name, ordered in buckets.items():
                # CIDR ranges are disjoint or nested, so the ranges still open at a bucket's start form a chain
                # of ranges containing it: one pass with a stack finds every overlapping pair.
                stack: list[tuple[int, _Bucket]] = []  # (last address, bucket)
                for bucket in ordered:
                    while stack and stack[-1][0] < bucket[0]:
                        stack.pop()
                    self._overlap(found, family, name, bucket, bucket)
                    for _, outer in stack:
                        self._overlap(found, family, name, outer, bucket)
                    stack.append((fam.last(bucket[0], bucket[1]), bucket))
        return found

    def _overlap(self, found: list[_Found], family: int, domain: str,
                 outer: _Bucket, inner: _Bucket) -> None:
        outer_groups = {(r.region, r.network) for r in outer[2]}
        inner_groups = {(r.region, r.network) for r in inner[2]}
        recs = [r for r in outer[2] if inner_groups - {(r.region, r.network)}]
        if outer is not inner:
            recs += [r for r in inner[2] if outer_groups - {(r.region, r.network)}]
        if recs:
            value = f"{_cidr_text(family, outer[0], outer[1])} ~ {_cidr_text(family, inner[0], inner[1])}"
            order = ("overlapping_cidr", domain, family, outer[0], outer[1], inner[0], inner[1])
            found.append((order, Conflict("overlapping_cidr", value, domain, tuple(sorted(recs, key=_record_order)))))
