"""isthmusctl: the command line client of the coordinator's API and of an agent's local admin socket."""

from __future__ import annotations

import argparse
import os
import sys
from argparse import Namespace
from collections.abc import Sequence

import grpc

from isthmus.core.errors import IsthmusError
from isthmus.ctl import apply, border, events, health, local, logs, network, policy, status, sync, views, watch
from isthmus.ctl.client import (
    DEFAULT_ADMIN_SOCKET,
    DEFAULT_COORDINATOR,
    DEFAULT_TIMEOUT,
    ENV_ADMIN_SOCKET,
    ENV_COORDINATOR,
    ENV_TOKEN,
    Command,
    Ctl,
    CtlError,
    coordinator_list,
)
from isthmus.ctl.flags import seconds
from isthmus.ctl.render import describe_rpc_error

# Each command group's commands, in the order `isthmusctl --help` lists the groups.
COMMANDS: dict[str, Command] = {
    **network.COMMANDS,
    **policy.COMMANDS,
    **apply.COMMANDS,
    **border.COMMANDS,
    **status.COMMANDS,
    **watch.COMMANDS,
    **local.COMMANDS,
    **sync.COMMANDS,
    **events.COMMANDS,
    **views.COMMANDS,
    **health.COMMANDS,
    **logs.COMMANDS,
}


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS keeps a subcommand's parser from resetting a value given before the subcommand;
    # parse_args() fills in the defaults afterwards.
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("global options")
    s = argparse.SUPPRESS
    g.add_argument("--coordinator", metavar="ADDR[,ADDR...]", default=s,
                   help=f"coordinators, HOST:PORT or unix:PATH, comma-separated: each call goes to the next one "
                   f"when one cannot be reached (default: ${ENV_COORDINATOR}, else {DEFAULT_COORDINATOR})")
    g.add_argument("-o", "--output", choices=("table", "json", "yaml"), default=s,
                   help="table (default) or json; yaml: only for get, whose documents apply takes back")
    g.add_argument("--timeout", type=seconds, metavar="SECONDS", default=s,
                   help=f"deadline of each call (default {DEFAULT_TIMEOUT:g})")
    g.add_argument("--tls-ca", metavar="FILE", default=s, help="CA certificates (PEM); use TLS when given")
    g.add_argument("--tls-cert", metavar="FILE", default=s, help="client certificate (PEM) for mutual TLS")
    g.add_argument("--tls-key", metavar="FILE", default=s, help="private key (PEM) of --tls-cert")
    g.add_argument("--token", metavar="TOKEN", default=s,
                   help=f"bearer token for the coordinator (default ${ENV_TOKEN}); prefer the variable, "
                   "command lines are visible to other users")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    top = [common]
    parser = argparse.ArgumentParser(prog="isthmusctl", description=__doc__, parents=top, allow_abbrev=False,
                                     epilog="Run 'isthmusctl COMMAND --help' for the flags of each command.")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    network.add_parsers(groups, top)
    policy.add_parsers(groups, top)
    apply.add_parsers(groups, top)
    border.add_parsers(groups, top)
    status.add_parsers(groups, top)
    # Listed for the help only: main() hands `isthmusctl pki ...` over before parsing.
    groups.add_parser("pki", help="create a CA and certificates for coordinators, agents and people "
                      "(isthmusctl pki --help)", add_help=False)
    watch.add_parsers(groups, top)
    local.add_parsers(groups, top)
    sync.add_parsers(groups, top)
    events.add_parsers(groups, top)
    views.add_parsers(groups, top)
    health.add_parsers(groups, top)
    logs.add_parsers(groups, top)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Namespace:
    """Parse the command line (exit 2 on a usage error) and fill in the global defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = {
        "coordinator": os.environ.get(ENV_COORDINATOR) or DEFAULT_COORDINATOR,
        "socket": os.environ.get(ENV_ADMIN_SOCKET) or DEFAULT_ADMIN_SOCKET,
        "output": "table", "timeout": DEFAULT_TIMEOUT, "tls_ca": os.environ.get("ISTHMUS_TLS_CA") or None,
        "tls_cert": os.environ.get("ISTHMUS_TLS_CERT") or None, "tls_key": os.environ.get("ISTHMUS_TLS_KEY") or None,
        "token": os.environ.get(ENV_TOKEN) or None,
    }
    for name, value in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if not coordinator_list(args.coordinator):
        parser.error(f"--coordinator: give at least one HOST:PORT (got {args.coordinator[:100]!r})")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert is not None and args.tls_ca is None:
        parser.error("--tls-cert needs --tls-ca")
    error = border.device_flags_error(args)
    if error is not None:
        parser.error(error)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pki"]:
        from isthmus.ctl import pki  # only here: it loads the cryptography package, which no other command needs

        return pki.main(argv[1:])
    args = parse_args(argv)
    ctl = Ctl(coordinator=args.coordinator, admin_socket=args.socket, output=args.output,
              timeout=args.timeout, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
              token=args.token)
    try:
        COMMANDS[args.command](ctl, args)
        return 0
    except grpc.RpcError as exc:
        print(f"isthmusctl: error: {describe_rpc_error(exc, ctl.unavailable_hint)}", file=sys.stderr)
    except (CtlError, IsthmusError) as exc:
        print(f"isthmusctl: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from failing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        ctl.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())
