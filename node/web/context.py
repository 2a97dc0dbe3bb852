"""What the web process holds open: the config, the stores (read side), the feedback store, the audit
trail, the model cards and a short-lived cache of expensive figures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from node.analyse.card import ModelCard, find_card
from node.audit import AuditTrail, audit_path
from node.config import NodeConfig
from node.errors import NodeError
from node.jobs import JobStore
from node.routing.log import RoutingLog
from node.store.browse import IndexReader
from node.web.auth import Auth
from node.web.feedback import FeedbackStore
from node.web.triage import FindingsCache

T = TypeVar("T")


class TTLCache:
    """Values kept for ``seconds`` (the overview's figures, the models page): a page may be a second old."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._values: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            found = self._values.get(key)
        if found is not None and found[0] > now:
            return found[1]  # type: ignore[no-any-return]
        value = make()
        with self._lock:
            self._values[key] = (now + self.seconds, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class WebContext:
    """Everything a request may need; built once per web process by :func:`node.web.app.create_app`."""

    def __init__(self, config: NodeConfig, auth: Auth, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.auth = auth
        self.clock = clock
        node = config.node
        self.data_dir = node.data_dir
        node.data_dir.mkdir(parents=True, exist_ok=True)
        self.jobs = JobStore(node.jobs_path)
        if not node.index_path.exists():
            from node.store import Index  # creates the file with its schema (serve does the same at start)

            Index(node.index_path).close()
        self.index = IndexReader(node.index_path)
        self.feedback = FeedbackStore(node.data_dir / "feedback.sqlite3", clock=clock)
        self.audit = AuditTrail(audit_path(node.data_dir), node.ae_title)
        self.findings = FindingsCache(node.outbox_dir)
        self.cache = TTLCache(config.web.cache_seconds)
        self._cards: dict[str, ModelCard | None] = {}
        self._routing: RoutingLog | None = None

    def close(self) -> None:
        self.jobs.close()
        self.index.close()
        self.feedback.close()
        if self._routing is not None:
            self._routing.close()

    def card(self, name: str) -> ModelCard | None:
        """The model card called ``name`` (not checksummed: the web shows it, the workers verify it)."""
        if name not in self._cards:
            try:
                self._cards[name] = find_card(name, self.config.analysis.models_dir, verify=False)
            except NodeError:
                self._cards[name] = None
        return self._cards[name]

    def routing(self) -> RoutingLog | None:
        """The routing log (rule decisions), once serve has made it."""
        path = self.data_dir / "routing.sqlite3"
        if self._routing is None and path.exists():
            self._routing = RoutingLog(path)
        return self._routing

    def end_quiet_period(self, study: str) -> None:
        """Through the index's own API: the study's quiet period is 0 s from now on (serve completes it)."""
        from node.store import Index

        index = Index(self.config.node.index_path)
        try:
            index.set_quiet_seconds(study, 0.0)
        finally:
            index.close()

    def spool_file(self, relative: str) -> Path:
        return self.config.node.spool_dir / relative

    def status(self) -> dict[str, Any] | None:
        """serve's ``status.json`` (associations, children alive), or ``None`` when absent or stale."""
        path = self.data_dir / "status.json"
        try:
            status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if self.clock() - float(status.get("updated", 0)) > 30:
            return None
        return status
