"""The PACS is down for a while when forwards and results are ready, then comes back: everything is
delivered once, the sender backs off (no tight loop: attempts, log lines and CPU bounded while it is down)
and the retries are visible in ``pacs-node status`` and ``pacs-node jobs list``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread

from node.synth.phantom import make_phantom
from tests.faults import (
    SEG,
    SR_3D,
    SUCCESS,
    counting_orthanc,
    cpu_seconds,
    fault_config,
    jobs,
    pacs_counts,
    role_pids,
    send_files,
    stores_seen,
)
from tests.nodeproc import NodeProcess

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CT = "1.2.840.10008.5.1.4.1.1.2"
OUTAGE_S = 20.0
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 4.0
_RETRY_LINE = re.compile(r"job (\d+) send:pacs -> queued \(attempt (\d+) failed, next in (\d+) s\)")


def cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "node", *args, "--config", str(node.config_path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def log_lines(node: NodeProcess) -> int:
    return node.log().count("\n")


def test_a_pacs_outage_is_waited_out_with_backoff_and_everything_is_delivered_once(tmp_path: Path) -> None:
    folder = tmp_path / "ct"
    make_phantom(51, slices=12, rows=128, columns=128).write_dicom(folder)
    files = sorted(folder.iterdir())
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with counting_orthanc(tmp_path / "pacs") as pacs:
        pacs.stop(graceful=False)
        config = fault_config(pacs, quiet_s=1.0, retry_initial_s=RETRY_INITIAL_S, retry_max_s=RETRY_MAX_S)
        with NodeProcess(tmp_path / "node", config) as node:
            assert set(send_files(files, node.port).values()) == {SUCCESS}
            # Ready: 12 forwards and the SEG + SR, each tried at least once.
            expected = len(files) + 2
            deadline = time.monotonic() + 60
            while len([j for j in jobs(node.data_dir, "kind = 'send:pacs' AND attempts >= 1")]) < expected:
                assert time.monotonic() < deadline, node.log()[-3000:]
                time.sleep(0.2)
            assert node.proc is not None
            (sender,) = role_pids(node.proc.pid, "sender")
            serve = node.proc.pid
            before = {j["id"]: j["attempts"] for j in jobs(node.data_dir, "kind = 'send:pacs'")}
            lines_before, cpu_serve, cpu_sender = log_lines(node), cpu_seconds(serve), cpu_seconds(sender)
            began = time.monotonic()
            time.sleep(OUTAGE_S)
            elapsed = time.monotonic() - began
            cpu_serve, cpu_sender = cpu_seconds(serve) - cpu_serve, cpu_seconds(sender) - cpu_sender
            after = {j["id"]: j["attempts"] for j in jobs(node.data_dir, "kind = 'send:pacs'")}
            lines = log_lines(node) - lines_before
            attempts = {job: after[job] - before[job] for job in before}
            status = cli(node, "status")
            # Every send, queued or running: a batch tried at that moment may hold any number of them.
            listed = cli(node, "jobs", "list", "--kind", "send:pacs")
            pacs.start()
            pacs.wait_for(lambda: len(pacs.find_instances(study)) >= expected or None, timeout=60)
            time.sleep(3.0)  # would anything come twice?
            log = node.log()
            assert node.stop() == 0
        found, per_uid = pacs_counts(pacs, study)
        seen = stores_seen(pacs)

    print(
        f"\noutage {elapsed:.1f} s: {sum(attempts.values())} send attempts for {len(attempts)} sends "
        f"({min(attempts.values())}-{max(attempts.values())} each), {lines} log lines, "
        f"CPU serve {cpu_serve:.2f} s ({100 * cpu_serve / elapsed:.1f} %), sender {cpu_sender:.2f} s "
        f"({100 * cpu_sender / elapsed:.1f} %)"
    )
    # Everything delivered, once: one instance per UID at the PACS, one C-STORE per UID received.
    assert Counter(cls for _, cls in found) == Counter({CT: len(files), SEG: 1, SR_3D: 1})
    assert set(per_uid.values()) == {1}
    assert {uid: n for uid, n in seen.items() if n != 1} == {}
    # Backoff: 1, 2, 4, 4, ... s (+-10 %): a send is tried at most every 3.6 s once the delay is capped.
    assert len(attempts) == expected
    assert all(3 <= n <= 2 + OUTAGE_S / (0.9 * RETRY_MAX_S) for n in attempts.values()), attempts
    for _, attempt, wait in (map(int, m.groups()) for m in _RETRY_LINE.finditer(log)):
        base = min(RETRY_MAX_S, RETRY_INITIAL_S * 2 ** (attempt - 1))
        assert 0.9 * base - 0.5 <= wait <= 1.1 * base + 0.5, (attempt, wait)
    # Quiet while it is down: log lines bounded by the attempts, and little CPU.
    assert lines <= 4 * sum(attempts.values()) + 20, lines
    assert cpu_serve / elapsed < 0.10, cpu_serve
    assert cpu_sender / elapsed < 0.10, cpu_sender
    # The retries can be seen: attempts above one and the last error, which names the peer.
    peer = f"ORTHANC@127.0.0.1:{pacs.dicom_port}"
    rows = [line.split(maxsplit=4) for line in listed.stdout.splitlines() if "send:pacs" in line]
    assert len(rows) == expected, listed.stdout + listed.stderr
    assert all(state in {"queued", "running"} for _, _, state, _, _ in rows), listed.stdout
    # A running job keeps its attempt count and last error while it is tried again.
    assert all(int(tries) > 1 and peer in rest for _, _, _, tries, rest in rows), listed.stdout
    assert "send:pacs" in status.stdout and peer in status.stdout, status.stdout
    assert re.search(r"attempt|retr", status.stdout), status.stdout
