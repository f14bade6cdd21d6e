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
    __slots__ = ("site", "connected", "coordinator", "desired_revision", "applied_revision", "driver", "agent_version", "last_error", "started_unix_ms")
    SITE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    site: str
    connected: bool
    coordinator: str
    desired_revision: int
    applied_revision: int
    driver: str
    agent_version: str
    last_error: str
    started_unix_ms: int
    def __init__(self, site: _Optional[str] = ..., connected: _Optional[bool] = ..., coordinator: _Optional[str] = ..., desired_revision: _Optional[int] = ..., applied_revision: _Optional[int] = ..., driver: _Optional[str] = ..., agent_version: _Optional[str] = ..., last_error: _Optional[str] = ..., started_unix_ms: _Optional[int] = ...) -> None: ...

class ListPeeringsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LocalPeering(_message.Message):
    __slots__ = ("desired", "observed")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    desired: _types_pb2.DesiredPeering
    observed: _types_pb2.ObservedPeering
    def __init__(self, desired: _Optional[_Union[_types_pb2.DesiredPeering, _Mapping]] = ..., observed: _Optional[_Union[_types_pb2.ObservedPeering, _Mapping]] = ...) -> None: ...

class ListPeeringsResponse(_message.Message):
    __slots__ = ("revision", "peerings")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PEERINGS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    peerings: _containers.RepeatedCompositeFieldContainer[LocalPeering]
    def __init__(self, revision: _Optional[int] = ..., peerings: _Optional[_Iterable[_Union[LocalPeering, _Mapping]]] = ...) -> None: ...

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
