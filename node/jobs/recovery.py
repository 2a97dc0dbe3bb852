"""Taking jobs back: expired leases, dead owners, a person's retry, and a deleted study's done jobs.

A mixin of :class:`node.jobs.store.JobStore`, which provides the write transaction, the clock and the
attempt limit; the store's module keeps the normal life of a job (enqueue, claim, heartbeat, complete,
fail, release).
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from node.jobs.transitions import fetch, live_duplicate, move
from node.jobs.types import COLUMNS, Job, JobState, JobStateError, job_from_row

log = logging.getLogger("node.jobs.store")


class JobRecovery:
    """Jobs whose holder is gone go back to the queue (or are parked dead); see :class:`JobStore`."""

    _clock: Callable[[], float]
    max_attempts: int

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # JobStore provides it

    def requeue_expired(self) -> int:
        """Take back running jobs whose lease has expired (their worker died or hung).

        Call at start-up and periodically. A job goes back to the queue, claimable at once; a job that has
        used all its attempts is parked as dead, so a job that kills every worker that runs it stops.
        Returns how many expired jobs were taken back (queued or dead).
        """
        now = self._clock()
        changed: builtins.list[tuple[Job, JobState]] = []
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE state = 'running' AND lease_expires <= ? ORDER BY id", (now,)
            ).fetchall()
            for job in map(job_from_row, rows):
                state = JobState.QUEUED if job.attempts < self.max_attempts else JobState.DEAD
                move(conn, job, state, now, last_error=f"lease of {job.lease_owner} expired (worker died or hung)")
                changed.append((job, state))
        for job, state in changed:
            level = logging.INFO if state is JobState.QUEUED else logging.WARNING
            log.log(level, "job %d %s -> %s (lease expired, attempt %d)", job.id, job.kind, state, job.attempts)
        return len(changed)

    def requeue_owners(self, gone: Callable[[str], bool], max_attempts: Callable[[str], int] | None = None) -> int:
        """Take back the running jobs of owners for which ``gone(owner)`` is true (their process died),
        without waiting for their leases to expire; the attempt counts, as for an expired lease.

        ``max_attempts(kind)`` gives the attempts after which such a job is parked as dead, for kinds whose
        processes use other settings than this store (sends); this store's ``max_attempts`` otherwise.
        """
        now = self._clock()
        changed: builtins.list[tuple[Job, JobState]] = []
        with self._write() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE state = 'running' ORDER BY id").fetchall()
            for job in map(job_from_row, rows):
                if job.lease_owner is None or not gone(job.lease_owner):
                    continue
                cap = self.max_attempts if max_attempts is None else max_attempts(job.kind)
                state = JobState.QUEUED if job.attempts < cap else JobState.DEAD
                move(conn, job, state, now, last_error=f"{job.lease_owner} died while running it")
                changed.append((job, state))
        for job, state in changed:
            log.info("job %d %s -> %s (its owner died, attempt %d)", job.id, job.kind, state, job.attempts)
        return len(changed)

    def retry(self, job_id: int) -> None:
        """Put a dead job back in the queue with its attempts reset (a person asked for it).

        Raises :class:`JobStateError` if the job is not dead, or if a live job with the same dedup key
        already does its work.
        """
        now = self._clock()
        with self._write() as conn:
            job = fetch(conn, job_id)
            if job.state is not JobState.DEAD:
                raise JobStateError(f"job {job_id} is {job.state}, only a dead job can be retried")
            other = None if job.dedup_key is None else live_duplicate(conn, job.kind, job.dedup_key)
            if other is not None:
                raise JobStateError(f"job {job_id} is not retried: job {other} already does the same work")
            move(conn, job, JobState.QUEUED, now, attempts=0, not_before=now)
        log.info("job %d %s -> queued (retried on request)", job_id, job.kind)

    def cancel(self, job_id: int, reason: str) -> JobState:
        """A person gives a job up: a queued one (waiting for a retry) is parked dead, a dead one is closed.

        A queued job goes to dead (it can still be retried); a dead job goes to done with ``reason`` as its
        last error (it leaves the failures list, and its study may be deleted by retention). A running job
        cannot be cancelled (its holder would not notice): :class:`JobStateError`. Returns the new state.
        """
        now = self._clock()
        with self._write() as conn:
            job = fetch(conn, job_id)
            if job.state is JobState.QUEUED:
                state = JobState.DEAD
            elif job.state is JobState.DEAD:
                state = JobState.DONE
            else:
                raise JobStateError(f"job {job_id} is {job.state}: only a queued or dead job can be cancelled")
            move(conn, job, state, now, last_error=f"cancelled: {reason}")
        log.info("job %d %s -> %s (cancelled on request)", job_id, job.kind, state)
        return state

    def forget_study(self, study: str) -> int:
        """Delete the study's done jobs (retention deleted the study); return how many.

        Jobs in any other state are kept: retention deletes only studies that have none, and this is
        not the place to decide otherwise. Their dedup keys go too, so the same study received again is
        forwarded and analysed again.
        """
        with self._write() as conn:
            removed = conn.execute("DELETE FROM jobs WHERE study = ? AND state = 'done'", (study,)).rowcount
        log.debug("%d done jobs of study %s deleted", removed, study)
        return int(removed)
