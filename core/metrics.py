"""Prometheus metrics on prometheus-client: a program's registry, samples read on its event loop, the endpoint.

``new_registry`` adds the standard process, platform and GC collectors; a ``LoopCollector`` turns a function
returning ``Sample``s into gauges computed at each scrape on the event loop that owns the state it reads;
``MetricsServer`` serves ``--metrics-listen`` with prometheus-client's exposition (text 0.0.4, or OpenMetrics
and gzip when the scraper asks) plus ``/healthz``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 5.0  # seconds a scrape waits for the event loop to compute its samples
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request (a stalled one loses its connection)
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?\Z")


# No ``_created`` series (a process-wide switch of prometheus-client): a scrape shows the isthmus series that
# docs/operations.md names and no second series per counter and histogram holding its creation time.
_disable_created_metrics()  # type: ignore[no-untyped-call]


def new_registry() -> CollectorRegistry:
    """A registry holding the standard collectors: ``process_*`` (CPU, memory, file descriptors, start time),
    ``python_info`` and ``python_gc_*``."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class Sample(NamedTuple):
    """One gauge sample, as a ``LoopCollector``'s function returns it."""

    name: str
    labels: dict[str, str]
    value: float
    help: str = ""


class LoopCollector:
    """Gauges computed at each scrape by ``samples()``, called on ``loop`` (the running loop by default).

    The state the coordinator and the agent report belongs to their event loop, and the HTTP server answers
    on its own threads, so the scrape asks the loop to call ``samples()`` and waits for it (at most
    ``timeout`` seconds). It must be quick and must not block. If it raises, returns a bad sample or the loop
    does not answer, its samples are left out of that scrape and the error is logged; the rest still works.
    """

    def __init__(self, samples: Callable[[], Iterable[Sample]], loop: asyncio.AbstractEventLoop | None = None,
                 registry: CollectorRegistry | None = None, timeout: float = SCRAPE_TIMEOUT) -> None:
        self._samples = samples
        self._loop = loop or asyncio.get_running_loop()
        self._timeout = timeout
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterable[Metric]:
        try:
            return _families(self._on_loop())
        except TimeoutError:
            log.warning("metrics: the event loop did not compute the samples of %r within %gs; they are left out "
                        "of this scrape", self._samples, self._timeout)
        except Exception:
            log.exception("metrics collector %r failed; its samples are left out of this scrape", self._samples)
        return []

    def _on_loop(self) -> list[Sample]:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:  # scraped from the loop itself (a test rendering the registry)
            return list(self._samples())

        async def compute() -> list[Sample]:
            return list(self._samples())

        future = asyncio.run_coroutine_threadsafe(compute(), self._loop)
        try:
            return future.result(self._timeout)
        finally:
            future.cancel()


def _families(samples: Iterable[Sample]) -> list[Metric]:
    """Samples as gauge families in the order their names first appear; one bad sample discards them all."""
    families: dict[str, tuple[GaugeMetricFamily, tuple[str, ...]]] = {}
    for s in samples:
        entry = families.get(s.name)
        if entry is None:
            names = tuple(s.labels)
            entry = families[s.name] = (GaugeMetricFamily(s.name, s.help, labels=names), names)
        family, names = entry
        if set(s.labels) != set(names):
            raise ValueError(f"sample {s.name}: labels {sorted(s.labels)} after {sorted(names)}")
        family.add_metric([str(s.labels[n]) for n in names], float(s.value))
    return [family for family, _ in families.values()]


# ---------------------------------------------------------------- the HTTP endpoint

_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _routes(metrics: _WSGIApp) -> _WSGIApp:
    """``/metrics`` (prometheus-client's app), ``/healthz``; 404 elsewhere; GET and HEAD only (405 otherwise)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if path not in ("/metrics", "/healthz"):
            status, body = "404 Not Found", b"not found\n"
        elif method not in ("GET", "HEAD"):
            status, body = "405 Method Not Allowed", b"method not allowed\n"
            headers.append(("Allow", "GET, HEAD"))
        elif path == "/healthz":
            status, body = "200 OK", b"ok"
        else:
            answer: list[Any] = []
            body = b"".join(metrics({**environ, "REQUEST_METHOD": "GET"},
                                    lambda status, headers, *_: answer.extend((status, headers))))
            status, headers = answer
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]

    return app


class _Handler(WSGIRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # a stalled client loses its connection

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass  # Prometheus scrapes every few seconds: no line per request


class _Server(ThreadingWSGIServer):
    """One listening address; a thread per request (daemon threads, as prometheus-client's own server)."""

    def __init__(self, family: int, address: Any, request_timeout: float) -> None:
        self.address_family = family  # read by TCPServer.__init__ to make the socket
        self.request_timeout = request_timeout
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own
        socketserver.TCPServer.server_bind(self)
        # What HTTPServer.server_bind does, without its reverse DNS lookup (socket.getfqdn) of the address.
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: answering %s failed", client_address, exc_info=True)  # a client that stalled or left


class MetricsServer:
    """``GET /metrics`` (the registry in the format the scraper asks for), ``GET /healthz`` ("ok"), else 404.

    HEAD works wherever GET does; other methods get 405. Served by prometheus-client's WSGI application on
    wsgiref threads, one listening socket per address the host resolves to; each request has its own
    connection (HTTP/1.0), and a client has ``request_timeout`` seconds to send its request.
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.request_timeout = request_timeout
        self._servers: list[tuple[_Server, threading.Thread]] = []

    async def start(self) -> int:
        """Listen on every address of the host (an empty host: all interfaces, IPv4 and IPv6); return the bound
        port (with port 0, the one the system picked for the first address, used for the others). Raises OSError."""
        app = _routes(make_wsgi_app(self.registry))
        infos = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, sockaddr in dict.fromkeys((info[0], info[4]) for info in infos):
                if self._servers:  # with port 0, every address on the port the system gave the first
                    sockaddr = (sockaddr[0], self._servers[0][0].server_port, *sockaddr[2:])
                server = _Server(family, sockaddr, self.request_timeout)
                server.set_app(app)
                thread = threading.Thread(target=server.serve_forever, name=f"metrics-{server.server_port}",
                                          daemon=True)
                thread.start()
                self._servers.append((server, thread))
        except OSError:
            await self.stop()
            raise
        port = self._servers[0][0].server_port
        log.info("metrics on %s port %d", self.host or "all interfaces", port)
        return port

    async def stop(self) -> None:
        """Stop listening (a request being answered finishes on its thread). A second stop does nothing."""
        servers, self._servers = self._servers, []
        for server, thread in servers:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            thread.join()


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` of a listen option: ``127.0.0.1:9101``, ``[::1]:9101``, ``localhost:9101``, or ``:9101`` for
    all interfaces (host ""). Port 0 lets the system pick. ``ValueError`` naming the value otherwise."""
    def bad(why: str) -> ValueError:
        return ValueError(f"invalid listen address {value!r}: {why}")

    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise bad("give [IPv6 address]:port, e.g. [::1]:9101")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise bad("give host:port, e.g. 127.0.0.1:9101, [::1]:9101 or :9101 for all interfaces")
        if ":" in host:
            raise bad("put an IPv6 address in brackets, e.g. [::1]:9101")
        if host and not _HOSTNAME.match(host):
            raise bad(f"{host!r} is not an IPv4 address or host name")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise bad(f"port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)

