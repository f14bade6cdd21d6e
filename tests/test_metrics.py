"""Prometheus metrics on prometheus-client: the exposition text, the process collectors, samples computed on the
event loop, and the HTTP endpoint over loopback."""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from isthmus.core.metrics import LoopCollector, MetricsServer, Sample, new_registry, parse_listen

# ---------------------------------------------------------------- a small parser of the text format 0.0.4

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z", re.S)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|\Z)', re.S)
_UNESCAPE = {"n": "\n", "\\": "\\", '"': '"'}


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPE[m[1]], text)


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """Families by name: help, type and samples (name, labels, value); asserts the format's rules on the way."""
    assert text == "" or text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP "):].partition(" ")
            assert name not in families, f"family {name} is not contiguous"
            assert "\\" not in re.sub(r"\\[\\n]", "", help_text), f"bad escape in help of {name}"
            families[name] = {"help": _unescape(help_text), "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE "):].partition(" ")
            assert name == current and families[name]["type"] is None and not families[name]["samples"]
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            families[name]["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match and current is not None, f"not a sample line: {line!r}"
            name, label_text, value = match.groups()
            family = families[current]
            suffixes = ("_bucket", "_sum", "_count") if family["type"] == "histogram" else ("",)
            assert name in {current + s for s in suffixes}, f"{name} under # TYPE {current}"
            labels: dict[str, str] = {}
            pos = 0
            for lm in _LABEL.finditer(label_text or ""):
                assert lm.start() == pos, f"garbage in labels of {line!r}"
                assert lm[1] not in labels
                labels[lm[1]] = _unescape(lm[2])
                pos = lm.end()
            assert pos == len(label_text or ""), f"garbage in labels of {line!r}"
            family["samples"].append((name, labels, float(value)))
    for name, family in families.items():
        if family["type"] == "histogram":
            _check_histogram(name, family["samples"])
    return families


def _check_histogram(name: str, samples: list[tuple[str, dict[str, str], float]]) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for line_name, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        if line_name == name + "_bucket":
            series.setdefault(rest, []).append((float(labels["le"]), value))
        elif line_name == name + "_count":
            counts[rest] = value
    for key, buckets in series.items():
        assert [b for b, _ in buckets] == sorted(b for b, _ in buckets) and buckets[-1][0] == math.inf
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), "buckets are cumulative"
        assert buckets[-1][1] == counts[key], "+Inf bucket equals _count"


# ---------------------------------------------------------------- the exposition text (prometheus-client's)


def small_registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    requests = Counter("isthmus_requests_total", "Requests answered, by method.", ["method"], registry=reg)
    requests.labels(method="Watch").inc()
    requests.labels(method="Get").inc()
    requests.labels(method="Get").inc(2)
    peerings = Gauge("isthmus_peerings", "Peerings by site and state.\nA \\ in help.", ["site", "state"], registry=reg)
    peerings.labels(site='a"b\\c\nd', state="UP").set(3)
    peerings.labels(site="r1", state="DOWN").set(0.5)
    Gauge("isthmus_up", "1 while serving.", registry=reg).set(1)
    Counter("isthmus_restarts_total", "Never incremented.", registry=reg)
    apply = Histogram("isthmus_apply_seconds", "Time to apply one site.", buckets=[0.5, 1, 5], registry=reg)
    for v in (0.25, 0.5, 3, 10):
        apply.observe(v)
    return reg


# What a scrape that asks for no particular format gets: the text format 0.0.4 as prometheus-client writes it
# (series in the order they were made, values as floats, no _created series: isthmus.core.metrics turns them off).
EXPECTED = """\
# HELP isthmus_requests_total Requests answered, by method.
# TYPE isthmus_requests_total counter
isthmus_requests_total{method="Watch"} 1.0
isthmus_requests_total{method="Get"} 3.0
# HELP isthmus_peerings Peerings by site and state.\\nA \\\\ in help.
# TYPE isthmus_peerings gauge
isthmus_peerings{site="a\\"b\\\\c\\nd",state="UP"} 3.0
isthmus_peerings{site="r1",state="DOWN"} 0.5
# HELP isthmus_up 1 while serving.
# TYPE isthmus_up gauge
isthmus_up 1.0
# HELP isthmus_restarts_total Never incremented.
# TYPE isthmus_restarts_total counter
isthmus_restarts_total 0.0
# HELP isthmus_apply_seconds Time to apply one site.
# TYPE isthmus_apply_seconds histogram
isthmus_apply_seconds_bucket{le="0.5"} 2.0
isthmus_apply_seconds_bucket{le="1.0"} 2.0
isthmus_apply_seconds_bucket{le="5.0"} 3.0
isthmus_apply_seconds_bucket{le="+Inf"} 4.0
isthmus_apply_seconds_count 4.0
isthmus_apply_seconds_sum 13.75
"""


def render(reg: CollectorRegistry) -> str:
    return generate_latest(reg).decode()


def test_exposition_text_is_exact() -> None:
    text = render(small_registry())
    assert text == EXPECTED
    families = parse_exposition(text)
    assert families["isthmus_peerings"]["samples"][0][1] == {"site": 'a"b\\c\nd', "state": "UP"}
    assert families["isthmus_peerings"]["help"] == "Peerings by site and state.\nA \\ in help."


def test_labelled_histogram_and_special_values() -> None:
    reg = CollectorRegistry()
    h = Histogram("lat_seconds", "Latency.", ["peer"], buckets=[1, math.inf], registry=reg)
    h.labels(peer="b").observe(2)
    h.labels(peer="a").observe(float("nan"))
    g = Gauge("odd", "Odd values.", ["k"], registry=reg)
    g.labels(k="inf").set(math.inf)
    g.labels(k="ninf").set(-math.inf)
    g.labels(k="big").set(2.0**60)
    g.labels(k="small").set(1e-9)
    text = render(reg)
    assert 'lat_seconds_count{peer="a"} 0.0\nlat_seconds_sum{peer="a"} NaN\n' in text  # NaN is in no bucket
    assert 'lat_seconds_bucket{le="1.0",peer="b"} 0.0\nlat_seconds_bucket{le="+Inf",peer="b"} 1.0\n' in text
    assert 'odd{k="inf"} +Inf\nodd{k="ninf"} -Inf\nodd{k="big"} 1.152921504606847e+18\nodd{k="small"} 1e-09\n' in text
    parse_exposition(text)


def test_the_registry_of_a_program_has_the_process_collectors() -> None:
    families = parse_exposition(render(new_registry()))
    for name, kind in [("process_cpu_seconds_total", "counter"), ("process_resident_memory_bytes", "gauge"),
                       ("process_open_fds", "gauge"), ("process_start_time_seconds", "gauge"),
                       ("python_info", "gauge"), ("python_gc_collections_total", "counter")]:
        assert families[name]["type"] == kind, name
    (_, _, rss), = families["process_resident_memory_bytes"]["samples"]
    assert rss > 1e6
    assert not any(name.endswith("_created") for name in families)


# ---------------------------------------------------------------- samples computed on the event loop


async def test_collector_samples() -> None:
    reg = CollectorRegistry()
    Counter("served_total", "Served.", registry=reg).inc()
    state = {"UP": 2, "DOWN": 1}
    LoopCollector(lambda: [*(Sample("isthmus_peerings_by_state", {"state": s}, n, "Peerings by state.")
                             for s, n in state.items()),
                           Sample("isthmus_sessions", {}, 7, "Sessions."),
                           Sample("isthmus_peerings_by_state", {"state": "ERROR"}, 0)], registry=reg)
    LoopCollector(lambda: iter([Sample("isthmus_links", {}, 2)]), registry=reg)
    state["DEGRADED"] = 4  # collectors run at scrape time
    assert render(reg) == (
        "# HELP served_total Served.\n# TYPE served_total counter\nserved_total 1.0\n"
        "# HELP isthmus_peerings_by_state Peerings by state.\n# TYPE isthmus_peerings_by_state gauge\n"
        'isthmus_peerings_by_state{state="UP"} 2.0\nisthmus_peerings_by_state{state="DOWN"} 1.0\n'
        'isthmus_peerings_by_state{state="DEGRADED"} 4.0\nisthmus_peerings_by_state{state="ERROR"} 0.0\n'
        "# HELP isthmus_sessions Sessions.\n# TYPE isthmus_sessions gauge\nisthmus_sessions 7.0\n"
        "# HELP isthmus_links \n# TYPE isthmus_links gauge\nisthmus_links 2.0\n")


async def test_a_scrape_from_another_thread_computes_the_samples_on_the_loop() -> None:
    reg = CollectorRegistry()
    seen: list[int] = []

    def samples() -> list[Sample]:
        seen.append(threading.get_ident())
        return [Sample("loop_alive", {}, 1)]

    LoopCollector(samples, registry=reg)
    text = await asyncio.to_thread(render, reg)
    assert text == "# HELP loop_alive \n# TYPE loop_alive gauge\nloop_alive 1.0\n"
    assert seen == [threading.get_ident()]  # this test runs on the loop's thread


@pytest.mark.parametrize("bad", [
    lambda: 1 / 0,
    lambda: [Sample("ok_one", {}, "not a number")],  # type: ignore[arg-type]
    lambda: [Sample("mixed", {}, 1), Sample("mixed", {"a": "b"}, 1)],  # one family, two sets of labels
])
async def test_a_failing_collector_leaves_the_rest_of_the_scrape(bad: Any, caplog: pytest.LogCaptureFixture) -> None:
    reg = CollectorRegistry()
    Counter("served_total", "Served.", registry=reg).inc()
    LoopCollector(bad, registry=reg)
    LoopCollector(lambda: [Sample("good", {}, 1)], registry=reg)
    with caplog.at_level(logging.ERROR, logger="isthmus.core.metrics"):
        text = await asyncio.to_thread(render, reg)
    assert text == "# HELP served_total Served.\n# TYPE served_total counter\nserved_total 1.0\n" \
                   "# HELP good \n# TYPE good gauge\ngood 1.0\n"
    assert "collector" in caplog.text


async def test_a_loop_that_does_not_answer_leaves_its_samples_out(caplog: pytest.LogCaptureFixture) -> None:
    reg = CollectorRegistry()
    Counter("served_total", "Served.", registry=reg).inc()
    LoopCollector(lambda: [Sample("good", {}, 1)], registry=reg, timeout=0.2)
    scraped: list[str] = []
    scrape = threading.Thread(target=lambda: scraped.append(render(reg)))
    with caplog.at_level(logging.WARNING, logger="isthmus.core.metrics"):
        scrape.start()
        time.sleep(0.5)  # the loop is busy (blocked) while the scrape waits for it
        scrape.join()
    (text,) = scraped
    assert text == "# HELP served_total Served.\n# TYPE served_total counter\nserved_total 1.0\n"
    assert "did not compute the samples" in caplog.text
    assert await asyncio.to_thread(render, reg) == text + "# HELP good \n# TYPE good gauge\ngood 1.0\n"


def test_updates_from_many_threads_are_not_lost() -> None:
    reg = CollectorRegistry()
    c = Counter("c_total", "C.", ["t"], registry=reg)
    h = Histogram("h", "H.", buckets=[1], registry=reg)

    def work(i: int) -> None:
        for _ in range(5000):
            c.labels(t=i % 2).inc()
            h.observe(0.5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    families = parse_exposition(render(reg))
    assert sum(v for _, _, v in families["c_total"]["samples"]) == 20000
    assert ("h_count", {}, 20000.0) in families["h"]["samples"]


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True).filter(lambda s: s[:2] != "__"),
                       st.text(max_size=20), min_size=1, max_size=4),
       st.text(max_size=40), st.floats(allow_nan=False) | st.integers(-(2**70), 2**70))
def test_any_label_value_and_help_round_trip(labels: dict[str, str], help_text: str, value: float) -> None:
    reg = CollectorRegistry()
    Gauge("g", help_text, list(labels), registry=reg).labels(**labels).set(value)
    families = parse_exposition(render(reg))
    assert families["g"]["help"] == help_text
    assert families["g"]["samples"] == [("g", labels, float(value))]


# ---------------------------------------------------------------- listen addresses


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)),
    ("[::1]:9101", ("::1", 9101)),
    ("[fe80::1%eth0]:1", ("fe80::1%eth0", 1)),
    (":9101", ("", 9101)),
    ("localhost:0", ("localhost", 0)),
    ("metrics.example.org:65535", ("metrics.example.org", 65535)),
])
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(("value", "match"), [
    ("9101", "give host:port"),
    ("", "give host:port"),
    ("::1:9101", "brackets"),
    ("[::1]9101", r"\[IPv6 address\]:port"),
    ("[::1:9101", r"\[IPv6 address\]:port"),
    ("[1.2.3.4]:9101", "not an IPv6 address"),
    ("127.0.0.1:", "port must be"),
    ("127.0.0.1:65536", "port must be"),
    ("127.0.0.1:-1", "port must be"),
    ("127.0.0.1:９", "port must be"),
    ("bad host:1", "not an IPv4 address or host name"),
    ("-bad:1", "not an IPv4 address or host name"),
])
def test_parse_listen_errors_name_the_value(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_listen(value)
    assert repr(value) in str(info.value)


# ---------------------------------------------------------------- the HTTP endpoint over loopback


def _get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


async def _read_response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    status = (await reader.readline()).decode().strip()
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _started(reg: CollectorRegistry, **kwargs: Any) -> tuple[MetricsServer, int]:
    server = MetricsServer(reg, "127.0.0.1", 0, **kwargs)
    port = await server.start()
    assert port > 0
    return server, port


async def test_server_answers_metrics_healthz_and_404() -> None:
    reg = small_registry()
    server, port = await _started(reg)
    try:
        base = f"http://127.0.0.1:{port}"
        status, headers, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 200 and headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
        assert body.decode() == EXPECTED
        again = await asyncio.to_thread(_get, base + "/metrics?x=1")
        assert (again[0], again[2]) == (status, body)
        status, headers, body = await asyncio.to_thread(_get, base + "/metrics", "HEAD")
        assert (status, body, headers["Content-Length"]) == (200, b"", str(len(EXPECTED.encode())))
        status, _, body = await asyncio.to_thread(_get, base + "/healthz")
        assert (status, body) == (200, b"ok")
        status, _, body = await asyncio.to_thread(_get, base + "/")
        assert (status, body) == (404, b"not found\n")
        status, _, _ = await asyncio.to_thread(_get, base + "/metrics/extra")
        assert status == 404
        status, headers, _ = await asyncio.to_thread(_get, base + "/metrics", "POST")
        assert (status, headers["Allow"]) == (405, "GET, HEAD")
    finally:
        await server.stop()


async def test_openmetrics_and_gzip_when_the_scraper_asks() -> None:
    server, port = await _started(small_registry())
    try:
        # What Prometheus sends: OpenMetrics first, gzip accepted.
        accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        status, headers, body = await asyncio.to_thread(
            _get, f"http://127.0.0.1:{port}/metrics", "GET", {"Accept": accept, "Accept-Encoding": "gzip"})
        assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(body).decode()
        assert text.endswith("# EOF\n") and 'isthmus_peerings{site="r1",state="DOWN"} 0.5\n' in text
        assert "isthmus_requests_total{method=\"Get\"} 3.0\n" in text and "_created" not in text
    finally:
        await server.stop()


async def test_each_request_has_its_own_connection() -> None:
    server, port = await _started(small_registry())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await _read_response(reader)
        assert (status, body) == ("HTTP/1.0 200 OK", b"ok")
        assert await asyncio.wait_for(reader.read(), 5) == b"", "the server closes after its answer"
    finally:
        writer.close()
        await writer.wait_closed()
        await server.stop()


@pytest.mark.parametrize(("request_bytes", "answer"), [
    (b"NONSENSE\r\n\r\n", b"Error code: 400"),
    (b"GET /metrics SPDY/3\r\n\r\n", b"Error code: 400"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"HTTP/1.0 414 "),
])
async def test_bad_requests_get_an_error_and_a_closed_connection(request_bytes: bytes, answer: bytes) -> None:
    server, port = await _started(CollectorRegistry())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes)
        assert answer in await asyncio.wait_for(reader.read(), 5)  # all of it: the server closes
    finally:
        writer.close()
        await writer.wait_closed()
        await server.stop()


async def test_http10_and_requests_with_a_body_are_answered_then_closed() -> None:
    server, port = await _started(CollectorRegistry())
    try:
        for request, expected in ((b"GET /healthz HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK"),
                                  (b"POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                                   "HTTP/1.0 405 Method Not Allowed")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, _, _ = await _read_response(reader)
            assert status == expected
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
    finally:
        await server.stop()


async def test_a_stalled_client_is_cut_off_and_stop_closes_the_port(caplog: pytest.LogCaptureFixture) -> None:
    server, port = await _started(CollectorRegistry(), request_timeout=0.5)
    half_reader, half_writer = await asyncio.open_connection("127.0.0.1", port)
    half_writer.write(b"GET /metrics HTTP/1.1\r\nHost:")  # a request that never ends
    with caplog.at_level(logging.WARNING):
        # Meanwhile others are answered (a thread per request), and the stalled one is closed after its timeout.
        status, _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
        assert (status, body) == (200, b"ok")
        started = time.monotonic()
        assert await asyncio.wait_for(half_reader.read(), 5) == b""
        assert time.monotonic() - started < 2
        await asyncio.wait_for(server.stop(), 5)
    half_writer.close()
    await half_writer.wait_closed()
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    with pytest.raises(OSError):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.close()
    await server.stop()  # a second stop is harmless


async def test_every_interface_and_a_port_taken() -> None:
    server = MetricsServer(CollectorRegistry(), "", 0)
    port = await server.start()
    try:
        status, _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
        assert (status, body) == (200, b"ok")
        with pytest.raises(OSError):
            await MetricsServer(CollectorRegistry(), "127.0.0.1", port).start()
    finally:
        await server.stop()


async def test_concurrent_scrapes_while_updating() -> None:
    reg = CollectorRegistry()
    c = Counter("work_total", "Work done.", ["kind"], registry=reg)
    h = Histogram("work_seconds", "Work time.", ["kind"], registry=reg)
    LoopCollector(lambda: [Sample("loop_alive", {}, 1)], registry=reg)
    server, port = await _started(reg)
    stop = threading.Event()

    def update() -> None:
        i = 0
        while not stop.is_set():
            c.labels(kind=f"k{i % 50}").inc()
            h.labels(kind=f"k{i % 50}").observe(i % 7 / 10)
            i += 1

    updater = threading.Thread(target=update)
    updater.start()
    try:
        results = await asyncio.gather(*(asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
                                         for _ in range(24)))
    finally:
        stop.set()
        updater.join()
        await server.stop()
    for status, _, body in results:
        assert status == 200
        families = parse_exposition(body.decode())
        assert families["loop_alive"]["samples"] == [("loop_alive", {}, 1.0)]
