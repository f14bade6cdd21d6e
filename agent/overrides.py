"""Local overrides: maintenance done at the site through the admin socket, persisted.

Precedence: an override wins over the coordinator's intent for as long as it
exists. A DISABLE override holds a desired peering DOWN (the coordinator may
change the peering's parameters meanwhile; they are applied, but the peering
stays down). An ADD override realizes a peering the coordinator does not know.
Overrides end only when removed through the admin socket or when their TTL
runs out; a coordinator reconnecting never removes them. If the coordinator
later desires a peering with the same name as an ADD override, the override
still wins until it is removed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from isthmus.core import model as m
from isthmus.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


def _now_ms() -> int:
    return int(time.time() * 1000)


MAX_TTL_SECONDS = 3650 * 86400  # ten years; "until removed" is ttl 0


def _endpoint(ep: m.Endpoint, field_name: str, **defaults: object) -> m.Endpoint:
    """Validate one end of a locally added peering, naming it in errors (peering.local.address: ...)."""
    try:
        return m.validate_endpoint(dataclasses.replace(ep, **defaults))  # type: ignore[arg-type]
    except InvalidArgument as exc:
        text = exc.message[len(exc.field) + 2:] if exc.field else exc.message
        raise InvalidArgument(text, f"{field_name}.{exc.field}" if exc.field else field_name) from None


class Overrides:
    """The overrides in force, persisted in ``STATE_DIR/overrides.json`` (atomic replace)."""

    def __init__(self, path: Path, site: str = "local") -> None:
        self.path = Path(path)
        self.site = site
        self.items: dict[str, m.Override] = {}
        try:
            data = json.loads(self.path.read_text())
            self.items = {o["connection"]: m.override_from_json(o) for o in data["overrides"]}
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path} is damaged ({exc}); move it away to drop the local overrides") from exc

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = json.dumps({"overrides": [m.to_json(o) for o in self.items.values()]}, indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".overrides.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @staticmethod
    def _expiry(ttl_seconds: int) -> int:
        if not 0 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise InvalidArgument(f"must be 0 (until removed) or 1..{MAX_TTL_SECONDS} seconds", "ttl_seconds")
        return _now_ms() + ttl_seconds * 1000 if ttl_seconds else 0

    def disable(self, connection: str, desired: Mapping[str, m.DesiredPeering], ttl_seconds: int = 0,
                reason: str = "") -> m.Override:
        current = self.items.get(connection)
        if current is not None and current.kind == m.OverrideKind.ADD:
            raise FailedPrecondition(
                f"{connection} was added locally; remove the override instead of disabling it"
            )
        if connection not in desired:
            known = ", ".join(sorted(desired)) or "none"
            raise NotFound(f"no desired peering {connection!r} at this site (peerings: {known})", "connection")
        expires = self._expiry(ttl_seconds)
        o = m.Override(connection, m.OverrideKind.DISABLE, None, reason, _now_ms(), expires)
        self.items[connection] = o
        self._save()
        return o

    def add(self, peering: m.DesiredPeering, desired: Mapping[str, m.DesiredPeering], ttl_seconds: int = 0,
            reason: str = "") -> m.Override:
        m.check_name(peering.connection, "peering.connection")
        if peering.connection in desired:
            raise AlreadyExists(f"the coordinator already desires a peering {peering.connection!r}; pick another "
                                "name or disable that one", "peering.connection")
        if peering.connection in self.items:
            raise AlreadyExists(f"an override for {peering.connection!r} exists; remove it first",
                                "peering.connection")
        expires = self._expiry(ttl_seconds)
        local = _endpoint(peering.local, "peering.local", site=peering.local.site or self.site,
                          name=peering.local.name or "local", role=m.EndpointRole.LOCAL)
        remote = _endpoint(peering.remote, "peering.remote", site=peering.remote.site or "external",
                           name=peering.remote.name or peering.connection, role=m.EndpointRole.REMOTE)
        if ipaddress.ip_address(local.address).version != ipaddress.ip_address(remote.address).version:
            raise InvalidArgument("local and remote addresses must both be IPv4 or both IPv6", "peering.remote.address")
        bgp, vxlan = m.validate_params(peering.type, peering.bgp, peering.vxlan)
        if bgp is not None and not bgp.address_families:
            bgp = dataclasses.replace(bgp, address_families=m.default_address_families(local.address))
        final = dataclasses.replace(peering, local=local, remote=remote, bgp=bgp, vxlan=vxlan)
        o = m.Override(peering.connection, m.OverrideKind.ADD, final, reason, _now_ms(), expires)
        self.items[peering.connection] = o
        self._save()
        return o

    def remove(self, connection: str) -> m.Override:
        o = self.items.pop(connection, None)
        if o is None:
            raise NotFound(f"no local override for {connection!r}", "connection")
        self._save()
        return o

    def enable(self, connection: str) -> m.Override:
        o = self.items.get(connection)
        if o is None or o.kind != m.OverrideKind.DISABLE:
            raise NotFound(f"{connection!r} is not disabled locally", "connection")
        return self.remove(connection)

    def expire(self, now_ms: int | None = None) -> list[m.Override]:
        now = _now_ms() if now_ms is None else now_ms
        gone = [o for o in self.items.values() if o.expired(now)]
        for o in gone:
            del self.items[o.connection]
        if gone:
            self._save()
        return gone

    def next_expiry_ms(self) -> int:
        return min((o.expires_ms for o in self.items.values() if o.expires_ms), default=0)

    def effective(self, desired: Mapping[str, m.DesiredPeering]) -> dict[str, m.DesiredPeering]:
        """The peerings to realize: the coordinator's, with the overrides applied."""
        out = dict(desired)
        for o in self.items.values():
            if o.kind == m.OverrideKind.DISABLE and o.connection in out:
                out[o.connection] = dataclasses.replace(out[o.connection], admin_state=m.AdminState.DOWN)
            elif o.kind == m.OverrideKind.ADD and o.peering is not None:
                out[o.connection] = o.peering
        return out
