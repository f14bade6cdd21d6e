from isthmus.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    PUT: _ClassVar[EventType]
    DELETE: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
PUT: EventType
DELETE: EventType

class GetSiteRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListSitesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSitesResponse(_message.Message):
    __slots__ = ("sites", "revision", "next_page_token")
    SITES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[_types_pb2.Site]
    revision: int
    next_page_token: str
    def __init__(self, sites: _Optional[_Iterable[_Union[_types_pb2.Site, _Mapping]]] = ..., revision: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteSiteRequest(_message.Message):
    __slots__ = ("name", "version", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    force: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class GetEndpointRequest(_message.Message):
    __slots__ = ("site", "name")
    SITE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    site: str
    name: str
    def __init__(self, site: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ("site", "page_size", "page_token")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    site: str
    page_size: int
    page_token: str
    def __init__(self, site: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "revision", "next_page_token")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[_types_pb2.Endpoint]
    revision: int
    next_page_token: str
    def __init__(self, endpoints: _Optional[_Iterable[_Union[_types_pb2.Endpoint, _Mapping]]] = ..., revision: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteEndpointRequest(_message.Message):
    __slots__ = ("site", "name", "version")
    SITE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    site: str
    name: str
    version: int
    def __init__(self, site: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetConnectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListConnectionsRequest(_message.Message):
    __slots__ = ("site", "page_size", "page_token")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    site: str
    page_size: int
    page_token: str
    def __init__(self, site: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConnectionsResponse(_message.Message):
    __slots__ = ("connections", "revision", "next_page_token")
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    connections: _containers.RepeatedCompositeFieldContainer[_types_pb2.Connection]
    revision: int
    next_page_token: str
    def __init__(self, connections: _Optional[_Iterable[_Union[_types_pb2.Connection, _Mapping]]] = ..., revision: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteConnectionRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PeeringStatus(_message.Message):
    __slots__ = ("desired", "observed", "override", "trimmed")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    TRIMMED_FIELD_NUMBER: _ClassVar[int]
    desired: _types_pb2.DesiredPeering
    observed: _types_pb2.ObservedPeering
    override: _types_pb2.Override
    trimmed: bool
    def __init__(self, desired: _Optional[_Union[_types_pb2.DesiredPeering, _Mapping]] = ..., observed: _Optional[_Union[_types_pb2.ObservedPeering, _Mapping]] = ..., override: _Optional[_Union[_types_pb2.Override, _Mapping]] = ..., trimmed: _Optional[bool] = ...) -> None: ...

class SiteStatus(_message.Message):
    __slots__ = ("site", "defined", "connected", "coordinator", "agent_version", "agent_host", "driver", "desired_revision", "applied_revision", "connected_since_unix_ms", "last_report_unix_ms", "peerings", "overrides", "journal", "external", "next_page_token", "disconnected_since_unix_ms")
    SITE_FIELD_NUMBER: _ClassVar[int]
    DEFINED_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_HOST_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PEERINGS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DISCONNECTED_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    site: str
    defined: bool
    connected: bool
    coordinator: str
    agent_version: str
    agent_host: str
    driver: str
    desired_revision: int
    applied_revision: int
    connected_since_unix_ms: int
    last_report_unix_ms: int
    peerings: _containers.RepeatedCompositeFieldContainer[PeeringStatus]
    overrides: _containers.RepeatedCompositeFieldContainer[_types_pb2.Override]
    journal: _containers.RepeatedCompositeFieldContainer[_types_pb2.JournalEntry]
    external: bool
    next_page_token: str
    disconnected_since_unix_ms: int
    def __init__(self, site: _Optional[str] = ..., defined: _Optional[bool] = ..., connected: _Optional[bool] = ..., coordinator: _Optional[str] = ..., agent_version: _Optional[str] = ..., agent_host: _Optional[str] = ..., driver: _Optional[str] = ..., desired_revision: _Optional[int] = ..., applied_revision: _Optional[int] = ..., connected_since_unix_ms: _Optional[int] = ..., last_report_unix_ms: _Optional[int] = ..., peerings: _Optional[_Iterable[_Union[PeeringStatus, _Mapping]]] = ..., overrides: _Optional[_Iterable[_Union[_types_pb2.Override, _Mapping]]] = ..., journal: _Optional[_Iterable[_Union[_types_pb2.JournalEntry, _Mapping]]] = ..., external: _Optional[bool] = ..., next_page_token: _Optional[str] = ..., disconnected_since_unix_ms: _Optional[int] = ...) -> None: ...

class GetSiteStatusRequest(_message.Message):
    __slots__ = ("site", "page_token")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    site: str
    page_token: str
    def __init__(self, site: _Optional[str] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSiteStatusRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSiteStatusResponse(_message.Message):
    __slots__ = ("sites", "revision", "next_page_token")
    SITES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[SiteStatus]
    revision: int
    next_page_token: str
    def __init__(self, sites: _Optional[_Iterable[_Union[SiteStatus, _Mapping]]] = ..., revision: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("kinds", "site", "start_revision")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    site: str
    start_revision: int
    def __init__(self, kinds: _Optional[_Iterable[str]] = ..., site: _Optional[str] = ..., start_revision: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "revision", "site", "endpoint", "connection", "status")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    revision: int
    site: _types_pb2.Site
    endpoint: _types_pb2.Endpoint
    connection: _types_pb2.Connection
    status: SiteStatus
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., revision: _Optional[int] = ..., site: _Optional[_Union[_types_pb2.Site, _Mapping]] = ..., endpoint: _Optional[_Union[_types_pb2.Endpoint, _Mapping]] = ..., connection: _Optional[_Union[_types_pb2.Connection, _Mapping]] = ..., status: _Optional[_Union[SiteStatus, _Mapping]] = ...) -> None: ...

class CoordinatorInfo(_message.Message):
    __slots__ = ("id", "address", "leader", "version", "started_unix_ms", "agents")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    leader: bool
    version: str
    started_unix_ms: int
    agents: int
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., leader: _Optional[bool] = ..., version: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., agents: _Optional[int] = ...) -> None: ...

class ListCoordinatorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCoordinatorsResponse(_message.Message):
    __slots__ = ("coordinators",)
    COORDINATORS_FIELD_NUMBER: _ClassVar[int]
    coordinators: _containers.RepeatedCompositeFieldContainer[CoordinatorInfo]
    def __init__(self, coordinators: _Optional[_Iterable[_Union[CoordinatorInfo, _Mapping]]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("time_unix_ms", "who", "role", "method", "allowed", "detail", "coordinator", "on_behalf_of", "count", "first_unix_ms")
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    time_unix_ms: int
    who: str
    role: str
    method: str
    allowed: bool
    detail: str
    coordinator: str
    on_behalf_of: str
    count: int
    first_unix_ms: int
    def __init__(self, time_unix_ms: _Optional[int] = ..., who: _Optional[str] = ..., role: _Optional[str] = ..., method: _Optional[str] = ..., allowed: _Optional[bool] = ..., detail: _Optional[str] = ..., coordinator: _Optional[str] = ..., on_behalf_of: _Optional[str] = ..., count: _Optional[int] = ..., first_unix_ms: _Optional[int] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("limit", "page_token")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limit: int
    page_token: str
    def __init__(self, limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
