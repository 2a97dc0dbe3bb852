"""The audit trail: who sent what, when, and where it went; separate from the debug logs.

One JSON object per line in ``<data_dir>/audit/audit.jsonl``, appended by every process of the node
(serve, its sender and workers) with ``O_APPEND`` (each record is one ``write``, so lines from processes
never interleave) and fsynced, so an acknowledged event survives a crash. The file is only appended to;
the node never rewrites or truncates it (rotation and shipping to a central audit repository are the
site's: e.g. logrotate with ``copytruncate`` off and a new file per period).

Events are modelled on the DICOM audit message categories (PS3.15 Annex A.5, event IDs of CID 400)::

    event                  DICOM event (code)                   outcome
    application-start      Application Activity (110100)        success
    application-stop       Application Activity (110100)        success
    association-accepted   User Authentication (110114)         success
    association-rejected   Security Alert (110113)              minor failure (4)
    study-received         DICOM Instances Transferred (110104)  success: instances of one study from a peer
    instances-sent         DICOM Instances Transferred (110104)  success or serious failure (8), per peer
    job-failed             Application Activity (110100)        serious failure (8): a job is dead
    study-deleted          DICOM Study Deleted (110105)         success: retention deleted a study (reason,
                                                                instances, bytes)
    user-login             User Authentication (110114)         success: a person logged in to the web console
    user-login-failed      User Authentication (110114)         minor failure (4): wrong name, password or token
    user-logout            User Authentication (110114)         success
    user-action            Application Activity (110100)        success or minor failure (4): retry, cancel,
                                                                feedback, with the user's name

Records carry AE titles, addresses, UIDs, counts and reasons, never a patient's name, ID or birth date
(callers pass no dataset, only these fields).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EVENTS: dict[str, tuple[str, str]] = {
    "application-start": ("110100", "Application Activity"),
    "application-stop": ("110100", "Application Activity"),
    "association-accepted": ("110114", "User Authentication"),
    "association-rejected": ("110113", "Security Alert"),
    "study-received": ("110104", "DICOM Instances Transferred"),
    "instances-sent": ("110104", "DICOM Instances Transferred"),
    "job-failed": ("110100", "Application Activity"),
    "study-deleted": ("110105", "DICOM Study Deleted"),
    "user-login": ("110114", "User Authentication"),
    "user-login-failed": ("110114", "User Authentication"),
    "user-logout": ("110114", "User Authentication"),
    "user-action": ("110100", "Application Activity"),
}
OUTCOMES = {"success": 0, "minor failure": 4, "serious failure": 8, "major failure": 12}

# Never written, whatever a caller passes: the audit trail holds no patient identity.
_FORBIDDEN = {"PatientName", "PatientID", "PatientBirthDate", "patient_name", "patient_id", "birth_date"}


class AuditTrail:
    """Appends audit records to one file; safe for threads and for several processes on one file.

    Parameters
    ----------
    path
        The audit file (created with its folder if missing).
    who
        The node's AE title, written in every record as the reporting application.
    """

    def __init__(self, path: Path, who: str) -> None:
        self.path = path
        self.who = who
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, event: str, outcome: str = "success", **fields: Any) -> None:
        """Append one record; ``fields`` are JSON values (AE titles, addresses, UIDs, counts, reasons).

        An audit record that cannot be written is a failure the caller must see (``OSError``): the
        caller decides whether the action goes on (the receiver does not refuse a study for it; it logs).
        """
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r} (known: {', '.join(EVENTS)})")
        code, meaning = EVENTS[event]
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "event_id": {"code": code, "scheme": "DCM", "meaning": meaning},
            "outcome": OUTCOMES[outcome],
            "node": self.who,
            "pid": os.getpid(),
            **{k: v for k, v in fields.items() if k not in _FORBIDDEN},
        }
        line = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


def audit_path(data_dir: Path) -> Path:
    """Where a node with this data dir keeps its audit trail."""
    return data_dir / "audit" / "audit.jsonl"


def read(path: Path, since: float | None = None) -> Iterator[dict[str, Any]]:
    """The records of an audit file, oldest first, optionally only those at or after ``since`` (epoch s)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write of another tool; ours are single writes
            if since is not None and datetime.fromisoformat(entry["time"]).timestamp() < since:
                continue
            yield entry
