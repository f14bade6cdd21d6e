"""The host's OpenStack logs, read one bounded page at a time for the coordinator or the admin socket.

A site's sources are configured on its agent: files (--log-file SERVICE=PATH, oslo.log's format) and
systemd units (--log-unit SERVICE=UNIT, read with ``journalctl -o json``). A page starts where the cursor
says (or, for a first page, at the first line of the time window), holds the lines of every source asked
for merged by time, and stops at its line limit, after SCAN_BYTES read per source, or after SCAN_SECONDS of
work: nothing is read unless asked, and no page costs more than that. Every line is masked (agent/redact.py)
before the pattern runs on it and before it leaves the host.
"""

from __future__ import annotations

import base64
import datetime
import functools
import heapq
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from isthmus.agent.redact import Redactor
from isthmus.core import logs as q
from isthmus.core.errors import InvalidArgument, NotFound
from isthmus.v1 import logs_pb2 as lpb

SCAN_BYTES = 16 * 1024 * 1024  # read per source and page
SCAN_SECONDS = 2.0  # of matching per page
SEARCH_STEP = 64 * 1024  # the time search stops narrowing at this many bytes

# oslo.log's default format starts "2026-12-07 04:31:18.123 4242 ERROR neutron.api ..."; ISO times with a
# zone (journald exports, other tools) are read too.
_HEAD = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d{1,6})?(?:Z|[+-]\d\d:?\d\d)?)\s+(?:\d+\s+)?"
                   r"(?:([A-Z]{4,8})\b)?")
_JOURNAL_LEVELS = {"0": "CRITICAL", "1": "CRITICAL", "2": "CRITICAL", "3": "ERROR", "4": "WARNING", "5": "INFO",
                   "6": "INFO", "7": "DEBUG"}


@dataclass(frozen=True)
class Source:
    service: str
    kind: str  # file | journald
    location: str


@dataclass(order=True)
class Line:
    time_ms: int
    order: int  # keeps a source's lines in file order among equal times
    service: str = field(compare=False)
    level: str = field(compare=False)
    text: str = field(compare=False)
    position: Any = field(compare=False)  # the source's cursor just after this line


def parse_head(text: str) -> tuple[int, str] | None:
    """The time (Unix ms, local time unless the line names a zone) and level at the start of a line."""
    match = _HEAD.match(text)
    if match is None:
        return None
    ms = _unix_ms(match[1])
    if ms is None:
        return None
    return ms, q.LEVEL_NAMES.get(match[2] or "", "")


@functools.lru_cache(maxsize=4096)
def _second_ms(second: str) -> int | None:
    """A time to the second ("2026-12-07 04:31:18", maybe with a zone) in Unix ms; lines share their seconds."""
    try:
        return int(datetime.datetime.fromisoformat(second.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?")


def _unix_ms(stamp: str) -> int | None:
    match = _STAMP.fullmatch(stamp.replace(",", ".").replace("T", " "))
    if match is None:
        return None
    base = _second_ms(match[1] + (match[3] or ""))
    if base is None:
        return None
    return base + (int((match[2] + "00")[:3]) if match[2] else 0)


def encode_cursor(positions: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(positions, sort_keys=True).encode()).decode()


def decode_cursor(cursor: str) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("cursor: not a cursor of this agent's log pages") from exc
    if not isinstance(value, dict):
        raise InvalidArgument("cursor: not a cursor of this agent's log pages")
    return value


class LogBook:
    """The configured sources and the page reader (blocking: the agent runs it in a thread)."""

    def __init__(self, site: str, sources: list[Source], redactor: Redactor | None = None,
                 journalctl: str = "journalctl") -> None:
        self.site = site
        self.sources = {s.service: s for s in sources}
        self.redact = redactor or Redactor()
        self.journalctl = journalctl

    def list_sources(self) -> lpb.ListLogSourcesResponse:
        out = lpb.ListLogSourcesResponse(site=self.site)
        for s in self.sources.values():
            row = lpb.LogSource(service=s.service, kind=s.kind, location=s.location)
            if s.kind == "file":
                try:
                    row.size_bytes = os.stat(s.location).st_size
                    row.readable = os.access(s.location, os.R_OK)
                    row.error = "" if row.readable else "permission denied"
                except OSError as exc:
                    row.error = exc.strerror or str(exc)
            else:
                row.readable = shutil.which(self.journalctl) is not None
                row.error = "" if row.readable else f"{self.journalctl} not found"
            out.sources.append(row)
        return out

    def read(self, query: lpb.LogQuery, now_ms: int | None = None) -> lpb.LogPage:
        """One page; raises InvalidArgument for a bad query, NotFound for a source the site does not have."""
        services = list(query.services) or list(self.sources)
        q.check_query(list(query.services), query.grep, query.level, query.limit)
        missing = [s for s in services if s not in self.sources]
        if missing:
            raise NotFound(f"services: site {self.site} has no log source {', '.join(missing)} (it has "
                           f"{', '.join(self.sources) or 'none'}; isthmusctl logs --site {self.site} --list)")
        limit = q.check_limit(query.limit)
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        since = query.since_unix_ms or now - q.DEFAULT_WINDOW_S * 1000
        scan = _Scan(q.compile_grep(query.grep), q.level_rank(query.level), since, limit, self.redact,
                     time.monotonic() + SCAN_SECONDS)
        positions = decode_cursor(query.cursor)
        page = lpb.LogPage()
        per_source: list[list[Line]] = []
        ends: dict[str, Any] = {}
        for name in services:
            src = self.sources[name]
            reader = self._file if src.kind == "file" else self._journal
            lines, end, done, note = reader(src, positions.get(name), scan)
            per_source.append(lines)
            ends[name] = end
            page.more |= not done
            if note:
                page.notes.append(f"{name}: {note}")
        merged = list(heapq.merge(*per_source))
        taken = merged[:limit]
        if len(merged) > limit:
            page.more = True
        # Each source resumes after its last line taken; one none of whose lines were taken, where it began
        # unless it read to its end without a match.
        after = dict(positions)
        last = {ln.service: ln.position for ln in taken}
        for name in services:
            had = any(ln.service == name for ln in merged)
            if name in last:
                after[name] = last[name]
            elif not had:
                after[name] = ends[name]
        for ln in taken:
            page.lines.append(lpb.LogLine(time_unix_ms=ln.time_ms, site=self.site, service=ln.service,
                                          level=ln.level, text=ln.text))
        page.cursor = encode_cursor(after)
        return page

    # ------------------------------------------------------------ files

    def _file(self, src: Source, position: Any, scan: _Scan) -> tuple[list[Line], Any, bool, str]:
        try:
            f = open(src.location, "rb")  # noqa: SIM115 (closed below, on every path)
        except OSError as exc:
            return [], position, True, f"cannot read {src.location}: {exc.strerror or exc}"
        with f:
            st = os.fstat(f.fileno())
            note = ""
            if isinstance(position, list) and len(position) == 2 and position[0] == st.st_ino \
                    and position[1] <= st.st_size:
                start = int(position[1])
            else:
                if position is not None:
                    note = f"{src.location} was rotated or truncated: reading the new file from its start"
                start = 0 if position is not None else _offset_at(f, st.st_size, scan.since)
            lines, end, done = scan.file(f, src.service, start, st.st_size, st.st_ino)
            return lines, [st.st_ino, end], done, note

    # ------------------------------------------------------------ journald

    def _journal(self, src: Source, position: Any, scan: _Scan) -> tuple[list[Line], Any, bool, str]:
        argv = [self.journalctl, "-o", "json", "--no-pager", "-u", src.location]
        if isinstance(position, str) and position:
            argv += ["--after-cursor", position]
        else:
            argv += ["--since", f"@{scan.since // 1000}"]
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError as exc:
            return [], position, True, f"cannot run {self.journalctl}: {exc.strerror or exc}"
        assert proc.stdout is not None
        lines: list[Line] = []
        end, done, read = position, True, 0
        try:
            for raw in proc.stdout:
                read += len(raw)
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                end = entry.get("__CURSOR", end)
                text = entry.get("MESSAGE")
                if not isinstance(text, str):
                    continue  # binary or absent
                when = int(entry.get("__REALTIME_TIMESTAMP", "0")) // 1000
                level = _JOURNAL_LEVELS.get(str(entry.get("PRIORITY", "6")), "INFO")
                head = parse_head(text)
                if head is not None and head[1]:
                    level = head[1]
                line = scan.line(src.service, when, level, text, end, len(lines))
                if line is not None:
                    lines.append(line)
                if scan.full(lines) or read > SCAN_BYTES or scan.late():
                    done = False
                    break
        finally:
            proc.kill()
            proc.stdout.close()
            proc.wait()
        return lines, end, done, ""


@dataclass
class _Scan:
    """One page's filters and bounds, shared by its sources."""

    grep: re.Pattern[str] | None
    rank: int
    since: int
    limit: int
    redact: Redactor
    deadline: float

    def full(self, lines: list[Line]) -> bool:
        return len(lines) > self.limit  # one more than the page holds: the merge then knows there are more

    def late(self) -> bool:
        return time.monotonic() > self.deadline

    def line(self, service: str, when: int, level: str, text: str, position: Any, order: int) -> Line | None:
        if when < self.since or (self.rank and q.LEVELS.get(level.lower(), 0) < self.rank):
            return None
        if len(text) > q.MAX_LINE:
            text = text[:q.MAX_LINE] + "..."
        text = self.redact(text)
        if self.grep is not None and self.grep.search(text, 0, q.MAX_MATCHED) is None:
            return None
        return Line(when, order, service, level, text, position)

    def file(self, f: Any, service: str, start: int, size: int, ino: int) -> tuple[list[Line], int, bool]:
        """Lines from ``start``; a line without a time of its own (a traceback's) takes its first line's."""
        f.seek(start)
        lines: list[Line] = []
        offset, when, level = start, 0, ""
        limit_at = start + SCAN_BYTES
        if start:
            when, level = _time_before(f, start)
            f.seek(start)
        while offset < size:
            raw = f.readline(q.MAX_LINE * 4)
            if not raw:
                break
            if not raw.endswith(b"\n") and offset + len(raw) >= size:
                break  # a line still being written: the next page takes it whole
            offset += len(raw)
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            head = parse_head(text)
            if head is not None:
                when, level = head[0], head[1] or level
            line = self.line(service, when, level, text, [ino, offset], len(lines))
            if line is not None:
                lines.append(line)
            if self.full(lines) or offset >= limit_at or self.late():
                return lines, offset, offset >= size
        return lines, offset, True


def _first_time(f: Any, at: int) -> tuple[int, int] | None:
    """The first timed line at or after byte ``at`` (a partial line skipped): its time and offset."""
    f.seek(at)
    if at:
        f.readline()
    read = 0
    while read < SEARCH_STEP:
        pos = f.tell()
        raw = f.readline(q.MAX_LINE * 4)
        if not raw:
            return None
        read += len(raw)
        head = parse_head(raw.decode("utf-8", "replace"))
        if head is not None:
            return head[0], pos
    return None


def _offset_at(f: Any, size: int, since: int) -> int:
    """Where the lines from ``since`` on start, found by bisecting the file on the lines' times (a log is written
    in time order); the start of a line at most SEARCH_STEP before the first such line."""
    lo, hi = 0, size
    while hi - lo > SEARCH_STEP:
        mid = (lo + hi) // 2
        found = _first_time(f, mid)
        if found is None or found[0] >= since:
            hi = mid
        else:
            lo = found[1]
            if found[1] >= hi:
                break
    if lo == 0:
        return 0
    f.seek(lo)
    return lo


def _time_before(f: Any, start: int) -> tuple[int, str]:
    """The time and level of the last timed line before ``start`` (for continuation lines a page starts with)."""
    back = max(0, start - SEARCH_STEP)
    f.seek(back)
    chunk = f.read(start - back).decode("utf-8", "replace").splitlines()
    for text in reversed(chunk):
        head = parse_head(text)
        if head is not None:
            return head
    return 0, ""
