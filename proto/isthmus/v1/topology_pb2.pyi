from isthmus.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_KIND_UNSPECIFIED: _ClassVar[PolicyKind]
    POLICY_KIND_FULL_MESH: _ClassVar[PolicyKind]
    POLICY_KIND_HUB_AND_SPOKE: _ClassVar[PolicyKind]
    POLICY_KIND_ROUTE_REFLECTOR: _ClassVar[PolicyKind]
POLICY_KIND_UNSPECIFIED: PolicyKind
POLICY_KIND_FULL_MESH: PolicyKind
POLICY_KIND_HUB_AND_SPOKE: PolicyKind
POLICY_KIND_ROUTE_REFLECTOR: PolicyKind

class VxlanPool(_message.Message):
    __slots__ = ("vni_first", "vni_last", "udp_port", "mtu")
    VNI_FIRST_FIELD_NUMBER: _ClassVar[int]
    VNI_LAST_FIELD_NUMBER: _ClassVar[int]
    UDP_PORT_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    vni_first: int
    vni_last: int
    udp_port: int
    mtu: int
    def __init__(self, vni_first: _Optional[int] = ..., vni_last: _Optional[int] = ..., udp_port: _Optional[int] = ..., mtu: _Optional[int] = ...) -> None: ...

class TopologyPolicy(_message.Message):
    __slots__ = ("name", "kind", "sites", "selector", "hubs", "reflectors", "endpoint", "types", "bgp", "vxlan", "admin_state", "description", "version")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    HUBS_FIELD_NUMBER: _ClassVar[int]
    REFLECTORS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    BGP_FIELD_NUMBER: _ClassVar[int]
    VXLAN_FIELD_NUMBER: _ClassVar[int]
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: PolicyKind
    sites: _containers.RepeatedScalarFieldContainer[str]
    selector: _containers.ScalarMap[str, str]
    hubs: _containers.RepeatedScalarFieldContainer[str]
    reflectors: _containers.RepeatedScalarFieldContainer[str]
    endpoint: str
    types: _containers.RepeatedScalarFieldContainer[_types_pb2.ConnectionType]
    bgp: _types_pb2.BgpParams
    vxlan: VxlanPool
    admin_state: _types_pb2.AdminState
    description: str
    version: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[PolicyKind, str]] = ..., sites: _Optional[_Iterable[str]] = ..., selector: _Optional[_Mapping[str, str]] = ..., hubs: _Optional[_Iterable[str]] = ..., reflectors: _Optional[_Iterable[str]] = ..., endpoint: _Optional[str] = ..., types: _Optional[_Iterable[_Union[_types_pb2.ConnectionType, str]]] = ..., bgp: _Optional[_Union[_types_pb2.BgpParams, _Mapping]] = ..., vxlan: _Optional[_Union[VxlanPool, _Mapping]] = ..., admin_state: _Optional[_Union[_types_pb2.AdminState, str]] = ..., description: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "revision", "next_page_token")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[TopologyPolicy]
    revision: int
    next_page_token: str
    def __init__(self, policies: _Optional[_Iterable[_Union[TopologyPolicy, _Mapping]]] = ..., revision: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeletePolicyResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class PolicyStatus(_message.Message):
    __slots__ = ("policy", "members", "expected", "notes", "pending", "revision")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    policy: TopologyPolicy
    members: _containers.RepeatedScalarFieldContainer[str]
    expected: _containers.RepeatedCompositeFieldContainer[_types_pb2.Connection]
    notes: _containers.RepeatedScalarFieldContainer[str]
    pending: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    def __init__(self, policy: _Optional[_Union[TopologyPolicy, _Mapping]] = ..., members: _Optional[_Iterable[str]] = ..., expected: _Optional[_Iterable[_Union[_types_pb2.Connection, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ..., pending: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ...) -> None: ...
