from isthmus.v1 import logs_pb2 as _logs_pb2
from isthmus.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("site", "agent_version", "applied_revision", "driver", "host", "instance_id", "desired_revision", "desired_digest", "journal_limit", "pieces")
    SITE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REVISION_FIELD_NUMBER: _ClassVar[int]
    DESIRED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    site: str
    agent_version: str
    applied_revision: int
    driver: str
    host: str
    instance_id: str
    desired_revision: int
    desired_digest: str
    journal_limit: int
    pieces: bool
    def __init__(self, site: _Optional[str] = ..., agent_version: _Optional[str] = ..., applied_revision: _Optional[int] = ..., driver: _Optional[str] = ..., host: _Optional[str] = ..., instance_id: _Optional[str] = ..., desired_revision: _Optional[int] = ..., desired_digest: _Optional[str] = ..., journal_limit: _Optional[int] = ..., pieces: _Optional[bool] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ObservedReport(_message.Message):
    __slots__ = ("revision", "peerings", "changes", "gone")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PEERINGS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    peerings: _containers.RepeatedCompositeFieldContainer[_types_pb2.ObservedPeering]
    changes: bool
    gone: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, revision: _Optional[int] = ..., peerings: _Optional[_Iterable[_Union[_types_pb2.ObservedPeering, _Mapping]]] = ..., changes: _Optional[bool] = ..., gone: _Optional[_Iterable[str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LocalReport(_message.Message):
    __slots__ = ("overrides", "journal", "partitioned")
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_FIELD_NUMBER: _ClassVar[int]
    PARTITIONED_FIELD_NUMBER: _ClassVar[int]
    overrides: _containers.RepeatedCompositeFieldContainer[_types_pb2.Override]
    journal: _containers.RepeatedCompositeFieldContainer[_types_pb2.JournalEntry]
    partitioned: bool
    def __init__(self, overrides: _Optional[_Iterable[_Union[_types_pb2.Override, _Mapping]]] = ..., journal: _Optional[_Iterable[_Union[_types_pb2.JournalEntry, _Mapping]]] = ..., partitioned: _Optional[bool] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "ack", "observed", "heartbeat", "local", "log_answer", "health")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    LOG_ANSWER_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    observed: ObservedReport
    heartbeat: Heartbeat
    local: LocalReport
    log_answer: LogAnswer
    health: _logs_pb2.HealthReport
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., observed: _Optional[_Union[ObservedReport, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., local: _Optional[_Union[LocalReport, _Mapping]] = ..., log_answer: _Optional[_Union[LogAnswer, _Mapping]] = ..., health: _Optional[_Union[_logs_pb2.HealthReport, _Mapping]] = ...) -> None: ...

class LogAnswer(_message.Message):
    __slots__ = ("id", "page", "sources", "error", "code")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    id: int
    page: _logs_pb2.LogPage
    sources: _logs_pb2.ListLogSourcesResponse
    error: str
    code: str
    def __init__(self, id: _Optional[int] = ..., page: _Optional[_Union[_logs_pb2.LogPage, _Mapping]] = ..., sources: _Optional[_Union[_logs_pb2.ListLogSourcesResponse, _Mapping]] = ..., error: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("revision", "peerings", "more")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PEERINGS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    peerings: _containers.RepeatedCompositeFieldContainer[_types_pb2.DesiredPeering]
    more: bool
    def __init__(self, revision: _Optional[int] = ..., peerings: _Optional[_Iterable[_Union[_types_pb2.DesiredPeering, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class Delta(_message.Message):
    __slots__ = ("revision", "upserts", "removes", "base_revision", "more")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    REMOVES_FIELD_NUMBER: _ClassVar[int]
    BASE_REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    upserts: _containers.RepeatedCompositeFieldContainer[_types_pb2.DesiredPeering]
    removes: _containers.RepeatedScalarFieldContainer[str]
    base_revision: int
    more: bool
    def __init__(self, revision: _Optional[int] = ..., upserts: _Optional[_Iterable[_Union[_types_pb2.DesiredPeering, _Mapping]]] = ..., removes: _Optional[_Iterable[str]] = ..., base_revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class EventsFrom(_message.Message):
    __slots__ = ("seq", "observed_changes")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_CHANGES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    observed_changes: bool
    def __init__(self, seq: _Optional[int] = ..., observed_changes: _Optional[bool] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("snapshot", "delta", "events_from", "log_request")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FROM_FIELD_NUMBER: _ClassVar[int]
    LOG_REQUEST_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    delta: Delta
    events_from: EventsFrom
    log_request: LogRequest
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., delta: _Optional[_Union[Delta, _Mapping]] = ..., events_from: _Optional[_Union[EventsFrom, _Mapping]] = ..., log_request: _Optional[_Union[LogRequest, _Mapping]] = ...) -> None: ...

class LogRequest(_message.Message):
    __slots__ = ("id", "query", "list_sources")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LIST_SOURCES_FIELD_NUMBER: _ClassVar[int]
    id: int
    query: _logs_pb2.LogQuery
    list_sources: bool
    def __init__(self, id: _Optional[int] = ..., query: _Optional[_Union[_logs_pb2.LogQuery, _Mapping]] = ..., list_sources: _Optional[bool] = ...) -> None: ...
