"""Data types of the job store, their table, and its errors.

A job moves through these states; every move is one committed row change and one log line (INFO; WARNING
when a job goes dead)::

    queued ──claim──▶ running ──complete──▶ done
       ▲                 │
       ├──── fail ───────┤  retry and attempts < max_attempts: queued again, claimable after the backoff
       ├──── release ────┤  graceful shutdown: the attempt is given back
       ├──── expired ────┤  requeue_expired: the lease ran out (worker died or hung): queued at once
       │                 ▼
       └──── retry ───── dead  fail with attempts used up or retry=False, or an expired lease on the last attempt

Errors::

    NodeError
    └── JobError               base of the job store's errors
        ├── JobStoreError      the database cannot be opened, read or written
        ├── JobNotFoundError   no job has this id
        ├── LeaseLostError     the caller no longer holds the job's lease (complete, fail, release)
        └── JobStateError      the job is not in a state that allows the request (retry of a live job)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from node.errors import NodeError


class JobState(StrEnum):
    """Where a job is in its life; the value is what the database stores."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"

    @property
    def live(self) -> bool:
        """Whether the job still has work ahead of it (its dedup key is taken)."""
        return self in (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True, slots=True)
class Job:
    """One row of the job store, as read at one moment.

    Attributes
    ----------
    id
        Row id; increases with creation, so it also orders jobs by age.
    kind
        What the job does, e.g. ``"analyse"`` or ``"send"``; workers claim by kind.
    payload
        The decoded JSON payload (e.g. ``{"sop": ..., "peer": ...}``). It may hold UIDs: never log it at INFO.
    state
        See :class:`JobState`.
    priority
        Higher is claimed first; ties go to the older job.
    attempts
        Claims so far that were not given back by ``release``. A claim counts at once, so a job that kills
        its worker still uses up its attempts and ends up dead instead of looping forever.
    not_before
        Earliest time (clock seconds) at which the job may be claimed.
    created, updated
        Clock seconds of the insert and of the last state change.
    dedup_key
        Unique among the live (queued or running) jobs of a kind, or ``None``.
    lease_owner, lease_expires
        Who holds the job and until when; set only while running.
    last_error
        Text of the last failure (kept after a retry on request, for the record), or ``None``.
    study
        The Study Instance UID the job concerns (see :func:`node.jobs.kinds.study_of`), or ``None``.
    """

    id: int
    kind: str
    payload: dict[str, Any]
    state: JobState
    priority: int
    attempts: int
    not_before: float
    created: float
    updated: float
    dedup_key: str | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    last_error: str | None = None
    study: str | None = None


# 2: the study column (retention asks which jobs a study still has); JobStore._migrate fills it in.
SCHEMA_VERSION = 2

SCHEMA = (
    # AUTOINCREMENT: ids appear in logs and the audit trail, so one must never be reused after a purge.
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL, dedup_key TEXT,
        priority INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL, lease_owner TEXT, lease_expires REAL,
        created REAL NOT NULL, updated REAL NOT NULL, last_error TEXT, study TEXT
    )""",
    # The dedup key is unique among live jobs only: a send that is done or dead may be asked for again.
    """CREATE UNIQUE INDEX IF NOT EXISTS jobs_dedup ON jobs (kind, dedup_key)
        WHERE dedup_key IS NOT NULL AND state IN ('queued', 'running')""",
    "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (kind, priority DESC, id) WHERE state = 'queued'",
    "CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_expires) WHERE state = 'running'",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, kind)",
    # enqueue(once=True) looks for a done job with the key.
    "CREATE INDEX IF NOT EXISTS jobs_key ON jobs (kind, dedup_key) WHERE dedup_key IS NOT NULL",
    # Retention: does a study still have jobs that are not done, which are its analyses.
    "CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study, state)",
)

COLUMNS = (
    "id, kind, payload, state, priority, attempts, not_before, created, updated,"
    " dedup_key, lease_owner, lease_expires, last_error, study"
)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to add with :meth:`JobStore.enqueue_many` (the arguments of :meth:`JobStore.enqueue`)."""

    kind: str
    payload: Mapping[str, Any]
    dedup_key: str | None = None
    priority: int = 0
    not_before: float | None = None
    once: bool = False


def job_from_row(row: tuple[Any, ...]) -> Job:
    """The job of a row selected as ``COLUMNS``."""
    values = list(row)
    values[2] = json.loads(values[2])
    values[3] = JobState(values[3])
    return Job(*values)


class JobError(NodeError):
    """Base of the job store's errors."""


class JobStoreError(JobError):
    """The job database cannot be opened, read or written (disk full, locked for too long, corrupt)."""


class JobNotFoundError(JobError):
    """No job has the requested id."""


class LeaseLostError(JobError):
    """The caller does not hold the job's lease: it expired and went back to the queue, or it never had it.

    The caller must treat its work as not acknowledged: another worker may be doing it again.
    """


class JobStateError(JobError):
    """The job's state does not allow the request (e.g. retrying a job that is not dead)."""
