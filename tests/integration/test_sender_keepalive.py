"""The sender keeps its association open across batches (node/send/keepalive.py), against DCMTK storescp.

storescp (``-v``) logs one "Association Acknowledged" per association and "Association Release" or
"Association Aborted" at its end; a byte-pumping proxy in front of it counts connections and can abort
the held association (an A-ABORT to the sender, then both connections closed) between batches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.jobs import JobState, JobStore
from node.send import keepalive
from node.send.requestor import Requestor
from node.send.sender import Sender, sender_job_store
from tests.integration.test_send_network import HOST, Clock, free_port, node_config, queue_cts

STORESCP = shutil.which("storescp")
pytestmark = pytest.mark.skipif(STORESCP is None, reason="DCMTK storescp is not installed")

ABORT_PDU = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0))


class StoreSCP:
    """DCMTK storescp on a free port, ``+xa -od DIR``, TCP_NODELAY=1, verbose log in a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "received"
        self.folder.mkdir(parents=True)
        self.log = folder / "storescp.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StoreSCP:
        assert STORESCP is not None
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [STORESCP, "-v", "+xa", "-od", str(self.folder), str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, TCP_NODELAY="1"),
            )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise AssertionError("storescp did not start listening")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)

    def count(self, line: str) -> int:
        return self.log.read_text(errors="replace").count(line)

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir())


class Proxy:
    """Forwards each connection to ``upstream``; counts them and can abort every open one."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0
        self._open: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self.upstream))
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._open.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def abort_all(self) -> None:
        """As a peer that aborts: an A-ABORT to the client, then both connections closed."""
        with self._lock:
            pairs, self._open = self._open, []
        for client, server in pairs:
            with contextlib.suppress(OSError):
                client.sendall(ABORT_PDU)
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.listener.close()
        self.abort_all()


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path / "scp") as peer:
        yield peer


@pytest.fixture
def proxy(scp: StoreSCP) -> Iterator[Proxy]:
    relay = Proxy(scp.port)
    yield relay
    relay.close()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.02)


def all_done(jobs: JobStore, ids: list[int]) -> bool:
    found = [jobs.get(i) for i in ids]
    return all(job is not None and job.state is JobState.DONE for job in found)


def expected_files(queued: list[tuple[int, str]]) -> list[str]:
    return sorted(f"CT.{sop}" for _, sop in queued)


def test_two_batches_in_a_row_use_one_association(tmp_path: Path, scp: StoreSCP) -> None:
    config = node_config(tmp_path, scp.port)
    peer = config.peer("pacs")
    with sender_job_store(config, clock=Clock()) as jobs:
        sender = Sender(config, jobs, threading.Event(), batch=3)
        first = queue_cts(config, jobs, 3)
        assert sender.run_once(peer, keep_open=True) == 3
        second = queue_cts(config, jobs, 2)
        assert sender.run_once(peer, keep_open=True) == 2
        assert sender.held(peer).opened == 1 and sender.held(peer).is_open
        assert all_done(jobs, [i for i, _ in first + second])
        assert scp.count("Association Acknowledged") == 1 and scp.count("Association Release") == 0
        sender.held(peer).release()
        wait_until(lambda: scp.count("Association Release") == 1, what="the release")
    assert scp.files() == expected_files(first + second)


def test_the_loop_releases_an_idle_association_and_opens_one_for_new_work(
    tmp_path: Path, scp: StoreSCP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keepalive, "IDLE_RELEASE_S", 0.4)
    config = node_config(tmp_path, scp.port)
    stop = threading.Event()
    with sender_job_store(config, clock=Clock()) as jobs:
        sender = Sender(config, jobs, stop, poll_s=0.05)
        sender.start()
        try:
            first = queue_cts(config, jobs, 3)
            wait_until(lambda: all_done(jobs, [i for i, _ in first]), what="the first sends")
            time.sleep(0.1)
            second = queue_cts(config, jobs, 2)  # within the idle time: the same association
            wait_until(lambda: all_done(jobs, [i for i, _ in second]), what="the second sends")
            assert scp.count("Association Acknowledged") == 1
            wait_until(lambda: scp.count("Association Release") == 1, timeout=3, what="the idle release")
            third = queue_cts(config, jobs, 1)
            wait_until(lambda: all_done(jobs, [i for i, _ in third]), what="the third send")
            assert scp.count("Association Acknowledged") == 2
        finally:
            stop.set()
            assert sender.join(5)
        # stop releases the held association (A-RELEASE, not an abort)
        wait_until(lambda: scp.count("Association Release") == 2, what="the release at stop")
        assert scp.count("Association Aborted") == 0
        assert jobs.counts() == {("send:pacs", JobState.DONE): 6}
    assert scp.files() == expected_files(first + second + third)


@pytest.mark.parametrize("seen_before_use", [True, False])
def test_a_peer_that_aborts_the_held_association_gets_the_next_batch_on_a_new_one(
    tmp_path: Path,
    scp: StoreSCP,
    proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    seen_before_use: bool,
) -> None:
    if not seen_before_use:  # the abort crosses the next batch: found out by its first C-STORE, not before
        monkeypatch.setattr(Requestor, "usable", lambda self: self.is_open)
    config = node_config(tmp_path, proxy.port)
    peer = config.peer("pacs")
    with sender_job_store(config, clock=Clock()) as jobs:
        # stall_retries=0: a held association the peer dropped while idle is not a stall of the next batch
        sender = Sender(config, jobs, threading.Event(), stall_retries=0)
        first = queue_cts(config, jobs, 2)
        assert sender.run_once(peer, keep_open=True) == 2
        proxy.abort_all()
        time.sleep(0.1)
        second = queue_cts(config, jobs, 3)
        with caplog.at_level(logging.WARNING, logger="node.send.scu"):
            assert sender.run_once(peer, keep_open=True) == 3
        resent = [r for r in caplog.records if "resending 3 instances without an answer" in r.getMessage()]
        assert len(resent) == (0 if seen_before_use else 1)
        ids = [i for i, _ in first + second]
        assert all_done(jobs, ids), [(j.state, j.last_error) for j in map(jobs.get, ids) if j is not None]
        assert all(job is not None and job.attempts == 1 for job in map(jobs.get, ids))  # no retry
        assert proxy.connections == 2 and sender.held(peer).opened == 2
        sender.held(peer).release()
        wait_until(lambda: scp.count("Association Release") == 1, what="the release")
    assert scp.files() == expected_files(first + second)  # nothing lost, nothing twice


def test_a_batch_needing_other_contexts_gets_a_new_association(tmp_path: Path, scp: StoreSCP) -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from node.send import enqueue_send

    config = node_config(tmp_path, scp.port)
    peer = config.peer("pacs")
    mr = Path(str(get_testdata_file("MR_small.dcm", download=False)))
    spool = config.node.spool_dir / "mr"
    spool.mkdir(parents=True)
    shutil.copy(mr, spool / "mr.dcm")
    ds = dcmread(mr, stop_before_pixels=True)
    with sender_job_store(config, clock=Clock()) as jobs:
        sender = Sender(config, jobs, threading.Event())
        first = queue_cts(config, jobs, 1)
        assert sender.run_once(peer, keep_open=True) == 1
        enqueue_send(jobs, "pacs", "spool/mr/mr.dcm", str(ds.SOPInstanceUID), str(ds.SOPClassUID))
        assert sender.run_once(peer, keep_open=True) == 1  # MR: not negotiated on the held association
        assert sender.held(peer).opened == 2
        sender.held(peer).release()
        wait_until(lambda: scp.count("Association Release") == 2, what="both releases")
        assert scp.count("Association Acknowledged") == 2
    assert len(scp.files()) == len(first) + 1


def test_a_held_association_yields_to_a_sibling_thread_when_the_peer_serves_one_at_a_time(
    tmp_path: Path, scp: StoreSCP, monkeypatch: pytest.MonkeyPatch
) -> None:
    # storescp (no --fork) serves one association at a time: a second thread's request waits until the
    # first releases. Without yielding, its claimed jobs would wait for the (here 30 s) idle release.
    monkeypatch.setattr(keepalive, "IDLE_RELEASE_S", 30.0)
    config = node_config(tmp_path, scp.port, per_peer=2)
    stop = threading.Event()
    with sender_job_store(config, clock=Clock()) as jobs:
        sender = Sender(config, jobs, stop, batch=2, poll_s=0.05)
        queued: list[tuple[int, str]] = []
        sender.start()
        try:
            for _ in range(4):
                queued += queue_cts(config, jobs, 2)
                time.sleep(0.05)
            wait_until(lambda: all_done(jobs, [i for i, _ in queued]), timeout=8, what="every send")
        finally:
            stop.set()
            assert sender.join(5)
    assert scp.files() == expected_files(queued)
