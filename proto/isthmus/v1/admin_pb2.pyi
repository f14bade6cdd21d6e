from isthmus.v1 import logs_pb2 as _logs_pb2
from isthmus.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("site", "connected", "coordinator", "desired_revision", "applied_revision", "driver", "agent_version", "last_error", "started_unix_ms", "partitioned", "link_down_since_unix_ms", "overrides", "sync_enabled", "sync_connected", "sync_region", "sync_states")
    class SyncStatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SITE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONED_FIELD_NUMBER: _ClassVar[int]
    LINK_DOWN_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    SYNC_ENABLED_FIELD_NUMBER: _ClassVar[int]
    SYNC_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SYNC_REGION_FIELD_NUMBER: _ClassVar[int]
    SYNC_STATES_FIELD_NUMBER: _ClassVar[int]
    site: str
    connected: bool
    coordinator: str
    desired_revision: int
    applied_revision: int
    driver: str
    agent_version: str
    last_error: str
    started_unix_ms: int
    partitioned: bool
    link_down_since_unix_ms: int
    overrides: int
    sync_enabled: bool
    sync_connected: bool
    sync_region: str
    sync_states: _containers.ScalarMap[str, int]
    def __init__(self, site: _Optional[str] = ..., connected: _Optional[bool] = ..., coordinator: _Optional[str] = ..., desired_revision: _Optional[int] = ..., applied_revision: _Optional[int] = ..., driver: _Optional[str] = ..., agent_version: _Optional[str] = ..., last_error: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., partitioned: _Optional[bool] = ..., link_down_since_unix_ms: _Optional[int] = ..., overrides: _Optional[int] = ..., sync_enabled: _Optional[bool] = ..., sync_connected: _Optional[bool] = ..., sync_region: _Optional[str] = ..., sync_states: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListPeeringsRequest(_message.Message):
    __slots__ = ("page_token",)
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_token: str
    def __init__(self, page_token: _Optional[str] = ...) -> None: ...

class LocalPeering(_message.Message):
    __slots__ = ("desired", "observed", "override")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    desired: _types_pb2.DesiredPeering
    observed: _types_pb2.ObservedPeering
    override: _types_pb2.Override
    def __init__(self, desired: _Optional[_Union[_types_pb2.DesiredPeering, _Mapping]] = ..., observed: _Optional[_Union[_types_pb2.ObservedPeering, _Mapping]] = ..., override: _Optional[_Union[_types_pb2.Override, _Mapping]] = ...) -> None: ...

class ListPeeringsResponse(_message.Message):
    __slots__ = ("revision", "peerings", "next_page_token")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PEERINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    revision: int
    peerings: _containers.RepeatedCompositeFieldContainer[LocalPeering]
    next_page_token: str
    def __init__(self, revision: _Optional[int] = ..., peerings: _Optional[_Iterable[_Union[LocalPeering, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ResyncRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResyncResponse(_message.Message):
    __slots__ = ("applied_revision", "peerings")
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    PEERINGS_FIELD_NUMBER: _ClassVar[int]
    applied_revision: int
    peerings: int
    def __init__(self, applied_revision: _Optional[int] = ..., peerings: _Optional[int] = ...) -> None: ...

class DisablePeeringRequest(_message.Message):
    __slots__ = ("connection", "ttl_seconds", "reason")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    connection: str
    ttl_seconds: int
    reason: str
    def __init__(self, connection: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class EnablePeeringRequest(_message.Message):
    __slots__ = ("connection",)
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    connection: str
    def __init__(self, connection: _Optional[str] = ...) -> None: ...

class AddLocalPeeringRequest(_message.Message):
    __slots__ = ("peering", "ttl_seconds", "reason")
    PEERING_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    peering: _types_pb2.DesiredPeering
    ttl_seconds: int
    reason: str
    def __init__(self, peering: _Optional[_Union[_types_pb2.DesiredPeering, _Mapping]] = ..., ttl_seconds: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RemoveOverrideRequest(_message.Message):
    __slots__ = ("connection",)
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    connection: str
    def __init__(self, connection: _Optional[str] = ...) -> None: ...

class RemoveOverrideResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: _types_pb2.Override
    def __init__(self, removed: _Optional[_Union[_types_pb2.Override, _Mapping]] = ...) -> None: ...

class ListOverridesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOverridesResponse(_message.Message):
    __slots__ = ("overrides",)
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    overrides: _containers.RepeatedCompositeFieldContainer[_types_pb2.Override]
    def __init__(self, overrides: _Optional[_Iterable[_Union[_types_pb2.Override, _Mapping]]] = ...) -> None: ...

class JournalRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class JournalResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_types_pb2.JournalEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[_types_pb2.JournalEntry, _Mapping]]] = ...) -> None: ...
