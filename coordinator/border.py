"""Border-gateway objects in etcd: gateway devices, l2-gateways, l2-gateway-connections.

Same discipline as the registry: read, validate, one transaction comparing what
was read, retry on a lost race. Keys (under ``/isthmus/v1/``)::

    config/gw-devices/{id}                 GatewayDevice JSON
    config/l2gws/{id}                      L2Gateway JSON
    config/l2gw-connections/{id}           L2GatewayConnection JSON
    index/gw-device-name/{site}/{name}     device id        (names unique per site)
    index/segment/{segmentation_id}        network id       (a segmentation id is bound to one network)
    refs/gw-device/{device_id}/{gw_id}     ""               (a gateway names a device)
    refs/l2gw/{gw_id}/{connection_id}      ""               (a connection uses a gateway)
    refs/segment/{segmentation_id}/{connection_id}  ""      (who holds the segment binding)
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from isthmus.coordinator import registry as r
from isthmus.coordinator.registry import Plan, Registry, _check_version
from isthmus.coordinator.store import KV, Compare, Delete, Put, absent, mod_is, prefix_empty
from isthmus.core import border as b
from isthmus.core import model as m
from isthmus.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument

DEVICES = r.CONFIG + "gw-devices/"
GATEWAYS = r.CONFIG + "l2gws/"
L2CONNECTIONS = r.CONFIG + "l2gw-connections/"


def device_name_key(site: str, name: str) -> str:
    return r.device_names(site) + name


segment_key = r.segment_key


def device_refs(device_id: str) -> str:
    return f"{r.REFS}gw-device/{device_id}/"


def gateway_refs(gw_id: str) -> str:
    return f"{r.REFS}l2gw/{gw_id}/"


def segment_refs(segmentation_id: int) -> str:
    return f"{r.REFS}segment/{segmentation_id}/"


def _encode(obj: Any) -> bytes:
    return json.dumps(m.to_json(obj), sort_keys=True, separators=(",", ":")).encode()


def decode_device(kv: KV) -> b.GatewayDevice:
    return b.device_from_json(json.loads(kv.value), kv.mod_revision)


def decode_gateway(kv: KV) -> b.L2Gateway:
    return b.gateway_from_json(json.loads(kv.value), kv.mod_revision)


def decode_l2conn(kv: KV) -> b.L2GatewayConnection:
    return b.connection_from_json(json.loads(kv.value), kv.mod_revision)


class BorderRegistry(Registry):
    """Validated writes of border-gateway objects (shares the registry's transaction discipline)."""

    DECODERS = {**Registry.DECODERS, DEVICES: decode_device, GATEWAYS: decode_gateway,
                L2CONNECTIONS: decode_l2conn}

    # ------------------------------------------------------------ reads

    async def get_device(self, device_id: str) -> b.GatewayDevice:
        return await self._get(DEVICES + device_id, decode_device, f"gateway device {device_id} does not exist")

    async def list_devices(self, site: str = "") -> list[b.GatewayDevice]:
        kvs, _ = await self.store.get_prefix(DEVICES)
        return [d for d in map(decode_device, kvs) if not site or d.site == site]

    async def get_gateway(self, gw_id: str) -> b.L2Gateway:
        return await self._get(GATEWAYS + gw_id, decode_gateway, f"l2-gateway {gw_id} does not exist")

    async def list_gateways(self, project_id: str = "") -> list[b.L2Gateway]:
        kvs, _ = await self.store.get_prefix(GATEWAYS)
        return [g for g in map(decode_gateway, kvs) if not project_id or g.project_id == project_id]

    async def get_l2conn(self, conn_id: str) -> b.L2GatewayConnection:
        return await self._get(L2CONNECTIONS + conn_id, decode_l2conn,
                               f"l2-gateway-connection {conn_id} does not exist")

    async def list_l2conns(self, gw_id: str = "", project_id: str = "") -> list[b.L2GatewayConnection]:
        kvs, _ = await self.store.get_prefix(L2CONNECTIONS)
        return [c for c in map(decode_l2conn, kvs)
                if (not gw_id or c.l2_gateway_id == gw_id) and (not project_id or c.project_id == project_id)]

    # ------------------------------------------------------------ devices

    async def create_device(self, dev: b.GatewayDevice) -> b.GatewayDevice:
        dev = b.validate_device(dataclasses.replace(dev, id=dev.id or str(uuid.uuid4())))

        async def attempt() -> Plan:
            site = await self._get(r.site_key(dev.site), r.decode_site, f"site: site {dev.site} does not exist")
            if await self.store.get(DEVICES + dev.id) is not None:
                raise AlreadyExists(f"gateway device {dev.id} already exists", "id")
            if await self.store.get(device_name_key(dev.site, dev.name)) is not None:
                raise AlreadyExists(f"site {dev.site} already has a gateway device {dev.name}", "name")
            return Plan(
                [mod_is(r.site_key(site.name), site.version), absent(DEVICES + dev.id),
                 absent(device_name_key(dev.site, dev.name))],
                [Put(DEVICES + dev.id, _encode(dev)), Put(device_name_key(dev.site, dev.name), dev.id.encode())],
                lambda rev: dataclasses.replace(dev, version=rev),
            )

        return await self.commit(f"created gateway device {dev.site}/{dev.name}", attempt)  # type: ignore[no-any-return]

    async def update_device(self, dev: b.GatewayDevice, *, type_given: bool = False) -> b.GatewayDevice:
        async def attempt() -> Plan:
            current = await self.get_device(dev.id)
            _check_version(dev.version, current.version, f"gateway device {dev.id}")
            for fname in ("site", "name"):
                given = getattr(dev, fname)
                if given and given != getattr(current, fname):
                    raise InvalidArgument(f"is fixed at creation ({getattr(current, fname)})", fname)
            if type_given and dev.type != current.type:
                raise InvalidArgument(f"is fixed at creation ({current.type})", "type")
            new = b.validate_device(dataclasses.replace(current, tunnel_ips=dev.tunnel_ips or current.tunnel_ips,
                                                        management=dev.management, version=0))
            compares = [mod_is(DEVICES + dev.id, current.version)]
            if new.management.get("segment_bridge") != current.management.get("segment_bridge"):
                # The new template must give a bridge name for every connection through the device.
                gateways, read_rev = await self.store.get_prefix(device_refs(dev.id))
                for kv in gateways:
                    conns, _ = await self._connections_of(kv.key.rsplit("/", 1)[1])
                    for conn in conns:
                        b.check_bridges(conn.network_id, conn.segmentation_id, [new])
                compares.append(Compare(device_refs(dev.id), "mod", "<", read_rev + 1, prefix=True))
                compares.append(Compare(L2CONNECTIONS, "mod", "<", read_rev + 1, prefix=True))
            return Plan(compares, [Put(DEVICES + dev.id, _encode(new))],
                        lambda rev: dataclasses.replace(new, version=rev))

        return await self.commit(f"updated gateway device {dev.id}", attempt)  # type: ignore[no-any-return]

    async def delete_device(self, device_id: str, version: int = 0) -> int:
        async def attempt() -> Plan:
            current = await self.get_device(device_id)
            _check_version(version, current.version, f"gateway device {device_id}")
            users, _ = await self.store.get_prefix(device_refs(device_id))
            if users:
                names = ", ".join(kv.key.rsplit("/", 1)[1] for kv in users[:10])
                raise FailedPrecondition(f"gateway device {device_id} is used by l2-gateways: {names}")
            return Plan([mod_is(DEVICES + device_id, current.version), prefix_empty(device_refs(device_id))],
                        [Delete(DEVICES + device_id), Delete(device_name_key(current.site, current.name))],
                        lambda rev: rev)

        return await self.commit(f"deleted gateway device {device_id}", attempt)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ l2-gateways

    async def _devices_of(self, gw: b.L2Gateway) -> tuple[dict[str, b.GatewayDevice], list[Compare]]:
        found: dict[str, b.GatewayDevice] = {}
        compares: list[Compare] = []
        for ref in gw.devices:
            if ref.device_id and ref.device_id not in found:
                kv = await self.store.get(DEVICES + ref.device_id)
                if kv is not None:
                    found[ref.device_id] = decode_device(kv)
                    compares.append(mod_is(DEVICES + ref.device_id, kv.mod_revision))
        return found, compares

    async def create_gateway(self, gw: b.L2Gateway) -> b.L2Gateway:
        gw = dataclasses.replace(gw, id=gw.id or str(uuid.uuid4()))

        async def attempt() -> Plan:
            devices, compares = await self._devices_of(gw)
            b.validate_gateway(gw, devices)
            if await self.store.get(GATEWAYS + gw.id) is not None:
                raise AlreadyExists(f"l2-gateway {gw.id} already exists", "id")
            ops: list[Put | Delete] = [Put(GATEWAYS + gw.id, _encode(gw))]
            ops += [Put(device_refs(d) + gw.id, b"") for d in devices]
            return Plan([absent(GATEWAYS + gw.id), *compares], ops, lambda rev: dataclasses.replace(gw, version=rev))

        return await self.commit(f"created l2-gateway {gw.name} ({gw.id})", attempt)  # type: ignore[no-any-return]

    async def update_gateway(self, gw: b.L2Gateway) -> b.L2Gateway:
        """Replace name and devices; connections of the gateway must keep their segmentation id."""

        async def attempt() -> Plan:
            current = await self.get_gateway(gw.id)
            _check_version(gw.version, current.version, f"l2-gateway {gw.id}")
            if gw.project_id and gw.project_id != current.project_id:
                raise InvalidArgument(f"is fixed at creation ({current.project_id})", "project_id")
            new = dataclasses.replace(current, name=gw.name or current.name, devices=gw.devices, version=0)
            devices, compares = await self._devices_of(new)
            b.validate_gateway(new, devices)
            conns, read_rev = await self._connections_of(gw.id)
            for conn in conns:
                if not conn.explicit_segmentation_id:
                    try:
                        same = b.effective_segmentation_id(new, 0, devices) == conn.segmentation_id
                    except InvalidArgument:
                        same = False
                    if not same:
                        raise FailedPrecondition(
                            f"l2-gateway-connection {conn.id} uses segmentation id {conn.segmentation_id} from "
                            "the devices; keep it on every device, or delete the connection first")
                for ref in new.devices:
                    b.check_segmentation_id(conn.segmentation_id, devices[ref.device_id].type, "devices")
                b.check_bridges(conn.network_id, conn.segmentation_id, devices.values())
            old_ids = {ref.device_id for ref in current.devices}
            new_ids = set(devices)
            ops: list[Put | Delete] = [Put(GATEWAYS + gw.id, _encode(new))]
            ops += [Put(device_refs(d) + gw.id, b"") for d in new_ids - old_ids]
            ops += [Delete(device_refs(d) + gw.id) for d in old_ids - new_ids]
            compares += [mod_is(GATEWAYS + gw.id, current.version),
                         Compare(gateway_refs(gw.id), "mod", "<", read_rev + 1, prefix=True)]
            return Plan(compares, ops, lambda rev: dataclasses.replace(new, version=rev))

        return await self.commit(f"updated l2-gateway {gw.id}", attempt)  # type: ignore[no-any-return]

    async def _connections_of(self, gw_id: str) -> tuple[list[b.L2GatewayConnection], int]:
        kvs, rev = await self.store.get_prefix(gateway_refs(gw_id))
        conns = []
        for kv in kvs:
            ckv = await self.store.get(L2CONNECTIONS + kv.key.rsplit("/", 1)[1])
            if ckv is not None:
                conns.append(decode_l2conn(ckv))
        return conns, rev

    async def delete_gateway(self, gw_id: str, version: int = 0) -> int:
        async def attempt() -> Plan:
            current = await self.get_gateway(gw_id)
            _check_version(version, current.version, f"l2-gateway {gw_id}")
            users, _ = await self.store.get_prefix(gateway_refs(gw_id))
            if users:
                names = ", ".join(kv.key.rsplit("/", 1)[1] for kv in users[:10])
                raise FailedPrecondition(f"l2-gateway {gw_id} has connections: {names}; delete them first")
            ops: list[Put | Delete] = [Delete(GATEWAYS + gw_id)]
            ops += [Delete(device_refs(ref.device_id) + gw_id) for ref in current.devices]
            return Plan([mod_is(GATEWAYS + gw_id, current.version), prefix_empty(gateway_refs(gw_id))], ops,
                        lambda rev: rev)

        return await self.commit(f"deleted l2-gateway {gw_id}", attempt)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ l2-gateway-connections

    async def create_l2conn(self, conn: b.L2GatewayConnection) -> b.L2GatewayConnection:
        conn = b.validate_connection(dataclasses.replace(conn, id=conn.id or str(uuid.uuid4())))

        async def attempt() -> Plan:
            gw = await self._get(GATEWAYS + conn.l2_gateway_id, decode_gateway,
                                 f"l2_gateway_id: l2-gateway {conn.l2_gateway_id} does not exist")
            if conn.project_id and conn.project_id != gw.project_id:
                raise InvalidArgument(f"{conn.project_id} does not own l2-gateway {gw.id} (project {gw.project_id})",
                                      "project_id")
            devices, compares = await self._devices_of(gw)
            segid = b.effective_segmentation_id(gw, conn.segmentation_id if conn.explicit_segmentation_id else 0,
                                                devices)
            final = dataclasses.replace(conn, segmentation_id=segid, project_id=gw.project_id)
            b.check_bridges(final.network_id, segid, devices.values())
            if await self.store.get(L2CONNECTIONS + conn.id) is not None:
                raise AlreadyExists(f"l2-gateway-connection {conn.id} already exists", "id")
            infra = await self.store.get(r.vni_key(segid))
            if infra is not None:
                raise AlreadyExists(f"{segid} is the VNI of infrastructure connection {infra.value.decode()}",
                                    "segmentation_id")
            compares += [absent(L2CONNECTIONS + conn.id), mod_is(GATEWAYS + gw.id, gw.version),
                         absent(r.vni_key(segid))]
            ops: list[Put | Delete] = [Put(L2CONNECTIONS + conn.id, _encode(final)),
                                       Put(gateway_refs(gw.id) + conn.id, b""),
                                       Put(segment_refs(segid) + conn.id, b"")]
            bound = await self.store.get(segment_key(segid))
            if bound is None:
                compares.append(absent(segment_key(segid)))
                ops.append(Put(segment_key(segid), final.network_id.encode()))
            elif bound.value.decode() != final.network_id:
                raise AlreadyExists(f"segmentation id {segid} is bound to network {bound.value.decode()}; "
                                    "one segmentation id maps to one tenant network across all sites",
                                    "segmentation_id")
            else:
                compares.append(mod_is(segment_key(segid), bound.mod_revision))
            return Plan(compares, ops, lambda rev: dataclasses.replace(final, version=rev))

        return await self.commit(f"created l2-gateway-connection {conn.id}", attempt)  # type: ignore[no-any-return]

    async def delete_l2conn(self, conn_id: str, version: int = 0) -> int:
        async def attempt() -> Plan:
            current = await self.get_l2conn(conn_id)
            _check_version(version, current.version, f"l2-gateway-connection {conn_id}")
            segid = current.segmentation_id
            holders, read_rev = await self.store.get_prefix(segment_refs(segid))
            ops: list[Put | Delete] = [Delete(L2CONNECTIONS + conn_id), Delete(gateway_refs(current.l2_gateway_id)
                                                                                 + conn_id),
                                       Delete(segment_refs(segid) + conn_id)]
            compares = [mod_is(L2CONNECTIONS + conn_id, current.version)]
            if {kv.key for kv in holders} <= {segment_refs(segid) + conn_id}:
                # The last holder releases the segment binding; nobody may have joined since the read.
                ops.append(Delete(segment_key(segid)))
                compares.append(Compare(segment_refs(segid), "mod", "<", read_rev + 1, prefix=True))
            return Plan(compares, ops, lambda rev: rev)

        return await self.commit(f"deleted l2-gateway-connection {conn_id}", attempt)  # type: ignore[no-any-return]

