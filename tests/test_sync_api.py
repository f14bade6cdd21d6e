"""Sync intents over real gRPC against a real etcd: validation, planning per region, controlled rollouts.

A stand-in agent speaks the real RegionAgentService stream (hello, inventory,
status reports) so the coordinator's side is exercised without OpenStack; the
OpenStack side is in test_sync_openstack.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from conftest import await_for, running_coordinator
from isthmus.coordinator.multisite.sync_planner import SYNC
from isthmus.coordinator.store import Store
from isthmus.core import sync as s
from isthmus.v1 import api_pb2, api_pb2_grpc, sync_pb2_grpc
from isthmus.v1 import sync_pb2 as spb
from isthmus.v1 import types_pb2 as pb


def ssh_key(seed: int = 1) -> str:
    """A well-formed ed25519 public key line (the blob format; the key bytes are arbitrary)."""
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes([seed]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} test@isthmus"


def image(name: str, id_: str, **kw: Any) -> spb.ImageInfo:
    return spb.ImageInfo(id=id_, name=name, status=kw.pop("status", "active"), size=kw.pop("size", 1024),
                         checksum=kw.pop("checksum", "c" * 32), disk_format="raw", container_format="bare", **kw)


class FakeRegionAgent:
    """The agent side of RegionAgentService: sends inventory and statuses, keeps the last assignment."""

    def __init__(self, channel: grpc.aio.Channel, site: str) -> None:
        self.site = site
        self.call = sync_pb2_grpc.RegionAgentServiceStub(channel).Attach()
        self.tasks: list[spb.SyncTask] = []
        self.assignments = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self, images: list[spb.ImageInfo] | None = None, instance: str = "") -> FakeRegionAgent:
        await self.call.write(spb.RegionUp(hello=spb.RegionHello(site=self.site, region=f"Region-{self.site}",
                                                                 instance_id=instance or f"fake-{self.site}")))
        if images is not None:
            await self.call.write(spb.RegionUp(inventory=spb.Inventory(images=images)))
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for msg in self.call:
            self.tasks = list(msg.assignment.tasks)
            self.assignments += 1

    async def report(self, task: spb.SyncTask, state: str, **kw: Any) -> None:
        await self.call.write(spb.RegionUp(report=spb.SyncReport(statuses=[spb.SyncStatus(
            intent=task.intent, resource=task.resource, region=self.site, state=state, rollout=task.rollout,
            wave=task.wave, **kw)])))

    def task(self, intent: str, action: str | None = None) -> spb.SyncTask | None:
        for t in self.tasks:
            if t.intent == intent and (action is None or t.action == action):
                return t
        return None

    async def close(self) -> None:
        self.call.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class Env:
    def __init__(self, channel: grpc.aio.Channel, store: Store) -> None:
        self.channel = channel
        self.store = store
        self.sync = sync_pb2_grpc.SyncServiceStub(channel)
        self.sites = api_pb2_grpc.SiteServiceStub(channel)
        self.agents: list[FakeRegionAgent] = []
        self.coordinator: Any = None

    async def agent(self, site: str, images: list[spb.ImageInfo] | None = None) -> FakeRegionAgent:
        a = await FakeRegionAgent(self.channel, site).start(images)
        self.agents.append(a)
        if images is not None and self.coordinator is not None:  # an intent naming them is checked against it
            planner = self.coordinator.sync_planner
            await await_for(lambda: planner is not None and site in planner.view.inventories,
                            what=f"the image list of {site} stored")
        return a

    async def revision(self) -> list[tuple[str, int]]:
        """Every sync key with its mod revision: unchanged means nothing was written."""
        kvs, _ = await self.store.get_prefix(SYNC)
        return [(kv.key, kv.mod_revision) for kv in kvs]


@contextlib.asynccontextmanager
async def sync_env(etcd: str, tmp_path: Path) -> AsyncIterator[Env]:
    async with running_coordinator(etcd, tmp_path) as coordinator:
        store = Store([etcd])
        await store.connect()
        async with grpc.aio.insecure_channel(coordinator.address) as channel:
            e = Env(channel, store)
            e.coordinator = coordinator
            for name in ("one", "two", "three"):
                await e.sites.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION))
            try:
                yield e
            finally:
                for a in e.agents:
                    await a.close()
                await store.close()


def with_env(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run an async test taking ``env`` in a coordinator with sites one, two and three (needs etcd, tmp_path)."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "env"]
    extra = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("etcd", "tmp_path")]

    @functools.wraps(fn)
    async def run(etcd: str, tmp_path: Path, **kw: Any) -> None:
        async with sync_env(etcd, tmp_path) as env:
            await fn(env, **kw)

    run.__signature__ = sig.replace(parameters=extra + params)  # type: ignore[attr-defined]
    return run


def keypair_intent(name: str = "ops", regions: tuple[str, ...] = ("one", "two"), key: str = "") -> spb.SyncIntent:
    return spb.SyncIntent(name=name, kind="keypair", regions=list(regions),
                          keypair=spb.KeypairSpec(name=name, public_key=key or ssh_key()))


@with_env
async def test_keypair_intent_becomes_one_task_per_region_and_statuses_show(env: Env) -> None:
    one, two = await env.agent("one"), await env.agent("two")
    made = await env.sync.CreateSync(keypair_intent())
    assert made.version > 0 and made.created_unix_ms > 0
    await await_for(lambda: one.task("ops") and two.task("ops"), what="a keypair task in both regions")
    task = one.task("ops")
    assert task is not None and task.action == "ENSURE" and task.keypair.public_key == ssh_key()
    view = await env.sync.GetSync(spb.GetSyncRequest(name="ops"))
    assert {(x.region, x.state) for x in view.statuses} == {("one", "PENDING"), ("two", "PENDING")}
    await one.report(task, "IN_SYNC", created=True, target_id="ops")
    await two.report(task, "CONFLICT", detail="another key")

    async def states() -> set[tuple[str, str]]:
        v = await env.sync.GetSync(spb.GetSyncRequest(name="ops"))
        return {(x.region, x.state) for x in v.statuses}

    for _ in range(200):
        if await states() == {("one", "IN_SYNC"), ("two", "CONFLICT")}:
            break
        await asyncio.sleep(0.05)
    assert await states() == {("one", "IN_SYNC"), ("two", "CONFLICT")}
    # A changed key reaches the agents; a removed region gets no task (its agent removes its copy).
    current = (await env.sync.GetSync(spb.GetSyncRequest(name="ops"))).intent
    current.keypair.public_key = ssh_key(2)
    del current.regions[:]
    current.regions.append("one")
    await env.sync.UpdateSync(current)
    await await_for(lambda: (t := one.task("ops")) is not None and t.keypair.public_key == ssh_key(2)
                    and two.task("ops") is None, what="the new key in one, no task in two")
    # Delete: tasks and statuses go.
    await env.sync.DeleteSync(spb.DeleteSyncRequest(name="ops"))
    await await_for(lambda: one.task("ops") is None, what="the task withdrawn")
    kvs, _ = await env.store.get_prefix(SYNC)
    assert not [kv.key for kv in kvs if "/ops" in kv.key]


@pytest.mark.parametrize(("change", "code", "field"), [
    (lambda i: i.regions.append("nowhere"), grpc.StatusCode.NOT_FOUND, "regions[2]"),
    (lambda i: setattr(i.keypair, "public_key", "ssh-ed25519 not-base64!"), grpc.StatusCode.INVALID_ARGUMENT,
     "keypair.public_key"),
    (lambda i: setattr(i.keypair, "public_key", "ssh-rsa " + ssh_key().split()[1]), grpc.StatusCode.INVALID_ARGUMENT,
     "keypair.public_key"),
    (lambda i: setattr(i, "name", "Bad_Name"), grpc.StatusCode.INVALID_ARGUMENT, "name"),
    (lambda i: i.ClearField("keypair"), grpc.StatusCode.INVALID_ARGUMENT, "keypair"),
    (lambda i: i.regions.append("one"), grpc.StatusCode.INVALID_ARGUMENT, "regions"),
    (lambda i: setattr(i, "kind", "flavor"), grpc.StatusCode.INVALID_ARGUMENT, "kind"),
])
@with_env
async def test_bad_keypair_intents_are_refused_naming_the_field_and_nothing_is_written(
        env: Env, change: Any, code: grpc.StatusCode, field: str) -> None:
    before = await env.revision()
    intent = keypair_intent()
    change(intent)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.sync.CreateSync(intent)
    assert err.value.code() == code and err.value.details().startswith(f"{field}:"), err.value.details()
    assert await env.revision() == before


@with_env
async def test_bad_image_and_group_intents_are_refused_and_nothing_is_written(env: Env) -> None:
    await env.agent("one", [image("ubuntu", "id-1")])
    for _ in range(100):  # the inventory is written once the stream delivered it
        kvs, _ = await env.store.get_prefix(SYNC + "inventory/")
        if kvs:
            break
        await asyncio.sleep(0.05)
    before = await env.revision()
    cases = [
        (spb.SyncIntent(name="img", kind="image", image=spb.ImageSpec(
            mode="controlled", source_region="one", selector=spb.ImageSelector(names=["ubuntu"]))),
         grpc.StatusCode.INVALID_ARGUMENT, "image.waves"),
        (spb.SyncIntent(name="img", kind="image", image=spb.ImageSpec(
            mode="controlled", source_region="one", selector=spb.ImageSelector(names=["no-such-image"]),
            waves=[spb.Wave(name="w1", regions=["two"])])), grpc.StatusCode.NOT_FOUND, "image.selector.names[0]"),
        (spb.SyncIntent(name="img", kind="image", image=spb.ImageSpec(
            mode="controlled", source_region="one", selector=spb.ImageSelector(names=["ubuntu"]),
            waves=[spb.Wave(name="w1", regions=["mars"])])), grpc.StatusCode.NOT_FOUND,
         "image.waves[0].regions[0]"),
        (spb.SyncIntent(name="img", kind="image", regions=["two"], image=spb.ImageSpec(
            mode="lazy", source_region="three", selector=spb.ImageSelector(names=["ubuntu"]))),
         grpc.StatusCode.FAILED_PRECONDITION, "image.source_region"),
        (spb.SyncIntent(name="img", kind="image", regions=["two"], image=spb.ImageSpec(
            mode="auto", source_region="one")), grpc.StatusCode.INVALID_ARGUMENT, "image.selector"),
        (spb.SyncIntent(name="img", kind="image", regions=["one"], image=spb.ImageSpec(
            mode="auto", source_region="one", selector=spb.ImageSelector(tags=["x"]))),
         grpc.StatusCode.INVALID_ARGUMENT, "regions"),
        (spb.SyncIntent(name="sg", kind="security-group", regions=["two"], security_group=spb.SecurityGroupSpec(
            name="web", rules=[spb.RuleSpec(protocol="tcp", port_range_min=80, port_range_max=79)])),
         grpc.StatusCode.INVALID_ARGUMENT, "security_group.rules[0].port_range_max"),
        (spb.SyncIntent(name="sg", kind="security-group", regions=["two"], security_group=spb.SecurityGroupSpec(
            name="web", rules=[spb.RuleSpec(ethertype="IPv4", remote_ip_prefix="2001:db8::/32")])),
         grpc.StatusCode.INVALID_ARGUMENT, "security_group.rules[0].remote_ip_prefix"),
    ]
    cases += [
        (spb.SyncIntent(name="kf", kind="keypair", all_regions=True, keypair=spb.KeypairSpec(
            name="k", public_key=ssh_key(), source_region="one")), grpc.StatusCode.INVALID_ARGUMENT,
         "keypair.public_key"),
        (spb.SyncIntent(name="kf", kind="keypair", all_regions=True, regions=["two"], keypair=spb.KeypairSpec(
            name="k", source_region="one")), grpc.StatusCode.INVALID_ARGUMENT, "regions"),
        (spb.SyncIntent(name="kf", kind="keypair", all_regions=True, keypair=spb.KeypairSpec(
            name="k", source_region="mars")), grpc.StatusCode.NOT_FOUND, "keypair.source_region"),
        (spb.SyncIntent(name="sf", kind="security-group", regions=["one"], security_group=spb.SecurityGroupSpec(
            name="g", source_region="one")), grpc.StatusCode.INVALID_ARGUMENT, "regions"),
        (spb.SyncIntent(name="img", kind="image", all_regions=True, image=spb.ImageSpec(
            mode="controlled", source_region="one", selector=spb.ImageSelector(names=["ubuntu"]),
            waves=[spb.Wave(name="w1", regions=["two"])])), grpc.StatusCode.INVALID_ARGUMENT, "all_regions"),
    ]
    for intent, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.sync.CreateSync(intent)
        assert (err.value.code(), err.value.details().split(":")[0]) == (code, field), err.value.details()
    assert await env.revision() == before


@with_env
async def test_concurrent_creates_of_one_name_give_one_winner(env: Env) -> None:
    results = await asyncio.gather(*(env.sync.CreateSync(keypair_intent(key=ssh_key(i + 1))) for i in range(10)),
                                   return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(lost) == 9
    assert {e.code() for e in lost} == {grpc.StatusCode.ALREADY_EXISTS}


@with_env
async def test_auto_images_follow_the_source_inventory(env: Env) -> None:
    one = await env.agent("one", [image("golden-1", "a", tags=["golden"]), image("other", "b")])
    two = await env.agent("two")
    await env.sync.CreateSync(spb.SyncIntent(name="golden", kind="image", regions=["two"], image=spb.ImageSpec(
        mode="auto", source_region="one", selector=spb.ImageSelector(tags=["golden"]))))
    await await_for(lambda: [t.resource for t in two.tasks] == ["golden-1"], what="golden-1 to copy")
    assert two.tasks[0].source_image.id == "a" and two.tasks[0].source_region == "Region-one"
    # A new matching image follows as soon as it is active, not before.
    await one.call.write(spb.RegionUp(inventory=spb.Inventory(images=[
        image("golden-1", "a", tags=["golden"]), image("golden-2", "c", tags=["golden"], status="saving"),
        image("other", "b")])))
    await asyncio.sleep(0.3)  # a saving image must not be assigned; give the coordinator time to (wrongly) do so
    assert [t.resource for t in two.tasks] == ["golden-1"]
    await one.call.write(spb.RegionUp(inventory=spb.Inventory(images=[
        image("golden-1", "a", tags=["golden"]), image("golden-2", "c", tags=["golden"]), image("other", "b")])))
    await await_for(lambda: sorted(t.resource for t in two.tasks) == ["golden-1", "golden-2"], what="golden-2 too")
    assert one.tasks == []


@with_env
async def test_lazy_image_is_copied_on_request_and_ensure_streams_progress_until_in_sync(env: Env) -> None:
    await env.agent("one", [image("ubuntu", "u1"), image("debian", "d1")])
    two = await env.agent("two")
    await env.sync.CreateSync(spb.SyncIntent(name="lazy", kind="image", regions=["two"], image=spb.ImageSpec(
        mode="lazy", source_region="one", selector=spb.ImageSelector(names=["ubuntu", "debian"]))))
    view = await env.sync.GetSync(spb.GetSyncRequest(name="lazy"))
    assert {x.state for x in view.statuses} == {"PENDING"} and "lazy" in view.statuses[0].detail
    await asyncio.sleep(0.2)
    assert two.tasks == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in env.sync.EnsureImage(spb.EnsureImageRequest(image="centos", region="two")):
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details().startswith("image:")
    progress: list[spb.EnsureImageProgress] = []

    async def ensure() -> None:
        async for p in env.sync.EnsureImage(spb.EnsureImageRequest(image="ubuntu", region="two", timeout_seconds=30)):
            progress.append(p)

    follower = asyncio.create_task(ensure())
    await await_for(lambda: [t.resource for t in two.tasks] == ["ubuntu"], what="ubuntu requested")
    task = two.tasks[0]
    await two.report(task, "IN_PROGRESS", bytes_done=512, bytes_total=1024)
    await await_for(lambda: any(p.status.state == "IN_PROGRESS" for p in progress), what="progress")
    await two.report(task, "IN_SYNC", bytes_done=1024, bytes_total=1024, created=True, target_id="t1")
    await asyncio.wait_for(follower, 10)
    assert progress[-1].done and progress[-1].status.target_id == "t1"
    assert [p.status.state for p in progress][0] == "PENDING"


async def rollout_of(env: Env, name: str) -> spb.Rollout:
    return (await env.sync.GetSync(spb.GetSyncRequest(name=name))).rollout


async def wait_rollout(env: Env, name: str, state: str, wave: int | None = None) -> spb.Rollout:
    ro = spb.Rollout()
    for _ in range(300):
        ro = await rollout_of(env, name)
        if ro.state == state and (wave is None or ro.wave == wave):
            return ro
        await asyncio.sleep(0.05)
    pytest.fail(f"rollout of {name} did not reach {state} (wave {wave}); last: {ro}")


def controlled(name: str = "roll", **kw: Any) -> spb.SyncIntent:
    return spb.SyncIntent(name=name, kind="image", image=spb.ImageSpec(
        mode="controlled", source_region="one", selector=spb.ImageSelector(names=["ubuntu"]),
        waves=[spb.Wave(name="canary", regions=["two"]), spb.Wave(name="rest", regions=["three"])], **kw))


@with_env
async def test_controlled_rollout_goes_wave_by_wave_pauses_and_resumes(env: Env) -> None:
    await env.agent("one", [image("ubuntu", "u1")])
    two, three = await env.agent("two"), await env.agent("three")
    await env.sync.CreateSync(controlled(pause_between_waves=True))
    await await_for(lambda: two.task("roll", "ENSURE") and three.task("roll", "HOLD"),
                    what="canary copies, rest holds")
    view = await env.sync.GetSync(spb.GetSyncRequest(name="roll"))
    assert {(x.region, x.state) for x in view.statuses} == {("two", "PENDING"), ("three", "HELD")}
    task = two.task("roll")
    assert task is not None
    await two.report(task, "IN_SYNC", created=True)
    ro = await wait_rollout(env, "roll", "PAUSED", wave=1)
    assert three.task("roll", "HOLD") is not None
    await env.sync.ControlRollout(spb.ControlRolloutRequest(name="roll", action="resume"))
    await await_for(lambda: three.task("roll", "ENSURE"), what="wave rest started")
    t3 = three.task("roll")
    assert t3 is not None and t3.rollout == ro.id
    await three.report(t3, "IN_SYNC", created=True)
    await wait_rollout(env, "roll", "DONE", wave=2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.sync.ControlRollout(spb.ControlRolloutRequest(name="roll", action="pause"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and err.value.details().startswith("action:")


@with_env
async def test_a_failing_wave_stops_the_rollout_and_rollback_removes_everywhere(env: Env) -> None:
    await env.agent("one", [image("ubuntu", "u1")])
    two, three = await env.agent("two"), await env.agent("three")
    await env.sync.CreateSync(controlled(rollback_on_failure=True))
    await await_for(lambda: two.task("roll", "ENSURE"), what="canary copies")
    task = two.task("roll")
    assert task is not None
    await two.report(task, "IN_SYNC", created=True)
    await await_for(lambda: three.task("roll", "ENSURE"), what="wave rest started")
    t3 = three.task("roll")
    assert t3 is not None
    await three.report(t3, "FAILED", error="glance unreachable")
    ro = await wait_rollout(env, "roll", "ROLLING_BACK")
    assert "glance unreachable" in ro.error and "rest" in ro.error
    await await_for(lambda: two.task("roll", "REMOVE") and three.task("roll", "REMOVE"), what="remove everywhere")
    for agent in (two, three):
        t = agent.task("roll")
        assert t is not None
        await agent.report(t, "REMOVED")
    await wait_rollout(env, "roll", "ROLLED_BACK")


@with_env
async def test_without_rollback_a_failure_stops_and_abort_and_resume_work(env: Env) -> None:
    await env.agent("one", [image("ubuntu", "u1")])
    two, three = await env.agent("two"), await env.agent("three")
    await env.sync.CreateSync(controlled())
    await await_for(lambda: two.task("roll", "ENSURE"), what="canary copies")
    task = two.task("roll")
    assert task is not None
    await two.report(task, "CONFLICT", detail="same name, other checksum")
    await wait_rollout(env, "roll", "FAILED", wave=0)
    await await_for(lambda: two.task("roll", "HOLD") and three.task("roll", "HOLD"), what="everything held")
    await env.sync.ControlRollout(spb.ControlRolloutRequest(name="roll", action="abort"))
    await wait_rollout(env, "roll", "ABORTED")
    await env.sync.ControlRollout(spb.ControlRolloutRequest(name="roll", action="resume"))
    await await_for(lambda: two.task("roll", "ENSURE"), what="canary again")


@with_env
async def test_a_second_agent_for_a_site_is_refused(env: Env) -> None:
    first = await env.agent("one")
    await env.sync.CreateSync(keypair_intent(regions=("one",)))
    await await_for(lambda: first.task("ops"), what="the first agent's task")
    second = FakeRegionAgent(env.channel, "one")
    await second.call.write(spb.RegionUp(hello=spb.RegionHello(site="one", instance_id="another")))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await second.call.read()
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS and "site one" in err.value.details()
    # The same agent reconnecting (a new stream, its instance id) is welcome.
    again = await FakeRegionAgent(env.channel, "one").start()
    env.agents.append(again)
    await await_for(lambda: again.task("ops"), what="the task on the new stream of the same agent")


def test_public_key_parser_says_what_is_wrong() -> None:
    assert s.parse_public_key(ssh_key())[0] == "ssh-ed25519"
    for text, words in [("", "required"), ("ssh-foo AAAA", "must start with"), ("ssh-ed25519 ***", "base64"),
                        ("ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + b"x" * 40).decode(),
                         "not a ssh-ed25519 key")]:
        with pytest.raises(s.InvalidArgument) as err:
            s.parse_public_key(text)
        assert words in str(err.value) and str(err.value).startswith("keypair.public_key:")


async def test_a_rollout_moves_on_once_when_its_regions_sit_on_two_coordinators(etcd: str, tmp_path: Path) -> None:
    async with running_coordinator(etcd, tmp_path / "a") as ca, running_coordinator(etcd, tmp_path / "b") as cb:
        async with grpc.aio.insecure_channel(ca.address) as cha, grpc.aio.insecure_channel(cb.address) as chb:
            sites = api_pb2_grpc.SiteServiceStub(cha)
            for name in ("one", "two", "three"):
                await sites.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION))
            source = await FakeRegionAgent(cha, "one").start([image("ubuntu", "u1")])
            two, three = await FakeRegionAgent(cha, "two").start(), await FakeRegionAgent(chb, "three").start()
            try:
                await await_for(lambda: all(c.sync_planner is not None and "one" in c.sync_planner.view.inventories
                                            for c in (ca, cb)), what="the image list on both coordinators")
                stub = sync_pb2_grpc.SyncServiceStub(chb)
                await stub.CreateSync(controlled())
                await await_for(lambda: two.task("roll", "ENSURE") and three.task("roll", "HOLD"), what="wave 1")
                task = two.task("roll")
                assert task is not None
                await two.report(task, "IN_SYNC", created=True)
                await await_for(lambda: three.task("roll", "ENSURE"), what="wave 2 started by either coordinator")
                t3 = three.task("roll")
                assert t3 is not None
                await three.report(t3, "IN_SYNC", created=True)

                async def done() -> bool:
                    ro = (await stub.GetSync(spb.GetSyncRequest(name="roll"))).rollout
                    return ro.state == "DONE" and ro.wave == 2

                await await_for(done, what="the rollout DONE")
                # Both coordinators evaluated every step; the compare-and-swap let one write win each time:
                # wave 0 -> 1 -> DONE is three writes of the rollout key (create included), not more.
                store = Store([etcd])
                await store.connect()
                try:
                    kv = await store.get(SYNC + "rollouts/roll")
                    assert kv is not None and kv.version == 3, kv
                finally:
                    await store.close()
            finally:
                for a in (source, two, three):
                    await a.close()


@with_env
async def test_all_regions_follows_attaching_regions_and_a_named_site_is_deleted_only_by_force(env: Env) -> None:
    one = await env.agent("one", [image("ubuntu", "id-1")])
    two = await env.agent("two", [])
    await env.sync.CreateSync(spb.SyncIntent(name="kf", kind="keypair", all_regions=True, keypair=spb.KeypairSpec(
        name="ops", source_region="one", source_name="ops-src")))
    await await_for(lambda: two.task("kf") is not None, what="the task of region two")
    task = two.task("kf")
    assert task is not None and (task.source_site, task.source_region) == ("one", "Region-one")
    assert one.task("kf") is None  # never the source
    three = await env.agent("three", [])  # attaches later: covered
    await await_for(lambda: three.task("kf") is not None, what="the task of the region attaching later")

    # A site an intent names is refused naming it; --force takes it out of the intent.
    await env.sync.CreateSync(keypair_intent("named", regions=("two", "three")))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.sites.DeleteSite(api_pb2.DeleteSiteRequest(name="three"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "named (target)" in err.value.details()
    assert "--force" in err.value.details()
    await env.sites.DeleteSite(api_pb2.DeleteSiteRequest(name="three", force=True))
    view = await env.sync.GetSync(spb.GetSyncRequest(name="named"))
    assert list(view.intent.regions) == ["two"]
    assert {st.region for st in (await env.sync.GetSync(spb.GetSyncRequest(name="kf"))).statuses} == {"two"}
    # The source of an intent: deleted by force, the intent goes with it.
    await env.sites.DeleteSite(api_pb2.DeleteSiteRequest(name="one", force=True))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.sync.GetSync(spb.GetSyncRequest(name="kf"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@with_env
async def test_a_retried_sync_write_with_its_request_id_answers_what_it_did(env: Env) -> None:
    """A create or delete whose answer was lost, repeated with its request id, is not done twice and is not
    ALREADY_EXISTS or NOT_FOUND; another request for the same name is."""

    def rid(text: str) -> list[tuple[str, str]]:
        return [("x-isthmus-request-id", f"sync-{text}-0001")]

    made = await env.sync.CreateSync(keypair_intent(), metadata=rid("a"))
    before = await env.revision()
    assert await env.sync.CreateSync(keypair_intent(), metadata=rid("a")) == made
    assert await env.revision() == before
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await env.sync.CreateSync(keypair_intent(), metadata=rid("b"))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    gone = await env.sync.DeleteSync(spb.DeleteSyncRequest(name="ops"), metadata=rid("c"))
    assert (await env.sync.DeleteSync(spb.DeleteSyncRequest(name="ops"), metadata=rid("c"))).revision == gone.revision
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await env.sync.DeleteSync(spb.DeleteSyncRequest(name="ops"), metadata=rid("d"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
