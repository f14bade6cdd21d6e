from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QuotaLimit(_message.Message):
    __slots__ = ("project", "resource", "hard", "soft", "version")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    project: str
    resource: str
    hard: int
    soft: int
    version: int
    def __init__(self, project: _Optional[str] = ..., resource: _Optional[str] = ..., hard: _Optional[int] = ..., soft: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class UnsetQuotaRequest(_message.Message):
    __slots__ = ("project", "resource")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    project: str
    resource: str
    def __init__(self, project: _Optional[str] = ..., resource: _Optional[str] = ...) -> None: ...

class UnsetQuotaResponse(_message.Message):
    __slots__ = ("revision", "removed")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    removed: int
    def __init__(self, revision: _Optional[int] = ..., removed: _Optional[int] = ...) -> None: ...

class GetQuotaRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class ListQuotasRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class RegionUsage(_message.Message):
    __slots__ = ("region", "known", "usage", "limit", "target", "setting", "reason", "stale", "updated_unix_ms")
    REGION_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SETTING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    region: str
    known: bool
    usage: int
    limit: int
    target: int
    setting: int
    reason: str
    stale: bool
    updated_unix_ms: int
    def __init__(self, region: _Optional[str] = ..., known: _Optional[bool] = ..., usage: _Optional[int] = ..., limit: _Optional[int] = ..., target: _Optional[int] = ..., setting: _Optional[int] = ..., reason: _Optional[str] = ..., stale: _Optional[bool] = ..., updated_unix_ms: _Optional[int] = ...) -> None: ...

class ResourceQuota(_message.Message):
    __slots__ = ("resource", "hard", "soft", "regions", "total", "headroom", "soft_exceeded")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    SOFT_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    resource: str
    hard: int
    soft: int
    regions: _containers.RepeatedCompositeFieldContainer[RegionUsage]
    total: int
    headroom: int
    soft_exceeded: bool
    def __init__(self, resource: _Optional[str] = ..., hard: _Optional[int] = ..., soft: _Optional[int] = ..., regions: _Optional[_Iterable[_Union[RegionUsage, _Mapping]]] = ..., total: _Optional[int] = ..., headroom: _Optional[int] = ..., soft_exceeded: _Optional[bool] = ...) -> None: ...

class ProjectQuota(_message.Message):
    __slots__ = ("project", "resources")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    project: str
    resources: _containers.RepeatedCompositeFieldContainer[ResourceQuota]
    def __init__(self, project: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[ResourceQuota, _Mapping]]] = ...) -> None: ...

class ListQuotasResponse(_message.Message):
    __slots__ = ("limits", "next_page_token")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.RepeatedCompositeFieldContainer[QuotaLimit]
    next_page_token: str
    def __init__(self, limits: _Optional[_Iterable[_Union[QuotaLimit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RegionCapacity(_message.Message):
    __slots__ = ("region", "compute_known", "vcpus", "vcpus_used", "ram_mb", "ram_mb_used", "instances", "network_objects", "stale", "updated_unix_ms", "source")
    class NetworkObjectsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    REGION_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_KNOWN_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    VCPUS_USED_FIELD_NUMBER: _ClassVar[int]
    RAM_MB_FIELD_NUMBER: _ClassVar[int]
    RAM_MB_USED_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    region: str
    compute_known: bool
    vcpus: int
    vcpus_used: int
    ram_mb: int
    ram_mb_used: int
    instances: int
    network_objects: _containers.ScalarMap[str, int]
    stale: bool
    updated_unix_ms: int
    source: str
    def __init__(self, region: _Optional[str] = ..., compute_known: _Optional[bool] = ..., vcpus: _Optional[int] = ..., vcpus_used: _Optional[int] = ..., ram_mb: _Optional[int] = ..., ram_mb_used: _Optional[int] = ..., instances: _Optional[int] = ..., network_objects: _Optional[_Mapping[str, int]] = ..., stale: _Optional[bool] = ..., updated_unix_ms: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class GetCapacityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("regions", "total")
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedCompositeFieldContainer[RegionCapacity]
    total: RegionCapacity
    def __init__(self, regions: _Optional[_Iterable[_Union[RegionCapacity, _Mapping]]] = ..., total: _Optional[_Union[RegionCapacity, _Mapping]] = ...) -> None: ...

class AddressRecord(_message.Message):
    __slots__ = ("kind", "id", "region", "project", "network", "ips", "mac", "cidr", "device", "name", "network_name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_NAME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    region: str
    project: str
    network: str
    ips: _containers.RepeatedScalarFieldContainer[str]
    mac: str
    cidr: str
    device: str
    name: str
    network_name: str
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ..., region: _Optional[str] = ..., project: _Optional[str] = ..., network: _Optional[str] = ..., ips: _Optional[_Iterable[str]] = ..., mac: _Optional[str] = ..., cidr: _Optional[str] = ..., device: _Optional[str] = ..., name: _Optional[str] = ..., network_name: _Optional[str] = ...) -> None: ...

class AddressKey(_message.Message):
    __slots__ = ("kind", "id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class ListAddressesRequest(_message.Message):
    __slots__ = ("query", "page_size", "page_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    page_size: int
    page_token: str
    def __init__(self, query: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAddressesResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AddressRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[AddressRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddressConflict(_message.Message):
    __slots__ = ("kind", "value", "domain", "records")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    value: str
    domain: str
    records: _containers.RepeatedCompositeFieldContainer[AddressRecord]
    def __init__(self, kind: _Optional[str] = ..., value: _Optional[str] = ..., domain: _Optional[str] = ..., records: _Optional[_Iterable[_Union[AddressRecord, _Mapping]]] = ...) -> None: ...

class ListAddressConflictsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAddressConflictsResponse(_message.Message):
    __slots__ = ("conflicts", "next_page_token")
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conflicts: _containers.RepeatedCompositeFieldContainer[AddressConflict]
    next_page_token: str
    def __init__(self, conflicts: _Optional[_Iterable[_Union[AddressConflict, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class NetworkRef(_message.Message):
    __slots__ = ("region", "network")
    REGION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    region: str
    network: str
    def __init__(self, region: _Optional[str] = ..., network: _Optional[str] = ...) -> None: ...

class RoutingDomain(_message.Message):
    __slots__ = ("name", "networks", "description", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    networks: _containers.RepeatedCompositeFieldContainer[NetworkRef]
    description: str
    version: int
    def __init__(self, name: _Optional[str] = ..., networks: _Optional[_Iterable[_Union[NetworkRef, _Mapping]]] = ..., description: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetRoutingDomainRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListRoutingDomainsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRoutingDomainsResponse(_message.Message):
    __slots__ = ("domains", "next_page_token")
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedCompositeFieldContainer[RoutingDomain]
    next_page_token: str
    def __init__(self, domains: _Optional[_Iterable[_Union[RoutingDomain, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteRoutingDomainRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteRoutingDomainResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class UsageEntry(_message.Message):
    __slots__ = ("in_use", "limit", "recent", "grant")
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    in_use: int
    limit: int
    recent: float
    grant: int
    def __init__(self, in_use: _Optional[int] = ..., limit: _Optional[int] = ..., recent: _Optional[float] = ..., grant: _Optional[int] = ...) -> None: ...

class ProjectUsage(_message.Message):
    __slots__ = ("project", "resources")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: UsageEntry
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[UsageEntry, _Mapping]] = ...) -> None: ...
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    project: str
    resources: _containers.MessageMap[str, UsageEntry]
    def __init__(self, project: _Optional[str] = ..., resources: _Optional[_Mapping[str, UsageEntry]] = ...) -> None: ...

class UsageReport(_message.Message):
    __slots__ = ("projects",)
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[ProjectUsage]
    def __init__(self, projects: _Optional[_Iterable[_Union[ProjectUsage, _Mapping]]] = ...) -> None: ...

class AddressDelta(_message.Message):
    __slots__ = ("seq", "full", "upserts", "removes", "more")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    REMOVES_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    full: bool
    upserts: _containers.RepeatedCompositeFieldContainer[AddressRecord]
    removes: _containers.RepeatedCompositeFieldContainer[AddressKey]
    more: bool
    def __init__(self, seq: _Optional[int] = ..., full: _Optional[bool] = ..., upserts: _Optional[_Iterable[_Union[AddressRecord, _Mapping]]] = ..., removes: _Optional[_Iterable[_Union[AddressKey, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class QuotaTarget(_message.Message):
    __slots__ = ("project", "resource", "limit", "grant")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    project: str
    resource: str
    limit: int
    grant: int
    def __init__(self, project: _Optional[str] = ..., resource: _Optional[str] = ..., limit: _Optional[int] = ..., grant: _Optional[int] = ...) -> None: ...

class QuotaAssignment(_message.Message):
    __slots__ = ("targets",)
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[QuotaTarget]
    def __init__(self, targets: _Optional[_Iterable[_Union[QuotaTarget, _Mapping]]] = ...) -> None: ...
