"""Open associations in the index: which studies they carry, shared by every process on the database.

A mixin of :class:`node.store.index.Index`. Several receiver processes may accept on one port, each with
its own :class:`~node.store.index.Index` on the same file, so the studies an open association carries
are rows of the ``carrying`` table (association id, pid, study), not process memory: the completion timer
(:meth:`quiet_studies`) and retention (:meth:`begin_deletion`) of any process see them.

Rows of a process that no longer exists (a receiver killed with ``kill -9``) do not count: readers check
the liveness of the few distinct pids they find. After a crash of the whole node the table is cleared at
start-up (:meth:`AssociationBookkeeping.forget_associations`), so its rows are written without a sync.

Only the first instance of a study on an association writes its row (a per-process set remembers the
rest): the hot path gets no transaction per instance. That write is one BEGIN IMMEDIATE transaction that
also reads the ``deleting`` table, and :meth:`begin_deletion` reads ``carrying`` and writes ``deleting``
in one BEGIN IMMEDIATE transaction too; SQLite serialises the two across processes, so an association
either carries the study first (retention leaves it alone) or sees the deletion and waits for its end.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from node.store.spool import StoreError

log = logging.getLogger("node.store.index")

# How often an association waiting for another process's deletion reads the ``deleting`` table again
# (a deletion by this process wakes it at once, through the index's condition variable).
DELETION_POLL_S = 0.05


class StudyBeingDeletedError(StoreError):
    """An association brought an instance of a study that retention is deleting, and the deletion did not
    end within the index's ``deletion_wait_s``. Nothing was written: the store must be answered with a
    failure status, and the sender's retry starts the study again once the deletion has ended.
    """


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie not yet reaped by its parent still does).

    A pid reused by an unrelated process reads as alive: its rows would count until the node's next
    start clears them, which errs on the side of keeping a study open.
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def live_rows(rows: list[Any]) -> list[Any]:
    """The rows whose last column, a pid, belongs to a live process (each distinct pid checked once)."""
    alive = {pid: pid_alive(pid) for pid in {int(row[-1]) for row in rows}}
    return [row for row in rows if alive[int(row[-1])]]


class AssociationBookkeeping:
    """The ``carrying`` table: what the receiver writes, what completion and retention read."""

    _lock: threading.Lock
    _clock: Callable[[], float]
    _deletion_wait_s: float
    _deletion_ended: threading.Condition
    # association id -> studies whose ``carrying`` row this object has committed (the hot path's filter).
    _carried: dict[str, set[str]]

    def _write(self, durable: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # Index provides it

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        raise NotImplementedError  # Index provides it

    def association_opened(self, association_id: str) -> None:
        """Note an association; nothing is written until it carries a study."""
        with self._lock:
            self._carried.setdefault(association_id, set())

    def association_carried(self, association_id: str, study_instance_uid: str) -> None:
        """Note that an open association carries the study: it is not quiet until the association ends.

        The C-STORE handler calls this before it writes the instance. If retention (of any process) is
        deleting the study, wait (at most ``deletion_wait_s``) for the deletion to end, so that the
        instance is written after the study's folder and rows are gone and starts the study again.

        Raises
        ------
        StudyBeingDeletedError
            The deletion did not end in time; the caller must not store the instance (failure status).
        IndexDatabaseError
            The row could not be written.
        """
        with self._lock:
            if study_instance_uid in self._carried.get(association_id, ()):
                return  # not the first instance of the study on this association: nothing to write
        deadline = time.monotonic() + self._deletion_wait_s
        waited = False
        while not self._carry(association_id, study_instance_uid):
            if not waited:
                log.info("an instance arrived for a study being deleted by retention: waiting for the deletion")
                waited = True
            left = deadline - time.monotonic()
            if left <= 0:
                raise StudyBeingDeletedError(
                    f"the study is being deleted by retention (still after {self._deletion_wait_s:g} s): "
                    "the instance was not stored; send it again"
                )
            with self._lock:  # woken at once by this process's deletions, by the clock for another's
                self._deletion_ended.wait(min(DELETION_POLL_S, left))
        with self._lock:
            self._carried.setdefault(association_id, set()).add(study_instance_uid)

    def _carry(self, association_id: str, study_instance_uid: str) -> bool:
        """Commit the ``carrying`` row unless the study is being deleted; whether it was committed."""
        with self._write(durable=False) as db:
            if db.execute("SELECT 1 FROM deleting WHERE study_instance_uid = ?", (study_instance_uid,)).fetchone():
                return False
            db.execute(
                "INSERT OR IGNORE INTO carrying (association_id, pid, study_instance_uid) VALUES (?, ?, ?)",
                (association_id, os.getpid(), study_instance_uid),
            )
        return True

    def association_closed(self, association_id: str) -> None:
        """Forget the association; its studies' quiet period starts now (released, not just idle).

        Its rows go and its studies' activity moves on in one transaction, so no reader sees the study
        free of the association with its activity time from before the release.
        """
        with self._lock:
            studies = self._carried.pop(association_id, set())
        if not studies:
            return
        now = self._clock()
        with self._write() as db:
            db.execute("DELETE FROM carrying WHERE association_id = ? AND pid = ?", (association_id, os.getpid()))
            db.executemany(
                "UPDATE studies SET last_activity_at = MAX(last_activity_at, ?) WHERE study_instance_uid = ?",
                [(now, study) for study in sorted(studies)],
            )

    def open_associations(self, study_instance_uid: str) -> int:
        """How many open associations (of live processes) have carried the study."""
        rows = self._read(
            "SELECT association_id, pid FROM carrying WHERE study_instance_uid = ?", (study_instance_uid,)
        )
        return len(live_rows(rows))

    def forget_associations(self) -> int:
        """Delete every ``carrying`` row (at the node's start, before any receiver runs); return how many.

        The associations they describe died with the processes that had them open.
        """
        with self._write(durable=False) as db:
            removed = db.execute("DELETE FROM carrying").rowcount
        with self._lock:
            self._carried.clear()
        return int(removed)

    def _forget_own_associations(self) -> None:
        """Delete the rows of the associations this object still holds open (it is being closed)."""
        with self._lock:
            keys = [(key, os.getpid()) for key, studies in self._carried.items() if studies]
            self._carried.clear()
        if keys:
            with self._write(durable=False) as db:
                db.executemany("DELETE FROM carrying WHERE association_id = ? AND pid = ?", keys)

    def _carried_studies(self) -> set[str]:
        """The studies an open association of a live process carries (a handful of rows)."""
        return {str(row[0]) for row in live_rows(self._read("SELECT study_instance_uid, pid FROM carrying"))}

    def _carried_by_live(self, db: sqlite3.Connection, study_instance_uid: str) -> bool:
        """Inside a transaction: whether an association of a live process carries the study."""
        rows = db.execute(
            "SELECT DISTINCT pid FROM carrying WHERE study_instance_uid = ?", (study_instance_uid,)
        ).fetchall()
        return bool(live_rows(rows))
