"""Radiologists' feedback on findings: confirm or reject (with a reason), durable, in ``feedback.sqlite3``.

The web process is the only writer. Every verdict is a new row (nothing is overwritten, so the record of
who said what stays whole); a finding's latest verdict is the one that counts for agreement. A finding
is named by the analysis job that found it, its series and its number there.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from node.errors import NodeError

Verdict = Literal["confirm", "reject"]
REASONS = ("false positive", "wrong size", "wrong location", "other")

_SCHEMA = """CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, analysis INTEGER NOT NULL, series TEXT NOT NULL, number INTEGER NOT NULL,
    study TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, verdict TEXT NOT NULL, reason TEXT NOT NULL,
    comment TEXT NOT NULL, user TEXT NOT NULL, at REAL NOT NULL)"""
_INDEX = "CREATE INDEX IF NOT EXISTS feedback_finding ON feedback (analysis, series, number)"
_LATEST = (
    "SELECT f.* FROM feedback f JOIN (SELECT MAX(id) AS id FROM feedback GROUP BY analysis, series, number) l"
    " ON f.id = l.id"
)


def _cell(text: str) -> str:
    """Free text for a spreadsheet: a leading = + - @ would make it a formula there, so it gets a quote."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


class FeedbackError(NodeError):
    """The feedback store cannot be opened, read or written, or a verdict is not valid."""


@dataclass(frozen=True)
class Feedback:
    id: int
    analysis: int
    series: str
    number: int
    study: str
    model: str
    version: str
    verdict: str
    reason: str
    comment: str
    user: str
    at: float


@dataclass(frozen=True)
class Agreement:
    """Latest verdicts on a model version's findings: ``confirmed`` of ``rated``."""

    model: str
    version: str
    confirmed: int
    rated: int

    @property
    def ratio(self) -> float | None:
        return self.confirmed / self.rated if self.rated else None


class FeedbackStore:
    """The feedback file; one connection shared by the web process's threads under a lock."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # a confirmed verdict survives power loss
            self._db.execute(_SCHEMA)
            self._db.execute(_INDEX)
        except sqlite3.Error as exc:
            raise FeedbackError(f"cannot open the feedback store {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[Feedback]:
        with self._lock:
            try:
                return [Feedback(*row) for row in self._db.execute(sql, params).fetchall()]
            except sqlite3.Error as exc:
                raise FeedbackError(f"cannot read the feedback store {self.path}: {exc}") from exc

    def add(
        self,
        *,
        analysis: int,
        series: str,
        number: int,
        study: str,
        model: str,
        version: str,
        verdict: str,
        reason: str,
        comment: str,
        user: str,
    ) -> Feedback:
        """Record one verdict (committed before this returns); a rejection needs one of :data:`REASONS`."""
        if verdict not in ("confirm", "reject"):
            raise FeedbackError(f"verdict must be 'confirm' or 'reject', not {verdict!r}")
        if verdict == "reject" and reason not in REASONS:
            raise FeedbackError(f"a rejection needs a reason: one of {', '.join(REASONS)} (got {reason!r})")
        if verdict == "confirm":
            reason = ""
        row = (analysis, series, number, study, model, version, verdict, reason, comment[:2000], user, self._clock())
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO feedback (analysis, series, number, study, model, version, verdict, reason, comment,"
                    " user, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.Error as exc:
                raise FeedbackError(f"cannot write the feedback store {self.path}: {exc}") from exc
        return Feedback(int(cursor.lastrowid or 0), *row)

    def latest(self, analyses: list[int] | None = None) -> dict[tuple[int, str, int], Feedback]:
        """The latest verdict per finding (of these analyses, or of all)."""
        rows = self._rows(_LATEST + " ORDER BY f.id")
        wanted = None if analyses is None else set(analyses)
        return {(f.analysis, f.series, f.number): f for f in rows if wanted is None or f.analysis in wanted}

    def agreement(self) -> list[Agreement]:
        """Per model version: findings whose latest verdict confirms them, of those rated."""
        with self._lock:
            try:
                rows = self._db.execute(
                    f"SELECT model, version, SUM(verdict = 'confirm'), COUNT(*) FROM ({_LATEST})"
                    " GROUP BY model, version ORDER BY model, version"
                ).fetchall()
            except sqlite3.Error as exc:
                raise FeedbackError(f"cannot read the feedback store {self.path}: {exc}") from exc
        return [Agreement(str(m), str(v), int(c), int(n)) for m, v, c, n in rows]

    def csv(self) -> str:
        """Every verdict, oldest first, as CSV (for export to a spreadsheet or a quality register)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "id",
                "time_utc",
                "user",
                "study",
                "series",
                "analysis_job",
                "finding",
                "model",
                "version",
                "verdict",
                "reason",
                "comment",
            ]
        )
        for f in self._rows("SELECT * FROM feedback ORDER BY id"):
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(f.at))
            writer.writerow(
                [
                    f.id,
                    at,
                    f.user,
                    f.study,
                    f.series,
                    f.analysis,
                    f.number,
                    f.model,
                    f.version,
                    f.verdict,
                    f.reason,
                    _cell(f.comment),
                ]
            )
        return out.getvalue()
