"""isthmusctl's ``pki``: create the CA, issue the certificates of mutual TLS and show what one says.

The CA, its files and the conventions the coordinator checks are ``isthmus.core.pki``; this is its command line,
handed ``isthmusctl pki ...`` by ``main`` before anything is parsed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from isthmus.core.pki import (
    CA_DAYS,
    CA_KEY_FILE,
    DEFAULT_PKI_DIR,
    ENV_PKI_DIR,
    LEAF_DAYS,
    MAX_DAYS,
    ROLES,
    Identity,
    PkiError,
    check_dns_name,
    check_name,
    describe,
    init_ca,
    issue,
    parse_ip,
    read_file,
)
from isthmus.ctl.render import format_fields


def _identity_text(identity: Identity) -> str:
    role = f" (role {identity.role})" if identity.role else " (no role)"
    return f"{identity.kind} {identity.name}{role}"


def _validity_text(when: str, now: dt.datetime, end: bool) -> str:
    moment = dt.datetime.fromisoformat(when)
    if end and moment <= now:
        return f"{when} (expired)"
    if not end and moment > now:
        return f"{when} (not yet valid)"
    return when


def show_text(info: dict[str, object], now: dt.datetime) -> str:
    """describe()'s dict as 'key: value' lines; dates past or to come are marked against now."""
    def joined(key: str) -> str:
        value = info[key]
        return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)

    ident = info["identity"]
    assert isinstance(ident, dict)
    return format_fields([
        ("subject", str(info["common_name"])), ("ou", str(info["organizational_unit"])),
        ("issuer", str(info["issuer"])), ("ca", "yes" if info["ca"] else "no"), ("serial", str(info["serial"])),
        ("not-before", _validity_text(str(info["not_before"]), now, end=False)),
        ("not-after", _validity_text(str(info["not_after"]), now, end=True)),
        ("dns", joined("dns")), ("ip", joined("ips")), ("uri", joined("uris")),
        ("key", str(info["key"])), ("key-usage", joined("key_usage")),
        ("extended-key-usage", joined("extended_key_usage")), ("sha256", str(info["sha256"])),
        ("identity", _identity_text(Identity(**ident))),
    ])


def _arg(check: Callable[[str], object]) -> Callable[[str], str]:
    # argparse type= from a check raising PkiError: a bad value is a usage error (exit 2).
    def parse(text: str) -> str:
        try:
            check(text)
        except PkiError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def _days(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{value} is not in 1..{MAX_DAYS}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of `isthmusctl pki`."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, metavar="DIR",
                       help=f"the CA's directory (default: ${ENV_PKI_DIR}, else ./{DEFAULT_PKI_DIR})")
    made = argparse.ArgumentParser(add_help=False, parents=[where])
    made.add_argument("--force", action="store_true", help="replace existing files")

    parser = argparse.ArgumentParser(
        prog="isthmusctl pki", allow_abbrev=False,
        description="Create isthmus's CA and issue the certificates of mutual TLS between coordinators, "
                    "agents and operators.",
        epilog="""the secure set-up in three commands:
  isthmusctl pki init
  isthmusctl pki issue coordinator c1 --dns coord.example.net --ip 192.0.2.10
  isthmusctl pki issue agent region-one          (one per site)
  isthmusctl pki issue operator alice --role admin""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("init", parents=[made], allow_abbrev=False,
                           help="create the CA: ca.pem and ca.key", description="create the CA: ca.pem and ca.key")
    p.add_argument("--days", type=_days, default=CA_DAYS, metavar="N", help=f"validity (default {CA_DAYS})")

    p = actions.add_parser("issue", help="issue a coordinator, agent or operator certificate",
                           description="issue a certificate signed by the CA: <kind>-<name>.pem and .key")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    leaf = argparse.ArgumentParser(add_help=False, parents=[made])
    leaf.add_argument("--days", type=_days, default=LEAF_DAYS, metavar="N", help=f"validity (default {LEAF_DAYS})")

    k = kinds.add_parser("coordinator", parents=[leaf], allow_abbrev=False, help="a coordinator (server and client)",
                         description="a coordinator's certificate: serverAuth and clientAuth")
    k.add_argument("name", type=_arg(lambda n: check_name("coordinator", n)), metavar="NAME",
                   help="the coordinator's name: a DNS label")
    k.add_argument("--dns", action="append", default=[], type=_arg(check_dns_name), metavar="NAME",
                   help="a DNS name clients dial, repeatable (default with no --ip: localhost)")
    k.add_argument("--ip", action="append", default=[], type=_arg(parse_ip), metavar="IP",
                   help="an IP address clients dial, repeatable (default with no --dns: 127.0.0.1 and ::1)")

    k = kinds.add_parser("agent", parents=[leaf], allow_abbrev=False, help="the agent of a site",
                         description="an agent's certificate: clientAuth, naming its site")
    k.add_argument("name", type=_arg(lambda n: check_name("agent", n)), metavar="SITE",
                   help="the site: a DNS label")

    k = kinds.add_parser("operator", parents=[leaf], allow_abbrev=False, help="a user of the API",
                         description="an operator's certificate: clientAuth, naming the user and the role")
    k.add_argument("name", type=_arg(lambda n: check_name("operator", n)), metavar="NAME",
                   help="the user name: 1-64 of A-Z a-z 0-9 _ . @ -")
    k.add_argument("--role", required=True, choices=ROLES,
                   help="viewer: read; operator: read and change; admin: everything")

    p = actions.add_parser("show", allow_abbrev=False, help="show what a certificate says",
                           description="show a certificate's names, usages, dates and isthmus identity")
    p.add_argument("file", type=Path, metavar="FILE.pem", help="a PEM certificate")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="table (default) or json")
    return parser


def _run(args: argparse.Namespace, out: TextIO) -> None:
    if args.action == "show":
        info = describe(read_file(args.file))
        if args.output == "json":
            print(json.dumps(info, indent=2), file=out)
        else:
            print(show_text(info, dt.datetime.now(dt.UTC)), file=out)
        return
    directory = args.dir if args.dir is not None else Path(os.environ.get(ENV_PKI_DIR) or DEFAULT_PKI_DIR)
    if args.action == "init":
        cert_path = init_ca(directory, days=args.days, force=args.force)
        cert_file, key_file = cert_path, directory / CA_KEY_FILE
    else:
        cert_file, key_file = issue(directory, args.kind, args.name, role=getattr(args, "role", None) or "",
                                    dns=getattr(args, "dns", []), ips=getattr(args, "ip", []),
                                    days=args.days, force=args.force)
    info = describe(cert_file.read_bytes())
    ident = info["identity"]
    assert isinstance(ident, dict)
    lines = [("certificate", str(cert_file)), ("key", str(key_file))]
    if args.action == "issue":
        lines.append(("identity", _identity_text(Identity(**ident))))
    lines.append(("valid", f"{info['not_before']} to {info['not_after']}"))
    print(format_fields(lines), file=out)


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """Run `isthmusctl pki ARGV...`; return the exit status: 0, 1 (error, one line on stderr) or 2 (usage).

    out: where results and --help go (default: sys.stdout at the time of the call).
    """
    out = out if out is not None else sys.stdout
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out):  # --help goes where the caller's output goes
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        _run(args, out)
    except PkiError as exc:
        print(f"isthmusctl pki: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
