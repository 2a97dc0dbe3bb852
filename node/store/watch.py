"""Completion's bookkeeping in the index: activity times, quiet periods, complete and reopened studies.

A mixin of :class:`node.store.index.Index`, which provides the connection, its lock and the studies open
associations carry (:mod:`node.store.associations`; a study an open association carries is never quiet).
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import AbstractContextManager
from typing import Any

log = logging.getLogger("node.store.index")


class CompletionBookkeeping:
    """What the completion timer (:mod:`node.store.completion`) reads and writes in the index."""

    def _carried_studies(self) -> set[str]:
        raise NotImplementedError  # AssociationBookkeeping provides it

    def _write(self, durable: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # Index provides it

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        raise NotImplementedError  # Index provides it

    def touch_study(self, study_instance_uid: str, now: float) -> None:
        """Move a known study's activity time to `now` (never backwards), restarting its quiet period."""
        with self._write() as db:
            db.execute(
                "UPDATE studies SET last_activity_at = MAX(last_activity_at, ?) WHERE study_instance_uid = ?",
                (now, study_instance_uid),
            )

    def restart_quiet_periods(self, now: float) -> int:
        """At start-up: every study not yet complete gets a new quiet period from ``now``.

        The associations open before a crash or a stop are gone (their rows are ignored or cleared), so a
        study whose sender was cut off would look quiet at once and be analysed half-received, before the
        sender could send the rest.
        Returns how many studies are watched again.
        """
        with self._write() as db:
            changed = db.execute(
                "UPDATE studies SET last_activity_at = MAX(last_activity_at, ?) WHERE completed_at IS NULL", (now,)
            ).rowcount
        return int(changed)

    def set_quiet_seconds(self, study_instance_uid: str, seconds: float) -> None:
        """A routing rule's quiet period for the study; the shortest one given wins."""
        with self._write() as db:
            db.execute(
                "UPDATE studies SET quiet_seconds = MIN(COALESCE(quiet_seconds, ?), ?) WHERE study_instance_uid = ?",
                (seconds, seconds, study_instance_uid),
            )

    def quiet_studies(self, now: float, quiet_seconds: float, max_wait_seconds: float) -> list[str]:
        """Studies not yet complete that the completion timer may declare complete now.

        A study qualifies when no open association carries it and its last activity is at least
        `quiet_seconds` old (or its own quiet period, see :meth:`set_quiet_seconds`), or, whatever its
        associations do, when its first instance (or, for a reopened study, its reopening) is at least
        `max_wait_seconds` old (a stuck sender cannot hold a study forever).
        """
        rows = self._read(
            "SELECT study_instance_uid, last_activity_at <= ? - COALESCE(quiet_seconds, ?),"
            " COALESCE(watch_from, first_received_at) <= ? FROM studies WHERE completed_at IS NULL"
            " AND (last_activity_at <= ? - COALESCE(quiet_seconds, ?) OR COALESCE(watch_from, first_received_at) <= ?)"
            " ORDER BY first_received_at",
            (now, quiet_seconds, now - max_wait_seconds, now, quiet_seconds, now - max_wait_seconds),
        )
        # Read after the studies: an association that starts carrying one in between is still seen.
        carried = self._carried_studies() if rows else set()
        return [str(study) for study, quiet, capped in rows if capped or (quiet and study not in carried)]

    def reopen_study(self, study_instance_uid: str, now: float) -> bool:
        """Watch a completed study again (a late instance arrived); its max wait counts from `now`.

        Returns whether the study was complete (and is now reopened).
        """
        with self._write() as db:
            changed = db.execute(
                "UPDATE studies SET completed_at = NULL, watch_from = ?, last_activity_at = MAX(last_activity_at, ?)"
                " WHERE study_instance_uid = ? AND completed_at IS NOT NULL",
                (now, now, study_instance_uid),
            ).rowcount
        if changed:
            log.info("study reopened by a late instance")
        return bool(changed)

    def mark_complete(self, study_instance_uid: str, now: float) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE studies SET completed_at = ? WHERE study_instance_uid = ? AND completed_at IS NULL",
                (now, study_instance_uid),
            )
        log.debug("study %s complete", study_instance_uid)
