"""isthmusctl's multisite sync commands: ``sync ...`` and ``image ensure`` (see docs/multisite.md)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isthmus.core import sync as s
from isthmus.core.errors import InvalidArgument
from isthmus.core.flags import duration
from isthmus.core.wire import sync as sync_wire
from isthmus.ctl.client import Command, Ctl, all_pages
from isthmus.ctl.flags import Parsers, Subparsers, add_version
from isthmus.ctl.render import format_clock, format_fields, format_table
from isthmus.v1 import events_pb2 as epb
from isthmus.v1 import events_pb2_grpc, sync_pb2_grpc
from isthmus.v1 import sync_pb2 as spb

MAX_EVENTS = 10_000  # the sync events read to find an intent's newest changes
RULE_KEYS = ("dir", "ethertype", "proto", "port", "remote", "remote-group", "description")


def rule(text: str) -> s.RuleSpec:
    """``proto=tcp,port=22,remote=0.0.0.0/0`` (keys: dir, ethertype, proto, port N or N-M, remote, remote-group)."""
    values: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in RULE_KEYS:
            raise argparse.ArgumentTypeError(f"{part!r}: expected KEY=VALUE with KEY one of {', '.join(RULE_KEYS)}")
        values[key] = value
    low = high = None
    if "port" in values:
        a, _, b = values["port"].partition("-")
        try:
            low = int(a)
            high = int(b) if b else low
        except ValueError:
            raise argparse.ArgumentTypeError(f"port={values['port']!r}: expected N or N-M") from None
    remote = values.get("remote", "")
    ethertype = values.get("ethertype") or ("IPv6" if ":" in remote else "IPv4")
    return s.RuleSpec(direction=values.get("dir", "ingress"), ethertype=ethertype, protocol=values.get("proto", ""),
                      port_range_min=low, port_range_max=high, remote_ip_prefix=remote,
                      remote_group=values.get("remote-group", ""), description=values.get("description", ""))


def wave(text: str) -> s.Wave:
    name, sep, regions = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=REGION[,REGION...]")
    return s.Wave(name, tuple(r.strip() for r in regions.split(",") if r.strip()))


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def _public_key(args: Namespace) -> str | None:
    if args.public_key_file:
        try:
            return Path(args.public_key_file).read_text().strip()
        except OSError as exc:
            raise InvalidArgument(f"cannot read {args.public_key_file}: {exc.strerror}", "--public-key-file") from None
    return args.public_key  # type: ignore[no-any-return]


def intent_from_args(args: Namespace, current: s.SyncIntent | None = None) -> s.SyncIntent:
    """A new intent from the flags, or ``current`` with what the flags change."""
    kind = s.Kind(args.kind) if args.kind else (current.kind if current else None)
    if kind is None:
        raise InvalidArgument("is required: keypair, security-group or image", "--kind")
    regions = tuple(args.region) if args.region else (current.regions if current else ())
    base = current or s.SyncIntent(args.name, kind)
    all_regions = args.all_regions if args.all_regions is not None else base.all_regions
    if args.region and args.all_regions is None:
        all_regions = False  # naming regions on update replaces --all-regions
    if args.all_regions:
        regions = ()
    description = args.description if args.description is not None else base.description
    intent = dataclasses.replace(base, kind=kind, regions=regions, description=description, all_regions=all_regions,
                                 version=args.version or (current.version if current else 0))
    if kind == s.Kind.KEYPAIR:
        kp = base.keypair or s.KeypairSpec(name="", public_key="")
        key = _public_key(args)
        kp = dataclasses.replace(kp, name=args.keypair_name or kp.name or args.name,
                                 public_key=key if key is not None else kp.public_key,
                                 user_id=args.user_id if args.user_id is not None else kp.user_id,
                                 replace=args.replace if args.replace is not None else kp.replace)
        if args.source is not None or args.source_name is not None:
            kp = dataclasses.replace(kp, source_region=args.source if args.source is not None else kp.source_region,
                                     source_name=args.source_name if args.source_name is not None
                                     else kp.source_name)
        if key is not None and args.source is None:  # a key given on the command line replaces a source region
            kp = dataclasses.replace(kp, source_region="", source_name="")
        elif kp.source_region and key is None:
            kp = dataclasses.replace(kp, public_key="")
        return dataclasses.replace(intent, keypair=kp)
    if kind == s.Kind.SECURITY_GROUP:
        g = base.security_group or s.SecurityGroupSpec(name="")
        g = dataclasses.replace(
            g, name=args.group_name or g.name or args.name,
            description=args.group_description if args.group_description is not None else g.description,
            project_id=args.project if args.project is not None else g.project_id,
            rules=tuple(args.rule) if args.rule is not None else g.rules,
            replace=args.replace if args.replace is not None else g.replace)
        if args.no_rules:
            g = dataclasses.replace(g, rules=())
        if args.source is not None or args.source_name is not None:
            g = dataclasses.replace(g, source_region=args.source if args.source is not None else g.source_region,
                                    source_name=args.source_name if args.source_name is not None else g.source_name)
        given = args.rule is not None or args.no_rules
        if given and args.source is None:  # rules given on the command line replace a source region
            g = dataclasses.replace(g, source_region="", source_name="")
        elif g.source_region and not given:
            g = dataclasses.replace(g, rules=())
        return dataclasses.replace(intent, security_group=g)
    img = base.image or s.ImageSpec(mode=s.ImageMode(args.mode or "none"))
    sel = img.selector
    sel = dataclasses.replace(
        sel, names=tuple(args.image) if args.image else sel.names, tags=tuple(args.tag) if args.tag else sel.tags,
        properties=dict(args.property) if args.property else sel.properties,
        visibility=args.visibility if args.visibility is not None else sel.visibility)
    img = dataclasses.replace(
        img, mode=s.ImageMode(args.mode) if args.mode else img.mode, source_region=args.source or img.source_region,
        selector=sel, waves=tuple(args.wave) if args.wave else img.waves,
        rollback_on_failure=args.rollback_on_failure if args.rollback_on_failure is not None
        else img.rollback_on_failure,
        pause_between_waves=args.pause_between_waves if args.pause_between_waves is not None
        else img.pause_between_waves,
        replace=args.replace if args.replace is not None else img.replace)
    if img.mode == s.ImageMode.CONTROLLED and not args.region:
        intent = dataclasses.replace(intent, regions=())
    return dataclasses.replace(intent, image=img)


# ---------------------------------------------------------------- output


def _age(unix_ms: int, now: float) -> str:
    if not unix_ms:
        return "-"
    age = max(0.0, now - unix_ms / 1000)
    return f"{age:.0f}s ago" if age < 120 else f"{age / 60:.0f}m ago" if age < 7200 else f"{age / 3600:.0f}h ago"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def status_text(st: spb.SyncStatus) -> str:
    text = st.state + (" (stale: agent not connected)" if st.stale else "")
    if st.state == "IN_PROGRESS" and st.bytes_total:
        text += f" {100 * st.bytes_done // max(1, st.bytes_total)}% of {_size(st.bytes_total)}"
    return text


def last_change(st: spb.SyncStatus, now: float) -> str:
    """The newest change isthmus made to this copy, with when: what a repair of drift shows as."""
    if not st.action:
        return "-"
    return f"{_age(st.action_unix_ms, now)}: {' '.join(st.action.split())[:40]}"


def status_rows(view: spb.SyncView, now: float) -> list[list[str]]:
    return [[st.resource, st.region, status_text(st), st.wave or "-", _age(st.updated_unix_ms, now),
             last_change(st, now), (st.error or st.detail).replace("\n", " ")[:60]] for st in view.statuses]


def summary(view: spb.SyncView) -> str:
    counts: dict[str, int] = {}
    for st in view.statuses:
        counts[st.state] = counts.get(st.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing yet"


def what(intent: spb.SyncIntent) -> str:
    if intent.kind == "keypair":
        kp = intent.keypair
        return f"keypair {kp.name}" + (f" from {kp.source_region}" + (f" ({kp.source_name})" if kp.source_name
                                                                      else "") if kp.source_region else "")
    if intent.kind == "security-group":
        g = intent.security_group
        if g.source_region:
            return f"group {g.name} from {g.source_region}" + (f" ({g.source_name})" if g.source_name else "")
        return f"group {g.name} ({len(g.rules)} {'rule' if len(g.rules) == 1 else 'rules'})"
    img = intent.image
    sel = ", ".join([*img.selector.names, *(f"tag {t}" for t in img.selector.tags),
                     *(f"{k}={v}" for k, v in sorted(img.selector.properties.items())),
                     *([f"visibility {img.selector.visibility}"] if img.selector.visibility else [])])
    return f"images {img.mode} from {img.source_region or '-'}" + (f": {sel}" if sel else "")


def targets(intent: spb.SyncIntent) -> str:
    if intent.kind == "image" and intent.image.mode == "controlled":
        return " -> ".join(f"{w.name}[{','.join(w.regions)}]" for w in intent.image.waves)
    return "all regions" if intent.all_regions else ",".join(intent.regions)


def sync_row(view: spb.SyncView) -> list[str]:
    rollout = f"{view.rollout.state} wave {view.rollout.wave + 1}" if view.HasField("rollout") else "-"
    if view.HasField("rollout") and view.rollout.state == "DONE":
        rollout = "DONE"
    return [view.intent.name, view.intent.kind, what(view.intent), targets(view.intent), summary(view), rollout]


SYNC_COLUMNS = ["NAME", "KIND", "WHAT", "REGIONS", "STATUS", "ROLLOUT"]
STATUS_COLUMNS = ["RESOURCE", "REGION", "STATE", "WAVE", "UPDATED", "LAST CHANGE", "DETAIL"]
HISTORY_COLUMNS = ["TIME", "SITE", "CHANGE"]
HISTORY = 20  # the newest changes ``sync show`` lists


# ---------------------------------------------------------------- commands


def _stub(ctl: Ctl) -> Any:
    return ctl.stub(sync_pb2_grpc.SyncServiceStub)


def sync_create(ctl: Ctl, args: Namespace) -> None:
    intent = s.validate_intent(intent_from_args(args))
    made = _stub(ctl).CreateSync(sync_wire.to_pb(intent, spb.SyncIntent()), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(made)
    else:
        print(f"created sync {made.name} ({what(made)} -> {targets(made)}); follow it with: "
              f"isthmusctl sync show {made.name}")


def sync_update(ctl: Ctl, args: Namespace) -> None:
    stub = _stub(ctl)
    current = stub.GetSync(spb.GetSyncRequest(name=args.name), timeout=ctl.timeout)
    base = sync_wire.intent_from_pb(current.intent)
    if args.kind and args.kind != base.kind.value:
        raise InvalidArgument(f"sync {args.name} is a {base.kind.value} intent", "--kind")
    args.kind = None
    intent = s.validate_intent(intent_from_args(args, base))
    made = stub.UpdateSync(sync_wire.to_pb(intent, spb.SyncIntent()), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(made)
    else:
        print(f"updated sync {made.name} (version {made.version})")


def sync_list(ctl: Ctl, args: Namespace) -> None:
    views = all_pages(_stub(ctl).ListSyncs, spb.ListSyncsRequest(kind=args.kind or ""), "syncs", ctl.timeout)
    ctl.show(views, SYNC_COLUMNS, sync_row)


def format_view(view: spb.SyncView, now: float) -> str:
    intent = view.intent
    pairs = [("name", intent.name), ("kind", intent.kind), ("what", what(intent)), ("regions", targets(intent)),
             ("version", str(intent.version))]
    if intent.description:
        pairs.append(("description", intent.description))
    if view.HasField("rollout"):
        ro = view.rollout
        waves = intent.image.waves
        at = waves[ro.wave].name if ro.wave < len(waves) else "all done"
        pairs.append(("rollout", f"{ro.id} {ro.state}, wave {min(ro.wave + 1, len(waves))}/{len(waves)} ({at})"
                      + (f", without {', '.join(ro.skipped)} (--skip-site)" if ro.skipped else "")
                      + (f": {ro.error}" if ro.error else "")))
    return format_fields(pairs) + "\n\n" + format_table(STATUS_COLUMNS, status_rows(view, now))


def history(ctl: Ctl, view: spb.SyncView) -> list[epb.Event]:
    """The newest central events of the changes the regions' agents made for this intent (kind sync)."""
    request = epb.ListEventsRequest(kind="sync", since_unix_ms=view.intent.created_unix_ms, limit=MAX_EVENTS)
    reply = ctl.stub(events_pb2_grpc.EventServiceStub).ListEvents(request, timeout=ctl.timeout)
    mine = f"(sync {view.intent.name})"
    return [e for e in reply.events if mine in e.message][-HISTORY:]


def sync_show(ctl: Ctl, args: Namespace) -> None:
    view = _stub(ctl).GetSync(spb.GetSyncRequest(name=args.name), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(view)
        return
    print(format_view(view, time.time()))
    changes = history(ctl, view)
    print(f"\nrecent changes in the regions ({len(changes)}; all: isthmusctl events --kind sync):")
    if changes:
        print(format_table(HISTORY_COLUMNS, [[format_clock(e.time_unix_ms), e.site, " ".join(e.message.split())]
                                             for e in changes]))


def sync_delete(ctl: Ctl, args: Namespace) -> None:
    reply = _stub(ctl).DeleteSync(spb.DeleteSyncRequest(name=args.name, version=args.version or 0),
                                  timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
    else:
        print(f"deleted sync {args.name} at revision {reply.revision}; each region's agent removes the copies it "
              "made")


def _control(action: str) -> Command:
    def run(ctl: Ctl, args: Namespace) -> None:
        skip = list(getattr(args, "skip_site", None) or [])
        ro = _stub(ctl).ControlRollout(spb.ControlRolloutRequest(name=args.name, action=action, skip_sites=skip),
                                       timeout=ctl.timeout)
        if ctl.output == "json":
            ctl.print_json(ro)
            return
        print(f"sync {args.name}: rollout {ro.id} is {ro.state}")
        if skip and action == "rollback":
            print(f"no longer waiting for {', '.join(skip)}: the rollback finishes without them; an agent of "
                  "theirs that comes back still removes the copy it made")
        elif skip:
            print(f"no longer waiting for {', '.join(skip)}: the rollout goes on without them; they get no copy")

    return run


def image_ensure(ctl: Ctl, args: Namespace) -> None:
    """Follow a lazy copy until the image is active in the region; progress on stderr, the result on stdout."""
    request = spb.EnsureImageRequest(image=args.image, region=args.region, intent=args.intent or "",
                                     timeout_seconds=int(args.wait_timeout), wait_seconds=args.wait)
    last = None
    for progress in _stub(ctl).EnsureImage(request, timeout=args.wait + args.wait_timeout + 10):
        last = progress
        if ctl.output != "json":
            st = progress.status
            print(f"{st.resource} in {st.region}: {status_text(st)}"
                  + (f" ({st.error or st.detail})" if st.error or st.detail else ""), file=sys.stderr)
    if ctl.output == "json" and last is not None:
        ctl.print_json(last)
    elif last is not None and last.done:
        print(f"image {last.status.resource} is active in {last.status.region} (id {last.status.target_id})")


IMAGE_COLUMNS = ["NAME", "ID", "STATUS", "SIZE", "VISIBILITY", "TAGS"]


def image_row(img: spb.ImageInfo, long: bool) -> list[str]:
    return [img.name, img.id if long else img.id[:8], img.status, _size(img.size), img.visibility or "-",
            ",".join(img.tags) or "-"]


def image_list(ctl: Ctl, args: Namespace) -> None:
    """The region's images as the coordinator knows them: its agent's last image list."""
    reply = _stub(ctl).ListImages(spb.ListImagesRequest(region=args.region), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
        return
    print(f"images of {reply.region} (OpenStack region {reply.openstack_region}) as its agent listed them, "
          f"changed {_age(reply.updated_unix_ms, time.time())}:")
    if not reply.images:
        print("no images")
        return
    print(format_table(IMAGE_COLUMNS, [image_row(i, args.long) for i in sorted(reply.images, key=lambda x: x.name)]))


COMMANDS: dict[str, Command] = {
    "sync create": sync_create,
    "sync update": sync_update,
    "sync list": sync_list,
    "sync show": sync_show,
    "sync delete": sync_delete,
    "sync pause": _control("pause"),
    "sync resume": _control("resume"),
    "sync abort": _control("abort"),
    "sync rollback": _control("rollback"),
    "image ensure": image_ensure,
    "image list": image_list,
}

EPILOGS = {
    "sync create": """Kinds and their flags:
  keypair         --public-key-file F (or --public-key TEXT), --keypair-name (default NAME), --user-id, --replace
  security-group  --group-name (default NAME), --project, --rule ..., --group-description, --replace
  image           --mode none|auto|lazy|controlled, --source REGION, selector flags (--image, --tag, --property,
                  --visibility); controlled: --wave NAME=R1,R2 in order, --rollback-on-failure, --pause-between-waves

A rule is KEY=VALUE pairs: dir=ingress|egress, ethertype=IPv4|IPv6 (default from remote), proto=tcp|udp|icmp|N,
port=N or N-M, remote=CIDR, remote-group=GROUP_NAME (a group of the same project, synced too), description=TEXT.

examples:
  isthmusctl sync create ops-key --kind keypair --public-key-file ~/.ssh/id_ed25519.pub \\
      --region region-one --region region-two
  isthmusctl sync create web-sg --kind security-group --project PROJECT_ID --region region-one --region region-two \\
      --rule proto=tcp,port=443,remote=0.0.0.0/0 --rule proto=tcp,port=22,remote=2001:db8::/32 \\
      --rule proto=tcp,port=5432,remote-group=web-sg
  isthmusctl sync create golden --kind image --mode auto --source region-one --tag golden --region region-two
  isthmusctl sync create on-demand --kind image --mode lazy --source region-one --visibility public \\
      --region region-two
  isthmusctl sync create ubuntu-24 --kind image --mode controlled --source region-one --image ubuntu-24.04 \\
      --wave canary=region-two --wave rest=region-three,region-four --rollback-on-failure
""",
    "image ensure": """Asks for a copy of IMAGE in REGION through the lazy (or auto) image sync that covers
it, and waits until the copy is active and verified there, printing progress.
Exit status 0 when active, 1 on a conflict or when --wait-timeout passes.

examples:
  isthmusctl image ensure ubuntu-24.04 --region region-two
  isthmusctl image ensure 3f1c... --region region-two --intent on-demand --wait-timeout 1800
""",
}


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top, EPILOGS)
    sync = cli.group(groups, "sync", "make keypairs, security groups and images exist in several regions")
    for verb, help in (("create", "create a sync intent"),
                       ("update", "change a sync intent (read, modify, write; flags not given stay)")):
        p = cli.command(sync, f"sync {verb}", help)
        p.add_argument("name", metavar="NAME", help="intent name: a DNS label, unique")
        p.add_argument("--kind", choices=[k.value for k in s.Kind], required=verb == "create",
                       help="what is synced")
        p.add_argument("--region", action="append", metavar="SITE", help="a target region (site), repeatable")
        p.add_argument("--all-regions", action=argparse.BooleanOptionalAction, default=None,
                       help="every region whose agent has attached, now and later, but the source (keypairs, "
                       "security groups, auto and lazy images)")
        p.add_argument("--source", "--from-region", dest="source", metavar="SITE",
                       help="the region holding the original: an image's, or a keypair or security group to follow "
                       "(its key or rules are copied and kept in step)")
        p.add_argument("--source-name", metavar="N", help="keypair / security group: its name in the source region "
                       "(default: the same name)")
        p.add_argument("--description", metavar="TEXT", help="free text")
        p.add_argument("--replace", action=argparse.BooleanOptionalAction, default=None,
                       help="overwrite / adopt a same-named resource isthmus did not create (default: CONFLICT)")
        k = p.add_argument_group("keypair")
        k.add_argument("--keypair-name", metavar="N", help="keypair name in each region (default NAME)")
        k.add_argument("--public-key-file", metavar="FILE", help="OpenSSH public key file")
        k.add_argument("--public-key", metavar="TEXT", help="OpenSSH public key line")
        k.add_argument("--user-id", metavar="ID", help="owning user (default: the agents' own user)")
        g = p.add_argument_group("security-group")
        g.add_argument("--group-name", metavar="N", help="group name in each region (default NAME)")
        g.add_argument("--group-description", metavar="TEXT", help="the group's description")
        g.add_argument("--project", metavar="ID", help="owning project id (default: the agents' own project)")
        g.add_argument("--rule", action="append", type=rule, metavar="K=V,...", help="a rule, repeatable "
                       "(replaces the list on update)")
        g.add_argument("--no-rules", action="store_true", help="update: remove every rule")
        i = p.add_argument_group("image")
        i.add_argument("--mode", choices=[x.value for x in s.ImageMode], help="none, auto, lazy or controlled")
        i.add_argument("--image", action="append", metavar="NAME|ID", help="an image of the source, repeatable")
        i.add_argument("--tag", action="append", metavar="TAG", help="images with this tag, repeatable (all must "
                       "match)")
        i.add_argument("--property", action="append", type=key_value, metavar="K=V",
                       help="images with this property, repeatable")
        i.add_argument("--visibility", choices=[v for v in s.VISIBILITIES if v], help="images of this visibility")
        i.add_argument("--wave", action="append", type=wave, metavar="NAME=R1[,R2]",
                       help="controlled: the next wave of the rollout, repeatable, in order")
        i.add_argument("--rollback-on-failure", action=argparse.BooleanOptionalAction, default=None,
                       help="controlled: remove this rollout's copies when a wave fails")
        i.add_argument("--pause-between-waves", action=argparse.BooleanOptionalAction, default=None,
                       help="controlled: pause after each verified wave (isthmusctl sync resume)")
        if verb == "update":
            add_version(p)
        else:
            p.set_defaults(version=0)
    p = cli.command(sync, "sync list", "list sync intents with a status summary")
    p.add_argument("--kind", choices=[k.value for k in s.Kind], help="only intents of this kind")
    cli.command(sync, "sync show", "show an intent and its status per resource and region").add_argument(
        "name", metavar="NAME", help="intent name")
    p = cli.command(sync, "sync delete", "delete an intent; the agents remove the copies isthmus made")
    p.add_argument("name", metavar="NAME", help="intent name")
    add_version(p)
    for verb, help in (("pause", "pause a controlled rollout: the current wave holds (copies under way stop, "
                                  "verified ones stay) and no new wave starts"),
                       ("resume", "resume a paused, failed or aborted rollout"),
                       ("abort", "stop a rollout where it is (copies made so far stay)"),
                       ("rollback", "remove every copy the rollout made")):
        p = cli.command(sync, f"sync {verb}", help)
        p.add_argument("name", metavar="NAME", help="intent name")
        if verb == "resume":
            p.add_argument("--skip-site", action="append", metavar="SITE", help="go on without this site (gone, "
                           "unreachable, never attached): the wave completes without it and it gets no copy; "
                           "repeatable, also while the rollout runs")
        elif verb == "rollback":
            p.add_argument("--skip-site", action="append", metavar="SITE", help="finish the rollback without "
                           "this site's confirmation (gone, unreachable, never attached); its agent, if it comes "
                           "back, still removes the copy it made; repeatable, also while the rollback runs")
    image = cli.group(groups, "image", "images across regions")
    p = cli.command(image, "image ensure", "copy an image to a region now (lazy sync) and wait until it is active")
    p.add_argument("image", metavar="IMAGE", help="image name or id in the source region")
    p.add_argument("--region", required=True, metavar="SITE", help="the region that needs it")
    p.add_argument("--intent", metavar="NAME", help="the sync intent to use (default: the one that covers it)")
    p.add_argument("--wait-timeout", type=float, default=600.0, metavar="S", help="give up after S seconds "
                   "(default 600); the copy goes on")
    p.add_argument("--wait", type=duration, default=0, metavar="DURATION",
                   help="wait up to this long (30s, 5m; at most 10m) for the image to appear in its source region's "
                   "image list as the coordinator has it (one uploaded just now is listed within the agent's "
                   "--inventory-interval); default: NOT_FOUND at once")
    p = cli.command(image, "image list", "a region's images as the coordinator knows them (its agent's last list)")
    p.add_argument("--region", required=True, metavar="SITE", help="the region (site)")
    p.add_argument("--long", action="store_true", help="full image ids")


def parse_rules(values: Sequence[str]) -> list[s.RuleSpec]:
    return [rule(v) for v in values]
