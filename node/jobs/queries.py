"""Read-only questions to the job store: one job, lists, searches, counts, and a study's jobs.

A mixin of :class:`node.jobs.store.JobStore`, which provides ``_read`` (a connection under the store's
lock); the store's module keeps the writes, where the state machine lives.
"""

from __future__ import annotations

import builtins
import sqlite3
from contextlib import AbstractContextManager

from node.jobs.kinds import ANALYSE
from node.jobs.types import COLUMNS, Job, JobState, job_from_row


class JobQueries:
    """Reads of the ``jobs`` table (see :class:`node.jobs.store.JobStore` for the store itself)."""

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # JobStore provides it

    def get(self, job_id: int) -> Job | None:
        """The job with this id, or ``None``."""
        with self._read() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else job_from_row(row)

    def list(
        self, state: JobState | str | None = None, kind: str | None = None, limit: int = 100
    ) -> builtins.list[Job]:
        """Jobs, newest first, optionally only of one state and/or kind, at most ``limit``."""
        value = None if state is None else JobState(state).value
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR kind = ?2)"
                " ORDER BY id DESC LIMIT ?3",
                (value, kind, limit),
            )
            return [job_from_row(row) for row in rows]

    def search(self, text: str, limit: int = 10_000) -> builtins.list[Job]:
        """Jobs whose JSON payload contains ``text`` (e.g. ``'"study":"1.2.3"'``), oldest first.

        Payloads are stored with sorted keys and no spaces (``{"path":"spool/1.2/...","peer":"pacs"}``),
        so a key and its value can be searched as one string.
        """
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE payload LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?", (pattern, limit)
            )
            return [job_from_row(row) for row in rows]

    # -- per study (retention: node.store.retention.StudyJobs) ---------------------------------------

    def studies_with_unfinished_jobs(self) -> set[str]:
        """Studies that have a job in any state but done (queued, running, waiting for a retry, dead)."""
        with self._read() as conn:
            rows = conn.execute("SELECT DISTINCT study FROM jobs WHERE study IS NOT NULL AND state != 'done'")
            return {str(row[0]) for row in rows}

    def unfinished_jobs_of_study(self, study: str) -> int:
        """How many of the study's jobs are not done (a dead one counts: a person may retry it)."""
        with self._read() as conn:
            row = conn.execute("SELECT COUNT(*) FROM jobs WHERE study = ? AND state != 'done'", (study,)).fetchone()
        return int(row[0])

    def analyses_of_study(self, study: str) -> builtins.list[int]:
        """Ids of the study's ``analyse`` jobs (each has its results folder in the outbox)."""
        with self._read() as conn:
            rows = conn.execute("SELECT id FROM jobs WHERE study = ? AND kind = ? ORDER BY id", (study, ANALYSE))
            return [int(row[0]) for row in rows]

    def counts(self) -> dict[tuple[str, JobState], int]:
        """Number of jobs per (kind, state), for status pages and metrics; absent pairs are zero."""
        with self._read() as conn:
            rows = conn.execute("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state").fetchall()
        return {(kind, JobState(state)): count for kind, state, count in rows}

    # -- the web console (node.web) ----------------------------------------------------------------

    def failures(self, limit: int = 500) -> builtins.list[Job]:
        """Dead jobs and queued ones waiting for a retry after a failure, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE state = 'dead'"
                f" UNION ALL SELECT {COLUMNS} FROM jobs WHERE state = 'queued' AND attempts > 0"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            return [job_from_row(row) for row in rows]

    def of_study(self, study: str) -> builtins.list[Job]:
        """Every job filed under the study (its forwards, analyses and their result sends), oldest first."""
        with self._read() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE study = ? ORDER BY id", (study,))
            return [job_from_row(row) for row in rows]

    def oldest_queued_created(self) -> float | None:
        """When the oldest queued job was created (``None`` when nothing is queued)."""
        with self._read() as conn:
            row = conn.execute("SELECT MIN(created) FROM jobs WHERE state = 'queued'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def analyses_per_model(self) -> dict[str, tuple[int, float]]:
        """Per model: done analyses and their mean time from queued to done (seconds)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT json_extract(payload, '$.model'), COUNT(*), AVG(updated - created) FROM jobs"
                " WHERE state = 'done' AND kind = ? GROUP BY 1",
                (ANALYSE,),
            ).fetchall()
        return {str(model): (int(count), float(mean or 0.0)) for model, count, mean in rows if model is not None}
