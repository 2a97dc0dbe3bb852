"""The notifier threads of the sender process: ``notify:<target>`` jobs delivered, retried, parked.

One thread per ``[[notify]]`` target loops until ``stop`` is set::

    claim the next ready job of kind notify:<target>      (nothing: wait `poll_s`, or until stop)
    read the result it names (findings.json, SEG/SR headers; node.notify.payload)
    deliver it: webhook POST or HL7 ORU^R01 over MLLP
    settle the job:
        DELIVERED   complete                 (a 2xx answer, an AA/CA ACK)
        RETRY       fail(retry=True)         (backoff from the job store, then claimable again)
        PARK        fail(retry=False)        (dead: `pacs-node jobs retry` once a person has fixed the cause)

The job row is committed before the worker acknowledges its analysis, and the notification is marked
done only after the receiver's acknowledgement: a crash in between sends it again with the same
idempotency key (at least once; the receiver can drop the repeat). The store's backoff and attempts are
the sender's (``[sender]``): the notifier shares the sender process's job store.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime

from node.audit import AuditTrail
from node.config import NodeConfig
from node.config.notify import NotifyTarget
from node.jobs import Job, JobError, JobState, JobStore, LeaseLostError
from node.notify.jobs import NOTIFY_KIND_PREFIX, idempotency_key, notify_kind
from node.notify.mllp import send_message
from node.notify.oru import control_id, oru_r01
from node.notify.outcome import Delivery, ResultUnreadableError, Verdict
from node.notify.payload import read_result
from node.notify.webhook import post

log = logging.getLogger(__name__)

POLL_S = 0.2  # seconds between looks at an empty queue


class Notifier:
    """Notifier threads, one per ``[[notify]]`` target; see the module docstring.

    Parameters
    ----------
    config
        ``[[notify]]``, ``node.data_dir`` (job paths are relative to it), the AE title (in the document).
    jobs
        The job store (the sender's: :func:`node.send.sender_job_store`); shared by the threads.
    stop
        Set it to stop: no new job is claimed; the delivery in flight finishes (it is bounded by the
        target's timeout); then :meth:`join`.
    now
        The HL7 message time (tests inject one).
    """

    def __init__(
        self,
        config: NodeConfig,
        jobs: JobStore,
        stop: threading.Event,
        *,
        poll_s: float = POLL_S,
        audit: AuditTrail | None = None,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        if poll_s <= 0:
            raise ValueError("poll_s must be positive")
        self.config = config
        self.jobs = jobs
        self.stop = stop
        self.poll_s = poll_s
        self.audit = audit
        self._now = now
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start one thread per target (none without ``[[notify]]``)."""
        if self._threads:
            raise RuntimeError("the notifier is already started")
        self._warn_unserved()
        for target in self.config.notify:
            thread = threading.Thread(target=self._loop, args=(target,), name=f"notify-{target.name}", daemon=True)
            self._threads.append(thread)
            thread.start()
            log.info("notifying %s (%s) of results from priority %s", target.name, target.kind, target.min_priority)

    def _warn_unserved(self) -> None:
        """Say so when notifications wait for a target the config no longer has: nothing would deliver them."""
        served = {notify_kind(target.name) for target in self.config.notify}
        try:
            counts = self.jobs.counts()
        except JobError as exc:
            log.warning("cannot count the waiting notifications: %s", exc)
            return
        waiting: dict[str, int] = {}
        for (kind, state), count in counts.items():
            if kind.startswith(NOTIFY_KIND_PREFIX) and kind not in served and state.live:
                waiting[kind] = waiting.get(kind, 0) + count
        for kind, count in sorted(waiting.items()):
            log.warning(
                "%d notifications wait for notify target '%s', which the config no longer has: they stay queued "
                "until it is configured again ('pacs-node jobs' lists them)",
                count,
                kind.removeprefix(NOTIFY_KIND_PREFIX),
            )

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads to end (set ``stop`` first); ``True`` if all have ended within ``timeout``."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def owner(self, target: NotifyTarget) -> str:
        """Lease owner name; ``sender-<pid>-...`` so that serve takes the jobs back if this process dies."""
        return f"sender-{os.getpid()}-notify-{target.name}"

    @staticmethod
    def lease_seconds(target: NotifyTarget) -> float:
        """A claimed job's lease: connecting and waiting for the answer (a timeout each), and a minute."""
        return 2 * target.timeout_s + 60.0

    def _loop(self, target: NotifyTarget) -> None:
        while not self.stop.is_set():
            try:
                handled = self.run_once(target)
            except Exception:  # the loop boundary: log, keep running (run_once settles what it claimed)
                log.exception("notifier %s: unexpected error", target.name)
                handled = False
            if not handled:
                self.stop.wait(self.poll_s)

    def run_once(self, target: NotifyTarget) -> bool:
        """Claim, deliver and settle one ready job of ``target``; return whether there was one."""
        owner = self.owner(target)
        job = self.jobs.claim(notify_kind(target.name), owner, self.lease_seconds(target))
        if job is None:
            return False
        try:
            delivery = self.deliver(target, job)
        except Exception as exc:  # a bug must not leave the job running until its lease ends
            log.exception("notifier %s: job %d failed unexpectedly", target.name, job.id)
            delivery = Delivery(Verdict.RETRY, f"internal error in the notifier: {type(exc).__name__}: {exc}")
        self._settle(target, job, owner, delivery)
        return True

    def deliver(self, target: NotifyTarget, job: Job) -> Delivery:
        """One try of ``job`` to ``target``; never raises for the receiver's or the network's problems."""
        try:
            result = read_result(self.config.node.data_dir, job.payload, self.config.node.ae_title)
        except ResultUnreadableError as exc:
            return Delivery(Verdict.PARK, str(exc))
        key = idempotency_key(target.name, str(job.payload["result"]))
        if target.kind == "webhook":
            return post(target, result.body(), key)
        message = oru_r01(result, target, self._now())
        return send_message(str(target.host), int(target.port or 0), message, control_id(key), target.timeout_s)

    def _settle(self, target: NotifyTarget, job: Job, owner: str, delivery: Delivery) -> None:
        try:
            if delivery.verdict is Verdict.DELIVERED:
                self.jobs.complete(job.id, owner)
                log.info("job %d: result notified to %s (%s)", job.id, target.name, target.kind)
                return
            # The reason may quote the receiver's answer: DEBUG; it is in the job row for people to read.
            log.debug("job %d: notification to %s not delivered: %s", job.id, target.name, delivery.reason)
            state = self.jobs.fail(job.id, owner, delivery.reason, retry=delivery.verdict is Verdict.RETRY)
        except LeaseLostError:
            log.warning(
                "job %d %s: lease lost before its outcome (%s) was recorded", job.id, job.kind, delivery.verdict
            )
            return
        except JobError:  # the store failed (disk, lock): the job comes back when its lease expires
            log.error("job %d %s: outcome (%s) not recorded", job.id, job.kind, delivery.verdict, exc_info=True)
            return
        if state is JobState.DEAD and self.audit is not None:
            try:
                self.audit.record("job-failed", "serious failure", job=job.id, kind=job.kind, reason=delivery.reason)
            except OSError as exc:
                log.error("cannot write the audit trail %s: %s", self.audit.path, exc)
