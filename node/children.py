"""The child processes ``serve`` starts: more receivers, analysis workers, the sender, the web console.

Each runs until SIGTERM (or until serve, its parent, dies: :func:`node.processes.watch_parent`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from typing import TYPE_CHECKING

from node.app import analysis_job_store, prepare_data_dir
from node.audit import AuditTrail, audit_path
from node.bell import ROUTER, SENDER, Bell
from node.config import NodeConfig
from node.processes import stop_on_signals, watch_parent
from node.receive.handlers import StoreHandler
from node.receive.processes import PORT_ENV, journal_dir_of, slots_path
from node.receive.server import Receiver
from node.receive.slots import SharedSlots
from node.store import DiskGuard, Index, Spool
from node.store.durability import Checkpointer
from node.store.journal import Journal

if TYPE_CHECKING:
    from node.analyse.runtime import Model

log = logging.getLogger(__name__)


# The worker's imports (ONNX Runtime, OpenCV, highdicom) load inside these functions: the serve process
# never runs a model, and importing them would cost it about 70 MB of resident memory.


def load_models(config: NodeConfig) -> dict[str, Model]:
    """Load (and checksum) every model the rules use, with ``workers.threads`` threads each."""
    from node.analyse.card import find_card
    from node.analyse.runtime import Model

    models: dict[str, Model] = {}
    for name in config.models_in_use():
        card = find_card(name, config.analysis.models_dir)
        models[name] = Model(card, threads=config.workers.threads)
    return models


def run_sender(config: NodeConfig, parent: int | None = None) -> None:
    """``pacs-node sender``: the sender and notifier threads until SIGTERM (claimed sends not started are
    released)."""
    from node.notify import Notifier
    from node.send import Sender, sender_job_store

    prepare_data_dir(config)
    stop = threading.Event()
    stop_on_signals(stop)
    watch_parent(stop, parent)
    jobs = sender_job_store(config)
    try:
        audit = AuditTrail(audit_path(config.node.data_dir), config.node.ae_title)
        sender = Sender(config, jobs, stop, audit=audit)
        notifier = Notifier(config, jobs, stop, audit=audit)  # [[notify]]: same process, same retry settings
        bell = Bell(config.node.data_dir, SENDER)  # serve rings it after new send jobs
        bell.listen(sender.wake, stop)
        sender.start()
        notifier.start()
        stop.wait()
        sender.wake.set()  # threads waiting for work see the stop at once
        sender.join(config.limits.drain_timeout_s)
        notifier.join(config.limits.drain_timeout_s)
        bell.close()
    finally:
        jobs.close()


def run_web(config: NodeConfig, parent: int | None = None) -> None:
    """``pacs-node web``: the web console until SIGTERM (or until serve, its parent, dies)."""
    from node.web.server import run_web as serve_web

    prepare_data_dir(config)
    stop = threading.Event()
    watch_parent(stop, parent)
    serve_web(config, stop)


def run_worker(config: NodeConfig, parent: int | None = None) -> None:
    """``pacs-node worker``: one analysis worker until SIGTERM (its job is released) or SIGINT."""
    from node.worker import Worker

    prepare_data_dir(config)
    stop = threading.Event()
    stop_on_signals(stop)
    watch_parent(stop, parent)
    models = load_models(config)
    if models:
        from node.worker.warm import tune_process, warm_up

        log.info("worker warmed up in %.1f s", warm_up(models.values()))
        tune_process()
    jobs = analysis_job_store(config)
    index = Index(config.node.index_path)
    try:
        jobs.requeue_expired()
        audit = AuditTrail(audit_path(config.node.data_dir), config.node.ae_title)
        Worker(config, jobs, index, models, stop, audit=audit).run()
    finally:
        jobs.close()
        index.close()


def run_receiver(config: NodeConfig, parent: int | None = None) -> None:
    """``pacs-node receiver``: one more receiver process on serve's port, until SIGTERM (then it drains)."""
    stop = threading.Event()
    stop_on_signals(stop)
    watch_parent(stop, parent)
    node = config.node
    port = int(os.environ.get(PORT_ENV, node.port))
    config = config.model_copy(update={"node": node.model_copy(update={"port": port})})
    spool = Spool(node.spool_dir)
    index = Index(node.index_path)
    journal = Journal(journal_dir_of(config, os.getpid()))
    checkpointer = Checkpointer(journal, tuple({node.spool_dir, node.index_path.parent}))
    bell = Bell(node.data_dir, ROUTER)
    handler = StoreHandler(
        spool,
        index,
        DiskGuard(node.data_dir, config.limits.min_free_disk_mb),
        keep_first=config.duplicates.policy == "keep-first",
        reanalyse_late=config.completion.late_instances == "reanalyse",
        on_stored=lambda *_: bell.ring(),
        journal=journal,
    )
    audit = AuditTrail(audit_path(node.data_dir), node.ae_title)
    receiver = Receiver(config, handler, audit, reuse_port=True, slots=SharedSlots(slots_path(config)))
    checkpointer.start()
    receiver.start()
    try:
        stop.wait()
        receiver.stop_listening()
        aborted = receiver.drain(config.limits.drain_timeout_s)
        receiver.stop()
        log.info("receiver stopped (%d associations aborted at the deadline)", aborted)
    finally:
        checkpointer.stop()  # every handler has returned: the journal ends empty
        bell.close()
        index.close()
        if not any(journal.directory.glob("*.jnl")):  # nothing left to replay: the spares go too
            shutil.rmtree(journal.directory, ignore_errors=True)
