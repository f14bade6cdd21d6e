"""Who is calling, what they may do, and the audit history of writes and refusals.

Identity comes from the client certificate (mutual TLS; see ``isthmus.pki``
for the conventions: a SAN URI ``isthmus://site/<site>`` for agents,
``isthmus://user/<name>`` with the role in the OU for people) or from a bearer
token listed in the token file. Roles are ordered viewer < operator < admin:
viewers read and watch, operators write network objects, admins also write
sites. Agents may only open the agent stream, for their own site.

With neither mutual TLS nor a token file (plain text on loopback, for
development) nobody is authenticated: every caller is admin and any agent may
speak for any site. The coordinator says so loudly at start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from isthmus.coordinator import registry as r
from isthmus.coordinator.store import Delete, Put, Store
from isthmus.core import pki
from isthmus.core.edge import AuditSlot, auditing
from isthmus.core.errors import IsthmusError

log = logging.getLogger(__name__)

ROLES = ("viewer", "operator", "admin")
AUDIT = r.ROOT + "audit/"
AUDIT_KEEP = 10_000  # the leader trims the history to this many events
AUDIT_MAX_AGE_MS = 30 * 86_400_000


@dataclass(frozen=True)
class Principal:
    kind: str  # user, site, coordinator, token, anonymous, unknown
    name: str
    role: str  # viewer, operator, admin, agent, coordinator, ""

    @property
    def who(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind

    def has(self, required: str) -> bool:
        if required == "agent":
            return self.role == "agent"
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(required)


OPEN = Principal("anonymous", "", "admin")

# Required role per RPC: reads need viewer; writes of network objects operator; sites admin.
_READ_PREFIXES = ("Get", "List", "Watch")


def required_role(service: str, method: str) -> str:
    if service in ("AgentService", "RegionAgentService"):
        return "agent"
    if method.startswith(_READ_PREFIXES):
        return "viewer"
    if service == "SiteService":
        return "admin"
    return "operator"


class TokenFile:
    """``NAME ROLE TOKEN`` per line, TOKEN either the token or ``sha256:HEX`` of it; re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._mtime = -1.0
        self._entries: list[tuple[str, str, str]] = []
        self._load()

    def _load(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError as exc:
            raise ValueError(f"--token-file {self.path} does not exist") from exc
        if st.st_mtime == self._mtime:
            return
        if st.st_mode & 0o077:
            log.warning("token file %s is readable by others (mode %o); make it 0600", self.path, st.st_mode & 0o777)
        entries = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ROLES:
                raise ValueError(f"{self.path}:{n}: expected 'NAME ROLE TOKEN' with ROLE one of {', '.join(ROLES)}")
            name, role, token = parts
            digest = token[7:] if token.startswith("sha256:") else hashlib.sha256(token.encode()).hexdigest()
            entries.append((name, role, digest))
        self._entries = entries
        self._mtime = st.st_mtime

    def lookup(self, token: str) -> Principal | None:
        try:
            self._load()
        except ValueError as exc:
            log.error("token file unusable, keeping the previous tokens: %s", exc)
        digest = hashlib.sha256(token.encode()).hexdigest()
        for name, role, want in self._entries:
            if hmac.compare_digest(digest, want):
                return Principal("token", name, role)
        return None


class RateLimiter:
    """Calls per second per caller (token bucket); 0 disables. At most ``max_callers`` buckets are kept: past
    that, the full ones (callers quiet long enough to have their whole burst back) are forgotten, and if none
    is, the oldest."""

    def __init__(self, rate: float, burst: int, max_callers: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate >= self.burst]
        for k in full or sorted(self._buckets, key=lambda k: self._buckets[k][1])[: len(self._buckets) // 2]:
            del self._buckets[k]

    def allow(self, who: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        if who not in self._buckets and len(self._buckets) >= self.max_callers:
            self._prune(now)
        tokens, last = self._buckets.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[who] = (tokens, now)
            return False
        self._buckets[who] = (tokens - 1, now)
        return True


REFUSAL_WINDOW = 10.0      # seconds: refusals of one caller for one reason become one audit event per window
MAX_REFUSAL_KEYS = 1000     # distinct (caller, method, reason) held per window; the rest are counted together
ANONYMOUS_RATE = 5.0        # calls per second without an identity, per peer host (burst 20), when auth is on
ANONYMOUS_BURST = 20


@dataclasses.dataclass
class Refusals:
    """Refusals of one caller, method and reason within a window."""

    count: int
    first_ms: int
    last_ms: int


class Auth:
    """Authentication, authorization, rate limits and auditing of every call.

    Allowed writes are audited one event each. Refusals cost no write each: they are counted per caller,
    method and reason and written as one event per window (``count``, first and last time), a log line the
    first time in a window, and ``refused`` counts them by reason since start (the
    ``isthmus_coordinator_refusals_total`` metric). Callers without an identity are also rate limited per
    peer host.
    """

    def __init__(self, store: Store, *, mutual_tls: bool, tokens: TokenFile | None, coordinator: str = "",
                 write_rate: float = 0.0, write_burst: int = 100, refusal_window: float = REFUSAL_WINDOW) -> None:
        self.store = store
        self.mutual_tls = mutual_tls
        self.tokens = tokens
        self.enforce = mutual_tls or tokens is not None
        self.coordinator = coordinator
        self.limiter = RateLimiter(write_rate, write_burst)
        self.anonymous = RateLimiter(ANONYMOUS_RATE, ANONYMOUS_BURST)
        self.refused: collections.Counter[str] = collections.Counter()
        self.on_refusal: Callable[[str], None] | None = None  # the metrics' counter, when served
        self._refusals: dict[tuple[str, str, str, str], Refusals] = {}  # (who, role, method, reason)
        self._refusals_since = time.monotonic()
        self.refusal_window = refusal_window
        self._seq = 0
        self._pending: list[Put] = []
        self._flush_wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def principal(self, context: grpc.aio.ServicerContext) -> Principal | None:
        """The caller, from its bearer token or client certificate (None: nobody we know)."""
        if not self.enforce:
            return OPEN
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and self.tokens is not None:
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() == "bearer" and token:
                    return self.tokens.lookup(token.strip())
        try:
            identity = pki.identity_from_auth_context(context.auth_context())
        except pki.PkiError as exc:
            log.warning("unusable client certificate from %s: %s", context.peer(), exc)
            return None
        if identity is None:
            return None
        kind = {"site": "site", "coordinator": "coordinator", "user": "user"}.get(identity.kind, "unknown")
        return Principal(kind, identity.name, identity.role)

    async def check(self, context: grpc.aio.ServicerContext, service: str, method: str) -> Principal:
        """Authorize one call; aborts with UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED."""
        full = f"/isthmus.v1.{service}/{method}"
        required = required_role(service, method)
        who = self.principal(context)
        if who is None:
            host = _peer_host(context.peer())
            if not self.anonymous.allow(host):
                self.refuse(Principal("anonymous", host, ""), full, "unauthenticated calls rate limit", "rate_limited")
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"more than {ANONYMOUS_RATE:g} calls per second without an identity from {host}")
            self.refuse(Principal("anonymous", host, ""), full, "no valid certificate or token", "unauthenticated")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "no identity: present a client certificate or a bearer token known to the coordinator")
        assert who is not None
        if self.enforce and not who.has(required):
            reason = (f"{who.who} has role {who.role or 'none'}; {method} needs the {required} role"
                      if required != "agent" else f"{who.who} is not a site agent; only agents open this stream")
            self.refuse(who, full, reason, "permission_denied")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        if required in ("operator", "admin") and not self.limiter.allow(who.who or context.peer()):
            self.refuse(who, full, "write rate limit", "rate_limited")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{who.who}: more than {self.limiter.rate:g} writes per second; slow down")
        return who

    def refuse(self, who: Principal, method: str, reason: str, kind: str) -> None:
        """Count a refusal: one audit event per caller, method and reason per window, written by the flusher."""
        self.refused[kind] += 1
        if self.on_refusal is not None:
            self.on_refusal(kind)
        now = int(time.time() * 1000)
        key = (who.who, who.role, method, reason)
        entry = self._refusals.get(key)
        if entry is None:
            if len(self._refusals) >= MAX_REFUSAL_KEYS:
                key = ("*", "", "*", "other refusals (more distinct callers and reasons than are audited apart)")
                entry = self._refusals.get(key)
            else:
                log.warning("refused %s for %s: %s", method, who.who, reason)
        if entry is None:
            self._refusals[key] = Refusals(1, now, now)
        else:
            entry.count += 1
            entry.last_ms = now
        self._wake_flusher()

    def _take_refusals(self, force: bool) -> list[Put]:
        """The audit events of the window's refusals, once the window is over (or ``force``)."""
        if not self._refusals or (not force and time.monotonic() - self._refusals_since < self.refusal_window):
            return []
        puts = []
        for (who, role, method, reason), seen in self._refusals.items():
            self._seq += 1
            event = {"time_unix_ms": seen.last_ms, "who": who, "role": role, "method": method, "allowed": False,
                     "detail": reason, "coordinator": self.coordinator, "count": seen.count,
                     "first_unix_ms": seen.first_ms}
            key = f"{AUDIT}{seen.last_ms:013d}-{self.coordinator or 'c'}-{self._seq:06d}"
            puts.append(Put(key, json.dumps(event, sort_keys=True).encode()))
        self._refusals.clear()
        self._refusals_since = time.monotonic()
        return puts

    async def audit(self, who: Principal, method: str, allowed: bool, detail: str, on_behalf_of: str = "") -> None:
        """Record a write or a refusal (who, what, when) in the log now and in etcd within milliseconds.

        Events are written in batches (one etcd transaction for everything that
        accumulated while the previous batch was written), so auditing does not
        cost every write an extra round trip.
        """
        key, value = self.record(who, method, allowed, detail, on_behalf_of)
        self._pending.append(Put(key, value))
        self._wake_flusher()

    def record(self, who: Principal, method: str, allowed: bool, detail: str,
               on_behalf_of: str = "") -> tuple[str, bytes]:
        """One audit event's etcd key and value (a write can commit it in its own transaction: ``AuditSlot``)."""
        now = int(time.time() * 1000)
        self._seq += 1
        event = {"time_unix_ms": now, "who": who.who, "role": who.role, "method": method, "allowed": allowed,
                 "detail": detail, "coordinator": self.coordinator}
        if on_behalf_of:
            event["on_behalf_of"] = on_behalf_of
        key = f"{AUDIT}{now:013d}-{self.coordinator or 'c'}-{self._seq:06d}"
        return key, json.dumps(event, sort_keys=True).encode()

    def _wake_flusher(self) -> None:
        self._flush_wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="audit-writer")

    async def _flush(self) -> None:
        while True:
            if self._refusals:
                # Refusals wait for the end of their window; allowed writes wake the writer at once.
                left = self.refusal_window - (time.monotonic() - self._refusals_since)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_wake.wait(), max(left, 0.01))
            else:
                await self._flush_wake.wait()
            self._flush_wake.clear()
            self._pending += self._take_refusals(force=False)
            while self._pending:
                batch, self._pending = self._pending[:100], self._pending[100:]
                try:
                    await self.store.txn([], batch)
                except IsthmusError as exc:
                    log.warning("could not write %d audit events: %s", len(batch), exc)

    async def flush(self) -> None:
        """Write what is pending now, refusals of the current window included (tests, shutdown)."""
        self._pending += self._take_refusals(force=True)
        while self._pending:
            batch, self._pending = self._pending[:100], self._pending[100:]
            await self.store.txn([], batch)


def secure(servicer: Any, service: str, methods: list[str], auth: Auth) -> Any:
    """Wrap every RPC method of ``servicer`` with the authorization check (and audit its writes)."""
    for method in methods:
        impl = getattr(servicer, method)
        setattr(servicer, method, _guard(impl, service, method, auth))
    return servicer


def _guard(impl: Callable[..., Any], service: str, method: str, auth: Auth) -> Callable[..., Any]:
    write = required_role(service, method) in ("operator", "admin")
    if asyncio.iscoroutinefunction(impl):
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            who = await auth.check(context, service, method)
            if not write:
                return await impl(request, context)
            name = f"/isthmus.v1.{service}/{method}"
            # The registry commits the record in the write's own transaction when it can (no write of its own).
            slot = AuditSlot(asyncio.current_task(),
                             lambda: auth.record(who, name, True, _summary(request), on_behalf_of(context)))
            with auditing(slot):
                result = await impl(request, context)
            if context.code() in (None, grpc.StatusCode.OK) and not slot.written:  # a refusal sets its status
                await auth.audit(who, name, True, _summary(request), on_behalf_of(context))
            return result

        return unary

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await auth.check(context, service, method)
        async for item in impl(request, context):
            yield item

    return streaming


ON_BEHALF_OF = "x-isthmus-on-behalf-of"
MAX_ON_BEHALF_OF = 256


def on_behalf_of(context: grpc.aio.ServicerContext) -> str:
    """Whom the caller acts for, as it says in its metadata (neutron-server: the Keystone user and project).

    Recorded beside the caller's own identity, never used to authorize; printable ASCII, at most 256 bytes."""
    for key, value in context.invocation_metadata() or ():
        if key == ON_BEHALF_OF:
            text = value if isinstance(value, str) else value.decode("ascii", "replace")
            return "".join(c if " " <= c <= "~" else "?" for c in text[:MAX_ON_BEHALF_OF])
    return ""


def _peer_host(peer: str) -> str:
    """The host of a gRPC peer string ('ipv4:1.2.3.4:5678', 'ipv6:[::1]:5678', 'unix:...')."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return kind or "unknown"


def _summary(request: Any) -> str:
    for field in ("name", "id", "site"):
        value = getattr(request, field, "")
        if value:
            return f"{field}={value}"
    return ""


async def list_audit(store: Store, limit: int = 100, before: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The newest ``limit`` audit events (with their keys), oldest first; with ``before``, of those whose
    key is below it."""
    if before:
        kvs, _, _ = await store.get_range(AUDIT, before, limit=limit, descending=True)
        kvs = kvs[::-1]
    else:
        kvs, _ = await store.get_prefix(AUDIT)
    return [(kv.key, json.loads(kv.value)) for kv in kvs[-limit:]]


async def trim_audit(store: Store) -> None:
    """Leader job: keep the newest AUDIT_KEEP events, none older than AUDIT_MAX_AGE_MS."""
    kvs, _ = await store.get_prefix(AUDIT)
    cutoff = f"{AUDIT}{int(time.time() * 1000) - AUDIT_MAX_AGE_MS:013d}"
    old = [kv.key for i, kv in enumerate(kvs) if i < len(kvs) - AUDIT_KEEP or kv.key < cutoff]
    for start in range(0, len(old), 100):
        await store.txn([], [Delete(k) for k in old[start:start + 100]])
    if old:
        log.info("audit history trimmed by %d events", len(old))


def describe_mode(auth: Auth, listen: list[str]) -> str:
    if auth.enforce:
        parts = (["mutual TLS"] if auth.mutual_tls else []) + (["bearer tokens"] if auth.tokens else [])
        return "authentication: " + " and ".join(parts)
    return ("NO AUTHENTICATION: anyone who can reach " + ", ".join(listen) + " is admin and may speak for any "
            "site (development only; give --tls-ca for mutual TLS or --token-file)")


async def check_agent(auth: Auth | None, context: grpc.aio.ServicerContext, site: str, method: str) -> None:
    """An agent stream may speak only for the site its certificate names; aborts PERMISSION_DENIED (audited)."""
    if auth is None or not auth.enforce:
        return
    who = auth.principal(context)
    if who is None or who.kind != "site" or who.name != site:
        reason = (f"{who.who if who else 'an unidentified peer'} may not speak for site {site}; "
                  "an agent's certificate names its site (isthmus://site/<site>)")
        auth.refuse(who or Principal("anonymous", "", ""), method, reason, "permission_denied")
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
