"""The ECG analysis core: a waveform file and a model in, an :class:`EcgResult` out.

file ──load_waveform (card leads, rate, window)──▶ rhythm.prepare (filters, beats, delineation,
     measurements, network input) ──▶ Model.infer (ONNX) ──▶ softmax, rule baseline, triage ──▶ EcgResult
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from node.analyse.card import ModelCard
from node.analyse.ecg.measure import Measurements, rule_rhythm
from node.analyse.ecg.rhythm import prepare, rhythm_key, softmax
from node.analyse.ecg.waveform import Waveform, load_waveform
from node.analyse.runtime import Model
from node.analyse.types import Priority
from node.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class EcgResult:
    """What one model made of one recording: rhythm (a card label), measurements and suggested priority."""

    waveform: Waveform
    measurements: Measurements
    label: int  # card label index of the rhythm
    rhythm: str  # its card label name
    probabilities: dict[str, float]  # per card label name
    rule_rhythm: str  # the rule-based baseline's rhythm (card label name), shown beside the network's
    priority: Priority
    priority_reason: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.rhythm]


def load(path: Path, card: ModelCard) -> Waveform:
    """The card's leads at the card's rate, or an InputError naming what the card cannot use."""
    spec = card.input
    return load_waveform(
        path,
        leads=spec.leads,
        rate_hz=spec.sampling_rate_hz,
        min_duration_s=spec.window_s,
        min_rate_hz=spec.min_sampling_rate_hz,
    )


def refusal(waveform: Waveform, card: ModelCard) -> str | None:
    """Why ``card``'s model must not run on ``waveform``, or None if it accepts it."""
    modalities = card.accepts.modality
    if modalities and waveform.modality not in modalities:
        return (
            f"model {card.model.name} accepts modality {'/'.join(modalities)}, "
            f"recording is {waveform.modality or 'unknown'}"
        )
    return None


def triage(rhythm: str, heart_rate: float | None, card: ModelCard) -> tuple[Priority, str]:
    """The highest priority among the card's rules that fire for this rhythm and heart rate."""
    best, reason = card.triage.default, f"no triage rule fired ({rhythm}); default {card.triage.default}"
    for rule in card.triage.rules:
        if rule.label != rhythm or heart_rate is None:
            continue
        above, below = rule.heart_rate_above_bpm, rule.heart_rate_below_bpm
        if above is None and below is None:
            fired, why = True, rhythm
        elif above is not None and heart_rate > above:
            fired, why = True, f"{rhythm} at {heart_rate:.0f} bpm (above {above:g})"
        elif below is not None and heart_rate < below:
            fired, why = True, f"{rhythm} at {heart_rate:.0f} bpm (below {below:g})"
        else:
            fired, why = False, ""
        if fired and rule.priority.rank > best.rank:
            best, reason = rule.priority, why
    return best, reason


def analyse_ecg(waveform: Waveform, model: Model) -> EcgResult:
    """Measure and classify one recording (the caller has checked :func:`refusal`)."""
    card = model.card
    started = time.perf_counter()
    analysed, batch = prepare(waveform.signals, card.input)
    prepared = time.perf_counter()
    logits = model.infer(batch)
    inferred = time.perf_counter()
    if logits.shape != (1, len(card.labels)):
        raise ModelError(
            f"model {card.model.name}: output shape {logits.shape}, the card's {len(card.labels)} labels need "
            f"(1, {len(card.labels)}): one logit per rhythm"
        )
    probs = softmax(logits)[0]
    names = [label.name for label in card.labels]
    best = int(np.argmax(probs))
    m = analysed.measurements
    by_key = {rhythm_key(name): name for name in names}
    rule = by_key.get(rule_rhythm(m), rule_rhythm(m))
    priority, reason = triage(names[best], m.heart_rate_bpm, card)
    log.info("analysed recording: rhythm %s (p %.2f), suggested priority %s", names[best], probs[best], priority)
    return EcgResult(
        waveform=waveform,
        measurements=m,
        label=card.labels[best].index,
        rhythm=names[best],
        probabilities={name: round(float(p), 4) for name, p in zip(names, probs, strict=True)},
        rule_rhythm=rule,
        priority=priority,
        priority_reason=reason,
        timings={"signal": prepared - started, "inference": inferred - prepared},
    )
