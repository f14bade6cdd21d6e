from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogQuery(_message.Message):
    __slots__ = ("site", "services", "since_unix_ms", "grep", "level", "limit", "cursor", "follow")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GREP_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    site: str
    services: _containers.RepeatedScalarFieldContainer[str]
    since_unix_ms: int
    grep: str
    level: str
    limit: int
    cursor: str
    follow: bool
    def __init__(self, site: _Optional[str] = ..., services: _Optional[_Iterable[str]] = ..., since_unix_ms: _Optional[int] = ..., grep: _Optional[str] = ..., level: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("time_unix_ms", "site", "service", "level", "text")
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    time_unix_ms: int
    site: str
    service: str
    level: str
    text: str
    def __init__(self, time_unix_ms: _Optional[int] = ..., site: _Optional[str] = ..., service: _Optional[str] = ..., level: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class LogPage(_message.Message):
    __slots__ = ("lines", "cursor", "more", "notes")
    LINES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    cursor: str
    more: bool
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., cursor: _Optional[str] = ..., more: _Optional[bool] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class LogSource(_message.Message):
    __slots__ = ("service", "kind", "location", "readable", "size_bytes", "error")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    READABLE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    service: str
    kind: str
    location: str
    readable: bool
    size_bytes: int
    error: str
    def __init__(self, service: _Optional[str] = ..., kind: _Optional[str] = ..., location: _Optional[str] = ..., readable: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ListLogSourcesRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class ListLogSourcesResponse(_message.Message):
    __slots__ = ("site", "sources")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    site: str
    sources: _containers.RepeatedCompositeFieldContainer[LogSource]
    def __init__(self, site: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[LogSource, _Mapping]]] = ...) -> None: ...

class HealthItem(_message.Message):
    __slots__ = ("service", "kind", "name", "state", "latency_seconds", "detail", "since_unix_ms")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    service: str
    kind: str
    name: str
    state: str
    latency_seconds: float
    detail: str
    since_unix_ms: int
    def __init__(self, service: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., latency_seconds: _Optional[float] = ..., detail: _Optional[str] = ..., since_unix_ms: _Optional[int] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("region", "items", "capacity", "checked_unix_ms", "interval_seconds")
    class CapacityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    REGION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CHECKED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    region: str
    items: _containers.RepeatedCompositeFieldContainer[HealthItem]
    capacity: _containers.ScalarMap[str, int]
    checked_unix_ms: int
    interval_seconds: float
    def __init__(self, region: _Optional[str] = ..., items: _Optional[_Iterable[_Union[HealthItem, _Mapping]]] = ..., capacity: _Optional[_Mapping[str, int]] = ..., checked_unix_ms: _Optional[int] = ..., interval_seconds: _Optional[float] = ...) -> None: ...

class RegionHealth(_message.Message):
    __slots__ = ("site", "report", "stale")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    site: str
    report: HealthReport
    stale: bool
    def __init__(self, site: _Optional[str] = ..., report: _Optional[_Union[HealthReport, _Mapping]] = ..., stale: _Optional[bool] = ...) -> None: ...

class GetHealthRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class GetHealthResponse(_message.Message):
    __slots__ = ("regions",)
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedCompositeFieldContainer[RegionHealth]
    def __init__(self, regions: _Optional[_Iterable[_Union[RegionHealth, _Mapping]]] = ...) -> None: ...
