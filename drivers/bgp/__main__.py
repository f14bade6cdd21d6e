"""``python -m isthmus.drivers.bgp stop STATE_DIR [ENDPOINT...]``: stop BGP speakers on purpose.

Speakers outlive the agent by design; this is the way to end them (every
session first gets a NOTIFICATION Cease, Administrative Shutdown) when the
agent will not, e.g. before removing isthmus from a host. STATE_DIR is the bgp
driver's state directory (the agent's ``--state-dir`` plus ``/bgp``); without
ENDPOINT (SITE/NAME) every speaker found there is stopped. A running agent
that still has peerings for an endpoint starts a new speaker on its next pass.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from isthmus.drivers.bgp.client import SpeakerClient, SpeakerGone, SpeakerPaths


async def stop(state_dir: Path, endpoints: list[str]) -> int:
    found = 0
    for sock in sorted(state_dir.glob("speaker-*.sock")):
        paths = SpeakerPaths(sock, sock.with_suffix(".pid"), sock.with_suffix(".log"))
        try:
            client = await SpeakerClient.connect("?", paths, lambda _c, _e: None)
        except SpeakerGone as exc:
            print(f"{sock}: {exc}", file=sys.stderr)
            continue
        assert client.hello is not None
        endpoint = client.hello["endpoint"]
        if endpoints and endpoint not in endpoints:
            await client.close()
            continue
        found += 1
        client.label, client.paths = endpoint, SpeakerPaths.of(state_dir, endpoint)
        await client.stop()
        print(f"stopped the BGP speaker of {endpoint} (pid {client.pid})")
    if endpoints and not found:
        print(f"no BGP speaker of {', '.join(endpoints)} answers in {state_dir}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m isthmus.drivers.bgp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stop", help="stop speakers: their sessions get a Cease (Administrative Shutdown)")
    s.add_argument("state_dir", type=Path, help="the bgp driver's state directory (agent --state-dir + /bgp)")
    s.add_argument("endpoint", nargs="*", help="SITE/NAME of the speakers to stop (default: all)")
    args = p.parse_args(argv)
    sys.exit(asyncio.run(stop(args.state_dir, args.endpoint)))


if __name__ == "__main__":
    main()
