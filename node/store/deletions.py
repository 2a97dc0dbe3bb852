"""Retention's bookkeeping in the index: which studies are finished, and taking one out of service.

A mixin of :class:`node.store.index.Index`, which provides the connection, its lock and the studies open
associations carry (:mod:`node.store.associations`); see the index module's docstring for how a deletion
and an association bringing the same study exclude each other, also across processes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from node.store.rows import Deletion

log = logging.getLogger("node.store.index")


class DeletionBookkeeping:
    """Finished studies, and the ``deleting`` table (see :mod:`node.store.retention` for the deletion itself)."""

    _lock: threading.Lock
    _deletion_ended: threading.Condition

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # Index provides it

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        raise NotImplementedError  # Index provides it

    def _carried_studies(self) -> set[str]:
        raise NotImplementedError  # AssociationBookkeeping provides it

    def _carried_by_live(self, db: sqlite3.Connection, study_instance_uid: str) -> bool:
        raise NotImplementedError  # AssociationBookkeeping provides it

    def finished_studies(
        self, now: float, quiet_seconds: float, received_before: float | None = None, page: int = 200
    ) -> Iterator[str]:
        """Complete studies that retention may consider, by their last instance, oldest first.

        A study qualifies when it is complete, its quiet period has passed since its last activity, no
        open association carries it and it is not being deleted; with ``received_before``, only if its
        last instance arrived at or before that time. Whether its jobs are finished is the job store's
        to say. Read a page at a time (the lock is not held between pages), so what is yielded may have
        changed since: :meth:`begin_deletion` checks again.
        """
        age = "" if received_before is None else " AND last_received_at <= ?"
        after: tuple[float, str] = (float("-inf"), "")
        while True:
            params: tuple[object, ...] = (now, quiet_seconds, *after)
            if received_before is not None:
                params += (received_before,)
            rows = self._read(
                "SELECT study_instance_uid, last_received_at FROM studies WHERE completed_at IS NOT NULL"
                " AND last_activity_at <= ? - COALESCE(quiet_seconds, ?)"
                f" AND (last_received_at, study_instance_uid) > (?, ?){age}"
                " AND study_instance_uid NOT IN (SELECT study_instance_uid FROM deleting)"
                " ORDER BY last_received_at, study_instance_uid LIMIT ?",
                (*params, page),
            )
            carried = self._carried_studies() if rows else set()
            for study, _ in rows:
                if study not in carried:
                    yield str(study)
            if len(rows) < page:
                return
            after = (float(rows[-1][1]), str(rows[-1][0]))

    def begin_deletion(
        self,
        study_instance_uid: str,
        *,
        reason: str,
        now: float,
        quiet_seconds: float,
        received_before: float | None = None,
        routed_up_to: int | None = None,
    ) -> Deletion | None:
        """Take a finished study out of service: commit its row in ``deleting``; ``None`` if it is not finished.

        Checked in the same BEGIN IMMEDIATE transaction as the row is written, which SQLite serialises
        with the one in which :meth:`association_carried` checks ``deleting`` (of any process on the
        database: so no association can start carrying the study in between): complete, quiet since ``now -
        quiet_seconds`` (or its rule's quiet period), last instance at or before ``received_before`` (when
        given), every instance routed (rowid at most ``routed_up_to``, the router's cursor, when given),
        carried by no open association of a live process, not already being deleted. From the commit on,
        an association bringing the study waits until :meth:`end_deletion` or :meth:`abandon_deletion`.
        """
        age = "" if received_before is None else " AND s.last_received_at <= ?"
        params: tuple[object, ...] = (study_instance_uid, now, quiet_seconds)
        if received_before is not None:
            params += (received_before,)
        with self._write() as db:
            being_deleted = db.execute("SELECT 1 FROM deleting WHERE study_instance_uid = ?", (study_instance_uid,))
            if being_deleted.fetchone() or self._carried_by_live(db, study_instance_uid):
                return None
            row = db.execute(
                "SELECT COUNT(i.sop_instance_uid), COALESCE(SUM(i.size), 0), COALESCE(MAX(i.rowid), 0)"
                " FROM studies s LEFT JOIN instances i ON i.study_instance_uid = s.study_instance_uid"
                " WHERE s.study_instance_uid = ? AND s.completed_at IS NOT NULL"
                f" AND s.last_activity_at <= ? - COALESCE(s.quiet_seconds, ?){age} GROUP BY s.study_instance_uid",
                params,
            ).fetchone()
            if row is None or (routed_up_to is not None and int(row[2]) > routed_up_to):
                return None
            marked = Deletion(study_instance_uid, reason, int(row[0]), int(row[1]), now)
            db.execute(
                "INSERT INTO deleting (study_instance_uid, reason, instances, bytes, marked_at) VALUES (?, ?, ?, ?, ?)",
                (study_instance_uid, reason, marked.instances, marked.bytes, now),
            )
        log.debug("study %s out of service for deletion (%s)", study_instance_uid, reason)
        return marked

    def deletions(self) -> list[Deletion]:
        """Studies taken out of service and not yet deleted (a crash or a failure interrupted them)."""
        rows = self._read(
            "SELECT study_instance_uid, reason, instances, bytes, marked_at FROM deleting ORDER BY marked_at"
        )
        return [Deletion(str(r[0]), str(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]

    def end_deletion(self, study_instance_uid: str) -> int:
        """Delete the study's rows and its ``deleting`` row in one transaction; return the instance rows deleted.

        Call after its files are gone. Associations waiting for the study go on once this has committed.
        """
        with self._write() as db:
            removed = db.execute("DELETE FROM instances WHERE study_instance_uid = ?", (study_instance_uid,)).rowcount
            db.execute("DELETE FROM studies WHERE study_instance_uid = ?", (study_instance_uid,))
            db.execute("DELETE FROM deleting WHERE study_instance_uid = ?", (study_instance_uid,))
        self._deletion_over(study_instance_uid)
        return int(removed)

    def abandon_deletion(self, study_instance_uid: str) -> None:
        """Put a study marked by :meth:`begin_deletion` back in service, untouched (it still has work to do)."""
        with self._write() as db:
            db.execute("DELETE FROM deleting WHERE study_instance_uid = ?", (study_instance_uid,))
        self._deletion_over(study_instance_uid)

    def _deletion_over(self, study_instance_uid: str) -> None:
        """Wake this process's associations waiting for a deletion (they read ``deleting`` again)."""
        with self._lock:
            self._deletion_ended.notify_all()
