"""Reading logs on the agent's host: bounded patterns, masking, pages and cursors over real files (rotation,
continuation lines, the time window), a journald unit through journalctl's JSON, and, with a real coordinator
and agent, pages asked for only as the client takes them (a stalled client stalls nothing else)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from conftest import BIN, Proc, agent_cmd, coordinator_cmd, ctl, wait_for
from isthmus.agent.logs import LogBook, Source
from isthmus.agent.redact import Redactor
from isthmus.coordinator.health import health_key, read_health
from isthmus.coordinator.store import Put, Store
from isthmus.core import logs as q
from isthmus.core.errors import InvalidArgument, NotFound
from isthmus.ctl.client import CtlError
from isthmus.ctl.logs import query
from isthmus.ctl.main import parse_args
from isthmus.v1 import logs_pb2 as lpb
from isthmus.v1 import logs_pb2_grpc


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def write_log(path: Path, start: float, count: int, step: float = 1.0, mode: str = "w") -> None:
    """oslo.log lines, one every ``step`` seconds from ``start``; every tenth an ERROR with a traceback."""
    with open(path, mode) as f:
        for i in range(count):
            t = start + i * step
            level = "ERROR" if i % 10 == 0 else "INFO"
            f.write(f"{stamp(t)} 4242 {level} neutron.api [req-{i:05d}] line {i}\n")
            if level == "ERROR":
                f.write("Traceback (most recent call last):\n  ValueError: boom\n")


def all_pages(book: LogBook, query: lpb.LogQuery) -> tuple[list[lpb.LogLine], lpb.LogPage]:
    lines: list[lpb.LogLine] = []
    while True:
        page = book.read(query)
        lines += page.lines
        query.cursor = page.cursor
        if not page.more:
            return lines, page


def test_patterns_that_could_run_away_are_refused() -> None:
    for pattern, why in [(r"(a+)+$", "a repeat inside a repeat"), (r"(x*y*)*", "a repeat inside a repeat"),
                         (r"(ab|cd)*", "an alternation inside a repeat"), (r"(\w+)\1", "a backreference"),
                         (r"(?P<x>a)(?P=x)", "a backreference"), (r"(a)?(?(1)b|c)", "a conditional group"),
                         (r"(?=a)b", "a lookahead or lookbehind"), (r"(?<!a)b", "a lookahead or lookbehind"),
                         ("a{1,5000}", "more than 1000"), (r".*a.*b.*c.*d", "4 unbounded repeats"),
                         ("x" * 257, "more than 256"), ("(", "not a regular expression")]:
        with pytest.raises(InvalidArgument, match="grep: .*" + why.replace("(", r"\(")):
            q.compile_grep(pattern)
    for fine in [r"req-[0-9a-f-]+", r"status: 5\d\d", r"(a|b)c", r".*ERROR.*neutron", r"[ab]*c{2,40}", r"(?i)error"]:
        assert q.compile_grep(fine) is not None
    with pytest.raises(InvalidArgument, match="^level: "):
        q.check_level("loud")
    with pytest.raises(InvalidArgument, match="^limit: "):
        q.check_limit(q.MAX_PAGE + 1)


def test_the_query_of_isthmusctl_logs() -> None:
    args = parse_args(["logs", "--site", "one", "--site", "two", "--service", "nova-api", "--since", "15m",
                       "--grep", "req-[0-9a-f]+", "--level", "warning", "--limit", "20", "--follow"])
    req = query(args, "two", now=1000.0)
    assert (req.site, list(req.services), req.since_unix_ms, req.grep, req.level, req.limit, req.follow) == (
        "two", ["nova-api"], 100_000, "req-[0-9a-f]+", "warning", 20, True)
    assert query(parse_args(["logs", "--site", "one"])).since_unix_ms == 0  # the agent's default: the last hour
    with pytest.raises(CtlError, match=r"^--grep: a backreference"):
        query(parse_args(["logs", "--site", "one", "--grep", r"(a)\1"]))


def test_secrets_are_masked_as_oslo_masks_them_and_more() -> None:
    redact = Redactor([r"sk-[A-Za-z0-9]{8,}"])
    cases = {
        "auth password=hunter2 user=admin": "auth password=*** user=admin",
        'body {"admin_pass": "hunter2", "name": "x"}': 'body {"admin_pass": "***", "name": "x"}',
        "cmd --password hunter2 --user admin": "cmd --password *** --user admin",
        "<auth_token>abc123</auth_token>": "<auth_token>***</auth_token>",
        "Secret='s3' Token = 't0k'": "Secret='***' Token = '***'",
        "connection mysql+pymysql://nova:db-pass@10.0.0.1/nova": "connection mysql+pymysql://nova:***@10.0.0.1/nova",
        "headers {'X-Auth-Token': 'abcdef', 'Accept': 'json'}": "headers {'X-Auth-Token': '***', 'Accept': 'json'}",
        "Authorization: Bearer eyJhbGciOi.x.y": "Authorization: Bearer ***",
        "validated gAAAAABn3z1x2y3z4w5v6u7t8s9r0q": "validated ***",
        "api key sk-abcdefgh12345 used": "api key *** used",
        "nothing to see 10.0.0.1 status: 404": "nothing to see 10.0.0.1 status: 404",
    }
    for line, masked in cases.items():
        assert redact(line) == masked, line


def test_pages_cursors_window_levels_and_continuation_lines(tmp_path: Path) -> None:
    path = tmp_path / "neutron-server.log"
    now = time.time()
    write_log(path, now - 7200, 7200)  # two hours, a line a second
    book = LogBook("two", [Source("neutron-server", "file", str(path))])
    # The default window is the last hour; pages of 500 lines take each line once, in order.
    lines, last = all_pages(book, lpb.LogQuery(limit=500))
    times = [ln.time_unix_ms for ln in lines]
    assert times == sorted(times) and all(t >= (now - 3600) * 1000 - 1000 for t in times)
    ids = [ln.text for ln in lines if "[req-" in ln.text]
    assert len(ids) == len(set(ids)) and 3599 <= len(ids) <= 3601 and ids[-1].endswith("line 7199")
    # ERROR and above: each error line with its traceback (continuation lines take their first line's level).
    errors = book.read(lpb.LogQuery(level="error", limit=6, since_unix_ms=int((now - 100) * 1000)))
    assert [ln.level for ln in errors.lines] == ["ERROR"] * 6 and errors.more
    assert "ERROR" in errors.lines[0].text and errors.lines[1].text == "Traceback (most recent call last):"
    assert errors.lines[2].time_unix_ms == errors.lines[0].time_unix_ms
    # New lines after the last page's cursor: only they come; a grep runs on each line.
    write_log(path, now + 1, 20, mode="a")
    fresh = book.read(lpb.LogQuery(cursor=last.cursor, grep=r"req-000[12]\d"))
    assert [ln.text.split()[-1] for ln in fresh.lines] == [str(i) for i in range(10, 20)] and not fresh.more
    # Rotation: the file is renamed and a new one started; the next page says so and reads the new one.
    os.rename(path, tmp_path / "neutron-server.log.1")
    write_log(path, now + 30, 3)
    rotated = book.read(lpb.LogQuery(cursor=fresh.cursor))
    assert "rotated or truncated" in rotated.notes[0] and len([ln for ln in rotated.lines if "[req-" in ln.text]) == 3
    # A long line is cut at 8 KiB; an unknown source and a bad cursor are refused naming the field.
    with open(path, "a") as f:
        f.write(f"{stamp(now + 40)} 4242 INFO x " + "y" * 20000 + "\n")
    long = book.read(lpb.LogQuery(cursor=rotated.cursor))
    assert len(long.lines[-1].text) == q.MAX_LINE + 3 and long.lines[-1].text.endswith("...")
    with pytest.raises(NotFound, match="^services: site two has no log source nova-api"):
        book.read(lpb.LogQuery(services=["nova-api"]))
    with pytest.raises(InvalidArgument, match="^cursor: "):
        book.read(lpb.LogQuery(cursor="not-a-cursor!"))


def test_a_journald_unit_is_read_through_journalctl_json(tmp_path: Path) -> None:
    """journald does not run here: a journalctl that answers as the real one does (-o json, --since @T or
    --after-cursor C, one JSON object per line with __CURSOR, __REALTIME_TIMESTAMP, PRIORITY, MESSAGE)."""
    now_us = int(time.time() * 1_000_000)
    entries = [{"__CURSOR": f"s=1;i={i}", "__REALTIME_TIMESTAMP": str(now_us - (5 - i) * 1_000_000),
                "PRIORITY": "3" if i == 2 else "6", "_SYSTEMD_UNIT": "nova-api.service",
                "MESSAGE": f"request {i} token=abc{i}"} for i in range(5)]
    data = tmp_path / "entries.json"
    data.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    fake = tmp_path / "journalctl"
    fake.write_text(f"""#!{BIN / 'python'}
import json, sys
argv = sys.argv[1:]
assert argv[:5] == ["-o", "json", "--no-pager", "-u", "nova-api.service"], argv
after = argv[argv.index("--after-cursor") + 1] if "--after-cursor" in argv else None
assert after or argv[argv.index("--since") + 1].startswith("@")
lines = open({str(data)!r}).read().splitlines()
start = next((n + 1 for n, l in enumerate(lines) if json.loads(l)["__CURSOR"] == after), 0) if after else 0
print("\\n".join(lines[start:]))
""")
    fake.chmod(0o755)
    book = LogBook("two", [Source("nova-api", "journald", "nova-api.service")], journalctl=str(fake))
    assert book.list_sources().sources[0].readable
    first = book.read(lpb.LogQuery(limit=3))
    assert [ln.text for ln in first.lines] == ["request 0 token=***", "request 1 token=***", "request 2 token=***"]
    assert first.lines[2].level == "ERROR" and first.more
    rest = book.read(lpb.LogQuery(cursor=first.cursor))
    assert [ln.text[:9] for ln in rest.lines] == ["request 3", "request 4"] and not rest.more
    assert [ln.text for ln in book.read(lpb.LogQuery(level="error")).lines] == ["request 2 token=***"]


def test_stale_reports_come_first_in_health(etcd: str) -> None:
    async def scenario() -> lpb.GetHealthResponse:
        store = Store([etcd])
        await store.connect()
        try:
            now = int(time.time() * 1000)
            for site, checked, state in (("one", now, "UP"), ("two", now - 600_000, "UP"), ("three", now, "DOWN"),
                                         ("gone", now, "DOWN")):
                report = lpb.HealthReport(region=site, checked_unix_ms=checked, interval_seconds=30, items=[
                    lpb.HealthItem(service="compute", kind="endpoint", name="public x", state="UP"),
                    lpb.HealthItem(service="network", kind="endpoint", name="public y", state=state)])
                await store.txn([], [Put(health_key(site), json_format.MessageToJson(report).encode())])
            return await read_health(store, "", ["one", "two", "three"])
        finally:
            await store.close()

    reply = asyncio.run(scenario())
    assert [(h.site, h.stale) for h in reply.regions] == [("two", True), ("three", False), ("one", False)]
    assert [i.state for i in reply.regions[1].report.items] == ["DOWN", "UP"]


def test_a_stalled_client_stalls_neither_the_agent_nor_other_readers(coordinator: str, tmp_path: Path,
                                                                   procs: Callable[..., Proc]) -> None:
    log = tmp_path / "nova-api.log"
    write_log(log, time.time() - 3000, 3000)
    ctl("--coordinator", coordinator, "site", "create", "two", "--kind", "region")
    procs("agent", agent_cmd("two", coordinator, tmp_path, "--log-file", f"nova-api={log}"), tmp_path / "agent.log")
    wait_for(lambda: "nova-api" in ctl("--coordinator", coordinator, "logs", "--site", "two", "--list",
                                       check=False).stdout, 30, "the agent's log sources")
    channel = grpc.insecure_channel(coordinator)
    stub = logs_pb2_grpc.LogServiceStub(channel)
    try:
        # Four streams that take one page and then nothing more: each stops once gRPC's flow control holds its
        # pages, keeping only its slot; a fifth is refused.
        stalled = [stub.ReadLogs(lpb.LogQuery(site="two", follow=True)) for _ in range(4)]
        for call in stalled:
            assert len(next(call).lines) == q.DEFAULT_PAGE
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.ReadLogs(lpb.LogQuery(site="two")))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The agent answers everything else at once: its admin socket, its sources, a new peering.
        assert "connected" in ctl("local", "status", "--socket", str(tmp_path / "two" / "admin.sock")).stdout
        assert "nova-api" in ctl("--coordinator", coordinator, "logs", "--site", "two", "--list").stdout
        for call in stalled:
            call.cancel()
        # Once they end, their slots are free: a whole read of the last 50 minutes, newest 10 lines.
        out = wait_for(lambda: (r := ctl("--coordinator", coordinator, "logs", "--site", "two", "--limit", "10",
                                         check=False)).returncode == 0 and r, 15, "a slot for a new stream")
        assert len(out.stdout.splitlines()) == 10, out.stderr
        assert out.stdout.splitlines()[-1].endswith("line 2999") and "older matching lines left out" in out.stderr
    finally:
        channel.close()


def test_follow_where_the_agent_is_and_watch(etcd: str, coordinator: str, tmp_path: Path,
                                            procs: Callable[..., Proc]) -> None:
    log = tmp_path / "neutron-server.log"
    write_log(log, time.time() - 60, 5)
    c = ("--coordinator", coordinator)
    ctl(*c, "site", "create", "two", "--kind", "region")
    ctl(*c, "site", "create", "three", "--kind", "region")
    agent = procs("agent", agent_cmd("two", coordinator, tmp_path, "--log-file", f"neutron-server={log}"),
                  tmp_path / "agent.log")
    wait_for(lambda: ctl(*c, "logs", "--site", "two", "--list", check=False).returncode == 0, 30, "the agent")
    # A site without an agent, and a coordinator that does not hold the site's agent: each says where to look.
    res = ctl(*c, "logs", "--site", "three", check=False)
    assert res.returncode == 1 and "UNAVAILABLE" in res.stderr and "isthmusctl local logs" in res.stderr
    ready = tmp_path / "addr2"
    procs("coordinator-2", coordinator_cmd(tmp_path / "c2", ready, etcd_endpoint=etcd), tmp_path / "c2.log")
    other = str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the second coordinator"))
    res = ctl("--coordinator", other, "logs", "--site", "two", check=False)
    assert res.returncode == 1 and "FAILED_PRECONDITION" in res.stderr and coordinator in res.stderr, res.stderr

    # --follow, from the coordinator and through the admin socket: a line already there, then one written after
    # the streams printed it (so it can only come from a later page) show up in both.
    def write(tag: str) -> None:
        with open(log, "a") as f:
            f.write(f"{stamp(time.time())} 4242 WARNING neutron.api {tag} password=hunter2\n")

    write("it-later-1")
    follows = [subprocess.Popen([str(BIN / "isthmusctl"), *args, "--follow", "--grep", "it-later"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for args in (["--coordinator", coordinator, "logs", "--site", "two"],
                            ["local", "logs", "--socket", str(tmp_path / "two" / "admin.sock")])]
    try:
        for tag in ("it-later-1", "it-later-2"):
            for proc in follows:
                assert proc.stdout is not None
                line = proc.stdout.readline()  # blocks until the line comes (the test's timeout bounds it)
                assert tag in line and "password=***" in line and "hunter2" not in line, line
            if tag == "it-later-1":
                write("it-later-2")
    finally:
        for proc in follows:
            proc.terminate()
            proc.communicate(timeout=10)

    # health --watch prints again and again (no region reports here: the header alone).
    watch = subprocess.Popen([str(BIN / "isthmusctl"), *c, "health", "--watch", "0.2"], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert watch.stdout is not None
        headers = [watch.stdout.readline() for _ in range(4)]
        assert sum(h.startswith("SITE") for h in headers) >= 2, headers
    finally:
        watch.terminate()
        watch.communicate(timeout=10)

    # A followed stream whose agent goes away ends, saying so.
    follow = subprocess.Popen([str(BIN / "isthmusctl"), *c, "logs", "--site", "two", "--follow", "--grep",
                               "it-later-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follow.stdout is not None and "it-later-1" in follow.stdout.readline()
    agent.stop()
    _, err = follow.communicate(timeout=30)
    assert follow.returncode == 1 and "UNAVAILABLE" in err, err
