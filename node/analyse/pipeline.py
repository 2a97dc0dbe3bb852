"""The analysis core: a volume and a model in, an :class:`AnalysisResult` out.

volume ──accepts?──▶ Model.segment (window, resize, ONNX, resize back) ──▶ postprocess.clean
       ──▶ measure.findings ──▶ measure.triage ──▶ AnalysisResult
"""

from __future__ import annotations

import logging
import time

from node.analyse import measure, postprocess
from node.analyse.card import ModelCard
from node.analyse.runtime import Model, Progress
from node.analyse.types import AnalysisResult, Volume

log = logging.getLogger(__name__)


def refusal(volume: Volume, card: ModelCard) -> str | None:
    """Why ``card``'s model must not run on ``volume``, or None if it accepts it."""
    acc = card.accepts
    name = card.model.name
    if acc.modality and volume.modality not in acc.modality:
        return f"model {name} accepts modality {'/'.join(acc.modality)}, series is {volume.modality or 'unknown'}"
    if acc.body_part and volume.body_part.upper() not in {b.upper() for b in acc.body_part}:
        return f"model {name} accepts body part {'/'.join(acc.body_part)}, series is '{volume.body_part}'"
    if volume.shape[0] < acc.min_slices:
        return f"model {name} needs at least {acc.min_slices} slices, series has {volume.shape[0]}"
    thickness = volume.slice_thickness if volume.slice_thickness is not None else volume.spacing[0]
    low, high = acc.slice_thickness_mm
    if not low <= thickness <= high:
        return f"model {name} accepts slice thickness {low:g}-{high:g} mm, series has {thickness:g} mm"
    return None


def analyse(volume: Volume, model: Model, progress: Progress | None = None) -> AnalysisResult:
    """Segment, clean, measure and triage one volume (the caller has checked :func:`refusal`)."""
    card = model.card
    labels, confidence = model.segment_with_confidence(volume, progress)
    started = time.perf_counter()
    postprocess.clean(labels, card, volume)
    found = measure.findings(labels, card, volume, confidence)
    priority, reason = measure.triage(found, card)
    model.timings["postprocess"] += time.perf_counter() - started
    present = {label.index: bool((labels == label.index).any()) for label in card.labels}
    log.info("analysed series: %d findings, suggested priority %s", len(found), priority)
    return AnalysisResult(volume, labels, found, priority, reason, present)
