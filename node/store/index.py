"""The index: one SQLite row per stored instance, per-study activity for the completion timer.

Durability: WAL journal with ``synchronous=FULL``, so a committed row survives power loss, and every
write method commits before it returns. A C-STORE handler answers success only after :meth:`Index.record`
has returned (DESIGN §4.1).

Threading model: one connection, guarded by one lock, shared by every thread of the process. The receiver
starts a thread per association; SQLite admits one writer at a time anyway, so per-thread connections
would not write faster, would turn contention into ``SQLITE_BUSY`` retries, and would leave a connection
behind for every association thread that ends. Under the lock each call is a short transaction (the WAL
fsync dominates); reads are a handful of indexed rows. Other processes (CLI, web) open their own
:class:`Index`; ``busy_timeout`` lets them wait for each other.

Open associations are rows of the ``carrying`` table (:mod:`node.store.associations`), so that every
receiver process sharing the database sees them; ``forget_associations`` clears them at the node's start
and readers ignore the rows of processes that no longer exist.

Retention (:mod:`node.store.retention`) takes a study out of service with a committed row in ``deleting``
(:meth:`Index.begin_deletion`) before it removes anything, and only if no open association carries the
study; the check and the row happen in one BEGIN IMMEDIATE transaction, as do the check of ``deleting``
and the ``carrying`` row in :meth:`Index.association_carried`, so SQLite serialises them across processes.
An association either carries the study first (and retention leaves it alone) or arrives while it is
being deleted and waits (woken by a condition variable for this process's deletions, by polling the
table for another's) until :meth:`Index.end_deletion` (or :meth:`Index.abandon_deletion`) has committed:
its instance is written only once the study's folder and rows are gone, and starts the study again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.sqlite import immediate_transaction
from node.store.associations import AssociationBookkeeping, StudyBeingDeletedError
from node.store.deletions import DeletionBookkeeping
from node.store.rows import (
    BUSY_TIMEOUT_MS,
    COLUMNS,
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    Instance,
    Recorded,
    StudySummary,
)
from node.store.spool import StoreError
from node.store.watch import CompletionBookkeeping

__all__ = ["Index", "IndexDatabaseError", "StudyBeingDeletedError"]

log = logging.getLogger(__name__)


class IndexDatabaseError(StoreError):
    """The index could not be opened or written (disk full, I/O error, newer schema).

    For a C-STORE this maps to 0xA700; the write was rolled back, so the index is unchanged.
    """


class Index(AssociationBookkeeping, CompletionBookkeeping, DeletionBookkeeping):
    """SQLite index of the spool, safe to share between threads.

    Parameters
    ----------
    path : pathlib.Path
        The database file; created with the current schema if missing.
    clock : callable
        Returns the time in seconds; stamps ``received_at`` and association releases. Tests inject one.
    deletion_wait_s : float
        How long :meth:`association_carried` waits for the deletion of the study it brings to end.

    Raises
    ------
    IndexDatabaseError
        The file cannot be opened, is not a database, or has a newer schema than this code knows.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time, deletion_wait_s: float = 5.0) -> None:
        self.path = Path(path)
        self._clock = clock
        self._deletion_wait_s = deletion_wait_s
        self._lock = threading.Lock()
        # Association id -> studies whose ``carrying`` row is committed, so that only the first instance
        # of a study on an association writes one.
        self._carried: dict[str, set[str]] = {}
        # Wakes the associations of this process waiting for a deletion by this process to end.
        self._deletion_ended = threading.Condition(self._lock)
        try:
            # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE in _write().
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise IndexDatabaseError(f"index {self.path}: cannot switch to WAL journal mode (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.Error as error:
            raise IndexDatabaseError(f"cannot open the index {self.path}: {error}") from error
        log.info("index %s open (schema %d)", self.path, SCHEMA_VERSION)

    def close(self) -> None:
        """Close the connection; the associations still open on this object end with it (rows deleted)."""
        try:
            self._forget_own_associations()
        except IndexDatabaseError as error:  # the rows of a gone process are ignored by readers anyway
            log.warning("index %s: open associations not cleared at close: %s", self.path, error)
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise IndexDatabaseError(
                    f"index {self.path} has schema {version}, newer than this node's {SCHEMA_VERSION}: "
                    "upgrade the node or point it at another index"
                )
            if version == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            else:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock, committed (and fsynced) on exit, rolled back on error.

        BEGIN IMMEDIATE takes the write lock up front, so another process cannot make this transaction
        fail half-way with SQLITE_BUSY on its first write. ``durable=False``: the commit is not synced
        (WAL frames reach the disk with the next synced commit or checkpoint).
        """
        with immediate_transaction(
            self._db,
            self._lock,
            lambda exc: IndexDatabaseError(f"cannot write the index {self.path}: {exc}"),
            synchronous="FULL" if durable else "NORMAL",
        ) as conn:
            yield conn

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise IndexDatabaseError(f"cannot read the index {self.path}: {error}") from error

    def journal_mode(self) -> str:
        """The journal mode in force (``"wal"``)."""
        return str(self._read("PRAGMA journal_mode")[0][0])

    # -- instances -------------------------------------------------------------------------------------

    def record(
        self,
        *,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_class_uid: str,
        transfer_syntax_uid: str,
        path: str,
        size: int,
        calling_ae: str,
        association_id: str,
        replace: bool = False,
        called_ae: str = "",
        source_address: str = "",
        durable: bool = True,
        received_at: float | None = None,
    ) -> Recorded:
        """Record a stored instance and commit before returning.

        ``durable=False`` commits without syncing (``synchronous=NORMAL`` for this one transaction):
        the caller has made the row durable in the receive journal, which rebuilds it after a crash;
        ``received_at`` is then the time the journal recorded (default: the index's clock now).
        The next synced commit (or the journal's checkpoint) makes it durable here too.

        A duplicate (SOP Instance UID already indexed) increments its study's duplicate counter. With
        ``replace=True`` (the spool file was replaced) the row is updated to describe the new file;
        otherwise the first row stays. Either way the study's activity time moves on.

        Raises
        ------
        IndexDatabaseError
            The commit failed; nothing was recorded.
        """
        now = self._clock() if received_at is None else received_at
        row = (
            sop_instance_uid,
            study_instance_uid,
            series_instance_uid,
            sop_class_uid,
            transfer_syntax_uid,
            path,
            size,
            calling_ae,
            now,
            association_id,
            called_ae,
            source_address,
        )
        with self._write(durable) as db:
            marks = ",".join("?" * len(row))
            new = db.execute(f"INSERT OR IGNORE INTO instances ({COLUMNS}) VALUES ({marks})", row).rowcount
            if not new and replace:
                db.execute(
                    "UPDATE instances SET study_instance_uid = ?, series_instance_uid = ?, sop_class_uid = ?,"
                    " transfer_syntax_uid = ?, path = ?, size = ?, calling_ae = ?, received_at = ?,"
                    " association_id = ?, called_ae = ?, source_address = ? WHERE sop_instance_uid = ?",
                    (*row[1:], sop_instance_uid),
                )
            completed = db.execute(
                "SELECT completed_at FROM studies WHERE study_instance_uid = ?", (study_instance_uid,)
            ).fetchone()
            db.execute(
                "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at, last_activity_at,"
                " duplicates) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (study_instance_uid) DO UPDATE SET last_received_at = excluded.last_received_at,"
                " last_activity_at = MAX(last_activity_at, excluded.last_activity_at),"
                " duplicates = duplicates + excluded.duplicates",
                (study_instance_uid, now, now, now, 0 if new else 1),
            )
        log.debug("recorded %s in study %s (%s)", sop_instance_uid, study_instance_uid, "new" if new else "duplicate")
        return Recorded(new=bool(new), late=completed is not None and completed[0] is not None, received_at=now)

    def now(self) -> float:
        """The index's clock (what it stamps rows with)."""
        return self._clock()

    def restore(self, row: dict[str, object], replace: bool) -> None:
        """Put a journalled row back (replay after a crash): insert it if missing, or, with ``replace``,
        make the row describe it; its study is created if missing. Duplicates are not counted again.
        """
        values = tuple(row[name.strip()] for name in COLUMNS.split(","))
        study, received = str(row["study_instance_uid"]), float(str(row["received_at"]))
        update = ", ".join(f"{name.strip()} = excluded.{name.strip()}" for name in COLUMNS.split(",")[1:])
        conflict = f"DO UPDATE SET {update}" if replace else "DO NOTHING"
        with self._write() as db:
            marks = ",".join("?" * len(values))
            db.execute(
                f"INSERT INTO instances ({COLUMNS}) VALUES ({marks}) ON CONFLICT (sop_instance_uid) {conflict}", values
            )
            db.execute(
                "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at, last_activity_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (study_instance_uid) DO UPDATE SET"
                " last_received_at = MAX(last_received_at, excluded.last_received_at),"
                " last_activity_at = MAX(last_activity_at, excluded.last_activity_at)",
                (study, received, received, received),
            )

    def get(self, sop_instance_uid: str) -> Instance | None:
        rows = self._read(f"SELECT {COLUMNS} FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return Instance(*rows[0]) if rows else None

    def instances(self, study_instance_uid: str, series_instance_uid: str | None = None) -> list[Instance]:
        """The instances of a study (or of one of its series), in order of arrival."""
        if series_instance_uid is None:
            sql = f"SELECT {COLUMNS} FROM instances WHERE study_instance_uid = ?"
            params: tuple[object, ...] = (study_instance_uid,)
        else:
            sql = f"SELECT {COLUMNS} FROM instances WHERE study_instance_uid = ? AND series_instance_uid = ?"
            params = (study_instance_uid, series_instance_uid)
        return [Instance(*row) for row in self._read(sql + " ORDER BY received_at, rowid", params)]

    def instances_after(self, rowid: int, limit: int = 500) -> list[tuple[int, Instance]]:
        """Rows stored after ``rowid``, in arrival order, with their rowids (the router's feed).

        A duplicate under the replace policy updates its row in place and does not appear again.
        """
        rows = self._read(
            f"SELECT rowid, {COLUMNS} FROM instances WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit)
        )
        return [(int(row[0]), Instance(*row[1:])) for row in rows]

    def all_instances(self) -> list[Instance]:
        """Every row (for consistency checks against the spool)."""
        return [Instance(*row) for row in self._read(f"SELECT {COLUMNS} FROM instances ORDER BY rowid")]

    # -- studies ---------------------------------------------------------------------------------------

    def study_summary(self, study_instance_uid: str) -> StudySummary | None:
        rows = self._read(
            "SELECT s.first_received_at, s.last_received_at, s.duplicates, s.completed_at,"
            " COUNT(i.sop_instance_uid), COUNT(DISTINCT i.series_instance_uid)"
            " FROM studies s LEFT JOIN instances i ON i.study_instance_uid = s.study_instance_uid"
            " WHERE s.study_instance_uid = ? GROUP BY s.study_instance_uid",
            (study_instance_uid,),
        )
        if not rows:
            return None
        first, last, duplicates, completed, count, series = rows[0]
        return StudySummary(
            study_instance_uid=study_instance_uid,
            instances=int(count),
            series=int(series),
            first_received_at=float(first),
            last_received_at=float(last),
            duplicates=int(duplicates),
            completed_at=None if completed is None else float(completed),
        )

    def studies_received_since(self, t: float) -> list[str]:
        """Studies that received an instance (new or duplicate) at or after `t`, oldest activity first."""
        rows = self._read(
            "SELECT study_instance_uid FROM studies WHERE last_received_at >= ? ORDER BY last_received_at", (t,)
        )
        return [str(row[0]) for row in rows]

    def duplicates(self, study_instance_uid: str) -> int:
        rows = self._read("SELECT duplicates FROM studies WHERE study_instance_uid = ?", (study_instance_uid,))
        return int(rows[0][0]) if rows else 0
