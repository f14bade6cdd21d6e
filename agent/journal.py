"""The agent's bounded local journal: what happened at the site, kept on disk to report later.

Entries are appended to ``STATE_DIR/journal.jsonl`` (flushed and fsynced: the
journal is most useful after a crash) and the file is compacted to the newest
``limit`` entries when it grows to twice that. Sequence numbers continue from
the file across restarts: the coordinators store the site's events by them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import deque
from pathlib import Path

from isthmus.core import model as m

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, path: Path, limit: int = 1000) -> None:
        self.path = Path(path)
        self.limit = limit
        self.entries: deque[m.JournalEntry] = deque(maxlen=limit)
        self._lines_on_disk = 0
        self._load()
        self.seq = self.entries[-1].seq if self.entries else 0

    def _load(self) -> None:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                self.entries.append(m.journal_from_json(json.loads(line)))
            except (ValueError, KeyError):
                log.warning("journal %s: skipped a damaged line", self.path)
        self._lines_on_disk = len(lines)

    def append(self, kind: str, message: str, connection: str = "", level: str = "") -> m.JournalEntry:
        """Record an entry (level "": from its kind); a disk failure is logged, the entry is kept in memory."""
        self.seq += 1
        entry = m.JournalEntry(self.seq, int(time.time() * 1000), kind, connection, message,
                               m.event_level(kind, level))
        self.entries.append(entry)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.path, "a") as f:
                f.write(json.dumps(m.to_json(entry), separators=(",", ":")) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._lines_on_disk += 1
            if self._lines_on_disk >= 2 * self.limit:
                self._compact()
        except OSError as exc:
            log.warning("journal %s: cannot write entry %d (%s); kept in memory only", self.path, entry.seq, exc)
        return entry

    def continue_after(self, seq: int) -> bool:
        """Number the kept entries on from ``seq`` when that is beyond the newest one; whether it was.

        The coordinators already hold the site's events up to ``seq`` from an
        earlier journal (this one was lost or restored from a backup): entries
        numbered below it would be taken for those and never stored.
        """
        if seq <= self.seq:
            return False
        renumbered = [dataclasses.replace(e, seq=seq + i + 1) for i, e in enumerate(self.entries)]
        self.entries.clear()
        self.entries.extend(renumbered)
        self.seq = seq + len(renumbered)
        try:
            self._compact()
        except OSError as exc:
            log.warning("journal %s: cannot rewrite it (%s); renumbered in memory only", self.path, exc)
        return True

    def _compact(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(tmp, "w") as f:
            for e in self.entries:
                f.write(json.dumps(m.to_json(e), separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines_on_disk = len(self.entries)

    def since(self, seq: int) -> list[m.JournalEntry]:
        """The entries after ``seq``, oldest first (read from the newest end: usually a few of a thousand)."""
        out = []
        for e in reversed(self.entries):  # in seq order
            if e.seq <= seq:
                break
            out.append(e)
        out.reverse()
        return out

    def last(self, limit: int = 0) -> list[m.JournalEntry]:
        items = list(self.entries)
        return items[-limit:] if limit else items
