"""A durable, ordered queue of messages not yet acknowledged by the broker (SQLite, WAL).

paho's in-memory queue dies with the process; this one survives restarts, so nothing counted is
lost while the broker is down. A row's id is the message's ``seq``.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class Outbox:
    def __init__(self, path: Path, max_rows: int = 1_000_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL)")

    def put(self, topic: str, make_payload, qos: int = 1, retain: bool = False) -> int:
        """Append a message; ``make_payload(seq) -> bytes`` lets the payload carry its own seq."""
        with self._lock:
            cur = self._db.execute("INSERT INTO outbox (topic, payload, qos, retain) VALUES (?, x'', ?, ?)",
                                   (topic, qos, int(retain)))
            seq = cur.lastrowid
            self._db.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (make_payload(seq), seq))
            overflow = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - self.max_rows
            if overflow > 0:  # a bound on disk use: the oldest go first, and are counted as dropped
                self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                                 (overflow,))
            return seq

    def pending(self, after: int = 0, limit: int = 100) -> list[tuple[int, str, bytes, int, bool]]:
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload, qos, retain FROM outbox WHERE seq > ? "
                                    "ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        return [(s, t, bytes(p), q, bool(r)) for s, t, p, q, r in rows]

    def remove(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
