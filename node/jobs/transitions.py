"""Row-level steps shared by the job store's writes: read a job, move it to a state, find a live twin.

Each runs on a connection inside the caller's write transaction.
"""

from __future__ import annotations

import sqlite3

from node.jobs.types import COLUMNS, Job, JobNotFoundError, JobState, job_from_row


def fetch(conn: sqlite3.Connection, job_id: int) -> Job:
    row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job_from_row(row)


def move(conn: sqlite3.Connection, job: Job, state: JobState, now: float, **columns: object) -> None:
    """Set ``job``'s new state, clear its lease and set ``columns`` (names from the store's code, never input)."""
    sets = "".join(f", {name} = ?" for name in columns)
    conn.execute(
        f"UPDATE jobs SET state = ?, lease_owner = NULL, lease_expires = NULL, updated = ?{sets} WHERE id = ?",
        (state.value, now, *columns.values(), job.id),
    )


def live_duplicate(conn: sqlite3.Connection, kind: str, dedup_key: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM jobs WHERE kind = ? AND dedup_key = ? AND state IN ('queued', 'running')", (kind, dedup_key)
    ).fetchone()
    return None if row is None else int(row[0])
