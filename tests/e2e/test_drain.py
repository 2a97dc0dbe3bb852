"""SIGTERM drains ``serve``: no new associations, the open one finishes, a running analysis is given back."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from node.synth.phantom import make_phantom
from tests.helpers import tiny_ct
from tests.nodeproc import NodeProcess

pytestmark = [pytest.mark.slow]

CONFIG = """
[limits]
min_free_disk_mb = 0
drain_timeout_s = 20
[completion]
quiet_seconds = 0.5
[workers]
count = 1
threads = 1
[analysis]
models = ["lung-nodule-ct"]
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
"""


def jobs_rows(data_dir: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        return [tuple(r) for r in db.execute("SELECT kind, state, attempts FROM jobs ORDER BY id")]


def cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "node", *args, "--config", str(node.config_path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_sigterm_lets_the_open_association_finish_and_gives_the_running_job_back(tmp_path: Path) -> None:
    folder = tmp_path / "ct"
    make_phantom(2, slices=160, rows=512, columns=512).write_dicom(folder)
    node = NodeProcess(tmp_path / "node", CONFIG)
    node.start()
    try:
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        scanner = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
        assert scanner.is_established
        for path in sorted(folder.iterdir()):
            assert scanner.send_c_store(path).Status == 0
        scanner.release()
        deadline = time.monotonic() + 60
        while ("analyse", "running", 1) not in jobs_rows(node.data_dir):
            assert time.monotonic() < deadline, node.log()[-3000:]
            time.sleep(0.1)
        status = cli(node, "status")
        assert "serve: running" in status.stdout and "1 running" in status.stdout, status.stdout + status.stderr
        # Another study's association is open when SIGTERM comes.
        late = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
        assert late.is_established
        assert node.proc is not None
        node.proc.terminate()
        time.sleep(1.0)
        refused = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
        assert not refused.is_established  # the listener is closed
        study, series = "1.2.826.0.1.3680043.10.9", "1.2.826.0.1.3680043.10.9.1"
        assert late.send_c_store(tiny_ct(study, series, f"{series}.1")).Status == 0
        late.release()
        assert node.proc.wait(timeout=30) == 0
        ae.shutdown()
    finally:
        node.kill()
    # The analysis was given back (attempt not counted); the late instance is stored and indexed.
    assert jobs_rows(node.data_dir) == [("analyse", "queued", 0)]
    with sqlite3.connect(node.data_dir / "index.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 161
    assert "released" in node.log() and "node stopped" in node.log()
    listing = cli(node, "jobs", "list")
    assert "analyse" in listing.stdout and "queued" in listing.stdout, listing.stderr
    assert cli(node, "status").returncode == 1  # not running any more
