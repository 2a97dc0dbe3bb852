"""The worker's job loop: claim an ``analyse`` job, keep its lease alive, finish it one way or another.

Per job::

    claim (lease) ── analyse_study ── enqueue a send per result file and peer, a notification per result
                                      and [[notify]] target (one transaction) ── complete
          │                 │
          │                 ├─ InputError (the study cannot be analysed) ──▶ fail, no retry (dead)
          │                 ├─ any other error ─────────────────────────────▶ fail, retry after backoff
          │                 └─ stop requested (SIGTERM) ────────────────────▶ release (attempt given back)
          └─ heartbeat thread: extends the lease every lease/3 s; a lost lease stops the job

Sends are enqueued before the job completes: a crash in between reruns the job, which reuses the
manifest and enqueues the same sends, found again by their dedup keys.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from node import logs
from node.analyse.buffer import VoxelBuffer
from node.analyse.runtime import Model
from node.audit import AuditTrail
from node.bell import SENDER, Bell
from node.config import NodeConfig
from node.errors import InputError, NodeError
from node.jobs import Job, JobState, JobStore, LeaseLostError
from node.jobs.kinds import ANALYSE
from node.jobs.sends import send_job
from node.metrics import metrics
from node.notify.jobs import notify_jobs
from node.store import Index
from node.worker.study import analyse_study

log = logging.getLogger(__name__)


class StopWorkError(Exception):
    """Raised inside an analysis when the worker must stop or has lost its lease."""


class Worker:
    """Runs ``analyse`` jobs until ``stop`` is set.

    Parameters
    ----------
    config
        Paths, lease and result destinations.
    jobs, index
        This process's job store and index connections.
    models
        Loaded models by name (every model the rules use); a job naming another fails without retry.
    stop
        Set by the SIGTERM handler; checked between inference batches.
    """

    def __init__(
        self,
        config: NodeConfig,
        jobs: JobStore,
        index: Index,
        models: Mapping[str, Model],
        stop: threading.Event,
        *,
        poll_s: float = 0.5,
        audit: AuditTrail | None = None,
    ) -> None:
        self.audit = audit
        self.config = config
        self.jobs = jobs
        self.index = index
        self.models = dict(models)
        self.stop = stop
        self.poll_s = poll_s
        self.owner = f"worker-{socket.gethostname()}-{os.getpid()}"
        self._lost = threading.Event()
        # One block for the volumes of every job: fresh memory of that size costs page faults each time.
        self.voxels = VoxelBuffer()
        self._sender_bell = Bell(config.node.data_dir, SENDER)

    def run(self) -> None:
        """Claim and run jobs until stopped."""
        log.info("worker %s ready (models: %s)", self.owner, ", ".join(self.models) or "none")
        while not self.stop.is_set():
            if not self.run_once():
                self.stop.wait(self.poll_s)
        log.info("worker %s stopped", self.owner)

    def run_once(self) -> bool:
        """Run one job if one is ready; return whether there was one."""
        job = self.jobs.claim(ANALYSE, self.owner, self.config.workers.lease_seconds)
        if job is None:
            return False
        token = logs.job_id.set(str(job.id))
        try:
            self._run(job)
        finally:
            logs.job_id.reset(token)
        return True

    def _check(self, done: int, total: int) -> None:
        if self.stop.is_set() or self._lost.is_set():
            raise StopWorkError

    def _heartbeat(self, job: Job, finished: threading.Event) -> None:
        lease = self.config.workers.lease_seconds
        while not finished.wait(lease / 3):
            try:
                if not self.jobs.heartbeat(job.id, self.owner, lease):
                    log.warning("lease of job %d lost: stopping its work", job.id)
                    self._lost.set()
                    return
            except NodeError as exc:
                log.warning("heartbeat of job %d failed: %s", job.id, exc)

    def _run(self, job: Job) -> None:
        self._lost.clear()
        finished = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, finished), name=f"heartbeat-{job.id}", daemon=True)
        beat.start()
        try:
            self._settle(job, self._work)
        finally:
            finished.set()
            beat.join()

    def _work(self, job: Job) -> None:
        name = str(job.payload.get("model", ""))
        model = self.models.get(name)
        if model is None:
            raise InputError(f"model '{name}' is not loaded by this worker (it loads: {', '.join(self.models)})")
        data_dir = self.config.node.data_dir
        folder = self.config.node.results_dir(job.id)
        series = job.payload.get("series")
        started, inferred = time.monotonic(), model.timings["inference"]
        manifest = analyse_study(
            str(job.payload["study"]),
            model,
            self.index,
            self.config.node.spool_dir,
            data_dir,
            folder,
            self._check,
            series_uid=str(series) if series else None,
            buffer=self.voxels,
        )
        metrics().analysis_seconds.labels(name).observe(time.monotonic() - started)
        metrics().inference_seconds.labels(name).observe(model.timings["inference"] - inferred)
        # Jobs queued by the router name their destinations; older jobs use [analysis] send_results_to.
        peers = [str(p) for p in job.payload.get("results_to", self.config.analysis.send_results_to)]
        files = [(r.path, r.sop_instance_uid, r.sop_class_uid) for r in manifest.files]
        new = [send_job(peer, *file, job.priority) for file in files for peer in peers]
        # [[notify]] targets whose minimum priority a result reaches: in the same transaction as the sends.
        notices = notify_jobs(self.config.notify, data_dir, files, name, job.priority)
        self.jobs.enqueue_many(new + notices)
        if new:
            self._sender_bell.ring()  # the sender looks at once, not at its next poll
        log.info(
            "job %d: %d result files, sent to %s, %d notifications",
            job.id,
            len(manifest.files),
            ", ".join(peers) or "nobody",
            len(notices),
        )

    def _settle(self, job: Job, work: Callable[[Job], None]) -> None:
        """Run ``work`` and record its outcome in the job store (the worker loop's stage boundary)."""
        try:
            work(job)
        except StopWorkError:
            if self._lost.is_set():
                return  # another worker owns the job now; nothing to record
            self.jobs.release(job.id, self.owner)
            return
        except InputError as exc:
            self._record_failure(job, str(exc), retry=False)
            return
        except Exception as exc:  # a bug or an environment problem (disk, model file): retry with backoff
            log.exception("job %d failed", job.id)
            self._record_failure(job, f"{type(exc).__name__}: {exc}", retry=True)
            return
        try:
            self.jobs.complete(job.id, self.owner)
        except LeaseLostError:
            log.warning("job %d finished after its lease was taken back; the other attempt reuses its results", job.id)

    def _record_failure(self, job: Job, error: str, *, retry: bool) -> None:
        try:
            state = self.jobs.fail(job.id, self.owner, error, retry=retry)
        except LeaseLostError:
            log.warning("job %d failed after its lease was taken back", job.id)
            return
        if state is JobState.DEAD and self.audit is not None:
            try:
                self.audit.record("job-failed", "serious failure", job=job.id, kind=job.kind, reason=error[:500])
            except OSError as exc:
                log.error("cannot write the audit trail %s: %s", self.audit.path, exc)
