"""Prometheus metrics of every process of the node (receiver, router, sender, workers), shared through files.

serve calls :func:`prepare` before any metric exists: it wipes ``<data_dir>/metrics/`` and names it in
``PROMETHEUS_MULTIPROC_DIR``, which its children inherit, so prometheus-client's multiprocess mode writes
each process's values to a memory-mapped file there and the web process adds them up for ``/metrics``.
The metric objects are made on first use (:func:`metrics`), after :func:`prepare`: prometheus-client
chooses its value storage when it is first imported, and the command line imports the send stage early.

The receiver's hot path costs one cached lookup and one increment per instance, nothing more.
Gauges that describe the state of the stores (jobs per kind and state, disk free, feedback agreement)
are not kept here: the web process computes them at scrape time (:mod:`node.web.metrics`).
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "pacs_node_"

# Seconds: an analysis takes from about one second (a small series) to minutes (a large one on one core).
ANALYSIS_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def metrics_dir(data_dir: Path) -> Path:
    return data_dir / "metrics"


def prepare(data_dir: Path) -> Path:
    """serve, at start: an empty metrics folder named in the environment (for this process and its children)."""
    folder = metrics_dir(data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def rejection_reason(reason: str) -> str:
    """A rejection's reason in words (``node.receive``) as a label with few values."""
    if "max_associations" in reason:
        return "peer_limit" if "peer's" in reason else "max_associations"
    if "called AE title" in reason:
        return "called_ae_title"
    return "not_permitted"


@dataclass(frozen=True)
class Metrics:
    """The counters and histograms the stages update (names as Prometheus shows them)."""

    associations_accepted: Any
    associations_rejected: Any
    instances_received: Any
    received_bytes: Any
    cstore_responses: Any
    duplicates: Any
    studies_completed: Any
    analysis_seconds: Any
    inference_seconds: Any
    send_attempts: Any
    send_failures: Any


_MAKING = threading.Lock()


def metrics() -> Metrics:
    """This process's metric objects, made on first use (after serve's :func:`prepare`).

    Under a lock: the sender's threads (one per peer) may ask at the same moment, and a second set
    of metrics would clash with the first in the registry (DuplicateTimeseries).
    """
    with _MAKING:
        return _make()


@functools.cache
def _make() -> Metrics:
    from prometheus_client import Counter, Histogram

    p = PREFIX
    return Metrics(
        associations_accepted=Counter(f"{p}associations_accepted", "DICOM associations accepted"),
        associations_rejected=Counter(
            f"{p}associations_rejected", "DICOM associations rejected, by reason", ["reason"]
        ),
        instances_received=Counter(f"{p}instances_received", "Instances stored (new or duplicate) by C-STORE"),
        received_bytes=Counter(f"{p}received_bytes", "Bytes of the instances stored by C-STORE"),
        cstore_responses=Counter(f"{p}cstore_responses", "C-STORE responses we answered, by status", ["status"]),
        duplicates=Counter(f"{p}duplicates_received", "Instances received again (same SOP Instance UID)"),
        studies_completed=Counter(f"{p}studies_completed", "Studies declared complete"),
        analysis_seconds=Histogram(
            f"{p}analysis_seconds", "Duration of analyse jobs, per model", ["model"], buckets=ANALYSIS_BUCKETS
        ),
        inference_seconds=Histogram(
            f"{p}inference_seconds",
            "ONNX Runtime time within an analyse job, per model",
            ["model"],
            buckets=ANALYSIS_BUCKETS,
        ),
        send_attempts=Counter(f"{p}send_attempts", "C-STORE sends attempted, per peer", ["peer"]),
        send_failures=Counter(f"{p}send_failures", "C-STORE sends that failed, per peer", ["peer"]),
    )
