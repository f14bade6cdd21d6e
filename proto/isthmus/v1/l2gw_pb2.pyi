from isthmus.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GatewayDeviceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATEWAY_DEVICE_TYPE_UNSPECIFIED: _ClassVar[GatewayDeviceType]
    GATEWAY_DEVICE_TYPE_HW_VTEP: _ClassVar[GatewayDeviceType]
    GATEWAY_DEVICE_TYPE_ROUTER_VTEP: _ClassVar[GatewayDeviceType]
    GATEWAY_DEVICE_TYPE_NETWORK_VLAN: _ClassVar[GatewayDeviceType]
GATEWAY_DEVICE_TYPE_UNSPECIFIED: GatewayDeviceType
GATEWAY_DEVICE_TYPE_HW_VTEP: GatewayDeviceType
GATEWAY_DEVICE_TYPE_ROUTER_VTEP: GatewayDeviceType
GATEWAY_DEVICE_TYPE_NETWORK_VLAN: GatewayDeviceType

class GatewayDevice(_message.Message):
    __slots__ = ("id", "site", "name", "type", "tunnel_ips", "management", "version")
    class ManagementEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_IPS_FIELD_NUMBER: _ClassVar[int]
    MANAGEMENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    site: str
    name: str
    type: GatewayDeviceType
    tunnel_ips: _containers.RepeatedScalarFieldContainer[str]
    management: _containers.ScalarMap[str, str]
    version: int
    def __init__(self, id: _Optional[str] = ..., site: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[GatewayDeviceType, str]] = ..., tunnel_ips: _Optional[_Iterable[str]] = ..., management: _Optional[_Mapping[str, str]] = ..., version: _Optional[int] = ...) -> None: ...

class L2GatewayInterface(_message.Message):
    __slots__ = ("name", "segmentation_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    segmentation_id: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., segmentation_id: _Optional[_Iterable[int]] = ...) -> None: ...

class L2GatewayDeviceRef(_message.Message):
    __slots__ = ("device_id", "segmentation_id", "interfaces")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_ID_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    segmentation_id: int
    interfaces: _containers.RepeatedCompositeFieldContainer[L2GatewayInterface]
    def __init__(self, device_id: _Optional[str] = ..., segmentation_id: _Optional[int] = ..., interfaces: _Optional[_Iterable[_Union[L2GatewayInterface, _Mapping]]] = ...) -> None: ...

class L2Gateway(_message.Message):
    __slots__ = ("id", "name", "project_id", "devices", "version", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    project_id: str
    devices: _containers.RepeatedCompositeFieldContainer[L2GatewayDeviceRef]
    version: int
    owner: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., project_id: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[L2GatewayDeviceRef, _Mapping]]] = ..., version: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class L2GatewayConnection(_message.Message):
    __slots__ = ("id", "l2_gateway_id", "network_id", "segmentation_id", "project_id", "version", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    L2_GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    l2_gateway_id: str
    network_id: str
    segmentation_id: int
    project_id: str
    version: int
    owner: str
    def __init__(self, id: _Optional[str] = ..., l2_gateway_id: _Optional[str] = ..., network_id: _Optional[str] = ..., segmentation_id: _Optional[int] = ..., project_id: _Optional[str] = ..., version: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class GetByIdRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteByIdRequest(_message.Message):
    __slots__ = ("id", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteByIdResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ListGatewayDevicesRequest(_message.Message):
    __slots__ = ("site", "page_size", "page_token")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    site: str
    page_size: int
    page_token: str
    def __init__(self, site: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGatewayDevicesResponse(_message.Message):
    __slots__ = ("devices", "next_page_token")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[GatewayDevice]
    next_page_token: str
    def __init__(self, devices: _Optional[_Iterable[_Union[GatewayDevice, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListL2GatewaysRequest(_message.Message):
    __slots__ = ("project_id", "page_size", "page_token")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    page_size: int
    page_token: str
    def __init__(self, project_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListL2GatewaysResponse(_message.Message):
    __slots__ = ("l2_gateways", "next_page_token")
    L2_GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    l2_gateways: _containers.RepeatedCompositeFieldContainer[L2Gateway]
    next_page_token: str
    def __init__(self, l2_gateways: _Optional[_Iterable[_Union[L2Gateway, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListL2GatewayConnectionsRequest(_message.Message):
    __slots__ = ("l2_gateway_id", "project_id", "page_size", "page_token")
    L2_GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    l2_gateway_id: str
    project_id: str
    page_size: int
    page_token: str
    def __init__(self, l2_gateway_id: _Optional[str] = ..., project_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListL2GatewayConnectionsResponse(_message.Message):
    __slots__ = ("l2_gateway_connections", "next_page_token")
    L2_GATEWAY_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    l2_gateway_connections: _containers.RepeatedCompositeFieldContainer[L2GatewayConnection]
    next_page_token: str
    def __init__(self, l2_gateway_connections: _Optional[_Iterable[_Union[L2GatewayConnection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TunnelStatus(_message.Message):
    __slots__ = ("peering", "local_device", "remote_site", "remote_device", "observed")
    PEERING_FIELD_NUMBER: _ClassVar[int]
    LOCAL_DEVICE_FIELD_NUMBER: _ClassVar[int]
    REMOTE_SITE_FIELD_NUMBER: _ClassVar[int]
    REMOTE_DEVICE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    peering: str
    local_device: str
    remote_site: str
    remote_device: str
    observed: _types_pb2.ObservedPeering
    def __init__(self, peering: _Optional[str] = ..., local_device: _Optional[str] = ..., remote_site: _Optional[str] = ..., remote_device: _Optional[str] = ..., observed: _Optional[_Union[_types_pb2.ObservedPeering, _Mapping]] = ...) -> None: ...

class SiteTunnels(_message.Message):
    __slots__ = ("site", "agent_connected", "tunnels", "complete")
    SITE_FIELD_NUMBER: _ClassVar[int]
    AGENT_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TUNNELS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    site: str
    agent_connected: bool
    tunnels: _containers.RepeatedCompositeFieldContainer[TunnelStatus]
    complete: bool
    def __init__(self, site: _Optional[str] = ..., agent_connected: _Optional[bool] = ..., tunnels: _Optional[_Iterable[_Union[TunnelStatus, _Mapping]]] = ..., complete: _Optional[bool] = ...) -> None: ...

class L2GatewayConnectionStatus(_message.Message):
    __slots__ = ("connection", "sites", "missing_sites")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    MISSING_SITES_FIELD_NUMBER: _ClassVar[int]
    connection: L2GatewayConnection
    sites: _containers.RepeatedCompositeFieldContainer[SiteTunnels]
    missing_sites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, connection: _Optional[_Union[L2GatewayConnection, _Mapping]] = ..., sites: _Optional[_Iterable[_Union[SiteTunnels, _Mapping]]] = ..., missing_sites: _Optional[_Iterable[str]] = ...) -> None: ...
