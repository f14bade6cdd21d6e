"""Prometheus metrics: the exact exposition text, name checks, collectors, and the HTTP endpoint over loopback."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.core.metrics import CONTENT_TYPE, MetricsServer, Registry, Sample, parse_listen

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


# ---------------------------------------------------------------- the exposition text


def small_registry() -> Registry:
    reg = Registry()
    requests = reg.counter("isthmus_requests_total", "Requests answered, by method.", ["method"])
    requests.labels(method="Watch").inc()
    requests.labels(method="Get").inc()
    requests.labels(method="Get").inc(2)
    peerings = reg.gauge("isthmus_peerings", "Peerings by site and state.\nA \\ in help.", ["site", "state"])
    peerings.labels(site='a"b\\c\nd', state="UP").set(3)
    peerings.labels(site="r1", state="DOWN").set(0.5)
    reg.gauge("isthmus_up", "1 while serving.").set(1)
    reg.counter("isthmus_restarts_total", "Never incremented.")
    apply = reg.histogram("isthmus_apply_seconds", "Time to apply one site.", buckets=[0.5, 1, 5])
    for v in (0.25, 0.5, 3, 10):
        apply.observe(v)
    return reg


EXPECTED = """\
# HELP isthmus_requests_total Requests answered, by method.
# TYPE isthmus_requests_total counter
isthmus_requests_total{method="Get"} 3
isthmus_requests_total{method="Watch"} 1
# HELP isthmus_peerings Peerings by site and state.\\nA \\\\ in help.
# TYPE isthmus_peerings gauge
isthmus_peerings{site="a\\"b\\\\c\\nd",state="UP"} 3
isthmus_peerings{site="r1",state="DOWN"} 0.5
# HELP isthmus_up 1 while serving.
# TYPE isthmus_up gauge
isthmus_up 1
# HELP isthmus_restarts_total Never incremented.
# TYPE isthmus_restarts_total counter
isthmus_restarts_total 0
# HELP isthmus_apply_seconds Time to apply one site.
# TYPE isthmus_apply_seconds histogram
isthmus_apply_seconds_bucket{le="0.5"} 2
isthmus_apply_seconds_bucket{le="1"} 2
isthmus_apply_seconds_bucket{le="5"} 3
isthmus_apply_seconds_bucket{le="+Inf"} 4
isthmus_apply_seconds_sum 13.75
isthmus_apply_seconds_count 4
"""


def test_exposition_text_is_exact() -> None:
    text = small_registry().render()
    assert text == EXPECTED
    families = parse_exposition(text)
    assert families["isthmus_peerings"]["samples"][0][1] == {"site": 'a"b\\c\nd', "state": "UP"}
    assert families["isthmus_peerings"]["help"] == "Peerings by site and state.\nA \\ in help."


def test_labelled_histogram_and_special_values() -> None:
    reg = Registry()
    h = reg.histogram("lat_seconds", "Latency.", ["peer"], buckets=[1, math.inf])
    h.labels(peer="b").observe(2)
    h.labels(peer="a").observe(float("nan"))
    g = reg.gauge("odd", "Odd values.", ["k"])
    g.labels(k="inf").set(math.inf)
    g.labels(k="ninf").set(-math.inf)
    g.labels(k="big").set(2.0**60)
    g.labels(k="small").set(1e-9)
    text = reg.render()
    assert 'lat_seconds_bucket{peer="a",le="+Inf"} 1\nlat_seconds_sum{peer="a"} NaN\n' in text
    assert 'lat_seconds_bucket{peer="b",le="1"} 0\nlat_seconds_bucket{peer="b",le="+Inf"} 1\n' in text
    assert 'odd{k="big"} 1.152921504606847e+18\nodd{k="inf"} +Inf\nodd{k="ninf"} -Inf\nodd{k="small"} 1e-09\n' in text
    parse_exposition(text)


def test_gauge_and_counter_operations() -> None:
    reg = Registry()
    g = reg.gauge("g", "G.")
    g.set(5)
    g.inc()
    g.dec(2.5)
    assert g.value == 3.5
    c = reg.counter("c_total", "C.", ["x"])
    c.labels(x=1).inc(0)
    assert c.labels(x="1").value == 0
    with pytest.raises(ValueError, match="only goes up"):
        c.labels(x=1).inc(-1)
    with pytest.raises(ValueError, match=r"has labels \['x'\]: use .labels"):
        c.inc()
    with pytest.raises(ValueError, match=r"has labels \['x'\], got \['y'\]"):
        c.labels(y=1)
    c.labels(x=2).inc()
    c.remove(x=2)
    c.remove(x=3)
    assert reg.render().count("c_total{") == 1


def test_histogram_time() -> None:
    reg = Registry()
    h = reg.histogram("t_seconds", "T.", buckets=[100])
    with h.time():
        pass
    with pytest.raises(RuntimeError), h.time():
        raise RuntimeError
    assert 't_seconds_bucket{le="100"} 2\n' in reg.render()


@pytest.mark.parametrize(("call", "match"), [
    (lambda r: r.counter("1abc", "x"), "invalid metric name '1abc'"),
    (lambda r: r.counter("a-b", "x"), "invalid metric name"),
    (lambda r: r.counter("", "x"), "invalid metric name"),
    (lambda r: r.gauge("ok", "x", ["bad-label"]), "invalid label name 'bad-label'"),
    (lambda r: r.gauge("ok", "x", ["a:b"]), "invalid label name"),
    (lambda r: r.gauge("ok", "x", ["__name"]), "reserved"),
    (lambda r: r.gauge("ok", "x", ["a", "a"]), "repeat"),
    (lambda r: r.histogram("h", "x", ["le"]), "reserved"),
    (lambda r: r.histogram("h", "x", buckets=[1, 1]), "increase strictly"),
    (lambda r: r.histogram("h", "x", buckets=[2, 1]), "increase strictly"),
    (lambda r: r.histogram("h", "x", buckets=[float("nan")]), "increase strictly"),
    (lambda r: r.gauge("taken", "x"), "already registered"),
    (lambda r: r.counter("hist_sum", "x"), "hist_sum is already registered"),
])
def test_names_are_checked(call: Any, match: str) -> None:
    reg = Registry()
    reg.gauge("taken", "x")
    reg.histogram("hist", "x")
    with pytest.raises(ValueError, match=match):
        call(reg)


def test_colons_and_underscores_are_valid_names() -> None:
    reg = Registry()
    reg.gauge("job:rate_5m", "x", ["_private", "a1"]).labels(_private="", a1="v").set(1)
    assert 'job:rate_5m{_private="",a1="v"} 1\n' in reg.render()


def test_collector_samples() -> None:
    reg = Registry()
    reg.counter("served_total", "Served.").inc()
    state = {"UP": 2, "DOWN": 1}
    reg.collector(lambda: [Sample("isthmus_peerings_by_state", {"state": s}, n, "gauge", "Peerings by state.")
                           for s, n in state.items()])
    reg.collector(lambda: iter([Sample("isthmus_sessions_total", {}, 7, "counter", "Sessions."),
                                Sample("isthmus_peerings_by_state", {"state": "ERROR"}, 0)]))
    state["DEGRADED"] = 4  # collectors run at scrape time
    assert reg.render() == (
        "# HELP served_total Served.\n# TYPE served_total counter\nserved_total 1\n"
        "# HELP isthmus_peerings_by_state Peerings by state.\n# TYPE isthmus_peerings_by_state gauge\n"
        'isthmus_peerings_by_state{state="UP"} 2\nisthmus_peerings_by_state{state="DOWN"} 1\n'
        'isthmus_peerings_by_state{state="DEGRADED"} 4\nisthmus_peerings_by_state{state="ERROR"} 0\n'
        "# HELP isthmus_sessions_total Sessions.\n# TYPE isthmus_sessions_total counter\nisthmus_sessions_total 7\n")


@pytest.mark.parametrize("bad", [
    lambda: 1 / 0,
    lambda: [Sample("bad name", {}, 1)],
    lambda: [Sample("ok_one", {"bad-label": "x"}, 1)],
    lambda: [Sample("served_total", {}, 1)],  # clashes with a registered metric
    lambda: [Sample("mixed", {}, 1, "gauge"), Sample("mixed", {"a": "b"}, 1, "counter")],
])
def test_a_failing_collector_leaves_the_rest_of_the_scrape(bad: Any, caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry()
    reg.counter("served_total", "Served.").inc()
    reg.collector(bad)
    reg.collector(lambda: [Sample("good", {}, 1)])
    with caplog.at_level(logging.ERROR, logger="isthmus.core.metrics"):
        text = reg.render()
    assert text == "# HELP served_total Served.\n# TYPE served_total counter\nserved_total 1\n" \
                   "# HELP good \n# TYPE good gauge\ngood 1\n"
    assert "collector" in caplog.text


def test_updates_from_many_threads_are_not_lost() -> None:
    reg = Registry()
    c = reg.counter("c_total", "C.", ["t"])
    h = reg.histogram("h", "H.", buckets=[1])

    def work(i: int) -> None:
        for _ in range(5000):
            c.labels(t=i % 2).inc()
            h.observe(0.5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    families = parse_exposition(reg.render())
    assert sum(v for _, _, v in families["c_total"]["samples"]) == 20000
    assert ("h_count", {}, 20000.0) in families["h"]["samples"]


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True).filter(lambda s: s[:2] != "__"),
                       st.text(max_size=20), min_size=1, max_size=4),
       st.text(max_size=40), st.floats(allow_nan=False) | st.integers(-(2**70), 2**70))
def test_any_label_value_and_help_round_trip(labels: dict[str, str], help_text: str, value: float) -> None:
    reg = Registry()
    reg.gauge("g", help_text, list(labels)).labels(**labels).set(value)
    families = parse_exposition(reg.render())
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


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
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


async def _started(reg: Registry) -> tuple[MetricsServer, int]:
    server = MetricsServer(reg, "127.0.0.1", 0)
    port = await server.start()
    assert port > 0
    return server, port


async def test_server_answers_metrics_healthz_and_404() -> None:
    reg = small_registry()
    server, port = await _started(reg)
    try:
        base = f"http://127.0.0.1:{port}"
        status, headers, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 200 and headers["Content-Type"] == CONTENT_TYPE
        assert body.decode() == EXPECTED
        assert await asyncio.to_thread(_get, base + "/metrics?x=1") == (status, headers, body)
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


async def test_keep_alive_then_close() -> None:
    server, port = await _started(small_registry())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await _read_response(reader)
        assert (status, headers["connection"], body) == ("HTTP/1.1 200 OK", "keep-alive", b"ok")
        status, _, body = await _read_response(reader)
        assert (status, body.decode()) == ("HTTP/1.1 200 OK", EXPECTED)
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, _ = await _read_response(reader)
        assert (status, headers["connection"]) == ("HTTP/1.1 404 Not Found", "close")
        assert await asyncio.wait_for(reader.read(), 5) == b"", "server closes after Connection: close"
    finally:
        writer.close()
        await writer.wait_closed()
        await server.stop()


@pytest.mark.parametrize("request_bytes", [
    b"NONSENSE\r\n\r\n",
    b"GET /metrics SPDY/3\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
])
async def test_bad_requests_get_400_and_a_closed_connection(request_bytes: bytes) -> None:
    server, port = await _started(Registry())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes)
        status, headers, _ = await _read_response(reader)
        assert (status, headers["connection"]) == ("HTTP/1.1 400 Bad Request", "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        await writer.wait_closed()
        await server.stop()


async def test_http10_and_requests_with_a_body_are_answered_then_closed() -> None:
    server, port = await _started(Registry())
    try:
        for request in (b"GET /healthz HTTP/1.0\r\n\r\n",
                        b"POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, _ = await _read_response(reader)
            assert headers["connection"] == "close", status
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
    finally:
        await server.stop()


async def test_stop_closes_idle_connections_and_the_port(caplog: pytest.LogCaptureFixture) -> None:
    server, port = await _started(Registry())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    await _read_response(reader)
    half_reader, half_writer = await asyncio.open_connection("127.0.0.1", port)
    half_writer.write(b"GET /metrics HTTP/1.1\r\nHost:")  # a request that is still arriving
    deadline = asyncio.get_running_loop().time() + 5
    while len(server._connections) < 2:
        assert asyncio.get_running_loop().time() < deadline, f"server sees {len(server._connections)} connections"
        await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(server.stop(), 5)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert await asyncio.wait_for(half_reader.read(), 5) == b""
    finally:
        for w in (writer, half_writer):
            w.close()
            await w.wait_closed()
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    with pytest.raises(OSError):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.close()
    await server.stop()  # a second stop is harmless


async def test_concurrent_scrapes_while_updating() -> None:
    reg = Registry()
    c = reg.counter("work_total", "Work done.", ["kind"])
    h = reg.histogram("work_seconds", "Work time.", ["kind"])
    reg.collector(lambda: [Sample("loop_alive", {}, 1)])
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
