"""The HTTP(S) client of an SDN controller's REST API and its error tree, shared by the controller drivers.

``ControllerClient`` is one httpx.AsyncClient per controller (connections kept alive and
reused, on the agent's event loop): basic authentication (the password read from a file or
an environment variable at every request, never taken on the command line), TLS verified
against the system's CAs or the ``ca`` option, timeouts and bounded retries with backoff on
connection errors, timeouts and 5xx; its options (``CLIENT_OPTIONS``) are the same for every
driver that uses it (opendaylight, onos), named with the driver's prefix in every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import logging
import os
import re
import ssl
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from isthmus.drivers.base import DriverError

log = logging.getLogger(__name__)
T = TypeVar("T")
# httpx logs every request at INFO and httpcore the controller's response headers (cookies) at DEBUG; this
# module logs what is needed, without secrets, at DEBUG.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# ---------------------------------------------------------------- errors of the controller client
#
#   DriverError (isthmus.drivers.base)
#   └── ControllerError            the controller did not do what was asked
#       ├── ControllerUnavailable  no answer: connection refused or reset, timeout, 5xx after every retry
#       └── ControllerRefused      a 4xx answer; .status and the controller's .message
#           └── ControllerAuthFailed   401 or 403: the credentials are wrong or lack the right
#
# The drivers let ControllerUnavailable and ControllerAuthFailed end the pass (the
# agent shows ERROR on every peering and retries) and turn a ControllerRefused of
# one object into the ERROR of the peerings that need it.


class ControllerError(DriverError):
    """The controller did not do what was asked."""


class ControllerUnavailable(ControllerError):
    """The controller did not answer usefully: connection failed, timed out, or 5xx after every retry."""

    def __init__(self, message: str) -> None:
        super().__init__(message, terminal=False)


class ControllerRefused(ControllerError):
    """The controller answered 4xx; ``status`` and the controller's own ``message``."""

    def __init__(self, message: str, status: int, controller_message: str) -> None:
        super().__init__(message, terminal=True)
        self.status = status
        self.message = controller_message


class ControllerAuthFailed(ControllerRefused):
    """The controller refused the credentials (401) or the user's rights (403)."""


# ---------------------------------------------------------------- the HTTP client

CLIENT_OPTIONS = ("url", "username", "password_file", "password_env", "ca", "timeout", "retries")
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
BACKOFF = 0.25  # seconds before the first retry, doubled each time
MAX_BACKOFF = 4.0
_TAG_RE = re.compile(r"<[^>]*>")


def controller_message(payload: bytes) -> str:
    """The controller's own explanation in an error body: RESTCONF ``error-message``s, ONOS ``message``, or text."""
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        errors = member(doc, "errors")
        items = member(errors, "error") if isinstance(errors, dict) else None
        if isinstance(items, list):
            found = []
            for item in items:
                if isinstance(item, dict):
                    msg = item.get("error-message") or item.get("error-tag")
                    if msg:
                        tag = item.get("error-tag")
                        found.append(f"{msg} ({tag})" if tag and tag != msg else str(msg))
            if found:
                return "; ".join(found)
        if isinstance(doc.get("message"), str | list):
            msg = doc["message"]
            return "; ".join(map(str, msg)) if isinstance(msg, list) else msg
    text = " ".join(_TAG_RE.sub(" ", text).split())  # an HTML error page, flattened
    return text[:300]


def member(obj: Any, name: str) -> Any:
    """The member ``name`` of a JSON object, with or without a module prefix (``module:name``, RFC 7951)."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    suffix = ":" + name
    for key, value in obj.items():
        if isinstance(key, str) and key.endswith(suffix):
            return value
    return None


@dataclass(frozen=True)
class Reply:
    """A controller's answer below 500 (other than 401/403): status, body and how many attempts it took."""

    status: int
    reason: str
    body: bytes
    attempts: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON (None when empty); raises ControllerError when it is not JSON."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise ControllerError(f"the controller answered {self.status} with a body that is not JSON: "
                                  f"{self.body[:100]!r}") from None

    def message(self) -> str:
        return controller_message(self.body) or self.reason


class ControllerClient:
    """HTTP(S) client of one SDN controller's REST API: basic auth, TLS with an optional CA, timeouts and
    bounded retries with backoff on connection errors, timeouts and 5xx.

    Asynchronous, on the event loop that first uses it: one httpx.AsyncClient, whose
    connections are kept alive and reused between requests; ``aclose`` ends them.
    """

    def __init__(self, driver: str, options: Mapping[str, str], extra_options: Iterable[str] = ()) -> None:
        """``driver``: the option prefix used in messages; ``options``: the driver's options, of which
        ``CLIENT_OPTIONS`` are the client's and ``extra_options`` the driver's own.

        Raises DriverError(terminal=True) naming the option for an unknown option, a
        password given on the command line, a URL or number it cannot use, a CA or
        password file it cannot read.
        """
        self.driver = driver
        known = (*CLIENT_OPTIONS, *extra_options)
        opts = dict(options)
        if "password" in opts:
            raise self._bad("password", "passwords are never taken on the command line; "
                            f"use {driver}.password_file=PATH or {driver}.password_env=NAME")
        for key in opts:
            if key not in known:
                raise self._bad(key, f"unknown option (known: {', '.join(known)})")
        url = opts.get("url", "")
        if not url:
            raise self._bad("url", "is required (e.g. https://controller:8181)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._bad("url", f"{url!r} is not an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise self._bad("url", "must not carry credentials; use username and password_file")
        if parts.query or parts.fragment:
            raise self._bad("url", f"{url!r} must have no query or fragment")
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise self._bad("url", f"{url!r} has an invalid port") from None
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.base_path = parts.path.rstrip("/")
        self.url = f"{parts.scheme}://{parts.netloc}{self.base_path}"
        self.timeout = self._number("timeout", opts.get("timeout"), DEFAULT_TIMEOUT, 0.001, 300.0)
        self.retries = int(self._number("retries", opts.get("retries"), DEFAULT_RETRIES, 0, 10, integer=True))
        self.username = opts.get("username", "")
        self.password_file = opts.get("password_file", "")
        self.password_env = opts.get("password_env", "")
        if self.password_file and self.password_env:
            raise self._bad("password_env", "give password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise self._bad("username", "is required with a password")
        if self.username and not (self.password_file or self.password_env):
            raise self._bad("username", "needs password_file or password_env")
        self.ca = opts.get("ca", "")
        tls: ssl.SSLContext | None = None
        if self.ca and not self.https:
            raise self._bad("ca", "only applies to an https:// url")
        if self.https:
            try:
                tls = ssl.create_default_context(cafile=self.ca or None)
            except (OSError, ssl.SSLError) as exc:
                raise self._bad("ca", f"cannot load CA file {self.ca}: {exc}") from None
        if self.username:
            self._password()  # fail at start, not at the first request
            if not self.https:
                log.warning("%s: %s is plain http: the controller password and BGP passwords cross the network "
                            "unencrypted", driver, self.url)
        self._closing = asyncio.Event()
        self._http = httpx.AsyncClient(
            verify=tls if tls is not None else True,  # (a plain http:// URL: never used)
            timeout=httpx.Timeout(self.timeout),  # to connect, and for each read and write
            headers={"Accept": "application/json"},
            # No cookie is kept: every request authenticates with the password as it is now, as a session
            # cookie of the controller would not.
            cookies=http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
            # Straight to the controller: no proxy, .netrc or CA bundle from the agent's environment.
            trust_env=False,
        )

    def _bad(self, key: str, why: str) -> DriverError:
        return DriverError(f"{self.driver}.{key}: {why}", terminal=True)

    def _number(self, key: str, text: str | None, default: float, low: float, high: float,
                integer: bool = False) -> float:
        if text is None:
            return default
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise self._bad(key, f"{text!r} is not {'an integer' if integer else 'a number'}") from None
        if not low <= value <= high:
            raise self._bad(key, f"{text} is out of range {low:g}..{high:g}")
        return value

    def _password(self) -> str:
        if self.password_file:
            try:
                secret = Path(self.password_file).read_text().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise self._bad("password_file", f"cannot read {self.password_file}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
            where = f"file {self.password_file}"
        else:
            if self.password_env not in os.environ:
                raise self._bad("password_env", f"environment variable {self.password_env} is not set for the agent")
            secret = os.environ[self.password_env]
            where = f"environment variable {self.password_env}"
        if not secret:
            raise self._bad("password_file" if self.password_file else "password_env", f"the password {where} is empty")
        return secret

    def _credentials_hint(self) -> str:
        where = f"file {self.password_file}" if self.password_file else f"variable {self.password_env}"
        return (f"check {self.driver}.username ({self.username}) and the password in {where}" if self.username
                else f"the controller wants credentials: set {self.driver}.username and {self.driver}.password_file")

    async def aclose(self) -> None:
        """Abort the backoff of requests under way (later requests fail at once) and close the connections."""
        self._closing.set()
        await self._http.aclose()

    async def request(self, method: str, path: str, body: Any = None) -> Reply:
        """Send ``method`` ``path`` (below the base URL, with its query) with ``body`` as JSON.

        Returns the Reply of any status below 500 other than 401/403. Raises
        ControllerAuthFailed for 401/403; ControllerUnavailable when every attempt
        (1 + retries) failed to connect, timed out or got a 5xx; ControllerError
        (terminal) when the server's TLS certificate cannot be verified.
        """
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        what = f"{method} {self.url}{path.split('?')[0]}"
        attempts = self.retries + 1
        last = ""
        for attempt in range(attempts):
            if self._closing.is_set():
                raise ControllerUnavailable(f"{what}: the driver is closing")
            auth = httpx.BasicAuth(self.username, self._password()) if self.username else None
            try:
                response = await self._http.request(method, self.url + path, content=data, headers=headers,
                                                    auth=auth)
            except httpx.TransportError as exc:  # refused, reset, timed out, garbled, TLS
                untrusted = _cause(exc, ssl.SSLCertVerificationError)
                if untrusted is not None:
                    raise ControllerError(f"{what}: the controller's TLS certificate is not trusted "
                                          f"({untrusted.verify_message}); set {self.driver}.ca to the CA that "
                                          "signed it", terminal=True) from None
                last = _reason(exc)
            else:
                status, reason, payload = response.status_code, response.reason_phrase, response.content
                if status in (401, 403):
                    message = controller_message(payload) or reason
                    raise ControllerAuthFailed(
                        f"{what}: the controller refused the credentials ({status} {reason}"
                        f"{': ' + message if message and message != reason else ''}); {self._credentials_hint()}",
                        status, message)
                if status < 500:
                    log.debug("%s -> %d", what, status)
                    return Reply(status, reason, payload, attempt + 1)
                last = f"{status} {reason}: {controller_message(payload) or reason}"
            if attempt + 1 < attempts:
                delay = min(MAX_BACKOFF, BACKOFF * 2 ** attempt)
                log.debug("%s failed (%s); retrying in %.2fs", what, last, delay)
                try:
                    await asyncio.wait_for(self._closing.wait(), delay)
                except TimeoutError:
                    continue
                raise ControllerUnavailable(f"{what}: the driver is closing")
        raise ControllerUnavailable(f"{what}: {last} (after {attempts} attempt{'s' if attempts > 1 else ''}, "
                                    f"timeout {self.timeout:g}s each)")


def _cause(exc: BaseException, kind: type[ssl.SSLCertVerificationError]) -> ssl.SSLCertVerificationError | None:
    """The exception of type ``kind`` that ``exc`` was raised from, directly or further down."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: httpx.TransportError) -> str:
    """What went wrong, e.g. ``TimeoutError (ReadTimeout)`` or ``ConnectionRefusedError: [Errno 111] ...``."""
    if isinstance(exc, httpx.TimeoutException):  # while connecting, reading or writing
        return f"TimeoutError ({type(exc).__name__})"
    root: BaseException = exc
    while (below := root.__cause__ or root.__context__) is not None:  # httpx's, httpcore's, anyio's, the socket's
        root = below
    errors = root.exceptions if isinstance(root, BaseExceptionGroup) else (root,)  # one per address tried
    text = "; ".join(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__ for e in errors)
    return text if root is exc else f"{text} ({type(exc).__name__})"


async def uninterrupted(step: Coroutine[Any, Any, T]) -> T:
    """Run ``step`` to its end even when the caller is cancelled meanwhile (the agent stopping), then let the
    cancellation through: a write to the controller and the record of what it created go together."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(task)  # its error, if any, is the next pass's to find
        raise


def refused(reply: Reply, what: str) -> ControllerRefused:
    """The error for an unexpected 4xx (or odd 2xx/3xx) ``reply`` to ``what``."""
    message = reply.message()
    return ControllerRefused(f"{what}: {reply.status} {reply.reason}: {message}", reply.status, message)
