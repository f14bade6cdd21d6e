"""The agent's bounded local journal: what happened at the site, kept on disk to report later.

Entries are appended to ``STATE_DIR/journal.jsonl`` (flushed and fsynced: the
journal is most useful after a crash) and the file is compacted to the newest
``limit`` entries when it grows to twice that.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from pathlib import Path

from isthmus import model as m

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

    def append(self, kind: str, message: str, connection: str = "") -> m.JournalEntry:
        self.seq += 1
        entry = m.JournalEntry(self.seq, int(time.time() * 1000), kind, connection, message)
        self.entries.append(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path, "a") as f:
            f.write(json.dumps(m.to_json(entry), separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._lines_on_disk += 1
        if self._lines_on_disk >= 2 * self.limit:
            self._compact()
        return entry

    def _compact(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for e in self.entries:
                f.write(json.dumps(m.to_json(e), separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines_on_disk = len(self.entries)

    def since(self, seq: int) -> list[m.JournalEntry]:
        return [e for e in self.entries if e.seq > seq]

    def last(self, limit: int = 0) -> list[m.JournalEntry]:
        items = list(self.entries)
        return items[-limit:] if limit else items
