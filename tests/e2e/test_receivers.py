"""Several receiver processes on one port (``[receive] processes``): the limits hold across all of them, a
receiver killed with ``kill -9`` loses nothing it acknowledged, and SIGTERM drains every one."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from node.dicom.status import Status
from tests.faults import established, listening, role_pids
from tests.helpers import tiny_ct
from tests.nodeproc import NodeProcess

pytestmark = [pytest.mark.slow]

PROCESSES = 3
LIMIT = 10
STUDY = "1.2.826.0.1.3680043.8.498.77"
SERIES = f"{STUDY}.1"

CONFIG = f"""
[receive]
processes = {PROCESSES}
[limits]
min_free_disk_mb = 0
max_associations = {LIMIT}
drain_timeout_s = 20
[completion]
quiet_seconds = 60
[workers]
count = 0
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
[[peers]]
name = "cart"
ae_title = "CARTSCU"
allow_store = true
max_associations = 1
"""


def receivers(serve_pid: int) -> list[int]:
    """The ``pacs-node receiver`` children of serve."""
    return role_pids(serve_pid, "receiver")


def established_by_pid(pids: list[int], port: int) -> dict[int, int]:
    return {pid: established(pid, port) for pid in pids}


def associate(port: int, calling: str = "STORESCU") -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="PACSNODE")


def rejection(assoc: Association) -> tuple[int, int, int]:
    assert assoc.is_rejected, "expected an A-ASSOCIATE-RJ"
    rj = assoc.acceptor.primitive
    return (rj.result, rj.result_source, rj.diagnostic)


def indexed(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "index.sqlite3") as db:
        return {str(r[0]) for r in db.execute("SELECT sop_instance_uid FROM instances")}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    n = NodeProcess(tmp_path / "node", CONFIG)
    n.start()
    assert n.proc is not None
    deadline = time.monotonic() + 30
    while listening(n.port) < PROCESSES and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listening(n.port) == PROCESSES, "the receiver processes are not all listening"
    yield n
    n.stop()


def test_the_limits_hold_across_receiver_processes(node: NodeProcess) -> None:
    assert node.proc is not None
    serve = node.proc.pid
    children = receivers(serve)
    assert len(children) == PROCESSES - 1
    held = [associate(node.port) for _ in range(LIMIT)]
    try:
        assert all(a.is_established for a in held)
        spread = established_by_pid([serve, *children], node.port)
        assert sum(spread.values()) == LIMIT, spread
        assert sum(1 for n in spread.values() if n) >= 2, f"every association went to one process: {spread}"
        for _ in range(3):  # whichever process the kernel hands it to
            assert rejection(associate(node.port)) == (2, 3, 2)
        assert rejection(associate(node.port, "CARTSCU")) == (2, 3, 2)  # the node is full for it too
    finally:
        for a in held:
            a.release()
    time.sleep(0.5)
    first = associate(node.port, "CARTSCU")
    try:
        assert first.is_established
        for _ in range(4):  # its own limit of 1, on every process
            assert rejection(associate(node.port, "CARTSCU")) == (2, 3, 2)
        other = associate(node.port)
        assert other.is_established
        other.release()
    finally:
        first.release()
    again = associate(node.port, "CARTSCU")
    assert again.is_established
    again.release()


def test_a_killed_receiver_loses_nothing_and_is_replaced(node: NodeProcess) -> None:
    assert node.proc is not None
    serve = node.proc.pid
    stored: list[str] = []
    # Associations until one is served by a receiver child; store through it, then kill that child.
    for attempt in range(30):
        assoc = associate(node.port)
        assert assoc.is_established
        owner = [pid for pid, n in established_by_pid(receivers(serve), node.port).items() if n]
        if not owner:
            assoc.release()
            continue
        for k in range(5):
            sop = f"{SERIES}.{attempt + 1}{k}"
            assert int(assoc.send_c_store(tiny_ct(STUDY, SERIES, sop, index=k)).Status) == Status.SUCCESS
            stored.append(sop)
        os.kill(owner[0], signal.SIGKILL)
        assoc.abort()
        break
    assert stored, "no association reached a receiver child"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(receivers(serve)) < PROCESSES - 1 or owner[0] in receivers(serve)):
        time.sleep(0.2)
    assert len(receivers(serve)) == PROCESSES - 1, "serve did not start a new receiver"
    while listening(node.port) < PROCESSES and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listening(node.port) == PROCESSES, "the new receiver does not listen"
    assert set(stored) <= indexed(node.data_dir)
    assert "journalled instances written again" in node.log()


def test_sigterm_drains_every_receiver(node: NodeProcess) -> None:
    assert node.proc is not None
    serve = node.proc.pid
    children = receivers(serve)
    held = [associate(node.port) for _ in range(6)]
    assert all(a.is_established for a in held)
    spread = established_by_pid([serve, *children], node.port)
    assert sum(1 for n in spread.values() if n) >= 2, spread
    node.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    sops = []
    for k, assoc in enumerate(held):  # every open association, on whichever process, may still store
        sop = f"{SERIES}.9{k}"
        assert int(assoc.send_c_store(tiny_ct(STUDY, SERIES, sop, index=k)).Status) == Status.SUCCESS
        sops.append(sop)
        assoc.release()
    assert node.proc.wait(timeout=30) == 0
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a receiver outlived serve"
    assert set(sops) <= indexed(node.data_dir)
    assert not list((node.data_dir / "journal").glob("**/*.jnl")), "a journal segment was left after the drain"
