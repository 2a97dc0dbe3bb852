"""The sections of the config file but the rules: ``[node]``, ``[limits]``, ``[completion]``, ``[workers]``,
``[[peers]]``, ``[analysis]``, ``[sender]``, ``[duplicates]``, ``[retention]`` and ``[logging]``."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from node.config.base import (
    _PDU,
    AETitle,
    ConfigPath,
    Host,
    IPAddress,
    IPNetwork,
    Loc,
    ModelName,
    Port,
    Seconds,
    Slug,
    _between,
    _check,
    _is_ip,
    _network,
    _Section,
)
from node.config.deid import Deidentify
from node.config.tls import ListenerTLS, PeerTLSSetting
from node.paths import default_models_dir


class NodeSection(_Section):
    """``[node]``: who we are on the network and where our data lives."""

    ae_title: AETitle
    bind: IPAddress = "127.0.0.1"
    port: Port = 11112
    data_dir: ConfigPath
    tls: ListenerTLS | None = None  # [node.tls]: the listener speaks TLS only (node.config.tls)

    # Below data_dir: spool/ (received instances), index.sqlite3 (studies, series, instances), jobs.sqlite3
    # (the job store shared with the workers), outbox/ (waiting to be sent), logs/.
    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def jobs_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def results_dir(self, job_id: int) -> Path:
        """The outbox folder of analysis job ``job_id``'s results (``outbox/analyse-<id>/``).

        The worker writes there; retention removes it with the study. Send payloads name files below it
        (``node.jobs.kinds`` reads the job id back from such a path).
        """
        return self.outbox_dir / f"analyse-{job_id}"


class Limits(_Section):
    """``[limits]``: associations, timeouts, PDU size and the free-disk floor."""

    max_associations: Annotated[int, _between(1, 1000)] = 10
    acse_timeout_s: Seconds = 30.0
    dimse_timeout_s: Seconds = 60.0
    network_timeout_s: Seconds = 60.0
    max_pdu: Annotated[int, _check(lambda v: v == 0 or 4096 <= v < 2**32, _PDU)] = 0
    min_free_disk_mb: Annotated[int, _between(0, 2**40)] = 1024
    drain_timeout_s: Seconds = 30.0


def default_receivers() -> int:
    """One receiver process per core, at most 4 (more rarely helps: the disk's syncs are shared)."""
    return max(1, min(os.cpu_count() or 1, 4))


class Receive(_Section):
    """``[receive]``: how many processes accept associations on ``node.port`` (SO_REUSEPORT)."""

    processes: Annotated[int, _between(1, 64)] = Field(default_factory=default_receivers)


class Completion(_Section):
    """``[completion]``: when a study counts as complete, and what a late instance does."""

    _not_below = (("max_wait_seconds", "quiet_seconds"),)
    quiet_seconds: Seconds = 10.0
    max_wait_seconds: Seconds = 600.0
    late_instances: Literal["reanalyse", "ignore"] = "reanalyse"


class Workers(_Section):
    """``[workers]``: analysis worker processes and their job leases and retries."""

    _not_below = (("backoff_max_s", "backoff_initial_s"),)
    count: Annotated[int, _between(0, 64)] = 1
    threads: Annotated[int, _between(0, 256)] = 0
    lease_seconds: Seconds = 300.0
    max_attempts: Annotated[int, _between(1, 100)] = 5
    backoff_initial_s: Seconds = 30.0
    backoff_max_s: Seconds = 3600.0


class Peer(_Section):
    """``[[peers]]``: a DICOM node we send to (``host`` + ``port``), that may send to us (``allow_store``), or both."""

    name: Slug
    ae_title: AETitle
    host: Host | None = None
    port: Port | None = None
    allow_store: bool = False
    addresses: Annotated[tuple[Annotated[IPNetwork, BeforeValidator(_network)], ...], Field(strict=False)] = ()
    # Associations this peer may have open with us at once (its share of limits.max_associations).
    max_associations: Annotated[int, _between(1, 1000)] | None = None
    tls: PeerTLSSetting = None  # we send to it over TLS (node.config.tls)
    deidentify: Deidentify | None = None  # every send to it de-identified (node.config.deid)

    def _relations(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        if (self.host is None) != (self.port is None):
            key = "port" if self.port is None else "host"
            problems.append(((key,), "missing: give host and port to send to this peer, or neither"))
        for key in ("addresses", "max_associations"):
            if getattr(self, key) and not self.allow_store:
                problems.append(((key,), "only restricts a peer that may send to us: set allow_store = true"))
        if self.tls is not None and self.host is None and self.port is None:
            why = "only for sending to this peer: give host and port (the listener's TLS is [node.tls])"
            problems.append((("tls",), why))
        return problems

    @property
    def can_receive(self) -> bool:
        """We can send to this peer (it has a host and a port)."""
        return self.host is not None and self.port is not None

    def accepts_from(self, address: str) -> bool:
        """Whether this peer may send to us from ``address`` (any address when ``addresses`` is empty)."""
        if not self.allow_store or not self.addresses:
            return self.allow_store
        return _is_ip(address) and any(ipaddress.ip_address(address) in net for net in self.addresses)


class Analysis(_Section):
    """``[analysis]``: which models run and where their results go."""

    models: Annotated[tuple[ModelName, ...], Field(strict=False)] = ("lung-nodule-ct",)
    models_dir: ConfigPath = Field(default_factory=default_models_dir)
    send_results_to: Annotated[tuple[str, ...], Field(strict=False)] = ()

    def _relations(self) -> list[tuple[Loc, str]]:
        lists: dict[str, tuple[str, ...]] = {"models": self.models, "send_results_to": self.send_results_to}
        return [
            ((key,), f"'{twice}' is listed twice")
            for key, values in lists.items()
            for twice in sorted({v for v in values if values.count(v) > 1})
        ]


class Sender(_Section):
    """``[sender]``: retries of outbound C-STORE before a send is parked as failed."""

    _not_below = (("retry_max_s", "retry_initial_s"),)
    retry_initial_s: Seconds = 30.0
    retry_max_s: Seconds = 3600.0
    give_up_after_hours: Seconds = 24.0
    associations_per_peer: Annotated[int, _between(1, 16)] = 2


class Duplicates(_Section):
    """``[duplicates]``: what a second copy of a stored SOP Instance UID does."""

    policy: Literal["keep-first", "replace"] = "keep-first"


class Retention(_Section):
    """``[retention]``: when finished studies leave the spool (DESIGN §4.6, see :mod:`node.store.retention`)."""

    enabled: bool = True
    # Days after a study's last instance; 0 deletes a finished study at the first pass.
    keep_days: Annotated[float, _check(lambda v: v >= 0, "must be >= 0")] = 7.0
    # Free space (MB) retention restores by deleting finished studies oldest first; 0 = off. Checked
    # against limits.min_free_disk_mb in NodeConfig (a relation between two sections).
    free_disk_target_mb: Annotated[int, _between(0, 2**40)] = 0
    interval_s: Seconds = 300.0


class Logging(_Section):
    """``[logging]``."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
