from isthmus.v1 import views_pb2 as _views_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeypairSpec(_message.Message):
    __slots__ = ("name", "public_key", "user_id", "replace", "source_region", "source_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REGION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    public_key: str
    user_id: str
    replace: bool
    source_region: str
    source_name: str
    def __init__(self, name: _Optional[str] = ..., public_key: _Optional[str] = ..., user_id: _Optional[str] = ..., replace: _Optional[bool] = ..., source_region: _Optional[str] = ..., source_name: _Optional[str] = ...) -> None: ...

class RuleSpec(_message.Message):
    __slots__ = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group", "description")
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    ETHERTYPE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_RANGE_MIN_FIELD_NUMBER: _ClassVar[int]
    PORT_RANGE_MAX_FIELD_NUMBER: _ClassVar[int]
    REMOTE_IP_PREFIX_FIELD_NUMBER: _ClassVar[int]
    REMOTE_GROUP_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    direction: str
    ethertype: str
    protocol: str
    port_range_min: int
    port_range_max: int
    remote_ip_prefix: str
    remote_group: str
    description: str
    def __init__(self, direction: _Optional[str] = ..., ethertype: _Optional[str] = ..., protocol: _Optional[str] = ..., port_range_min: _Optional[int] = ..., port_range_max: _Optional[int] = ..., remote_ip_prefix: _Optional[str] = ..., remote_group: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class SecurityGroupSpec(_message.Message):
    __slots__ = ("name", "description", "project_id", "rules", "replace", "source_region", "source_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REGION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    project_id: str
    rules: _containers.RepeatedCompositeFieldContainer[RuleSpec]
    replace: bool
    source_region: str
    source_name: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., project_id: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[RuleSpec, _Mapping]]] = ..., replace: _Optional[bool] = ..., source_region: _Optional[str] = ..., source_name: _Optional[str] = ...) -> None: ...

class ImageSelector(_message.Message):
    __slots__ = ("names", "tags", "properties", "visibility")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    properties: _containers.ScalarMap[str, str]
    visibility: str
    def __init__(self, names: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., properties: _Optional[_Mapping[str, str]] = ..., visibility: _Optional[str] = ...) -> None: ...

class Wave(_message.Message):
    __slots__ = ("name", "regions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    regions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., regions: _Optional[_Iterable[str]] = ...) -> None: ...

class ImageSpec(_message.Message):
    __slots__ = ("mode", "source_region", "selector", "waves", "rollback_on_failure", "replace", "pause_between_waves")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REGION_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    WAVES_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    PAUSE_BETWEEN_WAVES_FIELD_NUMBER: _ClassVar[int]
    mode: str
    source_region: str
    selector: ImageSelector
    waves: _containers.RepeatedCompositeFieldContainer[Wave]
    rollback_on_failure: bool
    replace: bool
    pause_between_waves: bool
    def __init__(self, mode: _Optional[str] = ..., source_region: _Optional[str] = ..., selector: _Optional[_Union[ImageSelector, _Mapping]] = ..., waves: _Optional[_Iterable[_Union[Wave, _Mapping]]] = ..., rollback_on_failure: _Optional[bool] = ..., replace: _Optional[bool] = ..., pause_between_waves: _Optional[bool] = ...) -> None: ...

class SyncIntent(_message.Message):
    __slots__ = ("name", "kind", "regions", "description", "keypair", "security_group", "image", "version", "created_unix_ms", "all_regions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KEYPAIR_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ALL_REGIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    regions: _containers.RepeatedScalarFieldContainer[str]
    description: str
    keypair: KeypairSpec
    security_group: SecurityGroupSpec
    image: ImageSpec
    version: int
    created_unix_ms: int
    all_regions: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., regions: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., keypair: _Optional[_Union[KeypairSpec, _Mapping]] = ..., security_group: _Optional[_Union[SecurityGroupSpec, _Mapping]] = ..., image: _Optional[_Union[ImageSpec, _Mapping]] = ..., version: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., all_regions: _Optional[bool] = ...) -> None: ...

class SyncStatus(_message.Message):
    __slots__ = ("intent", "resource", "region", "state", "error", "detail", "updated_unix_ms", "target_id", "created", "bytes_done", "bytes_total", "attempts", "wave", "stale", "rollout", "action", "action_unix_ms")
    INTENT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    intent: str
    resource: str
    region: str
    state: str
    error: str
    detail: str
    updated_unix_ms: int
    target_id: str
    created: bool
    bytes_done: int
    bytes_total: int
    attempts: int
    wave: str
    stale: bool
    rollout: str
    action: str
    action_unix_ms: int
    def __init__(self, intent: _Optional[str] = ..., resource: _Optional[str] = ..., region: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., detail: _Optional[str] = ..., updated_unix_ms: _Optional[int] = ..., target_id: _Optional[str] = ..., created: _Optional[bool] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., attempts: _Optional[int] = ..., wave: _Optional[str] = ..., stale: _Optional[bool] = ..., rollout: _Optional[str] = ..., action: _Optional[str] = ..., action_unix_ms: _Optional[int] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("id", "state", "wave", "error", "updated_unix_ms", "skipped")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    wave: int
    error: str
    updated_unix_ms: int
    skipped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., wave: _Optional[int] = ..., error: _Optional[str] = ..., updated_unix_ms: _Optional[int] = ..., skipped: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncView(_message.Message):
    __slots__ = ("intent", "statuses", "rollout")
    INTENT_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    intent: SyncIntent
    statuses: _containers.RepeatedCompositeFieldContainer[SyncStatus]
    rollout: Rollout
    def __init__(self, intent: _Optional[_Union[SyncIntent, _Mapping]] = ..., statuses: _Optional[_Iterable[_Union[SyncStatus, _Mapping]]] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class GetSyncRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListSyncsRequest(_message.Message):
    __slots__ = ("kind", "page_size", "page_token")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kind: str
    page_size: int
    page_token: str
    def __init__(self, kind: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSyncsResponse(_message.Message):
    __slots__ = ("syncs", "next_page_token")
    SYNCS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    syncs: _containers.RepeatedCompositeFieldContainer[SyncView]
    next_page_token: str
    def __init__(self, syncs: _Optional[_Iterable[_Union[SyncView, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteSyncRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteSyncResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ControlRolloutRequest(_message.Message):
    __slots__ = ("name", "action", "skip_sites")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SKIP_SITES_FIELD_NUMBER: _ClassVar[int]
    name: str
    action: str
    skip_sites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., action: _Optional[str] = ..., skip_sites: _Optional[_Iterable[str]] = ...) -> None: ...

class EnsureImageRequest(_message.Message):
    __slots__ = ("image", "region", "intent", "timeout_seconds", "wait_seconds")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    image: str
    region: str
    intent: str
    timeout_seconds: int
    wait_seconds: int
    def __init__(self, image: _Optional[str] = ..., region: _Optional[str] = ..., intent: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., wait_seconds: _Optional[int] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("region",)
    REGION_FIELD_NUMBER: _ClassVar[int]
    region: str
    def __init__(self, region: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("region", "openstack_region", "updated_unix_ms", "images")
    REGION_FIELD_NUMBER: _ClassVar[int]
    OPENSTACK_REGION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    region: str
    openstack_region: str
    updated_unix_ms: int
    images: _containers.RepeatedCompositeFieldContainer[ImageInfo]
    def __init__(self, region: _Optional[str] = ..., openstack_region: _Optional[str] = ..., updated_unix_ms: _Optional[int] = ..., images: _Optional[_Iterable[_Union[ImageInfo, _Mapping]]] = ...) -> None: ...

class EnsureImageProgress(_message.Message):
    __slots__ = ("status", "done")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    status: SyncStatus
    done: bool
    def __init__(self, status: _Optional[_Union[SyncStatus, _Mapping]] = ..., done: _Optional[bool] = ...) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("id", "name", "status", "size", "checksum", "hash_algo", "hash_value", "disk_format", "container_format", "visibility", "owner", "tags", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    HASH_ALGO_FIELD_NUMBER: _ClassVar[int]
    HASH_VALUE_FIELD_NUMBER: _ClassVar[int]
    DISK_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FORMAT_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    status: str
    size: int
    checksum: str
    hash_algo: str
    hash_value: str
    disk_format: str
    container_format: str
    visibility: str
    owner: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    properties: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., size: _Optional[int] = ..., checksum: _Optional[str] = ..., hash_algo: _Optional[str] = ..., hash_value: _Optional[str] = ..., disk_format: _Optional[str] = ..., container_format: _Optional[str] = ..., visibility: _Optional[str] = ..., owner: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SyncTask(_message.Message):
    __slots__ = ("intent", "kind", "resource", "action", "keypair", "security_group", "source_image", "source_region", "source_site", "rollout", "wave", "reason", "replace")
    INTENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    KEYPAIR_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REGION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SITE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    intent: str
    kind: str
    resource: str
    action: str
    keypair: KeypairSpec
    security_group: SecurityGroupSpec
    source_image: ImageInfo
    source_region: str
    source_site: str
    rollout: str
    wave: str
    reason: str
    replace: bool
    def __init__(self, intent: _Optional[str] = ..., kind: _Optional[str] = ..., resource: _Optional[str] = ..., action: _Optional[str] = ..., keypair: _Optional[_Union[KeypairSpec, _Mapping]] = ..., security_group: _Optional[_Union[SecurityGroupSpec, _Mapping]] = ..., source_image: _Optional[_Union[ImageInfo, _Mapping]] = ..., source_region: _Optional[str] = ..., source_site: _Optional[str] = ..., rollout: _Optional[str] = ..., wave: _Optional[str] = ..., reason: _Optional[str] = ..., replace: _Optional[bool] = ...) -> None: ...

class RegionHello(_message.Message):
    __slots__ = ("site", "region", "instance_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    region: str
    instance_id: str
    def __init__(self, site: _Optional[str] = ..., region: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class SyncReport(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[SyncStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[SyncStatus, _Mapping]]] = ...) -> None: ...

class Inventory(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageInfo]
    def __init__(self, images: _Optional[_Iterable[_Union[ImageInfo, _Mapping]]] = ...) -> None: ...

class RegionUp(_message.Message):
    __slots__ = ("hello", "report", "inventory", "usage", "addresses", "capacity")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    hello: RegionHello
    report: SyncReport
    inventory: Inventory
    usage: _views_pb2.UsageReport
    addresses: _views_pb2.AddressDelta
    capacity: _views_pb2.RegionCapacity
    def __init__(self, hello: _Optional[_Union[RegionHello, _Mapping]] = ..., report: _Optional[_Union[SyncReport, _Mapping]] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ..., usage: _Optional[_Union[_views_pb2.UsageReport, _Mapping]] = ..., addresses: _Optional[_Union[_views_pb2.AddressDelta, _Mapping]] = ..., capacity: _Optional[_Union[_views_pb2.RegionCapacity, _Mapping]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("revision", "tasks")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    tasks: _containers.RepeatedCompositeFieldContainer[SyncTask]
    def __init__(self, revision: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[SyncTask, _Mapping]]] = ...) -> None: ...

class RegionDown(_message.Message):
    __slots__ = ("assignment", "quotas")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    quotas: _views_pb2.QuotaAssignment
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ..., quotas: _Optional[_Union[_views_pb2.QuotaAssignment, _Mapping]] = ...) -> None: ...
