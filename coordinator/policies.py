"""Topology policies in etcd (``config/policies/{name}``) and their API servicer.

A policy is stored like any other configuration object: validated, written in one transaction that compares
the version read. The connections it expands to are written by the leader (``coordinator/expander.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from isthmus.coordinator import registry as r
from isthmus.coordinator.store import KV, Delete, Put, Store, absent, mod_is
from isthmus.core import model as m
from isthmus.core import topology as t
from isthmus.core.edge import grpc_errors
from isthmus.core.errors import Aborted, AlreadyExists, NotFound
from isthmus.core.wire import network as wire
from isthmus.core.wire import pieces
from isthmus.core.wire import topology as twire
from isthmus.v1 import topology_pb2 as tpb
from isthmus.v1 import topology_pb2_grpc as tgrpc

log = logging.getLogger(__name__)

POLICIES = r.CONFIG + "policies/"


def policy_key(name: str) -> str:
    return POLICIES + name


def decode_policy(kv: KV) -> t.Policy:
    return t.policy_from_json(json.loads(kv.value), kv.mod_revision)


@dataclasses.dataclass
class Config:
    """The configuration a policy expands from, read at one revision."""

    sites: list[m.Site]
    endpoints: dict[m.EndpointRef, m.Endpoint]
    connections: list[m.Connection]
    policies: list[t.Policy]
    reserved_vnis: set[int]  # border-gateway segmentation ids (a VXLAN connection cannot take one)
    revision: int


async def read_config(store: Store) -> Config:
    kvs, rev = await store.get_prefix(r.CONFIG)
    config = Config([], {}, [], [], set(), rev)
    for kv in kvs:
        if kv.key.startswith(r.SITES):
            config.sites.append(r.decode_site(kv))
        elif kv.key.startswith(r.ENDPOINTS):
            ep = r.decode_endpoint(kv)
            config.endpoints[ep.ref] = ep
        elif kv.key.startswith(r.CONNECTIONS):
            config.connections.append(r.decode_connection(kv))
        elif kv.key.startswith(POLICIES):
            config.policies.append(decode_policy(kv))
    segments, _ = await store.get_prefix(r.SEGMENTS, revision=rev)
    config.reserved_vnis = {int(kv.key.rsplit("/", 1)[1]) for kv in segments}
    return config


def expansions(config: Config) -> dict[str, t.Expansion]:
    return t.expand_all(config.policies, config.sites, config.endpoints, config.connections, config.reserved_vnis)


class PolicyRegistry:
    """Validated create/get/list/update/delete of topology policies."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, name: str) -> t.Policy:
        m.check_name(name, "name")
        kv = await self.store.get(policy_key(name))
        if kv is None:
            raise NotFound(f"topology policy {name} does not exist")
        return decode_policy(kv)

    async def list(self) -> tuple[list[t.Policy], int]:
        kvs, rev = await self.store.get_prefix(POLICIES)
        return [decode_policy(kv) for kv in kvs], rev

    async def create(self, policy: t.Policy) -> t.Policy:
        policy = t.validate_policy(policy)
        ok, rev = await self.store.txn([absent(policy_key(policy.name))],
                                       [Put(policy_key(policy.name), r.encode(policy))])
        if not ok:
            raise AlreadyExists(f"topology policy {policy.name} already exists", "name")
        log.info("created topology policy %s at rev %d", policy.name, rev)
        return dataclasses.replace(policy, version=rev)

    async def update(self, policy: t.Policy) -> t.Policy:
        """Replace everything but the name, at ``policy.version`` if given (else at the version read)."""
        new = t.validate_policy(policy)
        current = await self.get(policy.name)
        version = policy.version or current.version
        ok, rev = await self.store.txn([mod_is(policy_key(policy.name), version)],
                                       [Put(policy_key(policy.name), r.encode(dataclasses.replace(new, version=0)))])
        if not ok:
            raise Aborted(f"topology policy {policy.name} was changed (request version {version}); read it again")
        log.info("updated topology policy %s at rev %d", policy.name, rev)
        return dataclasses.replace(new, version=rev)

    async def delete(self, name: str, version: int = 0) -> int:
        """Delete the policy; the leader then deletes the connections it made (and only those)."""
        current = await self.get(name)
        ok, rev = await self.store.txn([mod_is(policy_key(name), version or current.version)],
                                       [Delete(policy_key(name))])
        if not ok:
            raise Aborted(f"topology policy {name} was changed (request version {version}); read it again")
        log.info("deleted topology policy %s at rev %d", name, rev)
        return rev


class PolicyService(tgrpc.PolicyServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = PolicyRegistry(store)

    @grpc_errors
    async def CreatePolicy(self, request: tpb.TopologyPolicy, context: Any) -> tpb.TopologyPolicy:  # noqa: N802
        return twire.policy_to_pb(await self.registry.create(twire.policy_from_pb(request)))

    @grpc_errors
    async def GetPolicy(self, request: tpb.GetPolicyRequest, context: Any) -> tpb.TopologyPolicy:  # noqa: N802
        return twire.policy_to_pb(await self.registry.get(request.name))

    @grpc_errors
    async def ListPolicies(  # noqa: N802
        self, request: tpb.ListPoliciesRequest, context: Any
    ) -> tpb.ListPoliciesResponse:
        policies, rev = await self.registry.list()
        chunk, token = pieces.page(policies, lambda p: p.name, request.page_size, request.page_token,
                            lambda p: twire.policy_to_pb(p).ByteSize())
        return tpb.ListPoliciesResponse(policies=[twire.policy_to_pb(p) for p in chunk], revision=rev,
                                        next_page_token=token)

    @grpc_errors
    async def UpdatePolicy(self, request: tpb.TopologyPolicy, context: Any) -> tpb.TopologyPolicy:  # noqa: N802
        return twire.policy_to_pb(await self.registry.update(twire.policy_from_pb(request)))

    @grpc_errors
    async def DeletePolicy(  # noqa: N802
        self, request: tpb.DeletePolicyRequest, context: Any
    ) -> tpb.DeletePolicyResponse:
        return tpb.DeletePolicyResponse(revision=await self.registry.delete(request.name, request.version))

    @grpc_errors
    async def GetPolicyStatus(self, request: tpb.GetPolicyRequest, context: Any) -> tpb.PolicyStatus:  # noqa: N802
        policy = await self.registry.get(request.name)
        config = await read_config(self.store)
        expansion = expansions(config).get(policy.name, t.Expansion())
        stored = {c.name: c for c in config.connections if c.policy == policy.name}
        pending = sorted(n for n, c in expansion.connections.items()
                         if dataclasses.replace(stored.get(n, c), version=0) != c or n not in stored)
        pending += sorted(f"{n} (to delete)" for n in stored if n not in expansion.connections)
        return tpb.PolicyStatus(
            policy=twire.policy_to_pb(policy), members=expansion.members,
            expected=[wire.connection_to_pb(c) for _, c in sorted(expansion.connections.items())],
            notes=expansion.notes, pending=pending, revision=config.revision)
