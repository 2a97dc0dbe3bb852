"""The triage worklist: studies with the findings of their analyses, ordered by suggested priority, then arrival.

Findings come from the results the workers wrote (``outbox/analyse-N/<series>/findings.json``, see
:mod:`node.worker.study`); a results folder never changes once its manifest exists, so each is read once
and kept (:class:`FindingsCache`). The node suggests a priority; the RIS/PACS owns the reading worklist.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRIORITIES = ("LOW", "ROUTINE", "MEDIUM", "HIGH", "STAT")  # lowest first, as node.analyse.types.Priority


def rank(priority: str) -> int:
    return PRIORITIES.index(priority) if priority in PRIORITIES else 1


@dataclass(frozen=True)
class SeriesFindings:
    """One analysed series: its findings.json, with the job that made it."""

    analysis: int
    series_instance_uid: str
    priority: str
    priority_reason: str
    model: str
    version: str
    findings: tuple[dict[str, Any], ...]
    files: tuple[str, ...]
    folder: Path


@dataclass
class WorkItem:
    """A study on the worklist."""

    study_instance_uid: str
    arrived: float
    priority: str = "ROUTINE"
    series: list[SeriesFindings] = field(default_factory=list)

    @property
    def findings(self) -> int:
        return sum(len(s.findings) for s in self.series)

    @property
    def models(self) -> set[str]:
        return {s.model for s in self.series}


class FindingsCache:
    """findings.json files by analysis job id (read once: a finished results folder does not change)."""

    def __init__(self, outbox: Path, size: int = 4096) -> None:
        self.outbox = outbox
        self._size = size
        self._found: OrderedDict[int, tuple[SeriesFindings, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, analysis: int, model: str) -> tuple[SeriesFindings, ...]:
        with self._lock:
            if analysis in self._found:
                self._found.move_to_end(analysis)
                return self._found[analysis]
        found = read_results(self.outbox / f"analyse-{analysis}", analysis, model)
        if found is None:
            return ()  # not finished (no manifest yet): asked again next time
        with self._lock:
            self._found[analysis] = found
            while len(self._found) > self._size:
                self._found.popitem(last=False)
        return found


def read_results(folder: Path, analysis: int, model: str) -> tuple[SeriesFindings, ...] | None:
    """The findings of one analysis job's series; ``None`` while it has no manifest (not finished)."""
    if not (folder / "manifest.json").is_file():
        return None
    found: list[SeriesFindings] = []
    for path in sorted(folder.glob("*/findings.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable: shown as no findings rather than breaking the list
        info = data.get("model") or {}
        found.append(
            SeriesFindings(
                analysis=analysis,
                series_instance_uid=str(data.get("series_instance_uid", path.parent.name)),
                priority=str(data.get("priority", "ROUTINE")),
                priority_reason=str(data.get("priority_reason", "")),
                model=str(info.get("name", model)),
                version=str(info.get("version", "")),
                findings=tuple(f for f in data.get("findings", []) if isinstance(f, dict)),
                files=tuple(str(name) for name in data.get("files", [])),
                folder=path.parent,
            )
        )
    return tuple(found)


def worklist(analyses: list[tuple[int, str, str]], arrivals: dict[str, float], cache: FindingsCache) -> list[WorkItem]:
    """Studies of these (job id, study, model) done analyses, highest suggested priority first, then those
    with findings, then the oldest arrival first (it has waited longest)."""
    items: dict[str, WorkItem] = {}
    for job_id, study, model in analyses:
        if study not in arrivals:
            continue  # deleted by retention since
        item = items.setdefault(study, WorkItem(study, arrivals[study]))
        for series in cache.of(job_id, model):
            item.series.append(series)
            if rank(series.priority) > rank(item.priority):
                item.priority = series.priority
    return sorted(items.values(), key=lambda i: (-rank(i.priority), i.findings == 0, i.arrived))


def find(
    cache: FindingsCache, analysis: int, model: str, series: str, number: int
) -> tuple[SeriesFindings, dict[str, Any]] | None:
    """One finding by its analysis, series and number."""
    for found in cache.of(analysis, model):
        if found.series_instance_uid == series:
            for finding in found.findings:
                if int(finding.get("number", -1)) == number:
                    return found, finding
    return None
