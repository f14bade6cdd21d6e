"""Prometheus metrics without a dependency: counters, gauges and histograms, and the HTTP endpoint serving them.

The coordinator and the agent each keep one ``Registry`` and serve it with ``MetricsServer`` in the Prometheus
text exposition format 0.0.4. Values may be updated from any thread. Gauges that are computed from state (e.g.
peerings by state) come from collectors, which run at scrape time on the event loop serving the scrape.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ipaddress
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Generic, Literal, NamedTuple, TypeVar

log = logging.getLogger(__name__)

DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?\Z")

SampleType = Literal["gauge", "counter"]


class Sample(NamedTuple):
    """One line of a scrape, as a collector returns it."""

    name: str
    labels: dict[str, str]
    value: float
    type: SampleType = "gauge"
    help: str = ""


def _check_metric_name(name: str) -> None:
    if not _METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}: use letters, digits, '_' and ':', not starting with a digit")


def _checked(name: str, labels: Sequence[str], reserved: Sequence[str] = ()) -> tuple[str, ...]:
    _check_metric_name(name)
    _check_label_names(name, labels, reserved)
    return tuple(labels)


def _check_label_names(metric: str, labels: Sequence[str], reserved: Sequence[str] = ()) -> None:
    for label in labels:
        if not _LABEL_NAME.match(label):
            raise ValueError(f"metric {metric}: invalid label name {label!r}: use letters, digits and '_', "
                             "not starting with a digit")
        if label.startswith("__") or label in reserved:
            raise ValueError(f"metric {metric}: label name {label!r} is reserved")
    if len(set(labels)) != len(labels):
        raise ValueError(f"metric {metric}: label names repeat: {list(labels)}")


# ---------------------------------------------------------------- series: one set of label values


class _Series:
    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock  # the metric's lock: one lock per metric is plenty at our update rates


class CounterSeries(_Series):
    """A value that only goes up (resets to 0 when the process restarts)."""

    __slots__ = ("_value",)

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self._value = 0.0

    def inc(self, v: float = 1) -> None:
        """Add ``v`` (>= 0; a counter never goes down, ``ValueError`` otherwise)."""
        if not v >= 0:
            raise ValueError(f"a counter only goes up: inc({v})")
        with self._lock:
            self._value += v

    @property
    def value(self) -> float:
        return self._value


class GaugeSeries(_Series):
    """A value that goes up and down."""

    __slots__ = ("_value",)

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self._value = 0.0

    def set(self, v: float) -> None:
        with self._lock:
            self._value = float(v)

    def inc(self, v: float = 1) -> None:
        with self._lock:
            self._value += v

    def dec(self, v: float = 1) -> None:
        with self._lock:
            self._value -= v

    @property
    def value(self) -> float:
        return self._value


class HistogramSeries(_Series):
    """Observations counted into buckets by upper bound, with their sum and count."""

    __slots__ = ("_bounds", "_counts", "_sum", "_count")

    def __init__(self, lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        super().__init__(lock)
        self._bounds = bounds  # ends with +Inf
        self._counts = [0] * len(bounds)  # per bucket, not cumulative: observe() touches one
        self._sum = 0.0
        self._count = 0

    def observe(self, v: float) -> None:
        # A bucket counts the observations <= its bound; NaN compares with nothing and lands in +Inf.
        i = len(self._bounds) - 1 if math.isnan(v) else bisect.bisect_left(self._bounds, v)
        with self._lock:
            self._counts[i] += 1
            self._sum += v
            self._count += 1

    @contextlib.contextmanager
    def time(self) -> Iterator[None]:
        """Observe how many seconds the ``with`` block took (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - start)

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum


# ---------------------------------------------------------------- metrics: a name, a help text, its series

S = TypeVar("S", bound=_Series)


class _Metric(Generic[S]):
    kind: ClassVar[SampleType | Literal["histogram"]]

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.label_names = tuple(labels)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], S] = {}
        if not self.label_names:
            self._series[()] = self._new_series()

    def _new_series(self) -> S:
        raise NotImplementedError

    def _key(self, values: dict[str, object]) -> tuple[str, ...]:
        if set(values) != set(self.label_names):
            raise ValueError(f"metric {self.name} has labels {list(self.label_names)}, got {sorted(values)}")
        return tuple(str(values[n]) for n in self.label_names)

    def labels(self, **values: object) -> S:
        """The series with these label values (each label given once, values turned into strings)."""
        key = self._key(values)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._new_series()
            return series

    def remove(self, **values: object) -> None:
        """Forget the series with these label values (e.g. of a site that is gone); no error if there is none."""
        key = self._key(values)
        with self._lock:
            self._series.pop(key, None)

    def _only(self) -> S:
        if self.label_names:
            raise ValueError(f"metric {self.name} has labels {list(self.label_names)}: use .labels(...)")
        return self._series[()]

    def _lines(self) -> list[str]:
        """Names of every line this metric writes (for catching clashes at registration)."""
        return [self.name]

    def _snapshot(self) -> list[Sample]:
        with self._lock:
            return [s for key in sorted(self._series) for s in self._samples(key, self._series[key])]

    def _samples(self, key: tuple[str, ...], series: S) -> list[Sample]:
        raise NotImplementedError


class Counter(_Metric[CounterSeries]):
    """A counter; without labels, ``inc()`` it directly, with labels, ``labels(...).inc()``."""

    kind = "counter"

    def _new_series(self) -> CounterSeries:
        return CounterSeries(self._lock)

    def inc(self, v: float = 1) -> None:
        self._only().inc(v)

    @property
    def value(self) -> float:
        return self._only().value

    def _samples(self, key: tuple[str, ...], series: CounterSeries) -> list[Sample]:
        return [Sample(self.name, dict(zip(self.label_names, key, strict=True)), series._value)]


class Gauge(_Metric[GaugeSeries]):
    """A gauge; without labels, ``set()``/``inc()``/``dec()`` it directly, with labels through ``labels(...)``."""

    kind = "gauge"

    def _new_series(self) -> GaugeSeries:
        return GaugeSeries(self._lock)

    def set(self, v: float) -> None:
        self._only().set(v)

    def inc(self, v: float = 1) -> None:
        self._only().inc(v)

    def dec(self, v: float = 1) -> None:
        self._only().dec(v)

    @property
    def value(self) -> float:
        return self._only().value

    def _samples(self, key: tuple[str, ...], series: GaugeSeries) -> list[Sample]:
        return [Sample(self.name, dict(zip(self.label_names, key, strict=True)), series._value)]


class Histogram(_Metric[HistogramSeries]):
    """A histogram; without labels, ``observe()`` it directly, with labels, ``labels(...).observe()``."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        bounds = [float(b) for b in buckets]
        if any(math.isnan(b) for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ValueError(f"histogram {name}: buckets must increase strictly, got {list(buckets)}")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        super().__init__(name, help, labels)

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(self._lock, self.bounds)

    def observe(self, v: float) -> None:
        self._only().observe(v)

    def time(self) -> contextlib.AbstractContextManager[None]:
        return self._only().time()

    def _lines(self) -> list[str]:
        return [self.name + suffix for suffix in ("", "_bucket", "_sum", "_count")]

    def _samples(self, key: tuple[str, ...], series: HistogramSeries) -> list[Sample]:
        labels = dict(zip(self.label_names, key, strict=True))
        out, cumulative = [], 0
        for bound, n in zip(self.bounds, series._counts, strict=True):
            cumulative += n
            out.append(Sample(self.name + "_bucket", {**labels, "le": _format_value(bound)}, cumulative))
        out.append(Sample(self.name + "_sum", labels, series._sum))
        out.append(Sample(self.name + "_count", labels, series._count))
        return out


# ---------------------------------------------------------------- the registry and the exposition format


class MetricFamily(NamedTuple):
    """One metric's lines in a snapshot: what ``format_families`` writes under one HELP and TYPE."""

    name: str
    type: str
    help: str
    samples: list[Sample]


class Registry:
    """The metrics of one process, rendered in registration order, then the collectors' samples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[_Metric[CounterSeries] | _Metric[GaugeSeries] | _Metric[HistogramSeries]] = []
        self._lines: set[str] = set()
        self._collectors: list[Callable[[], Iterable[Sample]]] = []

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        """A new counter; by convention its name ends in ``_total``. ``ValueError`` for a bad or taken name."""
        metric = Counter(name, help, _checked(name, labels))
        self._add(metric)
        return metric

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        """A new gauge. ``ValueError`` for a bad or taken name."""
        metric = Gauge(name, help, _checked(name, labels))
        self._add(metric)
        return metric

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        """A new histogram; ``buckets`` are upper bounds, increasing, +Inf added. ``ValueError`` for bad names,
        a label called ``le``, a taken name or buckets that do not increase."""
        metric = Histogram(name, help, _checked(name, labels, reserved=("le",)), buckets)
        self._add(metric)
        return metric

    def collector(self, fn: Callable[[], Iterable[Sample]]) -> None:
        """Call ``fn`` at every scrape for samples computed from state. It runs on the scraping thread (the
        server's event loop), so it must be quick and must not block. If it raises or returns a bad sample,
        its samples are left out of that scrape and the error is logged; the rest of the scrape still works."""
        with self._lock:
            self._collectors.append(fn)

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format 0.0.4."""
        return format_families(self.collect())

    def collect(self) -> list[MetricFamily]:
        """A snapshot of every metric and collector (calls the collectors on this thread)."""
        with self._lock:
            metrics, collectors, taken = list(self._metrics), list(self._collectors), set(self._lines)
        families = [MetricFamily(m.name, m.kind, m.help, m._snapshot()) for m in metrics]
        by_name: dict[str, MetricFamily] = {}
        for fn in collectors:
            try:
                mine = _group(fn(), taken)
                for family in mine:
                    other = by_name.get(family.name)
                    if other is not None and other.type != family.type:
                        raise ValueError(f"sample {family.name}: type {family.type}, another collector: {other.type}")
            except Exception:
                log.exception("metrics collector %r failed; its samples are left out of this scrape", fn)
                continue
            for family in mine:
                if family.name in by_name:
                    by_name[family.name].samples.extend(family.samples)
                else:
                    by_name[family.name] = family
        return families + list(by_name.values())

    def _add(self, metric: Counter | Gauge | Histogram) -> None:
        lines = metric._lines()
        with self._lock:
            clash = [n for n in lines if n in self._lines]
            if clash:
                raise ValueError(f"metric {metric.name}: the name {clash[0]} is already registered")
            self._lines.update(lines)
            self._metrics.append(metric)


def _group(samples: Iterable[Sample], taken: set[str]) -> list[MetricFamily]:
    """A collector's samples as families, checked as a whole (one bad sample discards them all)."""
    families: dict[str, MetricFamily] = {}
    for s in samples:
        _check_metric_name(s.name)
        _check_label_names(s.name, list(s.labels))
        if s.type not in ("gauge", "counter"):
            raise ValueError(f"sample {s.name}: type must be gauge or counter, got {s.type!r}")
        if s.name in taken:
            raise ValueError(f"sample {s.name}: the name is a registered metric")
        family = families.get(s.name)
        if family is None:
            family = families[s.name] = MetricFamily(s.name, s.type, s.help, [])
        elif family.type != s.type:
            raise ValueError(f"sample {s.name}: type {s.type} after {family.type}")
        family.samples.append(Sample(s.name, {k: str(v) for k, v in s.labels.items()}, float(s.value)))
    return list(families.values())


def format_families(families: Iterable[MetricFamily]) -> str:
    """The text exposition format 0.0.4 of a snapshot (pure: safe to run in a worker thread)."""
    out: list[str] = []
    for family in families:
        out.append(f"# HELP {family.name} {_escape_help(family.help)}\n")
        out.append(f"# TYPE {family.name} {family.type}\n")
        for s in family.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in s.labels.items())
            out.append(f"{s.name}{{{labels}}} {_format_value(s.value)}\n" if labels
                       else f"{s.name} {_format_value(s.value)}\n")
    return "".join(out)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))  # "3", not "3.0": counts read as counts
    return repr(float(v))


# ---------------------------------------------------------------- the HTTP endpoint

_READ_TIMEOUT = 10.0  # for a request once it has started (a slow or stuck client loses its connection)
_IDLE_TIMEOUT = 75.0  # between requests on a kept-alive connection (longer than Prometheus' scrape interval)
_WRITE_TIMEOUT = 30.0
_MAX_HEADERS = 100
_LINE_LIMIT = 16 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class _BadRequest(Exception):
    pass


class MetricsServer:
    """A small asyncio HTTP/1.1 server: ``GET /metrics`` (the registry), ``GET /healthz`` ("ok"), else 404.

    HEAD works wherever GET does; other methods get 405. Connections are kept alive between requests unless the
    client asks otherwise, and closed on errors, after idle time and by ``stop()``. Collectors run on the loop;
    formatting the text runs in a worker thread so a large scrape does not hold up the loop.
    """

    def __init__(self, registry: Registry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False
        # Its own thread for formatting: the loop's default executor may be full of blocking calls (openstacksdk),
        # and a scrape must not wait behind them.
        self._formatter: ThreadPoolExecutor | None = None

    async def start(self) -> int:
        """Listen; return the bound port (the one picked by the system for port 0). An empty host means all
        interfaces (with port 0 each address family gets its own port; the first is returned)."""
        self._closing = False
        self._formatter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")
        self._server = await asyncio.start_server(self._serve, self.host or None, self.port, limit=_LINE_LIMIT)
        port: int = self._server.sockets[0].getsockname()[1]
        log.info("metrics on %s port %d", self.host or "all interfaces", port)
        return port

    async def stop(self) -> None:
        """Stop listening and close every open connection (a request being answered is cut off)."""
        if self._server is None:
            return
        self._closing = True  # a connection accepted but not yet served is closed on its first step
        self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        if self._formatter is not None:
            self._formatter.shutdown(wait=False, cancel_futures=True)
            self._formatter = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while not self._closing:
                try:
                    request = await self._read_request(reader)
                except _BadRequest as exc:
                    await self._respond(writer, 400, f"{exc}\n".encode(), head=False, keep_alive=False)
                    return
                if request is None:
                    return
                method, path, keep_alive = request
                status, body, headers = await self._route(method, path)
                await self._respond(writer, status, body, head=method == "HEAD", keep_alive=keep_alive,
                                    headers=headers)
                if not keep_alive:
                    return
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled: nothing to answer
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Cancelled by stop(): end normally (Python 3.11's start_server logs a cancelled handler as an error).
        except Exception:
            log.exception("metrics: answering %s failed", writer.get_extra_info("peername"))
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, bool] | None:
        """(method, path, keep alive) of the next request; None at a clean end of the connection."""
        async with asyncio.timeout(_IDLE_TIMEOUT):
            first = await _readline(reader)
        if not first:
            return None
        async with asyncio.timeout(_READ_TIMEOUT):
            headers: dict[str, str] = {}
            while True:
                line = await _readline(reader)
                if not line:
                    raise asyncio.IncompleteReadError(line, None)
                if line in (b"\r\n", b"\n"):
                    break
                if len(headers) >= _MAX_HEADERS:
                    raise _BadRequest("too many header fields")
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep:
                    raise _BadRequest("malformed header field")
                headers[name.strip().lower()] = value.strip()
        parts = first.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest("malformed request line")
        method, target, version = parts
        connection = headers.get("connection", "").lower()
        # A request body is never read here, so a connection that carried one cannot be reused.
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        keep_alive = version == "HTTP/1.1" and "close" not in connection and not has_body
        return method, target.split("?", 1)[0], keep_alive

    async def _route(self, method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
        if path not in ("/metrics", "/healthz"):
            return 404, b"not found\n", {}
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", {"Allow": "GET, HEAD"}
        if path == "/healthz":
            return 200, b"ok", {}
        families = self.registry.collect()
        text = await asyncio.get_running_loop().run_in_executor(self._formatter, format_families, families)
        return 200, text.encode(), {"Content-Type": CONTENT_TYPE}

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, *, head: bool,
                       keep_alive: bool, headers: dict[str, str] | None = None) -> None:
        fields = {"Content-Type": "text/plain; charset=utf-8", **(headers or {}),
                  "Content-Length": str(len(body)), "Connection": "keep-alive" if keep_alive else "close"}
        head_text = f"HTTP/1.1 {status} {_REASONS[status]}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        writer.write(head_text.encode("latin-1") + b"\r\n" + (b"" if head else body))
        async with asyncio.timeout(_WRITE_TIMEOUT):
            await writer.drain()


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError as exc:  # readline's way of saying the line is longer than the limit
        raise _BadRequest("request line or header field too long") from exc


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
