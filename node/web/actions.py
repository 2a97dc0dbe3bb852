"""What a user may change: retry and cancel jobs (one, or all of a peer), feedback on findings; each one
goes through the job store's or the feedback store's own API and into the audit trail with the user's name."""

from __future__ import annotations

import logging
from typing import Any

from node.errors import NodeError
from node.jobs import JobError, JobState
from node.jobs.sends import send_kind
from node.web.auth import Principal
from node.web.context import WebContext
from node.web.feedback import FeedbackError
from node.web.keyimage import KeyImageError
from node.web.results import give_feedback

log = logging.getLogger(__name__)


def audit(ctx: WebContext, user: Principal, action: str, outcome: str = "success", **fields: Any) -> None:
    try:
        ctx.audit.record("user-action", outcome, user=user.name, role=user.role, action=action, **fields)
    except OSError as exc:
        log.error("cannot write the audit trail %s: %s", ctx.audit.path, exc)


def retry(ctx: WebContext, user: Principal, job_id: int) -> str | None:
    """Retry one dead job; the reason it was refused, or ``None``."""
    try:
        ctx.jobs.retry(job_id)
    except JobError as exc:
        audit(ctx, user, "retry", "minor failure", job=job_id, reason=str(exc))
        return str(exc)
    audit(ctx, user, "retry", job=job_id)
    ctx.cache.clear()
    return None


def cancel(ctx: WebContext, user: Principal, job_id: int) -> str | None:
    """Cancel one queued or dead job; the reason it was refused, or ``None``."""
    try:
        state = ctx.jobs.cancel(job_id, f"by {user.name}")
    except JobError as exc:
        audit(ctx, user, "cancel", "minor failure", job=job_id, reason=str(exc))
        return str(exc)
    audit(ctx, user, "cancel", job=job_id, state=str(state))
    ctx.cache.clear()
    return None


def retry_peer(ctx: WebContext, user: Principal, peer: str) -> tuple[int, list[str]]:
    """Retry every dead send to ``peer``: how many were queued again, and the refusals."""
    done, refused = 0, []
    for job in ctx.jobs.list(JobState.DEAD, send_kind(peer), limit=1_000_000):
        try:
            ctx.jobs.retry(job.id)
            done += 1
        except JobError as exc:
            refused.append(str(exc))
    audit(ctx, user, "retry-peer", peer=peer, jobs=done, refused=len(refused))
    ctx.cache.clear()
    return done, refused


def cancel_peer(ctx: WebContext, user: Principal, peer: str) -> int:
    """Cancel every dead send to ``peer`` and every one waiting for a retry; how many."""
    count = 0
    for job in ctx.jobs.failures(limit=1_000_000):
        if job.kind != send_kind(peer):
            continue
        try:
            ctx.jobs.cancel(job.id, f"by {user.name}")
            count += 1
        except JobError:
            continue  # claimed meanwhile: it is running now
    audit(ctx, user, "cancel-peer", peer=peer, jobs=count)
    ctx.cache.clear()
    return count


def complete(ctx: WebContext, user: Principal, study: str) -> str | None:
    """Force a study complete: its quiet period ends now, so serve's completion timer completes and routes it
    at its next check (an association still carrying it holds it open, as always). The reason it was
    refused, or ``None``."""
    row = ctx.index.study(study)
    if row is None:
        return "the node has no record of this study"
    if row.completed_at is not None:
        return "the study is complete already"
    try:
        ctx.end_quiet_period(study)
    except NodeError as exc:
        audit(ctx, user, "complete", "minor failure", study=study, reason=str(exc))
        return str(exc)
    audit(ctx, user, "complete", study=study)
    return None


def feedback(
    ctx: WebContext, user: Principal, analysis: int, series: str, number: int, verdict: str, reason: str, comment: str
) -> str | None:
    """Record a verdict on a finding; the reason it was refused, or ``None``."""
    try:
        saved = give_feedback(ctx, user.name, analysis, series, number, verdict, reason, comment)
    except (FeedbackError, KeyImageError) as exc:
        audit(ctx, user, "feedback", "minor failure", analysis=analysis, finding=number, reason=str(exc))
        return str(exc)
    audit(
        ctx,
        user,
        "feedback",
        analysis=analysis,
        series=series,
        finding=number,
        verdict=saved.verdict,
        reason=saved.reason,
        model=saved.model,
        version=saved.version,
        feedback=saved.id,
    )
    return None
