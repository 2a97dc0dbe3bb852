"""The sender threads of ``serve``: send jobs from the job store to their peers, in batches.

Per peer that can receive (host and port), ``sender.associations_per_peer`` threads each loop until
``stop`` is set::

    claim up to `batch` ready jobs of kind send:<peer>   (nothing: wait, see below, or until stop)
    send their files over the thread's association       (node.send.scu.store_files; kept open for the
                                                          next batch, node.send.keepalive)
    settle each job as its answer arrives:
        SENT       complete                              (only on the peer's success or warning status)
        RETRY      fail(retry=True)                      (backoff from the job store, then claimable again)
        PARK       fail(retry=False)                     (dead: a person must act; the error says what)
        CANCELLED  release                               (stop came first: the attempt is given back)

A job is settled the moment its file's answer arrives, so a crash loses at most the answers of the
C-STORE in flight (those jobs come back when their lease expires: the peer may receive an instance twice,
never zero times). Taking back expired leases (``requeue_expired``) is the application's job.

Waiting for work: the router queues send jobs in the serve process, the sender runs in its own, and the
job store is the only channel of data between them. serve's router and the analysis workers ring the
sender's bell (:mod:`node.bell`) after new send jobs, and an idle thread looks at once; without a ring (a
retry's backoff ending, a bell that could not be rung) it looks every ``poll_s`` (:data:`POLL_S`).
Claiming a batch is one transaction, its done marks are committed without a sync
(``JobStore.complete(durable=False)``: power loss can only make the peer receive an instance again).
The association is released after :data:`~node.send.keepalive.IDLE_RELEASE_S` without a batch, when the
thread stops, or when a batch needs contexts it did not negotiate. A kill -9 between batches leaves no
job claimed: only the connection is cut, which the peer treats as an abort.

Leases and heartbeats: a claimed job's lease is :func:`lease_seconds`. The longest time between two
answers of one batch is a stalled C-STORE (DIMSE timeout), a new connection and negotiation (ACSE timeout
each) and the next C-STORE (DIMSE timeout, network time), which the lease covers; whenever a quarter of the
lease has passed, the jobs still waiting in the batch get a heartbeat at the next answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node import logs
from node.audit import AuditTrail
from node.config import Limits, NodeConfig, Peer
from node.config import Sender as SenderSection
from node.jobs import Job, JobError, JobState, JobStore, LeaseLostError, delay
from node.jobs.sends import send_kind
from node.metrics import metrics
from node.send import keepalive
from node.send.destination import Destination
from node.send.keepalive import HeldAssociation
from node.send.scu import FileOutcome, ScuSettings, Verdict, store_files

__all__ = [
    "BATCH",
    "POLL_S",
    "Sender",
    "lease_seconds",
    "max_attempts_for",
    "sender_job_store",
]

log = logging.getLogger(__name__)

BATCH = 50  # jobs per association: enough to amortise the negotiation, small enough to share the peer
POLL_S = 0.2  # seconds between looks at an empty queue when no bell rings
# A sibling thread waiting this long for its association to be accepted is taken as a peer that serves one
# association at a time (DCMTK storescp without --fork): holders then release theirs after each batch, so
# the batch it has claimed is not held up until they go idle. Opening one takes a few ms elsewhere.
YIELD_AFTER_S = 0.05


def lease_seconds(limits: Limits) -> float:
    """Lease of a claimed send job: ``2 * (acse + dimse) + network + 60`` seconds (300 s with the defaults).

    It covers the longest wait between two answers of a batch (see the module docstring) with a minute
    to spare; heartbeats extend it as the batch goes on.
    """
    return 2 * (limits.acse_timeout_s + limits.dimse_timeout_s) + limits.network_timeout_s + 60.0


def max_attempts_for(retry_initial_s: float, retry_max_s: float, give_up_after_hours: float) -> int:
    """Attempts whose backoff delays add up to about ``give_up_after_hours``.

    After the n-th failed attempt the job store waits ``delay(n) = min(retry_max_s, retry_initial_s *
    2**(n - 1))`` (± jitter). A job that fails every time makes its last attempt N after waiting
    ``delay(1) + ... + delay(N - 1)``; N is the smallest count for which that sum reaches the give-up
    time, so retries go on for at least ``give_up_after_hours`` (plus the time the attempts themselves
    take), and less than one more delay beyond it. Defaults (30 s, 3600 s, 24 h): delays 30, 60, ...,
    1920 s (3810 s in 7 delays), then 23 of 3600 s reach 86 400 s: 30 delays, so 31 attempts.
    """
    if retry_initial_s <= 0 or retry_max_s < retry_initial_s or give_up_after_hours <= 0:
        raise ValueError("need 0 < retry_initial_s <= retry_max_s and give_up_after_hours > 0")
    goal = give_up_after_hours * 3600.0
    waited, attempts = 0.0, 1
    while waited < goal:
        waited += delay(attempts, retry_initial_s, retry_max_s)
        attempts += 1
    return attempts


def sender_job_store(config: NodeConfig, clock: Callable[[], float] = time.time) -> JobStore:
    """The job store at ``node.jobs_path`` with the sender's backoff and attempts (``[sender]``).

    Backoff and attempts belong to a :class:`JobStore` instance, so the serve process opens this one for
    its sender threads beside the store its other stages use; both are the same file.
    """
    section: SenderSection = config.sender
    config.node.jobs_path.parent.mkdir(parents=True, exist_ok=True)
    return JobStore(
        config.node.jobs_path,
        clock=clock,
        max_attempts=max_attempts_for(section.retry_initial_s, section.retry_max_s, section.give_up_after_hours),
        backoff_initial=section.retry_initial_s,
        backoff_max=section.retry_max_s,
    )


@dataclass
class _Batch:
    """The jobs of one claim, with the files they send and those not settled yet."""

    owner: str
    jobs: list[Job]
    files: list[Path] = field(default_factory=list)
    file_jobs: list[Job] = field(default_factory=list)
    unsettled: dict[int, Job] = field(default_factory=dict)
    heartbeat_at: float = 0.0


class Sender:
    """Sender threads for every peer that can receive; see the module docstring.

    Parameters
    ----------
    config
        Peers, limits (timeouts, PDU), ``[sender]`` (threads per peer), ``node.data_dir`` (job paths are
        relative to it).
    jobs
        The job store of the sends (:func:`sender_job_store`); shared by the threads.
    stop
        Set it to stop: no new C-STORE starts, the one in flight finishes, claimed jobs not yet sent are
        released; then :meth:`join`.
    clock
        Seconds; decides when heartbeats are due (tests inject one).
    batch, poll_s, stall_retries
        Jobs per claim, seconds between looks at an empty queue, new associations per batch after stalls.
    """

    def __init__(
        self,
        config: NodeConfig,
        jobs: JobStore,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
        *,
        batch: int = BATCH,
        poll_s: float = POLL_S,
        stall_retries: int = 2,
        audit: AuditTrail | None = None,
    ) -> None:
        if batch < 1 or poll_s <= 0:
            raise ValueError("batch must be 1 or more and poll_s positive")
        self.config = config
        self.jobs = jobs
        self.stop = stop
        self.batch = batch
        self.poll_s = poll_s
        self.lease = lease_seconds(config.limits)
        self.settings = ScuSettings.from_config(config, stall_retries=stall_retries)
        self._clock = clock
        self._data_dir = config.node.data_dir.resolve()
        self._threads: list[threading.Thread] = []
        self._held: dict[tuple[str, int], HeldAssociation] = {}
        self.audit = audit
        # Set when new send jobs are committed (serve's router rings the sender's bell: node.bell); the
        # threads then look at once instead of at their next poll.
        self.wake = threading.Event()

    @property
    def peers(self) -> list[Peer]:
        """The peers this sender serves: those with a host and a port."""
        return [peer for peer in self.config.peers if peer.can_receive]

    def start(self) -> None:
        """Start ``associations_per_peer`` threads per peer that can receive."""
        if self._threads:
            raise RuntimeError("the sender is already started")
        per_peer = self.config.sender.associations_per_peer
        for peer in self.peers:
            for n in range(per_peer):
                thread = threading.Thread(
                    target=self._loop, args=(peer, n), name=f"sender-{peer.name}-{n}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            log.info("sending to %s with %d associations", Destination.from_peer(peer), per_peer)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads to end (set ``stop`` first); ``True`` if all have ended within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def owner(self, peer: Peer, n: int) -> str:
        """Lease owner name of thread ``n`` of ``peer``."""
        return f"sender-{os.getpid()}-{peer.name}-{n}"

    def held(self, peer: Peer, n: int = 0) -> HeldAssociation:
        """The association thread ``n`` of ``peer`` keeps between batches."""
        key = (peer.name, n)
        if key not in self._held:
            self._held[key] = HeldAssociation(Destination.from_peer(peer), self.settings)
        return self._held[key]

    def _loop(self, peer: Peer, n: int) -> None:
        logs.peer_ae.set(peer.ae_title)
        held = self.held(peer, n)
        try:
            while not self.stop.is_set():
                try:
                    handled = self.run_once(peer, n, keep_open=True)
                except Exception:  # the loop boundary: log, keep running (run_once has settled its jobs)
                    log.exception("sender %s: unexpected error", self.owner(peer, n))
                    handled = 0
                if held.is_open and self._sibling_waits(peer, n):
                    held.release("another thread for this peer waits for an association")
                if not handled and not self.stop.is_set() and self.wake.wait(self._pause(held)):
                    self.wake.clear()
        finally:
            held.release("the sender is stopping" if self.stop.is_set() else "")

    def _sibling_waits(self, peer: Peer, n: int) -> bool:
        """Whether another thread of ``peer`` has waited :data:`YIELD_AFTER_S` or more for an association."""
        return any(
            held.waiting_for() >= YIELD_AFTER_S
            for (name, m), held in list(self._held.items())
            if name == peer.name and m != n
        )

    def _pause(self, held: HeldAssociation) -> float:
        """Seconds to wait before the next look at an empty queue; releases an association idle too long."""
        idle = held.idle_for()
        if not held.is_open:
            return self.poll_s
        limit = keepalive.IDLE_RELEASE_S  # read at each look: tests shorten it
        if idle >= limit:
            held.release(f"idle for {limit:g} s")
            return self.poll_s
        return max(0.001, min(self.poll_s, limit - idle))

    def run_once(self, peer: Peer, n: int = 0, *, keep_open: bool = False) -> int:
        """Claim up to ``batch`` ready jobs of ``peer``, send them, settle them; returns how many were claimed.

        With ``keep_open`` the association stays open for the next call (:meth:`held`; the caller
        releases it), else it is released before returning.
        """
        try:
            return self._run_once(peer, n)
        finally:
            if not keep_open:
                self.held(peer, n).release()

    def _run_once(self, peer: Peer, n: int) -> int:
        owner = self.owner(peer, n)
        claimed: list[Job] = []
        kind = send_kind(peer.name)
        if not self.stop.is_set():
            claimed = self.jobs.claim_many(kind, owner, self.lease, self.batch)  # one commit for the batch
        if not claimed:
            return 0
        batch = _Batch(owner, claimed, unsettled={job.id: job for job in claimed}, heartbeat_at=self._clock())
        try:
            self._send(peer, n, batch)
        except Exception as exc:  # the loop boundary: the claimed jobs must not stay running until their lease ends
            log.exception("sender %s: unexpected error; %d jobs queued for retry", owner, len(batch.unsettled))
            for job in list(batch.unsettled.values()):
                self._settle(batch, job, Verdict.RETRY, f"internal error in the sender: {type(exc).__name__}: {exc}")
        return len(claimed)

    def _file(self, job: Job) -> Path | str:
        """The job's file under ``data_dir``, or why the payload cannot name one."""
        rel = job.payload.get("path")
        if not isinstance(rel, str) or not rel:
            return f"send job {job.id} has no file path in its payload"
        path = (self._data_dir / rel).resolve()
        if not path.is_relative_to(self._data_dir):
            return f"send job {job.id}: path '{rel}' is outside the data folder {self._data_dir}"
        return path

    def _send(self, peer: Peer, n: int, batch: _Batch) -> None:
        for job in batch.jobs:
            path = self._file(job)
            if isinstance(path, str):
                self._settle(batch, job, Verdict.PARK, path)
            else:
                batch.files.append(path)
                batch.file_jobs.append(job)
        if not batch.files:
            return

        def on_result(outcome: FileOutcome) -> None:
            job = batch.file_jobs[outcome.index]
            self._settle(batch, job, outcome.verdict, outcome.reason)
            self._heartbeat(batch)

        held = self.held(peer, n)
        outcomes = store_files(
            held.destination, batch.files, self.settings, on_result=on_result, stop=self.stop, held=held
        )
        if self.audit is not None:
            sent = [batch.file_jobs[o.index] for o in outcomes if o.sent]
            studies = sorted(
                {str(j.payload["path"]).split("/")[1] for j in sent if str(j.payload["path"]).startswith("spool/")}
            )
            failed = sum(1 for o in outcomes if o.verdict in (Verdict.RETRY, Verdict.PARK))
            outcome = "success" if not failed else "serious failure"
            self._audit(
                "instances-sent",
                outcome,
                peer=peer.name,
                ae_title=peer.ae_title,
                host=peer.host,
                sent=len(sent),
                failed=failed,
                forwarded_studies=studies,
            )

    def _settle(self, batch: _Batch, job: Job, verdict: Verdict, reason: str) -> None:
        """Record a job's outcome in the store; a lost lease is logged (the job is another owner's now)."""
        if batch.unsettled.pop(job.id, None) is None:
            return
        if verdict is not Verdict.CANCELLED:
            peer = job.kind.removeprefix("send:")
            metrics().send_attempts.labels(peer).inc()
            if verdict is not Verdict.SENT:
                metrics().send_failures.labels(peer).inc()
        try:
            if verdict is Verdict.SENT:
                self.jobs.complete(job.id, batch.owner, durable=False)  # lost only to power loss: sent again
            elif verdict is Verdict.CANCELLED:
                self.jobs.release(job.id, batch.owner)
            else:
                state = self.jobs.fail(job.id, batch.owner, reason, retry=verdict is Verdict.RETRY)
                if state is JobState.DEAD:
                    self._audit("job-failed", "serious failure", job=job.id, kind=job.kind, reason=reason)
        except LeaseLostError:
            log.warning("job %d %s: lease lost before its outcome (%s) was recorded", job.id, job.kind, verdict)
        except JobError:  # the store failed (disk, lock): the job comes back when its lease expires
            log.error("job %d %s: outcome (%s) not recorded", job.id, job.kind, verdict, exc_info=True)

    def _audit(self, event: str, outcome: str, **fields: object) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(event, outcome, **fields)
        except OSError as exc:  # the send happened; a lost audit record is reported, not a reason to stop
            log.error("cannot write the audit trail %s: %s", self.audit.path, exc)

    def _heartbeat(self, batch: _Batch) -> None:
        now = self._clock()
        if now - batch.heartbeat_at < self.lease / 4 or not batch.unsettled:
            return
        batch.heartbeat_at = now
        for job in list(batch.unsettled.values()):
            try:
                held = self.jobs.heartbeat(job.id, batch.owner, self.lease)
            except JobError:
                log.warning("job %d %s: heartbeat failed", job.id, job.kind, exc_info=True)
                continue
            if not held:
                log.warning("job %d %s: lease lost during the batch (it will be sent again)", job.id, job.kind)
