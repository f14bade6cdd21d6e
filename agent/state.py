"""The agent's persisted desired state: written atomically before anything is applied."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from isthmus.core import model as m
from isthmus.core.files import write_atomically

log = logging.getLogger(__name__)

FORMAT = 1


class StateError(Exception):
    pass


@dataclass(frozen=True)
class DesiredState:
    """The desired peerings of the site at a coordinator revision."""

    site: str
    revision: int = 0
    peerings: dict[str, m.DesiredPeering] = field(default_factory=dict)


class StateFile:
    """``STATE_DIR/desired.json``: replaced atomically (temp file, fsync, rename, fsync dir)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / "desired.json"
        # Each peering's JSON as last written: a delta re-encodes only the peerings it changed (a site with
        # hundreds of peerings spent most of each delta encoding the unchanged ones again).
        self._texts: dict[str, tuple[m.DesiredPeering, str]] = {}

    def load(self, site: str) -> DesiredState:
        """The persisted state, or an empty one at revision 0 when there is none."""
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return DesiredState(site)
        try:
            d = json.loads(raw)
            if d.get("format") != FORMAT:
                raise StateError(f"{self.path}: unknown format {d.get('format')!r}")
            state = DesiredState(
                site=d["site"],
                revision=int(d["revision"]),
                peerings={p["connection"]: m.peering_from_json(p) for p in d["peerings"]},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{self.path} is damaged ({exc}); move it away to start from an empty state") from exc
        if state.site != site:
            raise StateError(
                f"{self.path} holds the state of site {state.site!r}, not {site!r}; "
                "each site's agent needs its own --state-dir"
            )
        return state

    def save(self, state: DesiredState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        texts: dict[str, tuple[m.DesiredPeering, str]] = {}
        for name in sorted(state.peerings):
            p = state.peerings[name]
            held = self._texts.get(name)
            texts[name] = held if held is not None and (held[0] is p or held[0] == p) else (
                p, json.dumps(m.to_json(p), separators=(",", ":")))
        self._texts = texts
        # Compact (written on every change, and indent is slow): {"format", "site", "revision", "peerings": [...]}.
        head = json.dumps({"format": FORMAT, "site": state.site, "revision": state.revision}, separators=(",", ":"))
        body = head[:-1] + ',"peerings":[' + ",".join(text for _, text in texts.values()) + "]}"
        write_atomically(self.path, body)
        log.debug("persisted %d peerings of %s at rev %d", len(state.peerings), state.site, state.revision)

