"""The console's query layer: what each page and API call shows, as plain JSON-ready dicts.

Pages (Jinja2) and the JSON API call the same functions, so they never disagree. Each function reads
through the stores' own query methods (:class:`node.store.browse.IndexReader`,
:class:`node.jobs.JobStore`), one short read at a time; the figures the overview adds up are cached for
``web.cache_seconds``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from typing import Any

from node.jobs import Job, JobState
from node.jobs.kinds import ANALYSE, SEND_KIND_PREFIX
from node.store.browse import StudyRow
from node.store.disk import free_mb
from node.web.context import WebContext

PAGE_SIZE = 50


def job_dict(job: Job) -> dict[str, Any]:
    """A job as the API shows it (the payload's UIDs are for people with access, never logged)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "state": str(job.state),
        "attempts": job.attempts,
        "created": job.created,
        "updated": job.updated,
        "not_before": job.not_before,
        "last_error": job.last_error,
        "study": job.study,
        "peer": job.kind.removeprefix(SEND_KIND_PREFIX) if job.kind.startswith(SEND_KIND_PREFIX) else None,
        "model": job.payload.get("model") if job.kind == ANALYSE else None,
    }


def study_dict(row: StudyRow) -> dict[str, Any]:
    data = asdict(row)
    data["state"] = row.state
    data["calling_aes"] = list(row.calling_aes)
    data["modalities"] = list(row.modalities)
    data["series"] = [asdict(s) for s in row.series]
    return data


def overview(ctx: WebContext) -> dict[str, Any]:
    return ctx.cache.get("overview", lambda: _overview(ctx))


def _overview(ctx: WebContext) -> dict[str, Any]:
    now = ctx.clock()
    status = ctx.status()
    counts = ctx.jobs.counts()
    queues: dict[str, dict[str, int]] = {}
    for (kind, state), n in sorted(counts.items()):
        queues.setdefault(kind, {str(s): 0 for s in JobState})[str(state)] = n
    oldest = ctx.jobs.oldest_queued_created()
    per_minute = ctx.index.arrivals_per_minute(now - 3600)
    first_minute = int((now - 3600) // 60) + 1
    rate = [per_minute.get(first_minute + i, 0) for i in range(60)]
    studies, instances = ctx.index.totals()
    latest, _ = ctx.index.studies(limit=10)
    day_failures = [j for j in ctx.jobs.failures(limit=1000) if j.updated >= now - 86400]
    floor = ctx.config.limits.min_free_disk_mb
    free = free_mb(ctx.data_dir)
    return {
        "serve_running": status is not None,
        "associations": status.get("associations", 0) if status else 0,
        "workers_alive": status.get("workers_alive", 0) if status else 0,
        "workers_configured": status.get("workers_configured", ctx.config.workers.count) if status else 0,
        "sender_alive": bool(status.get("sender_alive")) if status else False,
        "instances_per_minute": rate,
        "instances_last_hour": sum(rate),
        "queues": queues,
        "oldest_queued_age_s": None if oldest is None else max(0.0, now - oldest),
        "peers": peers(ctx),
        "disk_free_mb": round(free, 1),
        "disk_floor_mb": floor,
        "disk_low": free < floor,
        "failures_24h": len(day_failures),
        "studies": studies,
        "instances": instances,
        "latest_studies": [study_dict(s) for s in latest],
    }


def peers(ctx: WebContext) -> list[dict[str, Any]]:
    """Per peer we send to: sends queued, running, done, dead, and the latest error."""
    counts = ctx.jobs.counts()
    failures = ctx.jobs.failures(limit=200)
    found = []
    for peer in ctx.config.peers:
        if not peer.can_receive:
            continue
        kind = SEND_KIND_PREFIX + peer.name
        states = {str(s): counts.get((kind, s), 0) for s in JobState}
        errors = [j.last_error for j in failures if j.kind == kind and j.last_error]
        retrying = sum(1 for j in failures if j.kind == kind and j.state is JobState.QUEUED)
        state = "failing" if states["dead"] else "retrying" if retrying else "ok"
        found.append(
            {
                "name": peer.name,
                "ae_title": peer.ae_title,
                "host": peer.host,
                "port": peer.port,
                "sends": states,
                "retrying": retrying,
                "state": state,
                "last_error": errors[0].splitlines()[0][:200] if errors else None,
            }
        )
    return found


def studies(ctx: WebContext, filters: dict[str, Any], page: int = 1) -> dict[str, Any]:
    since = day_start(filters.get("since"))
    until = day_start(filters.get("until"), end=True)
    rows, total = ctx.index.studies(
        offset=(max(page, 1) - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
        since=since,
        until=until,
        modality=filters.get("modality") or None,
        calling_ae=filters.get("calling_ae") or None,
        state=filters.get("state") or None,
    )
    return {
        "items": [study_dict(r) for r in rows],
        "total": total,
        "page": max(page, 1),
        "pages": max(1, -(-total // PAGE_SIZE)),
    }


def day_start(text: str | None, end: bool = False) -> float | None:
    """``YYYY-MM-DD`` (local time) as epoch seconds at its start (or its end); ``None`` when absent or bad."""
    if not text:
        return None
    try:
        start = time.mktime(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        return None
    return start + 86400 if end else start


def study(ctx: WebContext, uid: str) -> dict[str, Any] | None:
    """One study: series, timeline, rule decisions, jobs (analyses, sends), results and errors, viewer link."""
    row = ctx.index.study(uid)
    jobs = ctx.jobs.of_study(uid)
    if row is None and not jobs:
        return None
    routing = ctx.routing()
    decisions = routing.decisions(uid) if routing is not None else []
    timeline: list[dict[str, Any]] = []
    if row is not None:
        timeline.append({"at": row.first_received_at, "what": "first instance received"})
        timeline.append({"at": row.last_received_at, "what": f"last instance received ({row.instances} in all)"})
        if row.completed_at is not None:
            timeline.append({"at": row.completed_at, "what": "study complete"})
    for job in jobs:
        if job.kind == ANALYSE:
            what = f"analysis {job.id} with {job.payload.get('model')}: queued"
            timeline.append({"at": job.created, "what": what})
            if job.state in (JobState.DONE, JobState.DEAD):
                took = job.updated - job.created
                what = f"analysis {job.id} {job.state}, {took:.1f} s after it was queued"
                timeline.append({"at": job.updated, "what": what})
    sends: dict[str, dict[str, Any]] = {}
    for job in jobs:
        if job.kind.startswith(SEND_KIND_PREFIX):
            peer = job.kind.removeprefix(SEND_KIND_PREFIX)
            what = "results" if "outbox/" in str(job.payload.get("path", "")) else "forward"
            entry = sends.setdefault(f"{peer}/{what}", {"peer": peer, "what": what, "states": {}, "attempts": 0})
            entry["states"][str(job.state)] = entry["states"].get(str(job.state), 0) + 1
            entry["attempts"] = max(entry["attempts"], job.attempts)
            entry["last"] = max(entry.get("last", 0.0), job.updated)
    for entry in sends.values():
        states = ", ".join(f"{n} {s}" for s, n in sorted(entry["states"].items()))
        timeline.append({"at": entry["last"], "what": f"{entry['what']} to {entry['peer']}: {states}"})
    timeline.sort(key=lambda t: t["at"])
    results = []
    for job in jobs:
        if job.kind == ANALYSE and job.state is JobState.DONE:
            for series in ctx.findings.of(job.id, str(job.payload.get("model", ""))):
                results.append(
                    {
                        "analysis": job.id,
                        "series": series.series_instance_uid,
                        "model": series.model,
                        "version": series.version,
                        "priority": series.priority,
                        "priority_reason": series.priority_reason,
                        "findings": list(series.findings),
                        "files": list(series.files),
                    }
                )
    viewer = ctx.config.web.viewer_url
    return {
        "study": study_dict(row) if row is not None else {"study_instance_uid": uid, "series": []},
        "timeline": timeline,
        "rules": [asdict(d) for d in decisions],
        "jobs": [job_dict(j) for j in jobs],
        "sends": list(sends.values()),
        "results": results,
        "errors": [
            {"job": j.id, "kind": j.kind, "state": str(j.state), "error": j.last_error} for j in jobs if j.last_error
        ],
        "viewer_url": viewer.replace("{study_uid}", uid) if viewer else None,
    }


def failures(ctx: WebContext) -> dict[str, Any]:
    found = ctx.jobs.failures(limit=500)
    by_peer: dict[str, int] = {}
    for job in found:
        if job.kind.startswith(SEND_KIND_PREFIX):
            peer = job.kind.removeprefix(SEND_KIND_PREFIX)
            by_peer[peer] = by_peer.get(peer, 0) + 1
    return {"jobs": [job_dict(j) for j in found], "peers": by_peer}


def jobs(ctx: WebContext, state: str | None, kind: str | None, limit: int) -> list[dict[str, Any]]:
    return [job_dict(j) for j in ctx.jobs.list(state, kind, limit)]


def audit(ctx: WebContext, event: str | None = None, text: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The latest audit records (newest first), optionally one event and/or containing ``text``."""
    path = ctx.audit.path
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 4_000_000))  # the newest 4 MB: pages show the latest records
        lines = fh.read().decode("utf-8", errors="replace").splitlines()
    found: list[dict[str, Any]] = []
    for line in reversed(lines):
        if text and text not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if event and entry.get("event") != event:
            continue
        found.append(entry)
        if len(found) >= limit:
            break
    return found
