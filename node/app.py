"""Composition root: builds every stage of ``serve`` and ``worker`` from the config. Read this first.

``pacs-node serve`` (one process)::

    Receiver (own PS3.8 acceptor, node/dicom/ul.py; a thread per association)
        └─ StoreHandler ──▶ Journal (one group-committed sync) + Spool + Index    DESIGN §4.1
    ChildProcesses: [receive] processes - 1 × ``pacs-node receiver`` on the same port (SO_REUSEPORT),
        each the same receive path with its own journal (node.receive.processes)
    CompletionTimer (thread) ──▶ Router.study_complete ──▶ JobStore: "analyse" jobs
    ChildProcesses: N × ``pacs-node worker`` ──▶ results in outbox/ + "send:<peer>" jobs
    ChildProcesses: 1 × ``pacs-node sender`` (threads per peer) ──▶ C-STORE to the peers, retried with
        backoff, parked when dead; a thread per [[notify]] target ──▶ webhook / HL7 ORU^R01 (node.notify).
        Its own process: sending costs about as much CPU as receiving, and in one Python process both
        would share one core (measured: forwarding halved the receive rate).
    Retention (thread): finished studies deleted after ``retention.keep_days`` or under disk pressure,
        never one with unfinished jobs (node.store.retention)
    Maintenance (thread): expired leases back to the queue, status.json for ``pacs-node status``

The job store (``jobs.sqlite3``) is the only channel between the processes. SIGTERM drains: stop
listening, give open associations ``limits.drain_timeout_s`` to finish, stop the workers (each releases
its job), let the senders finish the instance in flight; a restart resumes from the rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from node.audit import AuditTrail, audit_path
from node.bell import ROUTER, SENDER, Bell
from node.config import NodeConfig
from node.errors import NodeError
from node.jobs import JobStore
from node.jobs.kinds import NOTIFY_KIND_PREFIX
from node.jobs.sends import SEND_KIND_PREFIX
from node.metrics import prepare as prepare_metrics
from node.processes import ChildProcesses, owner_gone, owner_pid
from node.receive import Receiver, StoreHandler
from node.receive.processes import PORT_ENV, replay_orphans, settle_journals, slots_path
from node.receive.slots import SharedSlots
from node.routing import Router
from node.routing.log import RoutingLog
from node.store import DiskGuard, Index, Spool, free_mb
from node.store.completion import CompletionTimer
from node.store.durability import Checkpointer, replay
from node.store.journal import JOURNAL_DIR, Journal
from node.store.retention import Retention
from node.web import ONE_TIME_ENV

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"  # read by pacs-node status (node.commands.jobs)


def analysis_job_store(config: NodeConfig) -> JobStore:
    """The job store with the workers' retry settings (the sender opens its own with its settings)."""
    w = config.workers
    return JobStore(
        config.node.jobs_path,
        max_attempts=w.max_attempts,
        backoff_initial=w.backoff_initial_s,
        backoff_max=w.backoff_max_s,
    )


def prepare_data_dir(config: NodeConfig) -> None:
    """Create the data folders; a clear error if the data dir cannot be used."""
    node = config.node
    try:
        for folder in (node.data_dir, node.spool_dir, node.outbox_dir, node.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NodeError(f"node.data_dir {node.data_dir}: cannot create its folders: {exc.strerror}") from None


class NodeService:
    """Everything ``serve`` runs, built from the config; :meth:`run` until ``stop`` is set, then drain."""

    def __init__(self, config: NodeConfig, config_path: Path, *, log_level: str = "INFO") -> None:
        self.config = config
        self.stop = threading.Event()
        prepare_data_dir(config)
        node = config.node
        prepare_metrics(node.data_dir)  # before any metric exists here or in a child (node.metrics)
        self.spool = Spool(node.spool_dir)
        self.spool.cleanup_temp()  # before any association: no write is in progress yet
        self.index = Index(node.index_path)
        # Instances acknowledged before a crash whose file or row was not yet synced: written again.
        journal_dir = node.data_dir / JOURNAL_DIR
        replay(journal_dir, self.spool, self.index)
        replay_orphans(config, self.spool, self.index)  # other receiver processes' journals (none runs yet)
        self.index.forget_associations()  # rows of a previous run's associations: none is open now
        self.journal = Journal(journal_dir)
        self.checkpointer = Checkpointer(self.journal, tuple({node.spool_dir, node.index_path.parent}))
        self.jobs = analysis_job_store(config)
        self.routing_log = RoutingLog(node.data_dir / "routing.sqlite3")
        self.audit = AuditTrail(audit_path(node.data_dir), node.ae_title)
        self.router = Router(config, self.index, self.jobs, self.routing_log, audit=self.audit)
        self._router_stop = threading.Event()
        self._router_thread = threading.Thread(
            target=self.router.run, args=(self._router_stop,), name="router", daemon=True
        )
        guard = DiskGuard(node.data_dir, config.limits.min_free_disk_mb)
        self.handler = StoreHandler(
            self.spool,
            self.index,
            guard,
            keep_first=config.duplicates.policy == "keep-first",
            reanalyse_late=config.completion.late_instances == "reanalyse",
            on_stored=lambda *_: self.router.wake.set(),  # the router thread reads the new row; nothing else here
            journal=self.journal,
        )
        shared = config.receive.processes > 1
        slots = None
        if shared:
            slots_path(config).unlink(missing_ok=True)
            slots = SharedSlots(slots_path(config))
        self.receiver = Receiver(config, self.handler, self.audit, reuse_port=shared, slots=slots)
        self.bell = Bell(node.data_dir, ROUTER)  # the other receivers' new rows wake the router
        self.sender_bell = Bell(node.data_dir, SENDER)
        self.router.on_jobs = self.sender_bell.ring  # new send jobs wake the sender process
        self.timer = CompletionTimer(self.index, config.completion, self.router.study_complete)
        self.retention = Retention(
            config,
            self.index,
            self.jobs,
            audit=self.audit,
            routed_up_to=self.routing_log.cursor,
            forget=self.router.forget,
            checkpoint=self._checkpoint_all,
        )

        def command(name: str) -> list[str]:
            return [
                sys.executable,
                "-m",
                "node",
                "--log-level",
                log_level,
                name,
                "--config",
                str(config_path),
                "--parent-pid",
                str(os.getpid()),
            ]

        self.workers = ChildProcesses("worker", command("worker"), config.workers.count, on_exit=self._take_back)
        self.sender = ChildProcesses("sender", command("sender"), 1, on_exit=self._take_back)
        self.receivers = ChildProcesses(
            "receiver",
            command("receiver"),
            config.receive.processes - 1,
            restart_delay_s=1.0,
            on_exit=self._replay_receiver,
        )
        # The web console (node.web); with no user configured, a one-time login token (printed at start).
        self.login_token = secrets.token_urlsafe(24) if config.web.enabled and not config.web.users else None
        web_env = {ONE_TIME_ENV: self.login_token} if self.login_token else None
        self.web = ChildProcesses("web", command("web"), int(config.web.enabled), env=web_env)
        self.started = time.time()
        self.config_sha256 = hashlib.sha256(config_path.read_bytes()).hexdigest() if config_path.exists() else ""

    def _attempts(self, kind: str) -> int:
        """Attempts before a job of ``kind`` is dead: the sender's for sends, the workers' for the rest."""
        if kind.startswith((SEND_KIND_PREFIX, NOTIFY_KIND_PREFIX)):  # notifications retry as sends do
            from node.send.sender import max_attempts_for  # the send stage loads in the sender process only

            sender = self.config.sender
            return max_attempts_for(sender.retry_initial_s, sender.retry_max_s, sender.give_up_after_hours)
        return self.config.workers.max_attempts

    def _take_back(self, pid: int) -> None:
        """A child died: its running jobs go back to the queue now, not when their leases expire."""
        try:
            self.jobs.requeue_owners(lambda owner: owner_pid(owner) == pid, self._attempts)
        except NodeError as exc:
            log.warning("cannot take back the jobs of pid %d (their leases will expire): %s", pid, exc)

    def _replay_receiver(self, pid: int) -> None:
        """A receiver process died: what it acknowledged and had not checkpointed is written again now."""
        try:
            count = replay_orphans(self.config, self.spool, self.index, [pid])
        except (NodeError, OSError) as exc:
            log.error("cannot replay the journal of receiver pid %d (replayed at the next start): %s", pid, exc)
            return
        log.warning("receiver pid %d exited; %d journalled instances written again", pid, count)

    def _checkpoint_all(self) -> bool:
        """Retention's checkpoint: this process's journal, then every receiver process's (``False``: not yet)."""
        since = time.time()
        self.checkpointer.checkpoint()
        return settle_journals(self.config, since)

    def run(self) -> None:
        """Start every stage, supervise until ``stop``, then drain."""
        expired = self.jobs.requeue_expired() + self.jobs.requeue_owners(owner_gone, self._attempts)
        if expired:
            log.info("%d jobs of a previous run taken back", expired)
        # Studies cut off by the stop or crash get a full quiet period: their senders can send the rest.
        self.index.restart_quiet_periods(time.time())
        self._recover_deletions()
        self._router_thread.start()
        self.checkpointer.start()
        self.bell.listen(self.router.wake, self._router_stop)
        self.receiver.start()
        self.receivers.env = {PORT_ENV: str(self.receiver.port)}
        self.receivers.start()
        self._record(
            "application-start",
            listening=f"{self.config.node.bind}:{self.receiver.port}",
            config_sha256=self.config_sha256,
            peers=[p.name for p in self.config.peers],
            rules=[r.name for r in self.config.effective_rules()],
        )
        self.timer.start()
        if self.config.retention.enabled:
            self.retention.start()
        self.sender.start()
        self.workers.start()
        self.web.start()
        self._announce_web()
        log.info("node ready: %s on %s:%d", self.config.node.ae_title, self.config.node.bind, self.receiver.port)
        last_maintenance = 0.0
        while not self.stop.wait(0.5):
            self.receivers.supervise()
            self.workers.supervise()
            self.sender.supervise()
            self.web.supervise()
            if time.monotonic() - last_maintenance >= 5.0:
                last_maintenance = time.monotonic()
                self._maintain()
        self.drain()

    def _announce_web(self) -> None:
        """Where the web console is; with no user configured, the one-time login URL (on stderr, as Jupyter)."""
        web = self.config.web
        if not web.enabled:
            return
        host = "127.0.0.1" if web.bind in ("0.0.0.0", "::") else web.bind
        base = f"{web.scheme}://{host}:{web.port}"
        log.info("web console at %s", base)
        if self.login_token:
            print(
                f"No [[web.users]] configured: log in to the web console once with\n    {base}/login?token="
                f"{self.login_token}\n(add users with 'pacs-node users hash'; see README, Web console and triage)",
                file=sys.stderr,
                flush=True,
            )

    def _recover_deletions(self) -> None:
        """Before the receiver listens: finish the study deletions a crash interrupted (even with retention off).

        An association bringing a study marked for deletion would wait for it; the marker's deletion is
        finished here, or, failing that, by the first retention pass.
        """
        try:
            finished = self.retention.recover()
        except (NodeError, OSError) as exc:
            log.error("cannot finish the study deletions a previous run interrupted (retried later): %s", exc)
            return
        if finished:
            log.info("%d study deletions of a previous run finished", finished)

    def _record(self, event: str, **fields: object) -> None:
        try:
            self.audit.record(event, "success", **fields)
        except OSError as exc:
            log.error("cannot write the audit trail %s: %s", self.audit.path, exc)

    def _maintain(self) -> None:
        try:
            self.jobs.requeue_expired()
            self.write_status()
        except (NodeError, OSError) as exc:
            log.warning("maintenance failed: %s", exc)

    def write_status(self) -> None:
        """``status.json`` in the data dir: what only this process knows (associations, workers)."""
        data_dir = self.config.node.data_dir
        status = {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "listening": f"{self.config.node.bind}:{self.receiver.port}",
            "associations": self.receiver.slots.count(),
            "workers_alive": self.workers.alive(),
            "sender_alive": self.sender.alive(),
            "web_alive": self.web.alive(),
            "workers_configured": self.workers.count,
            "free_mb": round(free_mb(data_dir), 1),
            "retention": self.retention.totals(),
        }
        temp = data_dir / f".{STATUS_FILE}.tmp"
        temp.write_text(json.dumps(status) + "\n", encoding="utf-8")
        os.replace(temp, data_dir / STATUS_FILE)

    def drain(self) -> None:
        """Stop in the order that loses nothing; one INFO line with the time each step took."""
        deadline = self.config.limits.drain_timeout_s
        steps: list[str] = []
        started = time.monotonic()

        def step(name: str) -> None:
            nonlocal started
            steps.append(f"{name} {time.monotonic() - started:.1f} s")
            started = time.monotonic()

        self.retention.stop(timeout=0)  # no new pass, nor a new study once the one in hand is deleted
        self.receivers.terminate()  # they stop listening and drain at the same time as this one
        self.receiver.stop_listening()
        aborted = self.receiver.drain(deadline)
        self.receivers.stop(deadline)
        step("associations")
        self._router_stop.set()
        self.router.wake.set()
        self._router_thread.join(timeout=deadline)
        self.timer.stop()
        self.retention.stop(deadline)
        self.workers.stop(deadline)
        step("workers")
        self.web.stop(deadline)
        self.stop.set()
        self.sender.stop(deadline)
        step("sender")
        self.receiver.stop()
        self.checkpointer.stop()  # every handler has returned: the journal ends empty
        self.bell.close()
        self.sender_bell.close()
        (self.config.node.data_dir / STATUS_FILE).unlink(missing_ok=True)
        self.jobs.close()
        self.index.close()
        self.routing_log.close()
        self._record("application-stop", aborted_associations=aborted)
        log.info("node stopped (%s; %d associations aborted at the deadline)", ", ".join(steps), aborted)
