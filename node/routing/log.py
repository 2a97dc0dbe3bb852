"""The routing log: the router's durable cursor in the index feed, and every rule decision, for
``pacs-node rules explain``. One SQLite file (``routing.sqlite3`` in the data dir), written by the serve
process only.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from node.sqlite import immediate_transaction
from node.store.spool import StoreError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 1), rowid INTEGER NOT NULL)",
    # One row per (study, series, level, rule): the latest decision. Instance-level rules are recorded
    # for the first instance of each series they were evaluated on (every instance would be thousands).
    """CREATE TABLE IF NOT EXISTS decisions (
        study TEXT NOT NULL, series TEXT NOT NULL, level TEXT NOT NULL, rule TEXT NOT NULL,
        matched INTEGER NOT NULL, detail TEXT NOT NULL, actions TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (study, series, level, rule))""",
)


class RoutingLogError(StoreError):
    """The routing log cannot be read or written."""


@dataclass(frozen=True)
class Decision:
    """One rule's decision for a study (``series`` is ``*`` for study-level rules)."""

    study: str
    series: str
    level: str
    rule: str
    matched: bool
    detail: str
    actions: str
    at: float


class RoutingLog:
    """The cursor and the decisions; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            raise RoutingLogError(f"cannot open the routing log {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def cursor(self) -> int:
        """The last index rowid the router has routed (0 at first)."""
        with self._lock:
            row = self._db.execute("SELECT rowid FROM cursor WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def advance(self, rowid: int) -> None:
        with immediate_transaction(self._db, self._lock, lambda e: RoutingLogError(f"routing log: {e}")) as db:
            db.execute(
                "INSERT INTO cursor (id, rowid) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET rowid = ?", (rowid,) * 2
            )

    def record(self, decisions: list[Decision], *, first_only: bool = False) -> None:
        """Store decisions; with ``first_only`` keep an existing row (instance level: first instance wins)."""
        verb = "INSERT OR IGNORE" if first_only else "INSERT OR REPLACE"
        rows = [(d.study, d.series, d.level, d.rule, int(d.matched), d.detail, d.actions, d.at) for d in decisions]
        with immediate_transaction(self._db, self._lock, lambda e: RoutingLogError(f"routing log: {e}")) as db:
            db.executemany(f"{verb} INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def forget(self, study: str) -> None:
        """Delete the study's decisions (retention deleted the study; a new arrival is routed afresh)."""
        with immediate_transaction(self._db, self._lock, lambda e: RoutingLogError(f"routing log: {e}")) as db:
            db.execute("DELETE FROM decisions WHERE study = ?", (study,))

    def decisions(self, study: str) -> list[Decision]:
        with self._lock:
            rows = self._db.execute(
                "SELECT study, series, level, rule, matched, detail, actions, at FROM decisions WHERE study = ?"
                " ORDER BY at, level, series, rule",
                (study,),
            ).fetchall()
        return [Decision(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], float(r[7])) for r in rows]
