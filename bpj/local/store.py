"""Jobs, models and operations of the Vertex emulator, kept in SQLite under the data dir.

One table of resources: the resource name, its kind, its parent, a few columns that List filters and
orders on, and the message itself (serialized protobuf). A second table keeps every state a job has been in,
with the time it entered it (the console's state history): written here, in the transaction that changes
the state, so every path that moves a job (create, the executor, cancel, recovery) is recorded. WAL mode: a write is durable once committed, so a
``kill -9`` of the stack loses nothing that a reply was sent for. Without a data dir the database lives in
memory, for tests.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bpj import errors

KINDS = ("job", "model", "operation")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    parent TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_by_parent ON resources (kind, parent, create_time);
CREATE TABLE IF NOT EXISTS job_states (
    name TEXT NOT NULL,
    time INTEGER NOT NULL,
    state INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS job_states_by_name ON job_states (name);
"""


class Store:
    """Resources by name; every method is one transaction. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path | None) -> None:
        target = ":memory:" if path is None else str(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, kind: str, name: str, parent: str, create_time_ns: int, message: Any) -> None:
        with self.transaction() as db:
            _record_state(db, kind, name, message)
            db.execute(
                "INSERT INTO resources (name, kind, parent, create_time, data) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET data = excluded.data",
                (name, kind, parent, create_time_ns, message.SerializeToString()),
            )

    def insert(self, kind: str, name: str, parent: str, create_time_ns: int, message: Any) -> None:
        """Add a new resource; AlreadyExists when the name is taken."""
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO resources (name, kind, parent, create_time, data) VALUES (?, ?, ?, ?, ?)",
                    (name, kind, parent, create_time_ns, message.SerializeToString()),
                )
                _record_state(db, kind, name, message)
        except sqlite3.IntegrityError:
            raise errors.AlreadyExists(f"{name} already exists") from None

    def get(self, kind: str, name: str, cls: Any) -> Any | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM resources WHERE name = ? AND kind = ?", (name, kind)
            ).fetchone()
        return None if row is None else cls.FromString(row[0])

    def update(self, kind: str, name: str, cls: Any, change: Any) -> Any:
        """Load, apply ``change(message)`` (which edits it in place, or raises) and save, atomically.
        Returns the saved message; NotFound when there is no such resource."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT data FROM resources WHERE name = ? AND kind = ?", (name, kind)
            ).fetchone()
            if row is None:
                raise errors.NotFound(f"{name} does not exist")
            message = cls.FromString(row[0])
            change(message)
            _record_state(db, kind, name, message)
            db.execute("UPDATE resources SET data = ? WHERE name = ?", (message.SerializeToString(), name))
            return message

    def delete(self, kind: str, name: str) -> bool:
        with self.transaction() as db:
            if kind == "job":
                db.execute("DELETE FROM job_states WHERE name = ?", (name,))
            return db.execute("DELETE FROM resources WHERE name = ? AND kind = ?", (name, kind)).rowcount > 0

    def state_history(self, name: str) -> list[tuple[int, int]]:
        """``(time in ns since the epoch, JobState value)`` for every state job ``name`` entered, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT time, state FROM job_states WHERE name = ? ORDER BY rowid", (name,)
            ).fetchall()
        return [(int(t), int(s)) for t, s in rows]

    def children(self, kind: str, parent: str, cls: Any, *, newest_first: bool = True) -> list[Any]:
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            rows = self._db.execute(
                f"SELECT data FROM resources WHERE kind = ? AND parent = ? ORDER BY create_time {order}, name",
                (kind, parent),
            ).fetchall()
        return [cls.FromString(r[0]) for r in rows]

    def all(self, kind: str, cls: Any) -> list[Any]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM resources WHERE kind = ?", (kind,)).fetchall()
        return [cls.FromString(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _record_state(db: sqlite3.Connection, kind: str, name: str, message: Any) -> None:
    """Add a job's state to its history when it differs from the last one recorded (same transaction)."""
    if kind != "job":
        return
    last = db.execute(
        "SELECT state FROM job_states WHERE name = ? ORDER BY rowid DESC LIMIT 1", (name,)
    ).fetchone()
    if last is None or last[0] != message.state:
        db.execute(
            "INSERT INTO job_states (name, time, state) VALUES (?, ?, ?)",
            (name, time.time_ns(), int(message.state)),
        )
