"""The durable job store: one SQLite file shared by the node process and its worker processes.

Every state change is one committed write transaction (WAL, ``synchronous=FULL``) before the method
returns, so a caller acknowledges a side effect only after the row that records it is on disk (DESIGN §4.2).
The file is the only channel between processes (DESIGN §3): each process opens its own :class:`JobStore`.

Atomic claim across processes: every write runs inside ``BEGIN IMMEDIATE``, which takes SQLite's single
write lock before anything is read, so the choice of the next job and its move to ``running`` happen with
no other writer in between; other processes wait for the lock (``busy_timeout``). The claim itself is one
``UPDATE ... WHERE id = (SELECT ... LIMIT 1) AND state = 'queued' RETURNING``, so even without the lock a
row could only go from queued to running once.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from node.jobs.backoff import delay
from node.jobs.kinds import ANALYSE, study_of
from node.jobs.queries import JobQueries
from node.jobs.recovery import JobRecovery
from node.jobs.transitions import fetch, live_duplicate, move
from node.jobs.types import (
    COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    Job,
    JobState,
    JobStoreError,
    LeaseLostError,
    NewJob,
    job_from_row,
)
from node.sqlite import immediate_transaction

log = logging.getLogger(__name__)

_ERROR_MAX_CHARS = 4000  # last_error is for people and the web page, not a log archive


class JobStore(JobQueries, JobRecovery):
    """Jobs in one SQLite file, claimed with leases, retried with backoff, parked when dead.

    Open one store per process (a connection must not cross ``fork``); within a process the store may be
    shared by threads, which it serialises with a lock. ``complete``, ``fail`` and ``release`` raise
    :class:`LeaseLostError` when ``owner`` does not hold the job (its lease was taken back by
    :meth:`requeue_expired`, or it never claimed it); the caller must then treat its work as not
    acknowledged. Methods given an unknown id raise :class:`JobNotFoundError`; database failures (disk
    full, write lock held past ``busy_timeout``) raise :class:`JobStoreError`.

    Parameters
    ----------
    path
        The database file; created with its schema if missing.
    clock
        Seconds since the epoch; tests inject a fake one. All processes must use the same time base.
    max_attempts
        Claims after which a failing job is parked as dead instead of queued again.
    backoff_initial, backoff_max
        Delay after the first failure and cap of every delay, seconds (see :func:`node.jobs.backoff.delay`).
    jitter_fraction
        Relative jitter of the backoff delays.
    rng
        Source of the jitter; a fresh :class:`random.Random` when ``None``.
    busy_timeout
        Seconds a write waits for another process's write lock before :class:`JobStoreError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 10,
        backoff_initial: float = 60.0,
        backoff_max: float = 3600.0,
        jitter_fraction: float = 0.1,
        rng: random.Random | None = None,
        busy_timeout: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be 1 or more, got {max_attempts}")
        delay(1, backoff_initial, backoff_max, jitter_fraction)  # validates the backoff settings now
        self.path = os.fspath(path)
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.jitter_fraction = jitter_fraction
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        try:
            # isolation_level=None: the module opens no implicit transactions; we say BEGIN IMMEDIATE.
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, not only a crash
        except sqlite3.Error as exc:
            raise JobStoreError(f"job store {self.path}: cannot open: {exc}") from exc
        try:  # from here on, close the connection if the store cannot be used
            if mode != "wal":
                raise JobStoreError(f"job store {self.path}: cannot use a WAL journal (got {mode!r}); use a local disk")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        """Create the schema, or bring an older store up to it (every process may run this; one at a time)."""
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JobStoreError(
                    f"job store {self.path}: schema version {version} is newer than this node ({SCHEMA_VERSION})"
                )
            conn.execute(SCHEMA[0])  # the table, if new (with every column)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
            if "study" not in columns:  # version 1: file every existing job under its study
                conn.execute("ALTER TABLE jobs ADD COLUMN study TEXT")
                filed = self._file_under_studies(conn)
                log.info("job store %s: upgraded, %d existing jobs filed under their studies", self.path, filed)
            for statement in SCHEMA[1:]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _file_under_studies(conn: sqlite3.Connection) -> int:
        """Fill the study column of jobs enqueued before it existed (in id order: an analysis before its sends)."""
        rows = conn.execute("SELECT id, kind, payload FROM jobs WHERE study IS NULL ORDER BY id").fetchall()
        filed = 0
        for job_id, kind, payload in rows:
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            study = study_of(kind, data if isinstance(data, dict) else {}, lambda n: JobStore._study(conn, n))
            if study is not None:
                conn.execute("UPDATE jobs SET study = ? WHERE id = ?", (study, job_id))
                filed += 1
        return filed

    @staticmethod
    def _study(conn: sqlite3.Connection, analysis_id: int) -> str | None:
        row = conn.execute("SELECT study FROM jobs WHERE id = ? AND kind = ?", (analysis_id, ANALYSE)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        self._check_process()
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise JobStoreError(f"job store {self.path}: {exc}") from exc

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its start (BEGIN IMMEDIATE).

        Taking the lock before reading means what the transaction reads cannot be changed by another
        process before it writes: this is what makes claim, dedup and the ownership checks atomic.
        ``durable=False`` commits without a sync (``synchronous=NORMAL``): it survives a crash of any
        process, and power loss may undo it, for changes whose loss only repeats work (a claim, a done
        mark: the job runs again; a send to a peer is idempotent per SOP Instance UID).
        """
        self._check_process()
        with immediate_transaction(
            self._conn,
            self._lock,
            lambda exc: JobStoreError(f"job store {self.path}: {exc}"),
            synchronous="FULL" if durable else "NORMAL",
        ) as conn:
            yield conn

    def _check_process(self) -> None:
        # SQLite forbids using a connection opened before fork in the child: it can corrupt the file.
        if os.getpid() != self._pid:
            raise JobStoreError(f"job store {self.path}: opened in process {self._pid}; open one per process")

    def _owned(self, conn: sqlite3.Connection, job_id: int, owner: str, action: str) -> Job:
        job = fetch(conn, job_id)
        if job.state is not JobState.RUNNING or job.lease_owner != owner:
            holder = f"state {job.state}, holder {job.lease_owner!r}"
            raise LeaseLostError(f"cannot {action} job {job_id}: {owner!r} does not hold its lease ({holder})")
        return job

    def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        dedup_key: str | None = None,
        priority: int = 0,
        not_before: float | None = None,
        once: bool = False,
    ) -> int:
        """Add a job, or find the live job that already does the same work.

        ``payload`` must be JSON-serialisable. If a queued or running job of this ``kind`` has the same
        ``dedup_key``, no job is added: that job's id is returned, and its priority is raised to
        ``priority`` if it is lower and the job has not started yet. With ``once``, a *done* job with the
        same key also counts (idempotent work such as a send per SOP Instance UID and peer: what was
        delivered is never delivered again). ``not_before`` is the earliest claim time (clock seconds),
        now when ``None``.
        """
        return self.enqueue_many([NewJob(kind, payload, dedup_key, priority, not_before, once)])[0]

    def enqueue_many(self, new: Sequence[NewJob]) -> builtins.list[int]:
        """:meth:`enqueue` each job in one transaction (one commit, one fsync); return their ids in order."""
        if any(not job.kind for job in new):
            raise ValueError("a job needs a kind")
        texts = [json.dumps(dict(j.payload), sort_keys=True, separators=(",", ":"), allow_nan=False) for j in new]
        now = self._clock()
        ids: builtins.list[int] = []
        added: builtins.list[tuple[int, NewJob]] = []
        with self._write() as conn:
            for job, text in zip(new, texts, strict=True):
                existing = self._existing(conn, job)
                if existing is not None:
                    ids.append(existing)
                    continue
                start = now if job.not_before is None else job.not_before
                # In this transaction: a result send finds the study of the analysis that made it.
                study = study_of(job.kind, job.payload, lambda n: self._study(conn, n))
                job_id = int(
                    conn.execute(
                        "INSERT INTO jobs (kind, payload, dedup_key, priority, state, not_before, created, updated,"
                        " study) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?) RETURNING id",
                        (job.kind, text, job.dedup_key, job.priority, start, now, now, study),
                    ).fetchone()[0]
                )
                ids.append(job_id)
                added.append((job_id, job))
        for job_id, job in added:
            log.info("job %d %s -> queued (priority %d)", job_id, job.kind, job.priority)
        return ids

    def _existing(self, conn: sqlite3.Connection, job: NewJob) -> int | None:
        """The job that already does ``job``'s work (live, or done with ``once``); a live one's priority rises."""
        if job.dedup_key is None:
            return None
        existing = live_duplicate(conn, job.kind, job.dedup_key)
        if existing is not None:
            conn.execute(
                "UPDATE jobs SET priority = ? WHERE id = ? AND state = 'queued' AND priority < ?",
                (job.priority, existing, job.priority),
            )
            log.debug("job %d %s: already live, not enqueued again", existing, job.kind)
            return existing
        if job.once:
            row = conn.execute(
                "SELECT id FROM jobs WHERE kind = ? AND dedup_key = ? AND state = 'done'", (job.kind, job.dedup_key)
            ).fetchone()
            if row is not None:
                log.debug("job %d %s: already done, not enqueued again", row[0], job.kind)
                return int(row[0])
        return None

    def claim(self, kinds: str | Collection[str], owner: str, lease_seconds: float) -> Job | None:
        """Take the next ready job of one of ``kinds``: highest priority first, then oldest.

        The job becomes ``running`` under ``owner``'s lease until now + ``lease_seconds``, and the claim
        counts as an attempt. Keep the lease alive with :meth:`heartbeat` during long work.

        Returns the claimed job as it now stands, or ``None`` if no job is ready.
        """
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if not kinds:
            raise ValueError("claim needs at least one kind")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        claimed = self.claim_many(kinds, owner, lease_seconds, 1)
        return claimed[0] if claimed else None

    def claim_many(
        self, kinds: str | Collection[str], owner: str, lease_seconds: float, limit: int
    ) -> builtins.list[Job]:
        """:meth:`claim` up to ``limit`` jobs in one transaction (a sender's batch: one commit, not one each).

        The claim is committed without a sync (see :meth:`_write`): power loss can only put the jobs back
        in the queue, where they are claimed again.
        """
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if not kinds:
            raise ValueError("claim needs at least one kind")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        now = self._clock()
        marks = ", ".join("?" * len(kinds))
        with self._write(durable=False) as conn:
            rows = conn.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires = ?, attempts = attempts + 1,"
                " updated = ? WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?"
                f" AND kind IN ({marks}) ORDER BY priority DESC, id LIMIT ?) AND state = 'queued' RETURNING {COLUMNS}",
                (owner, now + lease_seconds, now, now, *kinds, limit),
            ).fetchall()
        jobs = sorted((job_from_row(row) for row in rows), key=lambda job: (-job.priority, job.id))
        for job in jobs:
            log.info("job %d %s -> running (attempt %d, owner %s)", job.id, job.kind, job.attempts, owner)
        return jobs

    def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease to now + ``lease_seconds``.

        A lease past its expiry still belongs to its owner until :meth:`requeue_expired` takes it back, so a
        late heartbeat still succeeds if nobody has taken the job back yet. Returns ``False`` if ``owner``
        no longer holds the job: stop the work, it will be (or is being) done again.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET lease_expires = ? WHERE id = ? AND state = 'running' AND lease_owner = ?",
                (self._clock() + lease_seconds, job_id, owner),
            )
        return cursor.rowcount == 1

    def complete(self, job_id: int, owner: str, *, durable: bool = True) -> None:
        """Mark ``owner``'s job done; call only once its side effect is acknowledged (sent, written).

        ``durable=False`` (a send: the peer keeps one copy per SOP Instance UID) commits without a sync:
        power loss can undo the mark, and the instance is sent again, never lost. An analysis keeps the
        synced mark: run again, it would make results with new UIDs.
        """
        now = self._clock()
        with self._write(durable=durable) as conn:
            job = self._owned(conn, job_id, owner, "complete")
            move(conn, job, JobState.DONE, now)
        log.info("job %d %s -> done (attempt %d)", job_id, job.kind, job.attempts)

    def fail(self, job_id: int, owner: str, error: str, *, retry: bool = True) -> JobState:
        """Record a failed attempt of ``owner``'s job: queued again after a backoff, or dead.

        Parameters
        ----------
        error
            Why it failed, for the people who will look at the job; stored as ``last_error``.
        retry
            ``False`` for errors another try cannot fix (an invalid series): the job is dead at once.

        Returns
        -------
        JobState
            ``QUEUED`` (claimable again from now + backoff(attempts)) or ``DEAD`` (no retry, or attempts used up).
        """
        now = self._clock()
        error = error[:_ERROR_MAX_CHARS]
        with self._write() as conn:
            job = self._owned(conn, job_id, owner, "fail")
            state = JobState.QUEUED if retry and job.attempts < self.max_attempts else JobState.DEAD
            wait = 0.0
            if state is JobState.QUEUED:
                wait = delay(job.attempts, self.backoff_initial, self.backoff_max, self.jitter_fraction, self._rng)
            move(conn, job, state, now, not_before=now + wait, last_error=error)
        # The error text may quote UIDs or other data: DEBUG only; it is in the row for people to read.
        log.debug("job %d %s failed: %s", job_id, job.kind, error)
        if state is JobState.QUEUED:
            log.info("job %d %s -> queued (attempt %d failed, next in %.0f s)", job_id, job.kind, job.attempts, wait)
        else:
            # WARNING: a dead job needs a person (DESIGN §4.3: parked, visible, retried on request).
            log.warning("job %d %s -> dead (attempt %d, retry %s)", job_id, job.kind, job.attempts, retry)
        return state

    def release(self, job_id: int, owner: str) -> None:
        """Give ``owner``'s job back to the queue unfinished (graceful shutdown); the attempt is not counted."""
        now = self._clock()
        with self._write() as conn:
            job = self._owned(conn, job_id, owner, "release")
            move(conn, job, JobState.QUEUED, now, attempts=job.attempts - 1)
        log.info("job %d %s -> queued (released, attempt %d given back)", job_id, job.kind, job.attempts)
