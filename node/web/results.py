"""The radiologists' side of the query layer: the triage worklist, a finding's explanation and key image,
feedback, and the Models page's figures (card data beside live agreement)."""

from __future__ import annotations

from typing import Any

from node.analyse.card import ModelCard
from node.jobs import JobState
from node.jobs.kinds import ANALYSE
from node.web.context import WebContext
from node.web.feedback import Feedback
from node.web.keyimage import KeyImageError, render
from node.web.metrics import analysis_seconds
from node.web.triage import SeriesFindings, WorkItem, find, rank, worklist

WORKLIST_ANALYSES = 2000  # the latest done analyses the worklist looks at
PAGE = 100  # studies a worklist page shows


def explanation(card: ModelCard | None, series: SeriesFindings, finding: dict[str, Any]) -> dict[str, Any]:
    """Why the finding has its priority: the card's triage rule with the values that fired it (or why none
    did), the model's confidence, the card's intended use and limits."""
    label = str(finding.get("label", ""))
    diameter = float(finding.get("longest_axial_diameter_mm", 0.0))
    volume = float(finding.get("volume_mm3", 0.0))
    fired: list[str] = []
    missed: list[str] = []
    if card is not None:
        for rule in card.triage.rules:
            if rule.label != label:
                continue
            words = f"{label} with longest axial diameter >= {rule.min_diameter_mm:g} mm"
            if rule.min_volume_mm3:
                words += f" and volume >= {rule.min_volume_mm3:g} mm3"
            values = f"(this one: {diameter:.1f} mm, {volume:.0f} mm3)"
            if diameter >= rule.min_diameter_mm and volume >= rule.min_volume_mm3:
                fired.append(f"{words} -> {rule.priority} {values}")
            else:
                missed.append(f"{words} -> {rule.priority}: not reached {values}")
    default = str(card.triage.default) if card is not None else "ROUTINE"
    confidence = finding.get("confidence") or {}
    return {
        "rule": fired[0] if fired else None,
        "not_fired": missed,
        "default": default,
        "series_priority": series.priority,
        "series_reason": series.priority_reason,
        "confidence_mean": confidence.get("mean"),
        "confidence_max": confidence.get("max"),
        "intended_use": card.model.intended_use if card is not None else "",
        "limitations": card.model.limitations if card is not None else "",
    }


def key_image_url(analysis: int, series: str, number: int) -> str:
    return f"/api/v1/analyses/{analysis}/series/{series}/findings/{number}/key.png"


def _finding_dict(
    ctx: WebContext, series: SeriesFindings, finding: dict[str, Any], verdict: Feedback | None
) -> dict[str, Any]:
    number = int(finding.get("number", 0))
    card = ctx.card(series.model)
    return {
        **finding,
        "analysis": series.analysis,
        "series": series.series_instance_uid,
        "model": series.model,
        "version": series.version,
        "key_image": key_image_url(series.analysis, series.series_instance_uid, number),
        "explanation": explanation(card, series, finding),
        "feedback": None
        if verdict is None
        else {
            "verdict": verdict.verdict,
            "reason": verdict.reason,
            "comment": verdict.comment,
            "user": verdict.user,
            "at": verdict.at,
        },
    }


def triage(
    ctx: WebContext,
    priority: str | None = None,
    model: str | None = None,
    since: float | None = None,
    offset: int = 0,
    limit: int = PAGE,
) -> list[dict[str, Any]]:
    """The worklist (see :func:`node.web.triage.worklist`), optionally one priority, model, or arrivals since;
    ``limit`` studies from ``offset`` (the list is ordered, so the first page is what needs reading first)."""
    items, analyses = ctx.cache.get("worklist", lambda: _worklist(ctx))
    chosen = [
        item
        for item in items
        if (not priority or item.priority == priority)
        and (not model or model in item.models)
        and (since is None or item.arrived >= since)
    ][offset : offset + limit]
    verdicts = ctx.feedback.latest(analyses)
    now = ctx.clock()
    out = []
    for item in chosen:
        findings = [
            _finding_dict(ctx, s, f, verdicts.get((s.analysis, s.series_instance_uid, int(f.get("number", 0)))))
            for s in item.series
            for f in s.findings
        ]
        out.append(
            {
                "study_instance_uid": item.study_instance_uid,
                "priority": item.priority,
                "rank": rank(item.priority),
                "arrived": item.arrived,
                "age_s": max(0.0, now - item.arrived),
                "models": sorted(item.models),
                "read": bool(findings) and all(f["feedback"] is not None for f in findings),
                "findings": findings,
                "series": [
                    {
                        "series": s.series_instance_uid,
                        "priority": s.priority,
                        "reason": s.priority_reason,
                        "model": s.model,
                        "version": s.version,
                    }
                    for s in item.series
                ],
            }
        )
    return out


def _worklist(ctx: WebContext) -> tuple[list[WorkItem], list[int]]:
    done = ctx.jobs.list(JobState.DONE, ANALYSE, WORKLIST_ANALYSES)
    analyses = [(j.id, str(j.study or j.payload.get("study", "")), str(j.payload.get("model", ""))) for j in done]
    arrivals = ctx.index.first_arrivals(sorted({study for _, study, _ in analyses}))
    return worklist(analyses, arrivals, ctx.findings), [a for a, _, _ in analyses]


def key_image(ctx: WebContext, analysis: int, series: str, number: int) -> bytes:
    """The PNG of one finding (cached: results and their source slices do not change)."""
    return ctx.cache.get(f"key/{analysis}/{series}/{number}", lambda: _key_image(ctx, analysis, series, number))


def _key_image(ctx: WebContext, analysis: int, series: str, number: int) -> bytes:
    job = ctx.jobs.get(analysis)
    if job is None or job.kind != ANALYSE:
        raise KeyImageError(f"no analysis {analysis}")
    found = find(ctx.findings, analysis, str(job.payload.get("model", "")), series, number)
    if found is None:
        raise KeyImageError(f"analysis {analysis} has no finding {number} in that series")
    results, finding = found
    key = finding.get("key_slice") or {}
    relative = ctx.index.instance_path(str(key.get("sop_instance_uid", "")))
    if relative is None:
        raise KeyImageError("the key slice is no longer in the spool (deleted by retention?)")
    seg = next((results.folder / name for name in results.files if name.startswith("SEG")), None)
    card = ctx.card(results.model)
    window = (card.input.window.center, card.input.window.width) if card is not None else (40.0, 400.0)
    colour = (255, 0, 0)
    if card is not None:
        colour = next((lb.colour for lb in card.labels if lb.name == finding.get("label")), colour)
    return render(finding, ctx.spool_file(relative), seg, window, colour)


def give_feedback(
    ctx: WebContext, user: str, analysis: int, series: str, number: int, verdict: str, reason: str, comment: str
) -> Feedback:
    """Store one verdict on a finding (and audit it); :class:`KeyImageError` when the finding is unknown."""
    job = ctx.jobs.get(analysis)
    if job is None or job.kind != ANALYSE:
        raise KeyImageError(f"no analysis {analysis}")
    found = find(ctx.findings, analysis, str(job.payload.get("model", "")), series, number)
    if found is None:
        raise KeyImageError(f"analysis {analysis} has no finding {number} in that series")
    results, _ = found
    saved = ctx.feedback.add(
        analysis=analysis,
        series=series,
        number=number,
        study=str(job.study or job.payload.get("study", "")),
        model=results.model,
        version=results.version,
        verdict=verdict,
        reason=reason,
        comment=comment,
        user=user,
    )
    ctx.cache.clear()
    return saved


def models(ctx: WebContext) -> list[dict[str, Any]]:
    return ctx.cache.get("models", lambda: _models(ctx))


def _models(ctx: WebContext) -> list[dict[str, Any]]:
    per_model = ctx.jobs.analyses_per_model()
    timed = analysis_seconds()
    agreement = {(a.model, a.version): a for a in ctx.feedback.agreement()}
    done = ctx.jobs.list(JobState.DONE, ANALYSE, WORKLIST_ANALYSES)
    findings_per_version: dict[tuple[str, str], list[int]] = {}
    for job in done:
        for series in ctx.findings.of(job.id, str(job.payload.get("model", ""))):
            findings_per_version.setdefault((series.model, series.version), []).append(len(series.findings))
    names = list(dict.fromkeys([*ctx.config.models_in_use(), *per_model, *(m for m, _ in agreement)]))
    out = []
    margin = ctx.config.web.agreement_margin
    for name in names:
        card = ctx.card(name)
        evaluation = dict(card.evaluation) if card is not None else {}
        precision = evaluation.get("nodule_precision")
        versions = sorted({v for m, v in [*findings_per_version, *agreement] if m == name})
        if card is not None and card.model.version not in versions:
            versions.append(card.model.version)
        live = []
        for version in versions:
            rated = agreement.get((name, version))
            counts = findings_per_version.get((name, version), [])
            ratio = rated.ratio if rated is not None else None
            warn = ratio is not None and isinstance(precision, float | int) and ratio < float(precision) - margin
            live.append(
                {
                    "version": version,
                    "series_analysed": len(counts),
                    "findings_per_series": (sum(counts) / len(counts)) if counts else None,
                    "confirmed": rated.confirmed if rated else 0,
                    "rated": rated.rated if rated else 0,
                    "agreement": ratio,
                    "warning": (
                        f"agreement {ratio:.2f} is below the card's precision {float(precision):.2f} by more "
                        f"than {margin:.2f}"
                    )
                    if warn and ratio is not None and precision is not None
                    else None,
                }
            )
        analysed, mean_s = per_model.get(name, (0, 0.0))
        count, total = timed.get(name, (0, 0.0))
        out.append(
            {
                "name": name,
                "card": None
                if card is None
                else {
                    "version": card.model.version,
                    "sha256": card.model.sha256,
                    "description": card.model.description,
                    "intended_use": card.model.intended_use,
                    "limitations": card.model.limitations,
                    "triage": [f"{r.label} >= {r.min_diameter_mm:g} mm -> {r.priority}" for r in card.triage.rules],
                    "evaluation": evaluation,
                },
                "precision": precision,
                "analyses_done": analysed,
                "mean_queued_to_done_s": mean_s if analysed else None,
                "analyses_timed": count,
                "mean_analysis_s": total / count if count else None,
                "versions": live,
            }
        )
    return out
