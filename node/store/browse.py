"""Read-only questions to the index for the web console: study lists, one study, arrival rates.

:class:`IndexReader` opens the index file read-only (``mode=ro``, ``query_only``): it never takes the
write lock, never migrates, and each call is one short read transaction of a WAL reader, so the web
process cannot slow the receiver's commits. Queries stay on indexed columns: a page of studies is read
in arrival order from ``studies_by_received`` and only that page's instances are counted.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.store.rows import BUSY_TIMEOUT_MS
from node.store.spool import StoreError

# SOP Class UID prefix -> modality, for the studies list (the index keeps SOP classes, not headers).
MODALITIES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.1": "CR/DX",
    "1.2.840.10008.5.1.4.1.1.6": "US",
    "1.2.840.10008.5.1.4.1.1.7": "OT",
    "1.2.840.10008.5.1.4.1.1.20": "NM",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.88": "SR",
    "1.2.840.10008.5.1.4.1.1.9": "ECG",
}


def modality_of(sop_class_uid: str) -> str:
    """The modality a SOP class stands for (longest known prefix), ``"?"`` for others."""
    best = ""
    for prefix in MODALITIES:
        if (sop_class_uid == prefix or sop_class_uid.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return MODALITIES.get(best, "?")


def _classes_of(modality: str) -> list[str]:
    return [prefix for prefix, name in MODALITIES.items() if name == modality]


@dataclass(frozen=True)
class SeriesRow:
    series_instance_uid: str
    instances: int
    modality: str
    first_received_at: float
    last_received_at: float
    bytes: int


@dataclass(frozen=True)
class StudyRow:
    """A study as the console lists it; ``series`` is filled for one study only (:meth:`IndexReader.study`)."""

    study_instance_uid: str
    first_received_at: float
    last_received_at: float
    completed_at: float | None
    duplicates: int
    instances: int
    calling_aes: tuple[str, ...]
    modalities: tuple[str, ...]
    series: tuple[SeriesRow, ...] = field(default=())

    @property
    def state(self) -> str:
        return "complete" if self.completed_at is not None else "receiving"


class IndexReader:
    """The index, read-only, for another process (the web console); safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the index {path} for reading: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the index {self.path}: {exc}") from exc

    def _filters(
        self, since: float | None, until: float | None, modality: str | None, calling_ae: str | None, state: str | None
    ) -> tuple[str, list[Any]]:
        where = ["s.study_instance_uid NOT IN (SELECT study_instance_uid FROM deleting)"]
        params: list[Any] = []
        if since is not None:
            where.append("s.last_received_at >= ?")
            params.append(since)
        if until is not None:
            where.append("s.first_received_at < ?")
            params.append(until)
        if state == "complete":
            where.append("s.completed_at IS NOT NULL")
        elif state == "receiving":
            where.append("s.completed_at IS NULL")
        if calling_ae:
            where.append(
                "EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid = s.study_instance_uid"
                " AND i.calling_ae = ?)"
            )
            params.append(calling_ae)
        if modality:
            classes = _classes_of(modality)
            likes = " OR ".join(["i.sop_class_uid = ? OR i.sop_class_uid LIKE ?"] * len(classes)) or "0"
            where.append(
                f"EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid = s.study_instance_uid AND ({likes}))"
            )
            for prefix in classes:
                params += [prefix, prefix + ".%"]
        return " AND ".join(where), params

    def studies(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        since: float | None = None,
        until: float | None = None,
        modality: str | None = None,
        calling_ae: str | None = None,
        state: str | None = None,
    ) -> tuple[list[StudyRow], int]:
        """A page of studies, latest arrival first, and how many match in all."""
        where, params = self._filters(since, until, modality, calling_ae, state)
        total = int(self._rows(f"SELECT COUNT(*) FROM studies s WHERE {where}", tuple(params))[0][0])
        rows = self._rows(
            "SELECT s.study_instance_uid, s.first_received_at, s.last_received_at, s.completed_at, s.duplicates"
            f" FROM studies s WHERE {where} ORDER BY s.last_received_at DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [self._summary(row) for row in rows], total

    def _summary(self, row: Any, series: bool = False) -> StudyRow:
        uid, first, last, completed, duplicates = row
        parts = self._rows(
            "SELECT series_instance_uid, COUNT(*), MIN(sop_class_uid), MIN(received_at), MAX(received_at), SUM(size),"
            " GROUP_CONCAT(DISTINCT calling_ae) FROM instances WHERE study_instance_uid = ?"
            " GROUP BY series_instance_uid ORDER BY MIN(received_at)",
            (uid,),
        )
        found = tuple(
            SeriesRow(str(s), int(n), modality_of(str(c)), float(lo), float(hi), int(b or 0))
            for s, n, c, lo, hi, b, _ in parts
        )
        aes = sorted({ae for *_, callers in parts for ae in str(callers or "").split(",") if ae})
        return StudyRow(
            study_instance_uid=str(uid),
            first_received_at=float(first),
            last_received_at=float(last),
            completed_at=None if completed is None else float(completed),
            duplicates=int(duplicates),
            instances=sum(s.instances for s in found),
            calling_aes=tuple(aes),
            modalities=tuple(dict.fromkeys(s.modality for s in found)),
            series=found if series else (),
        )

    def study(self, uid: str) -> StudyRow | None:
        """One study with its series, or ``None``."""
        rows = self._rows(
            "SELECT study_instance_uid, first_received_at, last_received_at, completed_at, duplicates FROM studies"
            " WHERE study_instance_uid = ?",
            (uid,),
        )
        return self._summary(rows[0], series=True) if rows else None

    def first_arrivals(self, uids: list[str]) -> dict[str, float]:
        """When each of these studies' first instance arrived (studies no longer indexed are left out)."""
        found: dict[str, float] = {}
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for uid, first in self._rows(
                f"SELECT study_instance_uid, first_received_at FROM studies WHERE study_instance_uid IN ({marks})",
                tuple(chunk),
            ):
                found[str(uid)] = float(first)
        return found

    def arrivals_per_minute(self, since: float) -> dict[int, int]:
        """Instances received per minute (epoch minute -> count) since ``since``, from recently active studies."""
        rows = self._rows(
            "SELECT CAST(received_at / 60 AS INTEGER), COUNT(*) FROM instances WHERE study_instance_uid IN"
            " (SELECT study_instance_uid FROM studies WHERE last_received_at >= ?) AND received_at >= ? GROUP BY 1",
            (since, since),
        )
        return {int(minute): int(count) for minute, count in rows}

    def totals(self) -> tuple[int, int]:
        """Studies and instances in the index."""
        studies = self._rows("SELECT COUNT(*) FROM studies")[0][0]
        instances = self._rows("SELECT COUNT(*) FROM instances")[0][0]
        return int(studies), int(instances)

    def instance_path(self, sop_instance_uid: str) -> str | None:
        """The spool path (relative to the spool root) of an instance, or ``None``."""
        rows = self._rows("SELECT path FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return str(rows[0][0]) if rows else None

    def writable(self) -> str | None:
        """Why the index file cannot be written now (``None`` when it can): for the readiness probe."""
        return writable(self.path, "index")


def writable(path: Path, what: str) -> str | None:
    """Why a SQLite file cannot be written now (``None`` when it can): takes the write lock and gives it back
    at once, writing nothing (a readiness probe; waits at most 2 s for another writer)."""
    try:
        probe = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=2.0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        finally:
            probe.close()
    except sqlite3.Error as exc:
        return f"{what} {path} not writable: {exc}"
    return None
