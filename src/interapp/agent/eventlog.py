"""The agent's event log: every event with an agent-wide ``seq``, durable, replayable.

Theory of operation: the agent appends each event it hands out to a small SQLite file in the
data folder (``agent-events.db``, mode 0600, WAL). ``seq`` is an ``AUTOINCREMENT`` key, so it
only ever grows, also across restarts and after old rows are pruned. The log keeps the newest
``keep`` events (the *window*); a client that resumes with ``since`` older than the window is
told so (``cursor_reset``) and gets what is left.

Every file operation runs on one worker thread of the log's own (never on the event loop): an
append is awaited before the agent takes the next event from the host, so a target's stream
cursor is saved only once the event is on disk — an agent killed with ``-9`` gets the event
again from the target after a restart, and the ``dedup`` key (target, cursor, kind and the
event's data) makes that second copy a no-op instead of a new ``seq``. WAL with
``synchronous=NORMAL`` survives a killed process (not a power cut of the machine); that is
the promise made here.

The newest events are also kept in memory, so a live client never reads the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEEP = 10_000
MEMORY = 2_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    dedup TEXT UNIQUE,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _with_seq(seq: int, body: str) -> str:
    """The stored JSON object (without its seq) with ``seq`` as its first member."""
    return f'{{"seq":{seq}' + ("," + body[1:] if body != "{}" else "}")


@dataclass(frozen=True)
class Logged:
    """One event as stored: its ``seq`` and its JSON text (``seq`` already inside)."""

    seq: int
    text: str


class EventLog:
    """The durable, bounded, replayable log (see the module docstring)."""

    def __init__(self, path: Path | None, *, keep: int = KEEP) -> None:
        """``path`` None: in memory only (tests, in-process agents)."""
        self.path = path
        self.keep = keep
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="interapp-agent-log")
        self._db: sqlite3.Connection | None = None
        self._recent: deque[Logged] = deque(maxlen=MEMORY)
        self._oldest = 1
        self._last = 0
        self._since_prune = 0
        self.changed = asyncio.Event()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- opening ----------------------------------------------------------------------------

    async def open(self) -> EventLog:
        """Open (or create) the file and read where it stands."""
        await self._run(self._open)
        return self

    def _open(self) -> None:
        if self.path is None:
            db = sqlite3.connect(":memory:", check_same_thread=False)
        else:
            old = os.umask(0o177)
            try:
                db = sqlite3.connect(self.path, check_same_thread=False)
            finally:
                os.umask(old)
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        self._db = db
        low, high = db.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
        counter = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        self._last = int(counter[0]) if counter else int(high or 0)
        self._oldest = int(low) if low is not None else self._last + 1
        rows = db.execute("SELECT seq, data FROM events ORDER BY seq DESC LIMIT ?",
                          (MEMORY,)).fetchall()
        self._recent.extend(Logged(int(s), _with_seq(int(s), str(d))) for s, d in reversed(rows))

    async def close(self) -> None:
        """Close the file (what was appended is on disk already)."""
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    # --- where it stands --------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The newest ``seq`` handed out (0 before the first event)."""
        return self._last

    @property
    def oldest_seq(self) -> int:
        """The oldest ``seq`` still kept (``last_seq + 1`` when the log is empty)."""
        return self._oldest

    # --- appending --------------------------------------------------------------------------

    async def append(self, event: dict[str, Any], dedup: str | None = None) -> int | None:
        """Store ``event`` (a JSON object; ``seq`` and ``at`` are added) and return its seq,
        or None when an event with the same ``dedup`` key is already in the log."""
        stored: Logged | None = await self._run(self._append, event, dedup)
        if stored is None:
            return None
        self._last = stored.seq
        self._recent.append(stored)
        while self._recent and self._recent[0].seq < self._oldest:  # pruned from the file
            self._recent.popleft()
        self.changed.set()
        self.changed = asyncio.Event()  # the waiters of this round were woken; a new round
        return stored.seq

    def _append(self, event: dict[str, Any], dedup: str | None) -> Logged | None:
        db = self._db
        assert db is not None, "the event log is closed"
        at = time.time()
        with db:
            if dedup is not None and db.execute("SELECT 1 FROM events WHERE dedup = ?",
                                                (dedup,)).fetchone():
                return None  # (asked first: an ignored INSERT would still use up a seq)
            body = json.dumps(event, separators=(",", ":"), default=str)
            cur = db.execute("INSERT INTO events (at, dedup, data) VALUES (?, ?, ?)",
                             (at, dedup, body))
            seq = int(cur.lastrowid or 0)
        text = _with_seq(seq, body)
        self._since_prune += 1
        if self._since_prune >= max(1, self.keep // 10):
            self._prune(seq)
        return Logged(seq, text)

    def _prune(self, newest: int) -> None:
        db = self._db
        assert db is not None
        self._since_prune = 0
        with db:
            db.execute("DELETE FROM events WHERE seq <= ?", (newest - self.keep,))
        low = db.execute("SELECT MIN(seq) FROM events").fetchone()[0]
        self._oldest = int(low) if low is not None else newest + 1

    # --- reading ----------------------------------------------------------------------------

    async def after(self, since: int, limit: int = 500) -> list[Logged]:
        """The events with ``seq > since``, oldest first, at most ``limit``."""
        recent = self._recent
        if recent and since >= recent[0].seq - 1:
            out = []
            for item in recent:  # newest at the end; a live client asks for the last few
                if item.seq > since:
                    out.append(item)
                    if len(out) >= limit:
                        break
            return out
        rows: list[Logged] = await self._run(self._after, since, limit)
        return rows

    def _after(self, since: int, limit: int) -> list[Logged]:
        db = self._db
        assert db is not None
        rows = db.execute("SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                          (since, limit)).fetchall()
        return [Logged(int(s), _with_seq(int(s), str(d))) for s, d in rows]

    # --- small durable settings (the presence the agent holds) --------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A value kept with the log (None when unset)."""
        return await self._run(self._get_meta, key)  # type: ignore[no-any-return]

    def _get_meta(self, key: str) -> str | None:
        assert self._db is not None
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` (durably)."""
        await self._run(self._set_meta, key, value)

    def _set_meta(self, key: str, value: str) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (key, value))
