from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SiteKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SITE_KIND_UNSPECIFIED: _ClassVar[SiteKind]
    SITE_KIND_REGION: _ClassVar[SiteKind]
    SITE_KIND_CELL: _ClassVar[SiteKind]
    SITE_KIND_INSTANCE: _ClassVar[SiteKind]
    SITE_KIND_EXTERNAL: _ClassVar[SiteKind]

class EndpointRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_ROLE_UNSPECIFIED: _ClassVar[EndpointRole]
    ENDPOINT_ROLE_LOCAL: _ClassVar[EndpointRole]
    ENDPOINT_ROLE_REMOTE: _ClassVar[EndpointRole]

class ConnectionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTION_TYPE_UNSPECIFIED: _ClassVar[ConnectionType]
    CONNECTION_TYPE_BGP: _ClassVar[ConnectionType]
    CONNECTION_TYPE_VXLAN: _ClassVar[ConnectionType]

class AdminState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADMIN_STATE_UNSPECIFIED: _ClassVar[AdminState]
    ADMIN_STATE_UP: _ClassVar[AdminState]
    ADMIN_STATE_DOWN: _ClassVar[AdminState]

class PeeringState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PEERING_STATE_UNSPECIFIED: _ClassVar[PeeringState]
    PEERING_STATE_ESTABLISHED: _ClassVar[PeeringState]
    PEERING_STATE_CONNECTING: _ClassVar[PeeringState]
    PEERING_STATE_DOWN: _ClassVar[PeeringState]
    PEERING_STATE_ERROR: _ClassVar[PeeringState]

class OverrideKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERRIDE_KIND_UNSPECIFIED: _ClassVar[OverrideKind]
    OVERRIDE_KIND_DISABLE: _ClassVar[OverrideKind]
    OVERRIDE_KIND_ADD: _ClassVar[OverrideKind]
SITE_KIND_UNSPECIFIED: SiteKind
SITE_KIND_REGION: SiteKind
SITE_KIND_CELL: SiteKind
SITE_KIND_INSTANCE: SiteKind
SITE_KIND_EXTERNAL: SiteKind
ENDPOINT_ROLE_UNSPECIFIED: EndpointRole
ENDPOINT_ROLE_LOCAL: EndpointRole
ENDPOINT_ROLE_REMOTE: EndpointRole
CONNECTION_TYPE_UNSPECIFIED: ConnectionType
CONNECTION_TYPE_BGP: ConnectionType
CONNECTION_TYPE_VXLAN: ConnectionType
ADMIN_STATE_UNSPECIFIED: AdminState
ADMIN_STATE_UP: AdminState
ADMIN_STATE_DOWN: AdminState
PEERING_STATE_UNSPECIFIED: PeeringState
PEERING_STATE_ESTABLISHED: PeeringState
PEERING_STATE_CONNECTING: PeeringState
PEERING_STATE_DOWN: PeeringState
PEERING_STATE_ERROR: PeeringState
OVERRIDE_KIND_UNSPECIFIED: OverrideKind
OVERRIDE_KIND_DISABLE: OverrideKind
OVERRIDE_KIND_ADD: OverrideKind

class Site(_message.Message):
    __slots__ = ("name", "kind", "parent", "labels", "description", "version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: SiteKind
    parent: str
    labels: _containers.ScalarMap[str, str]
    description: str
    version: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[SiteKind, str]] = ..., parent: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("site", "name", "address", "asn", "role", "router_id", "properties", "version")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SITE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ASN_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    site: str
    name: str
    address: str
    asn: int
    role: EndpointRole
    router_id: str
    properties: _containers.ScalarMap[str, str]
    version: int
    def __init__(self, site: _Optional[str] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., asn: _Optional[int] = ..., role: _Optional[_Union[EndpointRole, str]] = ..., router_id: _Optional[str] = ..., properties: _Optional[_Mapping[str, str]] = ..., version: _Optional[int] = ...) -> None: ...

class EndpointRef(_message.Message):
    __slots__ = ("site", "name")
    SITE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    site: str
    name: str
    def __init__(self, site: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class BgpParams(_message.Message):
    __slots__ = ("hold_time", "password_ref", "address_families", "import_prefixes", "max_prefixes", "graceful_restart", "reflector")
    HOLD_TIME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_REF_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FAMILIES_FIELD_NUMBER: _ClassVar[int]
    IMPORT_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    MAX_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_RESTART_FIELD_NUMBER: _ClassVar[int]
    REFLECTOR_FIELD_NUMBER: _ClassVar[int]
    hold_time: int
    password_ref: str
    address_families: _containers.RepeatedScalarFieldContainer[str]
    import_prefixes: _containers.RepeatedScalarFieldContainer[str]
    max_prefixes: int
    graceful_restart: int
    reflector: str
    def __init__(self, hold_time: _Optional[int] = ..., password_ref: _Optional[str] = ..., address_families: _Optional[_Iterable[str]] = ..., import_prefixes: _Optional[_Iterable[str]] = ..., max_prefixes: _Optional[int] = ..., graceful_restart: _Optional[int] = ..., reflector: _Optional[str] = ...) -> None: ...

class VxlanParams(_message.Message):
    __slots__ = ("vni", "udp_port", "mtu")
    VNI_FIELD_NUMBER: _ClassVar[int]
    UDP_PORT_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    vni: int
    udp_port: int
    mtu: int
    def __init__(self, vni: _Optional[int] = ..., udp_port: _Optional[int] = ..., mtu: _Optional[int] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("name", "a", "b", "type", "bgp", "vxlan", "admin_state", "description", "version", "policy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    BGP_FIELD_NUMBER: _ClassVar[int]
    VXLAN_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    a: EndpointRef
    b: EndpointRef
    type: ConnectionType
    bgp: BgpParams
    vxlan: VxlanParams
    admin_state: AdminState
    description: str
    version: int
    policy: str
    def __init__(self, name: _Optional[str] = ..., a: _Optional[_Union[EndpointRef, _Mapping]] = ..., b: _Optional[_Union[EndpointRef, _Mapping]] = ..., type: _Optional[_Union[ConnectionType, str]] = ..., bgp: _Optional[_Union[BgpParams, _Mapping]] = ..., vxlan: _Optional[_Union[VxlanParams, _Mapping]] = ..., admin_state: _Optional[_Union[AdminState, str]] = ..., description: _Optional[str] = ..., version: _Optional[int] = ..., policy: _Optional[str] = ...) -> None: ...

class DesiredPeering(_message.Message):
    __slots__ = ("connection", "type", "local", "remote", "bgp", "vxlan", "admin_state")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    BGP_FIELD_NUMBER: _ClassVar[int]
    VXLAN_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    connection: str
    type: ConnectionType
    local: Endpoint
    remote: Endpoint
    bgp: BgpParams
    vxlan: VxlanParams
    admin_state: AdminState
    def __init__(self, connection: _Optional[str] = ..., type: _Optional[_Union[ConnectionType, str]] = ..., local: _Optional[_Union[Endpoint, _Mapping]] = ..., remote: _Optional[_Union[Endpoint, _Mapping]] = ..., bgp: _Optional[_Union[BgpParams, _Mapping]] = ..., vxlan: _Optional[_Union[VxlanParams, _Mapping]] = ..., admin_state: _Optional[_Union[AdminState, str]] = ...) -> None: ...

class ObservedPeering(_message.Message):
    __slots__ = ("connection", "state", "error", "since_unix_ms", "driver", "received_prefixes")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    connection: str
    state: PeeringState
    error: str
    since_unix_ms: int
    driver: str
    received_prefixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, connection: _Optional[str] = ..., state: _Optional[_Union[PeeringState, str]] = ..., error: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., driver: _Optional[str] = ..., received_prefixes: _Optional[_Iterable[str]] = ...) -> None: ...

class Override(_message.Message):
    __slots__ = ("connection", "kind", "peering", "reason", "created_unix_ms", "expires_unix_ms")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PEERING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    connection: str
    kind: OverrideKind
    peering: DesiredPeering
    reason: str
    created_unix_ms: int
    expires_unix_ms: int
    def __init__(self, connection: _Optional[str] = ..., kind: _Optional[_Union[OverrideKind, str]] = ..., peering: _Optional[_Union[DesiredPeering, _Mapping]] = ..., reason: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ...) -> None: ...

class JournalEntry(_message.Message):
    __slots__ = ("seq", "time_unix_ms", "kind", "connection", "message", "level")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time_unix_ms: int
    kind: str
    connection: str
    message: str
    level: str
    def __init__(self, seq: _Optional[int] = ..., time_unix_ms: _Optional[int] = ..., kind: _Optional[str] = ..., connection: _Optional[str] = ..., message: _Optional[str] = ..., level: _Optional[str] = ...) -> None: ...
