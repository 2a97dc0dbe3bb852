"""The audit trail: append-only JSON lines from many processes, no patient identity, read back by time."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from node.audit import AuditTrail, audit_path, read
from node.commands.audit import format_record, parse_since


def test_records_are_appended_with_their_dicom_event_and_no_patient_identity(tmp_path: Path) -> None:
    trail = AuditTrail(audit_path(tmp_path), "PACSNODE")
    trail.record("study-received", study="1.2.3", instances=3, sent_by={"CT1@10.0.0.1": 3}, PatientName="Doe^J")
    trail.record("association-rejected", "minor failure", calling_ae="X", address="10.0.0.9", reason="not a peer")
    lines = audit_path(tmp_path).read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["event_id"] == {"code": "110104", "scheme": "DCM", "meaning": "DICOM Instances Transferred"}
    assert first["outcome"] == 0 and first["node"] == "PACSNODE" and first["instances"] == 3
    assert "PatientName" not in first and "Doe" not in lines[0]
    assert second["event_id"]["code"] == "110113" and second["outcome"] == 4
    with pytest.raises(ValueError, match="unknown audit event"):
        trail.record("coffee-break")


def _append(path: str, n: int) -> None:
    trail = AuditTrail(Path(path), "PACSNODE")
    for i in range(n):
        trail.record("instances-sent", peer="pacs", sent=i, forwarded_studies=["1.2.3"] * 20)


def test_processes_appending_at_once_never_interleave_lines(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    path.parent.mkdir(parents=True)
    procs = [multiprocessing.Process(target=_append, args=(str(path), 100)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    entries = [json.loads(line) for line in path.read_text().splitlines()]  # every line parses
    assert len(entries) == 400 and len({e["pid"] for e in entries}) == 4


def test_read_since_and_the_tail_format(tmp_path: Path) -> None:
    trail = AuditTrail(audit_path(tmp_path), "PACSNODE")
    trail.record("application-start", listening="127.0.0.1:11112")
    cut = time.time()
    time.sleep(0.01)
    trail.record("job-failed", "serious failure", job=7, kind="analyse", reason="series cannot be loaded")
    recent = list(read(audit_path(tmp_path), since=cut))
    assert [e["event"] for e in recent] == ["job-failed"]
    line = format_record(recent[0])
    assert "job-failed (serious failure) job=7 kind=analyse reason=series cannot be loaded" in line
    assert list(read(tmp_path / "missing.jsonl")) == []


def test_since_understands_durations_and_dates() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_since("2026-11-24T08:00+00:00") == 1795507200.0
    with pytest.raises(Exception, match="30m, 2h or 7d"):
        parse_since("yesterday")
