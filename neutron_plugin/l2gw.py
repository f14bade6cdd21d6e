"""An isthmus service driver for networking-l2gw: Neutron's l2-gateway API, realized by isthmus.

neutron.conf::

    [DEFAULT]
    service_plugins = router,l2gw
    [service_providers]
    service_provider = L2GW:isthmus:isthmus.neutron_plugin.l2gw.IsthmusL2gwDriver:default
    [isthmus]
    coordinator = 127.0.0.1:7800

Every l2-gateway and l2-gateway-connection Neutron creates exists in isthmus under the same id, created
inside Neutron's database transaction (precommit): when isthmus refuses, Neutron refuses with the same
message (400 naming the field, 409 for a conflict, 503 when the coordinator cannot be reached) and the
transaction leaves no row. Deletes go to isthmus first, so a refused delete leaves both as they were.

The border form (``{"device_id": ..., "segmentation_id": ...}``, no interfaces, VXLAN VNIs up to
16777215, global scope) is accepted through isthmus' own validator for ``type:l2gwdevice_list``, which
this driver puts in place of networking-l2gw's (``install_border_validator``); it rewrites a border
device into networking-l2gw's stored form, one interface with an empty name carrying the segmentation
id, which ``gateway_request`` turns back into the border form for isthmus.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from networking_l2gw.services.l2gateway.common import constants as l2gw_const
from networking_l2gw.services.l2gateway.common import l2gw_validators
from networking_l2gw.services.l2gateway.service_drivers import L2gwDriver
from neutron_lib import exceptions as n_exc
from neutron_lib.api import validators
from neutron_lib.plugins import directory

from isthmus.neutron_plugin import config, resync
from isthmus.neutron_plugin.client import Coordinator, CoordinatorError
from isthmus.neutron_plugin.errors import translate
from isthmus.neutron_plugin.mapping import BORDER_INTERFACE, connection_request, gateway_request, is_border

LOG = logging.getLogger(__name__)
SERVICE = "BorderGatewayService"
VALIDATOR = "type:l2gwdevice_list"
MAX_VNI = 16777215
OWNER = "neutron"  # isthmus' owner field of what Neutron made: its resync manages only those


# ---------------------------------------------------------------- the border form at the API layer

_upstream_validate = l2gw_validators.validate_gwdevice_list


def validate_devices(data: Any, valid_values: Any = None) -> str | None:
    """``type:l2gwdevice_list``: networking-l2gw's standard form, or the border form (rewritten in place).

    A border device is ``{"device_id": ID, "segmentation_id": N}`` (or MidoNet's ``segmentation-id``) with
    no ``device_name`` and no ``interfaces``; N is 1..16777215 here, isthmus checks it against the device's
    type. Returns an error message naming the field, or None.
    """
    if not isinstance(data, list) or not data:
        return "devices: give a list of at least one device"
    for i, device in enumerate(data):
        if not isinstance(device, dict):
            return f"devices[{i}]: is not an object"
        if "device_id" not in device and "device_name" in device:
            continue
        unknown = set(device) - {"device_id", "segmentation_id", "segmentation-id"}
        if unknown:
            return (f"devices[{i}]: a border device has device_id and segmentation_id only, "
                    f"not {', '.join(sorted(unknown))}")
        device_id = device.get("device_id")
        if not isinstance(device_id, str) or not device_id.strip() or len(device_id) > 255:
            return f"devices[{i}].device_id: give the id of an isthmus gateway device"
        seg: Any = device.get("segmentation_id", device.get("segmentation-id"))
        try:
            seg_id = int(seg)
        except (TypeError, ValueError):
            return f"devices[{i}].segmentation_id: {seg!r} is not a number"
        if isinstance(seg, bool) or not 1 <= seg_id <= MAX_VNI:
            return f"devices[{i}].segmentation_id: {seg} is not in 1..{MAX_VNI}"
        device.clear()
        device.update({"device_name": device_id.strip(),
                       "interfaces": [{"name": BORDER_INTERFACE, l2gw_const.SEG_ID: [seg_id]}]})
    standard = [d for d in data if not is_border(d)]
    return _upstream_validate(standard, valid_values) if standard else None


def install_border_validator() -> None:
    """Put ``validate_devices`` in place of networking-l2gw's validator, where the API layer looks it up.

    networking-l2gw registers its validator when its extension module runs (neutron runs it again when it
    loads the extension from its path); neutron_lib refuses a second registration whose source differs,
    so the module attribute is replaced too. Raises RuntimeError when networking-l2gw no longer registers
    the validator under the expected name: the border form would then be refused with a misleading 400.
    """
    import networking_l2gw.extensions.l2gateway  # noqa: F401  (registers the upstream validator first)

    if VALIDATOR not in validators.validators:
        raise RuntimeError(f"networking-l2gw registers no {VALIDATOR} validator: isthmus cannot accept the "
                           "border form; this networking-l2gw release is not supported")
    l2gw_validators.validate_gwdevice_list = validate_devices
    validators.validators[VALIDATOR] = validate_devices
    LOG.info("isthmus: %s accepts the border form (device_id + segmentation_id)", VALIDATOR)


class IsthmusL2gwDriver(L2gwDriver):
    """networking-l2gw's service driver hooks, each one call to the coordinator's BorderGatewayService."""

    def __init__(self, service_plugin: Any, validator: Any = None) -> None:
        super().__init__(service_plugin, validator)
        install_border_validator()
        self.conf = config.register()
        self.coordinator: Coordinator = config.coordinator(self.conf)
        if self.conf.isthmus.resync_on_start:
            threading.Thread(target=self._resync_at_start, name="isthmus-resync", daemon=True).start()

    @property
    def service_type(self) -> str:
        return str(l2gw_const.L2GW)

    def _call(self, context: Any, method: str, request: dict[str, Any], resource: str,
              gone_is_done: bool = False) -> dict[str, Any]:
        """``method`` at the coordinator; a refusal as Neutron's exception (NOT_FOUND is no refusal for a delete,
        ``gone_is_done``)."""
        try:
            return self.coordinator.call(SERVICE, method, request, on_behalf_of=config.on_behalf_of(context))
        except CoordinatorError as exc:
            if gone_is_done and exc.code == "NOT_FOUND":
                return {}
            LOG.warning("isthmus refused %s %s: %s", method, request.get("id", ""), exc)
            raise translate(exc, resource) from None

    # ------------------------------------------------------------ l2-gateways

    def create_l2_gateway(self, context: Any, l2_gateway: dict[str, Any]) -> None:
        """Before Neutron's write: fix the id, so isthmus and Neutron hold the gateway under the same one."""
        l2_gateway["l2_gateway"].setdefault("id", str(uuid.uuid4()))

    def create_l2_gateway_precommit(self, context: Any, l2_gateway: dict[str, Any]) -> None:
        self._call(context, "CreateL2Gateway", {**gateway_request(l2_gateway), "owner": OWNER}, "l2_gateway")

    def update_l2_gateway_precommit(self, context: Any, l2_gateway: dict[str, Any]) -> None:
        request = gateway_request(l2_gateway)
        current = self._call(context, "GetL2Gateway", {"id": request["id"]}, "l2_gateway")
        request["version"] = current.get("version", 0)
        self._call(context, "UpdateL2Gateway", request, "l2_gateway")

    def delete_l2_gateway(self, context: Any, l2_gateway_id: str) -> None:
        """Before Neutron's delete: isthmus first, so a refusal leaves both as they were."""
        self._call(context, "DeleteL2Gateway", {"id": l2_gateway_id}, "l2_gateway", gone_is_done=True)

    # ------------------------------------------------------------ l2-gateway-connections

    def create_l2_gateway_connection(self, context: Any, l2_gateway_connection: dict[str, Any]) -> None:
        """Before Neutron's write: the network's project must be the gateway's (networking-l2gw does not check)."""
        conn = l2_gateway_connection["l2_gateway_connection"]
        gateway = self.service_plugin.get_l2_gateway(context, conn["l2_gateway_id"])
        network = directory.get_plugin().get_network(context, conn["network_id"])
        if network.get("tenant_id") != gateway.get("tenant_id"):
            raise n_exc.BadRequest(
                resource="l2_gateway_connection",
                msg=(f"project_id: network {conn['network_id']} belongs to project {network.get('tenant_id')}, "
                     f"l2-gateway {conn['l2_gateway_id']} to project {gateway.get('tenant_id')}"))

    def create_l2_gateway_connection_precommit(self, context: Any, l2_gateway_connection: dict[str, Any]) -> None:
        self._call(context, "CreateL2GatewayConnection", {**connection_request(l2_gateway_connection), "owner": OWNER},
                   "l2_gateway_connection")

    def delete_l2_gateway_connection(self, context: Any, l2_gateway_connection_id: str) -> None:
        self._call(context, "DeleteL2GatewayConnection", {"id": l2_gateway_connection_id}, "l2_gateway_connection",
                   gone_is_done=True)

    # ------------------------------------------------------------ drift

    def _resync_at_start(self) -> None:
        try:
            report = resync.run(self.service_plugin, self.coordinator, repair=True)
            LOG.info("isthmus resync at start: %s", report.summary())
        except Exception:  # noqa: BLE001  (a failed resync must not stop neutron-server)
            LOG.exception("isthmus resync at start failed; run `python3 -m isthmus.neutron_plugin.resync`")
