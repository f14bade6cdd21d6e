"""Declarative files for ``isthmusctl apply``, ``diff``, ``plan`` and ``get``: documents, their validation as a
whole set, and what they change (pure: no I/O but reading the files; the commands are in ``ctl/apply.py``).

A document is ``{kind: Site|Endpoint|Connection|Policy, spec: {...}}``, the spec holding the object's fields as
``get`` writes them. Every error names its file, document index (from 0) and field.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from isthmus.core import model as m
from isthmus.core import topology as t
from isthmus.core.errors import IsthmusError
from isthmus.ctl import border_docs as bd

KINDS: dict[str, type] = {"Site": m.Site, "Endpoint": m.Endpoint, "Connection": m.Connection, "Policy": t.Policy,
                          bd.DEVICE: bd.GatewayDeviceDoc, bd.GATEWAY: bd.L2GatewayDoc, bd.L2CONN: bd.L2ConnectionDoc}
# The order objects are created in (deleted in reverse): a border device needs its site, an l2-gateway its devices,
# a connection its gateway.
ORDER = ("Site", "Endpoint", "Connection", "Policy", *bd.BORDER_KINDS)
SUFFIXES = (".yaml", ".yml", ".json")
# The stored version; the owning policy (set by the coordinator only); a border object's id (the coordinator's).
NOT_IN_FILES = {"version", "policy", "id"}

Obj = Any  # m.Site | m.Endpoint | m.Connection | t.Policy | the border documents of ctl/border_docs.py


class FileSetError(Exception):
    """The file set is refused: every error found, one per line; nothing was written."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} error(s), nothing written:\n  " + "\n  ".join(errors))


def ident(kind: str, obj: Obj) -> str:
    """The object's name within its kind (an endpoint's is SITE/NAME; the border objects' in ctl/border_docs.py)."""
    if kind in bd.BORDER_KINDS:
        return bd.ident(kind, obj)
    return f"{obj.site}/{obj.name}" if kind == "Endpoint" else str(obj.name)


@dataclass(frozen=True)
class Document:
    file: str
    index: int
    kind: str
    obj: Obj

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, ident(self.kind, self.obj)

    def where(self) -> str:
        return f"{self.file}: document {self.index} ({self.kind} {ident(self.kind, self.obj)})"


# ---------------------------------------------------------------- reading and checking one document


def files_of(paths: Iterable[str]) -> list[Path]:
    """The files named, and those under the directories named (recursively, sorted), by suffix."""
    out: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        else:
            out.append(path)
    return out


def _shape(value: Any, hint: Any, path: str) -> None:
    """Raise InvalidArgument(path) unless ``value`` (from YAML) fits the type ``hint`` of a model field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        _fields(value, hint, path)
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [e.value for e in hint]
        if value not in choices:
            raise _bad(path, f"{value!r} is not one of {', '.join(choices)}")
    elif hint is str:
        if not isinstance(value, str):
            raise _bad(path, f"{value!r} is not text (quote it)")
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(path, f"{value!r} is not a whole number")
    elif origin is tuple:
        if not isinstance(value, list):
            raise _bad(path, "is a list")
        for i, item in enumerate(value):
            _shape(item, args[0], f"{path}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            raise _bad(path, "is a mapping")
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise _bad(f"{path}.{k}", f"{v!r} is not text (quote it)")


def _bad(path: str, message: str) -> IsthmusError:
    return IsthmusError(message, path)


def _fields(value: Any, cls: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _bad(path or "spec", "is a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - NOT_IN_FILES
    for name in value:
        if name not in known:
            where = f"{path}.{name}" if path else str(name)
            extra = " (set by the coordinator)" if name in NOT_IN_FILES else ""
            raise _bad(where, f"unknown field{extra}; known: {', '.join(sorted(known))}")
    for name, item in value.items():
        _shape(item, hints[name], f"{path}.{name}" if path else name)


DECODE: dict[str, Callable[[dict[str, Any]], Obj]] = {
    "Site": m.site_from_json, "Endpoint": m.endpoint_from_json, "Connection": m.connection_from_json,
    "Policy": t.policy_from_json, bd.DEVICE: bd.device_from_json, bd.GATEWAY: bd.gateway_from_json,
    bd.L2CONN: bd.connection_from_json}
VALIDATE: dict[str, Callable[[Any], Obj]] = {
    "Site": m.validate_site, "Endpoint": m.validate_endpoint, "Connection": m.validate_connection,
    "Policy": t.validate_policy, bd.DEVICE: bd.validate_device, bd.GATEWAY: bd.validate_gateway,
    bd.L2CONN: bd.validate_connection}


def parse_document(raw: Any) -> tuple[str, Obj]:
    """(kind, validated object) of one document; raises IsthmusError naming the field."""
    if not isinstance(raw, dict):
        raise _bad("document", "is a mapping with kind and spec")
    unknown = set(raw) - {"kind", "spec"}
    if unknown:
        raise _bad(str(sorted(unknown)[0]), "unknown field; a document has kind and spec")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _bad("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    spec: dict[str, Any] = raw.get("spec")  # type: ignore[assignment]  # _fields checks it is a mapping
    _fields(spec, KINDS[kind], "")
    try:
        obj = DECODE[kind](spec)
    except KeyError as exc:
        raise _bad(str(exc.args[0]), "is required") from None
    return kind, VALIDATE[kind](obj)


def load(paths: Iterable[str]) -> list[Document]:
    """Every document of the files, each checked on its own; FileSetError listing every error found."""
    docs, errors = [], []
    files = files_of(paths)
    if not files:
        raise FileSetError(["no files: name YAML files or directories holding *.yaml, *.yml or *.json"])
    for path in files:
        try:
            raws = list(yaml.safe_load_all(path.read_text()))
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: cannot read: {exc}")
            continue
        except yaml.YAMLError as exc:
            errors.append(f"{path}: not YAML: {' '.join(str(exc).split())}")
            continue
        for index, raw in enumerate(raws):
            if raw is None:
                continue  # an empty document (a trailing ---)
            try:
                kind, obj = parse_document(raw)
            except IsthmusError as exc:
                name = raw.get("spec", {}).get("name", "") if isinstance(raw, dict) and isinstance(
                    raw.get("spec"), dict) else ""
                errors.append(f"{path}: document {index}{f' ({name})' if name else ''}: {exc}")
                continue
            docs.append(Document(str(path), index, kind, obj))
    if errors:
        raise FileSetError(errors)
    return docs


# ---------------------------------------------------------------- the stored state and the set as a whole


@dataclass
class State:
    """Objects by kind and name (versions kept), as read from the coordinator or as they will be."""

    objects: dict[str, dict[str, Obj]] = field(default_factory=lambda: {k: {} for k in ORDER})
    owned: list[m.Connection] = field(default_factory=list)  # the policies' connections
    # Border objects Neutron made (its resync manages them; files neither name nor prune them), by kind and name.
    foreign: dict[tuple[str, str], str] = field(default_factory=dict)
    # Stored border objects that share a name (ids by kind and name): files cannot tell them apart.
    twins: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # The devices and gateways Neutron's objects use (which --prune cannot delete), by kind and name: who uses them.
    foreign_uses: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, kind: str, obj: Obj) -> None:
        if kind == "Connection" and obj.policy:
            self.owned.append(obj)
            return
        name = ident(kind, obj)
        if kind in bd.BORDER_KINDS and name in self.objects[kind]:
            self.twins.setdefault((kind, name), [self.objects[kind][name].id]).append(obj.id)
        self.objects[kind][name] = obj

    @property
    def endpoints(self) -> dict[m.EndpointRef, m.Endpoint]:
        return {e.ref: e for e in self.objects["Endpoint"].values()}


def bare(obj: Obj) -> Obj:
    """``obj`` without what the coordinator sets (version, and a border object's id)."""
    if isinstance(obj, (bd.GatewayDeviceDoc, bd.L2GatewayDoc, bd.L2ConnectionDoc)):
        return dataclasses.replace(obj, version=0, id="")
    return dataclasses.replace(obj, version=0)


def normalized(kind: str, obj: Obj, endpoints: Mapping[m.EndpointRef, m.Endpoint]) -> Obj:
    """``obj`` as the coordinator stores it: a BGP connection's address families filled in from its a end."""
    obj = bare(obj)
    if kind == "Connection" and obj.bgp is not None and not obj.bgp.address_families and obj.a in endpoints:
        families = m.default_address_families(endpoints[obj.a].address)
        obj = dataclasses.replace(obj, bgp=dataclasses.replace(obj.bgp, address_families=families))
    return obj


@dataclass(frozen=True)
class Change:
    action: str  # create, update, delete
    kind: str
    name: str
    fields: tuple[str, ...] = ()
    obj: Obj = None  # what to write (create, update: with the version read), or what to delete (stored)


def after_state(docs: list[Document], stored: State, prune: bool) -> State:
    """What the coordinator will hold once the files are applied (the policies' connections not yet expanded)."""
    after = State(owned=list(stored.owned), foreign=dict(stored.foreign), foreign_uses=dict(stored.foreign_uses))
    named = {d.key for d in docs}
    if not prune:
        for kind in ORDER:
            for name, obj in stored.objects[kind].items():
                if (kind, name) not in named:
                    after.add(kind, obj)
    for d in docs:
        after.add(d.kind, d.obj)
    return after


def check_set(docs: list[Document], stored: State, prune: bool) -> list[str]:
    """The errors of the file set as a whole against the stored state (references, fixed fields, duplicates)."""
    errors: list[str] = []
    seen: dict[tuple[str, str], Document] = {}
    for d in docs:
        if d.key in seen:
            errors.append(f"{d.where()}: name: also in {seen[d.key].file} document {seen[d.key].index}")
        seen[d.key] = d
    after = after_state(docs, stored, prune)
    sites, endpoints = after.objects["Site"], after.endpoints
    owned = {c.name: c for c in stored.owned}
    vnis: dict[int, str] = {}
    for d in docs:
        current = stored.objects[d.kind].get(ident(d.kind, d.obj))
        for problem in _fixed(d.kind, current, d.obj) + _refs(d, sites, endpoints, owned):
            errors.append(f"{d.where()}: {problem}")
        if d.kind == "Connection" and d.obj.vxlan is not None:
            vni = d.obj.vxlan.vni
            if vni in vnis:
                errors.append(f"{d.where()}: vxlan.vni: {vni} is also the VNI of connection {vnis[vni]}")
            vnis[vni] = d.obj.name
    return errors + _border_set(docs, stored, after, prune)


def _border_set(docs: list[Document], stored: State, after: State, prune: bool) -> list[str]:
    """The border documents against each other and the stored state (see ctl/border_docs.py)."""
    errors: list[str] = []
    devices, gateways = after.objects[bd.DEVICE], after.objects[bd.GATEWAY]
    segments = bd.segment_errors(after.objects[bd.L2CONN], gateways)
    named = {d.key for d in docs}
    for d in docs:
        if d.kind not in bd.BORDER_KINDS:
            continue
        problems = bd.refs(d.kind, d.obj, after.objects["Site"], devices, gateways)
        if d.key in stored.foreign:
            problems.append(f"name: {stored.foreign[d.key]}")
        if d.key in stored.twins:
            problems.append(f"name: the coordinator holds {len(stored.twins[d.key])} of these "
                            f"({', '.join(stored.twins[d.key])}); delete all but one first")
        if d.key[1] in segments and d.kind == bd.L2CONN:
            problems.append(segments[d.key[1]])
        current = stored.objects[d.kind].get(d.key[1])
        if d.kind == bd.L2CONN and current is not None and not d.obj.segmentation_id:
            # The coordinator refuses a gateway update that changes the id a connection took from the devices.
            now = bd.effective(d.obj, gateways)
            if now and now != current.segmentation_id:
                problems.append(f"segmentation_id: the connection took {current.segmentation_id} from the devices "
                                f"of l2-gateway {d.obj.l2_gateway}, which the files change to {now}; keep it, or "
                                "delete the connection first")
        errors += [f"{d.where()}: {p}" for p in problems]
    if prune:
        errors += [f"--prune: {kind} {name}: {user} uses it; it stays until that is deleted"
                   for (kind, name), user in sorted(stored.foreign_uses.items())
                   if (kind, name) not in named and name in stored.objects[kind]]
        errors += [f"--prune: {kind} {name}: the coordinator holds {len(ids)} of these ({', '.join(ids)}); files "
                   "cannot tell them apart: delete all but one first" for (kind, name), ids in stored.twins.items()
                   if (kind, name) not in named]
    return errors


# (A border object's other identifying fields are its name; an l2-gateway-connection has no update: a given
# segmentation id is fixed.)
FIXED = {"Site": ("kind", "parent"), "Endpoint": ("role",), "Connection": ("a", "b", "type"), bd.DEVICE: ("type",),
         bd.L2CONN: ("segmentation_id",)}


def _fixed(kind: str, current: Obj, new: Obj) -> list[str]:
    if current is None:
        return []
    if kind == bd.L2CONN and not new.segmentation_id:
        return []  # the devices' one, whatever it is
    return [f"{name}: is fixed at creation ({_text(getattr(current, name))}); delete the object first to change it"
            for name in FIXED.get(kind, ()) if getattr(current, name) != getattr(new, name)]


def _text(value: Any) -> str:
    return value.value if isinstance(value, enum.Enum) else str(value) or "none"


def _refs(d: Document, sites: Mapping[str, m.Site], endpoints: Mapping[m.EndpointRef, m.Endpoint],
          owned: Mapping[str, m.Connection]) -> list[str]:
    obj, out = d.obj, []
    if d.kind == "Site" and obj.parent:
        parent = sites.get(obj.parent)
        if parent is None:
            out.append(f"parent: site {obj.parent} is neither stored nor in the files")
        elif parent.kind != m.SiteKind.REGION:
            out.append(f"parent: {obj.parent} is a {parent.kind}; a cell's parent must be a region")
    if d.kind == "Endpoint":
        site = sites.get(obj.site)
        if site is None:
            out.append(f"site: site {obj.site} is neither stored nor in the files")
        elif site.kind == m.SiteKind.EXTERNAL and obj.role != m.EndpointRole.REMOTE:
            out.append(f"role: site {obj.site} is external; its endpoints are remote")
    if d.kind == "Connection":
        if obj.name in owned:
            out.append(f"name: connection {obj.name} belongs to topology policy {owned[obj.name].policy}")
        ends = [(label, ref, endpoints.get(ref)) for label, ref in (("a", obj.a), ("b", obj.b))]
        for label, ref, ep in ends:
            if ep is None:
                out.append(f"{label}: endpoint {ref} is neither stored nor in the files")
        a, b = ends[0][2], ends[1][2]
        if a is not None and b is not None:
            if a.role == m.EndpointRole.REMOTE and b.role == m.EndpointRole.REMOTE:
                out.append("b: both ends are remote; at least one must be local to a site's agent")
            fa, fb = ipaddress.ip_address(a.address).version, ipaddress.ip_address(b.address).version
            if fa != fb:
                out.append(f"b: {obj.b} is IPv{fb} but {obj.a} is IPv{fa}")
    return out


def changes(docs: list[Document], stored: State, prune: bool) -> list[Change]:
    """What applying the files changes, in the order to write it (creates and updates by kind, deletes last,
    in reverse)."""
    after = after_state(docs, stored, prune)
    out: list[Change] = []
    for kind in ORDER:
        # Regions (and every non-cell) before cells, so that a cell's parent exists when it is created.
        for d in sorted((d for d in docs if d.kind == kind),
                        key=lambda d: (kind == "Site" and d.obj.kind == m.SiteKind.CELL, d.key)):
            name = ident(kind, d.obj)
            current = stored.objects[kind].get(name)
            new = normalized(kind, d.obj, after.endpoints)
            if kind == bd.L2CONN and current is not None and not new.segmentation_id:
                new = dataclasses.replace(new, segmentation_id=current.segmentation_id)  # the devices' one
            if current is None:
                out.append(Change("create", kind, name, obj=new))
            elif bare(current) != new:
                diff = tuple(f.name for f in dataclasses.fields(new) if getattr(new, f.name) != getattr(current, f.name)
                             and f.name not in ("version", "id"))
                written = dataclasses.replace(new, version=current.version)
                if kind in bd.BORDER_KINDS:
                    written = dataclasses.replace(written, id=current.id)
                out.append(Change("update", kind, name, diff, written))
    if prune:
        named = {d.key for d in docs}
        for kind in reversed(ORDER):
            gone = [(n, o) for n, o in stored.objects[kind].items() if (kind, n) not in named]
            # Cells before their regions.
            gone.sort(key=lambda item: (kind == "Site" and item[1].kind != m.SiteKind.CELL, item[0]))
            out += [Change("delete", kind, n, obj=o) for n, o in gone]
    return out


def peering_plan(docs: list[Document], stored: State, prune: bool) -> list[t.PeeringChange]:
    """The peering changes at each site that applying the files makes, the policies expanded as the leader
    will expand them, each site's peerings computed by the planner's own rule (``core.topology.plan_site``)."""
    after = after_state(docs, stored, prune)
    for d in docs:  # stored as the coordinator will store them
        after.objects[d.kind][ident(d.kind, d.obj)] = normalized(d.kind, d.obj, after.endpoints)
    explicit_after = list(after.objects["Connection"].values())
    expanded = t.expand_all(after.objects["Policy"].values(), after.objects["Site"].values(), after.endpoints,
                            explicit_after + stored.owned)
    conns_after = explicit_after + [c for e in expanded.values() for c in e.connections.values()]
    conns_before = list(stored.objects["Connection"].values()) + stored.owned
    sites = {ref.site for c in conns_before + conns_after for ref in c.ends}
    return t.peering_changes(sites, [bare(c) for c in conns_before], [bare(c) for c in conns_after],
                             stored.endpoints, after.endpoints)


# ---------------------------------------------------------------- writing documents (get)


def _trimmed(value: Any) -> Any:
    """A JSON value without empty strings, lists, maps and nulls (the defaults a document may leave out)."""
    if isinstance(value, dict):
        return {k: _trimmed(v) for k, v in value.items() if v not in ("", [], {}, None)}
    if isinstance(value, list):
        return [_trimmed(v) for v in value]
    return value


def document_of(kind: str, obj: Obj) -> dict[str, Any]:
    spec = {k: v for k, v in m.to_json(obj).items() if k not in NOT_IN_FILES}
    return {"kind": kind, "spec": _trimmed(spec)}


def dump(state: State, kinds: Iterable[str]) -> str:
    """The YAML documents of the stored objects of ``kinds`` (the policies' connections left to their policies)."""
    docs = [document_of(kind, obj) for kind in ORDER if kind in set(kinds)
            for _, obj in sorted(state.objects[kind].items())]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False) if docs else ""
