"""isthmusctl's flags: their value types, how a command group adds its parsers, and the flags several groups share.

A bad flag value is a usage error (exit 2) naming the flag: the value types raise ``argparse.ArgumentTypeError``.
``duration`` (a --ttl) lives in ``isthmus.core.flags``, shared with the daemons.
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from isthmus.core import model as m

T = TypeVar("T")
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # argparse has no public name


# ---------------------------------------------------------------- flag values (usage errors: exit 2)


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE of a --label or --property flag."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def endpoint_ref(text: str) -> m.EndpointRef:
    """SITE/NAME naming an endpoint."""
    site, sep, name = text.partition("/")
    if not sep or not site or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected SITE/NAME, got {text!r}")
    return m.EndpointRef(site, name)


def bounded_int(limit: int) -> Callable[[str], int]:
    """A whole number in 0..limit."""
    # Values protobuf cannot hold are usage errors here; the coordinator checks the real
    # ranges (asn 1.., hold time 0 or 3..) and its error names the field.
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not 0 <= value <= limit:
            raise argparse.ArgumentTypeError(f"{value} is out of range 0..{limit}")
        return value

    return parse


uint32 = bounded_int(2**32 - 1)
int64 = bounded_int(2**63 - 1)


def device_segment(text: str) -> tuple[str, int | None]:
    """DEVICE_ID=SEGID or DEVICE_ID of a --device flag (None: the --segmentation-id applies)."""
    device, sep, segid = text.partition("=")
    if not device:
        raise argparse.ArgumentTypeError(f"expected DEVICE_ID or DEVICE_ID=SEGID, got {text!r}")
    if not sep:
        return device, None
    try:
        return device, uint32(segid)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"segmentation id of {device}: {exc}") from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0")
    return value


# ---------------------------------------------------------------- the parsers of a command group


@dataclass(frozen=True)
class Parsers:
    """Adds a command group's parsers: each takes the flags of parents (the global options), and a command
    shows the epilog epilogs holds for it, if any."""

    parents: list[argparse.ArgumentParser]
    epilogs: Mapping[str, str] = field(default_factory=dict)

    def group(self, subs: Subparsers, name: str, help: str) -> Subparsers:
        p = subs.add_parser(name, help=help, description=help, parents=self.parents, allow_abbrev=False)
        return p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def command(self, subs: Subparsers, command: str, help: str) -> argparse.ArgumentParser:
        p = subs.add_parser(command.split()[-1], help=help, description=help, parents=self.parents,
                            epilog=self.epilogs.get(command), formatter_class=argparse.RawDescriptionHelpFormatter,
                            allow_abbrev=False)
        p.set_defaults(command=command)
        return p


def add_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int64, metavar="N", help="only if the stored version is N, else ABORTED")


def add_pairs(p: argparse.ArgumentParser, flag: str, help: str) -> None:
    p.add_argument(flag, type=key_value, action="append", metavar="K=V", help=help)


def hold_time(text: str) -> int:
    """A BGP hold time following the one rule of the model (the coordinator and the drivers apply the same)."""
    value = uint32(text)
    if not m.valid_hold_time(value):
        raise argparse.ArgumentTypeError(f"{value} is not {m.HOLD_TIME_RULE}")
    return value


def import_rule(text: str) -> str:
    """A BGP import rule (``PREFIX [ge N] [le N]``) in its canonical form, or ``none``."""
    if text == "none":
        return text
    try:
        return str(m.ImportRule.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_peering_params(p: argparse.ArgumentParser) -> None:
    """The BGP and VXLAN flags of a connection or a locally added peering; bgp_params and vxlan_params read them."""
    families = ", ".join(m.ADDRESS_FAMILIES)
    p.add_argument("--hold-time", type=hold_time, metavar="S", help=f"BGP hold time: {m.HOLD_TIME_RULE}")
    p.add_argument("--password-ref", metavar="REF", help="BGP password reference: file:/PATH or env:NAME")
    p.add_argument("--address-family", action="append", choices=m.ADDRESS_FAMILIES, metavar="F",
                   help=f"BGP address family, repeatable; replaces the list: {families}")
    p.add_argument("--import-prefix", action="append", type=import_rule, metavar="RULE",
                   help="BGP import policy: accept routes matching 'PREFIX [ge N] [le N]', repeatable; replaces "
                   "the list ('none' empties it: every route but the default route)")
    p.add_argument("--graceful-restart", type=uint32, metavar="S",
                   help=f"BGP graceful restart: seconds peers keep our routes while our speaker restarts "
                   f"(0: off, up to {m.MAX_GRACEFUL_RESTART}; default {m.DEFAULT_GRACEFUL_RESTART})")
    p.add_argument("--max-prefixes", type=uint32, metavar="N",
                   help="BGP: more accepted routes than N end the session with ERROR (0: no limit)")
    p.add_argument("--vni", type=uint32, metavar="N", help=f"VXLAN network identifier 1..{m.MAX_VNI}")
    p.add_argument("--udp-port", type=uint32, metavar="P",
                   help=f"VXLAN UDP port (default {m.DEFAULT_VXLAN_PORT})")
    p.add_argument("--mtu", type=uint32, metavar="M", help=f"VXLAN MTU (default {m.DEFAULT_VXLAN_MTU})")


# ---------------------------------------------------------------- flags read back (pure, tested)


def given(value: T | None, current: T) -> T:
    """The flag's value, or current when the flag was not given."""
    return current if value is None else value


def merged(current: dict[str, str], add: Iterable[tuple[str, str]] | None, remove: Iterable[str] | None
           ) -> dict[str, str]:
    """current without the keys in remove, then with the pairs in add."""
    removed = set(remove or ())
    out = {k: v for k, v in current.items() if k not in removed}
    out.update(add or ())
    return out


def bgp_params(base: m.BgpParams | None, args: Namespace) -> m.BgpParams | None:
    """base with the BGP flags given applied; base itself when none was given."""
    if args.hold_time is None and args.password_ref is None and not args.address_family \
            and not args.import_prefix and args.max_prefixes is None and args.graceful_restart is None:
        return base
    b = base or m.BgpParams()
    families = tuple(args.address_family) if args.address_family else b.address_families
    hold_time, password_ref = given(args.hold_time, b.hold_time), given(args.password_ref, b.password_ref)
    rules = tuple(r for r in args.import_prefix if r != "none") if args.import_prefix else b.import_prefixes
    return m.BgpParams(hold_time, password_ref, families, rules, given(args.max_prefixes, b.max_prefixes),
                       given(args.graceful_restart, b.graceful_restart))


def vxlan_params(base: m.VxlanParams | None, args: Namespace) -> m.VxlanParams | None:
    """base with the VXLAN flags given applied; base itself when none was given."""
    if args.vni is None and args.udp_port is None and args.mtu is None:
        return base
    v = base or m.VxlanParams()
    return m.VxlanParams(given(args.vni, v.vni), given(args.udp_port, v.udp_port), given(args.mtu, v.mtu))
