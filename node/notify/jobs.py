"""The notification-job contract: kind ``notify:<target>``, its payload, and :func:`notify_jobs`.

One job per result (an analysed series: its folder ``outbox/analyse-<N>/<series>/`` holds the SEG, the SR
and ``findings.json``) and target. Payload ``{"target", "path", "result", "model"}``: ``path`` is the
result's ``findings.json`` relative to ``node.data_dir`` (so the job is filed under the analysis's study,
see :func:`node.jobs.kinds.study_of`), ``result`` the SR's SOP Instance UID. Idempotent per (result,
target): dedup key ``<target>|<result>`` with ``once``, so a rerun of the analysis job (which reuses its
results) never notifies twice, and the same key goes to the receiver (webhook ``Idempotency-Key``, HL7
MSH-10) so that it can drop a repeat the node could not avoid (a crash between delivery and commit).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from node.config.notify import NotifyTarget, notifies
from node.jobs.kinds import NOTIFY_KIND_PREFIX
from node.jobs.types import NewJob

__all__ = ["FINDINGS", "NOTIFY_KIND_PREFIX", "idempotency_key", "notify_jobs", "notify_kind"]

FINDINGS = "findings.json"  # written beside each series' SEG and SR by the worker (node.worker.study)
_SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # the Structured Report storage classes


def notify_kind(target: str) -> str:
    """The job kind of notifications to ``target`` (a ``[[notify]]`` name): ``notify:<target>``."""
    return f"{NOTIFY_KIND_PREFIX}{target}"


def idempotency_key(target: str, result: str) -> str:
    """The dedup key of a notification job, also sent to the receiver: ``<target>|<result>``."""
    return f"{target}|{result}"


def notify_jobs(
    targets: Sequence[NotifyTarget],
    data_dir: Path,
    files: Iterable[tuple[str, str, str]],
    model: str,
    priority: int = 0,
) -> list[NewJob]:
    """The notification jobs of an analysis's results, for :meth:`JobStore.enqueue_many` with their sends.

    Parameters
    ----------
    targets
        ``[[notify]]`` of the config.
    data_dir
        ``node.data_dir``; the result paths are relative to it.
    files
        ``(path, SOP Instance UID, SOP Class UID)`` of each result file (the analysis's manifest); files
        in one folder are one result, notified once per target whose ``min_priority`` its suggested
        priority (from the folder's ``findings.json``) reaches.
    model
        The model folder name the analysis ran (the document names the model by it when ``findings.json``
        does not).
    priority
        Job priority (the analysis's): higher is delivered first.

    Raises
    ------
    OSError, ValueError
        A result folder's ``findings.json`` cannot be read: the analysis job fails and is retried.
    """
    if not targets:
        return []
    by_folder: dict[PurePosixPath, list[tuple[str, str]]] = defaultdict(list)
    for path, sop, sop_class in files:
        by_folder[PurePosixPath(path).parent].append((sop, sop_class))
    jobs: list[NewJob] = []
    for folder, members in by_folder.items():
        findings_rel = str(folder / FINDINGS)
        with open(data_dir / findings_rel, encoding="utf-8") as source:
            suggested = json.load(source).get("priority")
        reports = [sop for sop, sop_class in members if sop_class.startswith(_SR_CLASS_PREFIX)]
        result = reports[0] if reports else members[0][0]
        for target in targets:
            if not notifies(target, suggested):
                continue
            payload = {"target": target.name, "path": findings_rel, "result": result, "model": model}
            key = idempotency_key(target.name, result)
            jobs.append(NewJob(notify_kind(target.name), payload, dedup_key=key, priority=priority, once=True))
    return jobs
