"""Global ECG measurements (ms, bpm) from the beats and the median beat, and the rule-based rhythm.

- Heart rate = 60000 / mean RR over every detected beat (ventricular rate); RR = that mean.
- PR = QRS onset - P onset, QRS = QRS offset - QRS onset, QT = T offset - QRS onset, all on the
  median beat; PR is absent without a P wave.
- QTc: Bazett (QT / sqrt(RR in s)) is the one reported as QTc, the correction carts print and the
  real test ECG's cart used; Fridericia (QT / cbrt(RR)) is given beside it.

:func:`rule_rhythm` is the classical classifier the network is measured against: unreadable when the
beats do not resemble each other or the signal is mostly noise, atrial fibrillation when RR is
irregular and no P wave stands out, else sinus rhythm split by rate at 60 and 100 bpm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from node.analyse.ecg.beats import Delineation, delineate, detect_qrs
from node.analyse.ecg.filters import clean


@dataclass(frozen=True)
class Measurements:
    """What the signal processing measured on one recording; ``None`` where it could not."""

    heart_rate_bpm: float | None
    rr_ms: float | None
    pr_ms: float | None
    qrs_ms: float | None
    qt_ms: float | None
    qtc_bazett_ms: float | None
    qtc_fridericia_ms: float | None
    beats: int
    p_wave: bool
    rr_irregularity: float  # RMSSD of RR / mean RR
    beat_similarity: float  # fraction of beats in the median beat
    noise_uv: float  # median over leads of the high-frequency residual

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Analysed:
    """A cleaned recording with its beats, median-beat delineation and measurements."""

    cleaned: NDArray[np.float32]
    peaks: NDArray[np.int64]
    delineation: Delineation | None
    measurements: Measurements


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 1)


def analyse_signals(x: NDArray[np.float32], rate_hz: float) -> Analysed:
    """Filters, beats, delineation and measurements for ``x`` (leads, samples) in uV."""
    cleaned = clean(x, rate_hz)
    peaks = detect_qrs(cleaned, rate_hz)
    found = delineate(cleaned, peaks, rate_hz) if len(peaks) >= 2 else None
    ms = 1000.0 / rate_hz
    rr = np.diff(peaks) * ms if len(peaks) >= 2 else np.zeros(0)
    mean_rr = float(rr.mean()) if len(rr) else None
    irregularity = float(np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean()) if len(rr) >= 3 else 0.0
    noise = float(np.median(np.std(x - cleaned, axis=1)))
    qt = qrs = pr = None
    p_wave = False
    similarity = 0.0
    if found is not None:
        qrs = (found.qrs_offset - found.qrs_onset) * ms
        qt = (found.t_offset - found.qrs_onset) * ms
        if found.p_onset is not None:
            pr = (found.qrs_onset - found.p_onset) * ms
            p_wave = True
        similarity = found.beats_used / max(1, len(peaks))
    bazett = fridericia = None
    if qt is not None and mean_rr:
        bazett = qt / math.sqrt(mean_rr / 1000.0)
        fridericia = qt / (mean_rr / 1000.0) ** (1 / 3)
    m = Measurements(
        heart_rate_bpm=_round(60000.0 / mean_rr) if mean_rr else None,
        rr_ms=_round(mean_rr),
        pr_ms=_round(pr),
        qrs_ms=_round(qrs),
        qt_ms=_round(qt),
        qtc_bazett_ms=_round(bazett),
        qtc_fridericia_ms=_round(fridericia),
        beats=len(peaks),
        p_wave=p_wave,
        rr_irregularity=round(irregularity, 4),
        beat_similarity=round(similarity, 3),
        noise_uv=round(noise, 1),
    )
    return Analysed(cleaned, peaks, found, m)


def rule_rhythm(m: Measurements) -> str:
    """The rule-based rhythm: one of the synthetic generator's (and the card's) rhythm names."""
    if m.beats < 3 or m.heart_rate_bpm is None or m.beat_similarity < 0.5 or m.noise_uv > 150:
        return "unreadable"
    if m.rr_irregularity > 0.12 and not m.p_wave:
        return "atrial_fibrillation"
    if m.heart_rate_bpm < 60:
        return "sinus_bradycardia"
    if m.heart_rate_bpm > 100:
        return "sinus_tachycardia"
    return "sinus_rhythm"
