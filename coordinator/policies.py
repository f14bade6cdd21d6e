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


class PolicyRegistry(r.Registry):
    """Validated create/get/list/update/delete of topology policies; writes take request ids like every
    configuration write (``r.Registry.commit``)."""

    DECODERS = {POLICIES: decode_policy}

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
        key = policy_key(policy.name)

        async def attempt() -> r.Plan:
            if await self.store.get(key) is not None:
                raise AlreadyExists(f"topology policy {policy.name} already exists", "name")
            return r.Plan([absent(key)], [Put(key, r.encode(policy))],
                          lambda rev: dataclasses.replace(policy, version=rev))

        made: t.Policy = await self.commit(f"created topology policy {policy.name}", attempt)
        return made

    async def update(self, policy: t.Policy) -> t.Policy:
        """Replace everything but the name, at ``policy.version`` if given (else at the version read)."""
        new = t.validate_policy(policy)
        key = policy_key(policy.name)

        async def attempt() -> r.Plan:
            current = await self.get(policy.name)
            if policy.version and policy.version != current.version:
                raise Aborted(f"topology policy {policy.name} was changed (stored version {current.version}, "
                              f"request version {policy.version}); read it again")
            return r.Plan([mod_is(key, current.version)], [Put(key, r.encode(dataclasses.replace(new, version=0)))],
                          lambda rev: dataclasses.replace(new, version=rev))

        done: t.Policy = await self.commit(f"updated topology policy {policy.name}", attempt)
        return done

    async def delete(self, name: str, version: int = 0) -> int:
        """Delete the policy; the leader then deletes the connections it made (and only those)."""

        async def attempt() -> r.Plan:
            current = await self.get(name)
            if version and version != current.version:
                raise Aborted(f"topology policy {name} was changed (stored version {current.version}, request "
                              f"version {version}); read it again")
            return r.Plan([mod_is(policy_key(name), current.version)], [Delete(policy_key(name))], lambda rev: rev)

        rev: int = await self.commit(f"deleted topology policy {name}", attempt)
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
        chunk, token = pieces.page_of(policies, lambda p: p.name, request.page_size, request.page_token,
                                      twire.policy_to_pb)
        return tpb.ListPoliciesResponse(policies=chunk, revision=rev, next_page_token=token)

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
