"""kill -9 of serve, of its analysis worker and of its sender at random points of receive, spool-to-index,
analysis and send, cycle after cycle: nothing acknowledged is lost, every result reaches the PACS once.

The machinery and the invariants are in ``tests/faults.py``. The seed is printed (``pytest -s``) and can be
set with ``FAULT_SEED``; ``FAULT_CYCLES`` sets the number of cycles (at least 20 in CI). The tally is
printed and written to ``faults.json`` in the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread

from node.synth.phantom import make_phantom
from tests.faults import (
    KINDS,
    SCANNER_S,
    SEG,
    SR_3D,
    SUCCESS,
    FaultRun,
    alive,
    cmdline,
    counting_orthanc,
    fault_config,
    incomplete_studies,
    jobs,
    kill_tree,
    pacs_counts,
    role_pids,
    send_files,
)
from tests.nodeproc import NodeProcess
from tests.peers import StoreSCP

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_kill_9_at_random_points_loses_nothing_acknowledged_and_delivers_once(tmp_path: Path) -> None:
    seed = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(1_000_000))
    cycles = max(20, int(os.environ.get("FAULT_CYCLES", "20")))
    print(f"\nfault injection: seed {seed} (FAULT_SEED={seed} to repeat), {cycles} cycles")
    with FaultRun(tmp_path / "run", seed) as run:
        tally = run.run(cycles)
    tally.write(tmp_path / "faults.json")
    print(f"tally written to {tmp_path / 'faults.json'}")
    assert tally.cycles == cycles
    assert set(tally.kills) == {f"{point}/{target}" for point, target in KINDS}, tally.kills
    assert tally.acknowledged >= cycles * 10
    assert tally.lost == 0, tally.problems
    assert tally.duplicates == 0, tally.problems
    assert tally.problems == []


def test_a_study_cut_by_a_crash_is_not_analysed_before_the_scanner_can_send_the_rest(tmp_path: Path) -> None:
    """The node is down longer than the quiet period (systemd restarts it after RestartSec=5); the scanner
    sends the rest of the series 1.5 s after the node is back. The series must be analysed once, whole:
    the quiet period of a study whose association a crash cut must count from the restart, not from
    the last instance before the crash (else a partial series is analysed, and analysed again when the
    rest comes: two SEG + SR for one series; mercure#45)."""
    quiet = 3.0
    study = tmp_path / "ct"
    make_phantom(41, slices=24, rows=128, columns=128).write_dicom(study)
    files = sorted(study.iterdir())
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with counting_orthanc(tmp_path / "pacs") as pacs:
        node = NodeProcess(tmp_path / "node", fault_config(pacs, quiet_s=quiet))
        node.start()
        try:
            first = {}

            def crash_after_14(path: Path, status: int | None) -> None:
                if len(first) == 13 and node.proc is not None and node.proc.poll() is None:
                    kill_tree(node.proc.pid)
                first[path] = status

            first.update(send_files(files, node.port, on_status=crash_after_14, timeout=SCANNER_S))
            assert node.proc is not None
            node.proc.wait()
            acked = [p for p, s in first.items() if s == SUCCESS]
            assert 14 <= len(acked) < len(files)
            time.sleep(quiet + 1.0)  # the node is down longer than the quiet period
            node.start()
            time.sleep(quiet / 2)  # the scanner retries within a quiet period of the restart
            rest = [p for p in files if p not in acked]
            assert set(send_files(rest, node.port, timeout=SCANNER_S).values()) == {SUCCESS}
            deadline = time.monotonic() + 60
            while incomplete_studies(node.data_dir) or jobs(node.data_dir, "state IN ('queued', 'running')"):
                assert time.monotonic() < deadline, node.log()[-3000:]
                time.sleep(0.5)
            time.sleep(1.0)
            analyses = jobs(node.data_dir, "kind = 'analyse'")
            found, _ = pacs_counts(pacs, uid)
            results = Counter(cls for _, cls in found if cls in (SEG, SR_3D))
            counts = [json.loads(a["dedup_key"].rsplit("|", 1)[1]) for a in analyses]
            assert (counts, results) == ([len(files)], Counter({SEG: 1, SR_3D: 1})), (
                f"analysed {len(counts)} times, with {counts} instances of {len(files)}; at the PACS: {dict(results)}"
            )
        finally:
            node.kill()


@pytest.mark.parametrize("victim", ["sender", "serve"])
def test_sends_of_a_killed_sender_go_back_to_the_queue_without_waiting_out_their_lease(
    tmp_path: Path, victim: str
) -> None:
    """A send job claimed by a sender that was killed stays running under the dead process's lease, which
    is at least 60 s (2 * (acse + dimse) + network + 60; 300 s with the defaults) whatever the config: the
    forwards and results it held wait that long after a crash. Serve knows its sender died (it restarts
    it, and its own restart means the old sender is gone): its jobs must be queued again at once."""
    with StoreSCP(extra=("--sleep-during", "4")) as pacs:
        config = f"""
[limits]
min_free_disk_mb = 0
acse_timeout_s = 5
dimse_timeout_s = 10
network_timeout_s = 10
[workers]
count = 0
[sender]
retry_initial_s = 1
retry_max_s = 2
[[rules]]
name = "forward"
level = "instance"
forward = ["pacs"]
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
[[peers]]
name = "pacs"
ae_title = "STORESCP"
host = "127.0.0.1"
port = {pacs.port}
"""
        study = tmp_path / "ct"
        make_phantom(42, slices=3, rows=64, columns=64).write_dicom(study)
        node = NodeProcess(tmp_path / "node", config)
        node.start()
        try:
            assert set(send_files(sorted(study.iterdir()), node.port).values()) == {SUCCESS}
            deadline = time.monotonic() + 30
            while not (held := jobs(node.data_dir, "state = 'running'")):
                assert time.monotonic() < deadline, node.log()[-3000:]
                time.sleep(0.05)
            assert node.proc is not None
            if victim == "serve":
                kill_tree(node.proc.pid)
                node.proc.wait()
                node.start()
            else:
                for pid in role_pids(node.proc.pid, "sender"):
                    os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            stranded = {j["id"]: j["lease_owner"] for j in held}
            while True:
                still = [
                    j for j in jobs(node.data_dir, "state = 'running'") if stranded.get(j["id"]) == j["lease_owner"]
                ]
                if not still:
                    break
                waited = time.monotonic() - killed_at
                lease = still[0]["lease_expires"] - time.time()
                assert waited < 15, (
                    f"{len(still)} sends still held by the dead sender {waited:.0f} s after the kill; "
                    f"their lease ends in {lease:.0f} s"
                )
                time.sleep(0.5)
        finally:
            node.kill()


def test_the_worker_and_the_sender_do_not_outlive_a_killed_serve(tmp_path: Path) -> None:
    """kill -9 of serve alone (the OOM killer picks one process; no systemd unit around it to kill the
    rest, e.g. ``make run``): its worker and sender must not run on as orphans beside the next serve's
    (they keep their jobs, memory and model; draining the new serve does not stop them)."""
    config = """
[limits]
min_free_disk_mb = 0
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
    node = NodeProcess(tmp_path / "node", config)
    node.start()
    assert node.proc is not None
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(kids := role_pids(node.proc.pid, "worker") + role_pids(node.proc.pid, "sender")) < 2:
            assert time.monotonic() < deadline, node.log()[-3000:]
            time.sleep(0.1)
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
        deadline = time.monotonic() + 10
        while [pid for pid in kids if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.2)
        orphans = [" ".join(cmdline(pid)[3:5]) for pid in kids if alive(pid)]
        assert orphans == [], f"still running 10 s after serve was killed: {orphans}"
    finally:
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
