"""Retention in ``pacs-node serve``: a forwarded study leaves the spool once delivered; sent again, it comes back."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from node.audit import audit_path
from tests.helpers import tiny_ct
from tests.nodeproc import NodeProcess
from tests.peers import StoreSCP, storescu, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]

STUDY = "1.2.826.0.1.3680043.10.77"
SERIES = f"{STUDY}.1"
COUNT = 4


def config(archive: StoreSCP) -> str:
    return f"""
[limits]
min_free_disk_mb = 0
[completion]
quiet_seconds = 0.5
[workers]
count = 0
[sender]
retry_initial_s = 1
retry_max_s = 1
[retention]
keep_days = 0
interval_s = 0.3
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
[[peers]]
name = "archive"
ae_title = "{archive.aet}"
host = "127.0.0.1"
port = {archive.port}
[[rules]]
name = "everything-to-the-archive"
level = "instance"
when = {{ attribute = "Modality", equals = "CT" }}
forward = ["archive"]
"""


def index_rows(data_dir: Path) -> int | None:
    if not (data_dir / "index.sqlite3").exists():
        return None
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM instances WHERE study_instance_uid = ?", (STUDY,)).fetchone()[0])


def events(data_dir: Path, name: str) -> list[dict[str, object]]:
    path = audit_path(data_dir)
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if r["event"] == name]


def test_a_delivered_study_is_deleted_while_the_node_runs_and_stored_again_when_sent_again(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    for n in range(COUNT):
        tiny_ct(STUDY, SERIES, f"{SERIES}.{n + 1}", index=n).save_as(folder / f"{n}.dcm", enforce_file_format=True)
    with StoreSCP(tmp_path / "archive") as archive, NodeProcess(tmp_path / "node", config(archive)) as node:
        spool = node.data_dir / "spool" / STUDY
        for round_ in (1, 2):
            storescu(folder, node.port, aec="PACSNODE")
            # Forwarded (the sends are done), then deleted: folder, rows and jobs gone; serve still running.
            wait_for(lambda: len(archive.files()) == COUNT or None, timeout=60, what="the forwards")
            wait_for(lambda n=round_: len(events(node.data_dir, "study-deleted")) == n or None, timeout=60)
            assert not spool.exists() and index_rows(node.data_dir) == 0
            assert node.proc is not None and node.proc.poll() is None, node.log()[-3000:]
            received = events(node.data_dir, "study-received")
            assert len(received) == round_ and received[-1]["instances"] == COUNT
            for file in archive.files():  # the second round must reach the archive again
                file.unlink()
        deleted = events(node.data_dir, "study-deleted")
        assert [(r["study"], r["reason"], r["instances"]) for r in deleted] == [(STUDY, "age", COUNT)] * 2
        with sqlite3.connect(node.data_dir / "jobs.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0  # done sends went with the study
        wait_for(
            lambda: json.loads((node.data_dir / "status.json").read_text())["retention"]["studies"] == 2 or None,
            timeout=15,
        )
        status = subprocess.run(
            [sys.executable, "-m", "node", "status", "--config", str(node.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "retention: last pass" in status.stdout and "2 studies" in status.stdout, status.stdout
        assert node.stop() == 0
    log = node.log()
    assert "study deleted by retention (age): 4 instances" in log
    assert STUDY not in "".join(line for line in log.splitlines() if " INFO " in line)
