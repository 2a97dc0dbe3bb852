"""Synthetic 12-lead ECGs with exact ground truth: rhythm, R peaks, PR, QRS, QT, QTc, heart rate.

Each wave is a dipole (a 3-D direction and an amplitude in mV) with a pulse of compact support in time,
projected onto the twelve lead vectors, so the limb leads keep Einthoven's and Goldberger's relations
(III = II - I, aVR = -(I + II) / 2, ...) as a real recording does. Compact support makes the ground
truth exact: every lead is zero before the P onset, between QRS offset and T onset only the ST level is
zero too, and the P onset, QRS onset, QRS offset and T offset of every beat are known to the sample.

Pulses (raised cosines, the T wave asymmetric: a slow rise and a faster fall):

- P: 80-115 ms, 0.08-0.25 mV along the atrial axis (40-75 degrees in the frontal plane); absent in
  atrial fibrillation, where fibrillatory waves (4-8 Hz, 0.02-0.10 mV, two dipoles) run throughout.
- QRS: 70-115 ms split into septal q (18 %), main R (47 %) and terminal S (35 %) dipoles; the main one
  along the QRS axis (-20..+90 degrees), 0.9-2.0 mV.
- T: ends at QRS onset + QT; QT = QTc x sqrt(mean RR) (Bazett), QTc 370-470 ms; 0.15-0.5 mV.

Rhythms (labels used by the ecg-rhythm model):

- ``sinus_rhythm`` 60-100 bpm, ``sinus_bradycardia`` 35-60, ``sinus_tachycardia`` 100-160: regular RR with
  respiratory sinus arrhythmia (2-5 %) and a P wave before every QRS. The rate is drawn in the asked
  class's range (a third of the time within 3 bpm of one of its limits), and the label then follows the
  recording's own mean rate (under 60: bradycardia, over 100: tachycardia), as a reader would call it,
  so a recording near a limit is labelled by what it is;
- ``atrial_fibrillation`` 55-160 bpm mean: no P waves, fibrillatory waves, RR drawn irregularly
  (coefficient of variation 0.12-0.35);
- ``unreadable``: any of the above ruined by heavy muscle noise, motion artefacts and leads off.

A third of the sinus recordings carry up to three premature ventricular beats (early, wide, no P wave,
discordant T, compensatory pause): the rhythm stays sinus, and ``truth.pvc_count`` says how many.

Signals are returned in microvolts. Noise, as carts record it: baseline wander (0.05-0.5 Hz, up to
0.3 mV), mains hum (50 or 60 Hz, up to 0.05 mV), muscle noise (white, up to 0.025 mV); each lead its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

RHYTHMS = ("sinus_rhythm", "sinus_bradycardia", "sinus_tachycardia", "atrial_fibrillation", "unreadable")
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_RATES = {
    "sinus_rhythm": (60.0, 100.0),
    "sinus_bradycardia": (35.0, 60.0),
    "sinus_tachycardia": (100.0, 160.0),
    "atrial_fibrillation": (55.0, 160.0),
    "unreadable": (45.0, 150.0),
}


def _unit(x: float, y: float, z: float) -> NDArray[np.float64]:
    v = np.array([x, y, z], np.float64)
    return v / np.linalg.norm(v)


def _lead_matrix() -> NDArray[np.float64]:
    """(12, 3): each lead's vector in (left, down, anterior) body axes."""
    lead_i = np.array([1.0, 0.0, 0.0])
    lead_ii = np.array([0.5, math.sqrt(3) / 2, 0.0])
    limb = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    # Precordial leads in the horizontal plane, from V1 (right of the sternum) round to V6 (mid-axillary).
    angles = (118.0, 95.0, 78.0, 60.0, 32.0, 5.0)
    chest = [np.array([math.cos(math.radians(a)), 0.15, math.sin(math.radians(a))]) * 1.3 for a in angles]
    return np.array(limb + chest)


LEAD_MATRIX = _lead_matrix()


@dataclass(frozen=True)
class EcgTruth:
    """What the generator drew: the rhythm and the exact fiducials and intervals."""

    rhythm: str
    heart_rate_bpm: float  # 60000 / mean RR of the recording
    rr_ms: float  # mean RR
    pr_ms: float | None  # P onset to QRS onset; None without P waves (atrial fibrillation)
    qrs_ms: float
    qt_ms: float
    qtc_ms: float  # Bazett, with the mean RR
    p_ms: float | None
    r_peaks: tuple[int, ...]  # sample index of each complete beat's R peak (largest |signal| in lead II)
    qrs_onsets: tuple[int, ...]
    pvc_count: int = 0  # premature ventricular beats among the complete beats
    mains_hz: float = 50.0
    seed: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["r_peaks"] = list(self.r_peaks)
        data["qrs_onsets"] = list(self.qrs_onsets)
        return data


@dataclass(frozen=True, eq=False)
class SynthEcg:
    """A synthetic recording: ``signals`` (12, samples) float32 in uV at ``rate_hz``, and its truth."""

    signals: NDArray[np.float32]
    rate_hz: float
    truth: EcgTruth
    leads: tuple[str, ...] = LEADS

    def write_dicom(self, path: Path, **kwargs: object) -> Path:
        from node.synth.ecg_dicom import write_ecg

        return write_ecg(self, path, **kwargs)


def _pulse(t: NDArray[np.float64], start: float, duration: float) -> NDArray[np.float64]:
    """Raised cosine from ``start`` lasting ``duration`` (peak 1), zero outside."""
    x = (t - start) / duration
    out = 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(x, 0.0, 1.0))
    return np.where((x > 0) & (x < 1), out, 0.0)


def _t_pulse(t: NDArray[np.float64], start: float, duration: float) -> NDArray[np.float64]:
    """Asymmetric T: rises over 60 % of ``duration``, falls over the last 40 %."""
    peak = start + 0.6 * duration
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - start) / (peak - start), 0.0, 1.0))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - peak) / (start + duration - peak), 0.0, 1.0))
    return np.where(t <= start, 0.0, np.where(t < peak, rise, np.where(t < start + duration, fall, 0.0)))


def make_ecg(
    seed: int,
    rhythm: str | None = None,
    *,
    duration_s: float = 10.0,
    rate_hz: float = 500.0,
    noise: float = 1.0,
    heart_rate_bpm: float | None = None,
) -> SynthEcg:
    """One recording from ``seed`` (same seed, same recording). ``rhythm`` None draws one of RHYTHMS;
    ``noise`` scales every noise source (0 = clean); ``heart_rate_bpm`` fixes the mean rate."""
    rng = np.random.default_rng([seed, 0xEC6])
    if rhythm is None:
        rhythm = RHYTHMS[int(rng.integers(len(RHYTHMS)))]
    if rhythm not in RHYTHMS:
        raise ValueError(f"rhythm '{rhythm}' is not one of {', '.join(RHYTHMS)}")
    af = rhythm == "atrial_fibrillation"
    if rhythm == "unreadable":  # what lies under the noise is one of the other rhythms
        af = bool(rng.random() < 0.25)
    lo, hi = _RATES[rhythm]
    rate = float(heart_rate_bpm) if heart_rate_bpm is not None else float(rng.uniform(lo, hi))
    if heart_rate_bpm is None and rhythm.startswith("sinus") and rng.random() < 0.35:
        # A third of the sinus recordings lie within 3 bpm of a class limit (60, 100), where a reader's
        # call depends on the exact rate: there the training needs examples most.
        limit = float(rng.choice([x for x in (60.0, 100.0) if lo <= x <= hi]))
        rate = float(np.clip(limit + rng.uniform(-3.0, 3.0), lo, hi))
    mean_rr = 60.0 / rate
    n = round(duration_s * rate_hz)
    t = np.arange(n) / rate_hz

    # Beat times (QRS onsets) over the recording plus one RR either side, so the edges cut beats.
    # Sinus recordings carry premature ventricular beats now and then (a third of them, up to three):
    # early (60-72 % of the RR), no P wave, a wide QRS of another direction, then a compensatory pause.
    onsets: list[float] = []
    ectopic: list[bool] = []
    clock = -float(rng.uniform(0.0, mean_rr))
    resp_period = float(rng.uniform(3.0, 6.0))
    resp_depth = float(rng.uniform(0.02, 0.05))
    cv = float(rng.uniform(0.12, 0.35))
    pvc_rate = float(rng.uniform(0.06, 0.15)) if rhythm.startswith("sinus") and rng.random() < 0.33 else 0.0
    pvcs = 0
    while clock < duration_s + mean_rr:
        onsets.append(clock)
        ectopic.append(False)
        if af:
            rr = mean_rr * float(np.clip(1 + cv * rng.standard_normal(), 0.45, 1.9))
        else:
            rr = mean_rr * (1 + resp_depth * math.sin(2 * math.pi * clock / resp_period) + 0.01 * rng.standard_normal())
        rr = max(rr, 0.25)
        if pvcs < 3 and len(onsets) > 1 and rng.random() < pvc_rate:
            onsets.append(clock + rr * float(rng.uniform(0.60, 0.72)))
            ectopic.append(True)
            pvcs += 1
            rr *= 2
        clock += rr
    # The recording's mean RR: between the beats that start inside it (what a measurement can see).
    inside = [o for o in onsets if 0.0 <= o < duration_s]
    true_rr = float(np.mean(np.diff(inside))) if len(inside) > 1 else mean_rr
    if rhythm.startswith("sinus"):
        rate_now = 60.0 / true_rr
        rhythm = "sinus_bradycardia" if rate_now < 60 else "sinus_tachycardia" if rate_now > 100 else "sinus_rhythm"
    # Durations and morphology of this recording.
    qrs = float(rng.uniform(0.070, 0.115))
    pr = float(rng.uniform(0.12, 0.21))
    p_dur = float(min(rng.uniform(0.080, 0.115), pr - 0.03))
    qtc = float(rng.uniform(0.370, 0.470))
    qt = qtc * math.sqrt(true_rr)
    st = float(rng.uniform(0.25, 0.40)) * (qt - qrs)  # ST segment: T starts after it
    t_dur = qt - qrs - st
    qrs_axis = math.radians(float(rng.uniform(-20, 90)))
    p_axis = math.radians(float(rng.uniform(40, 75)))
    r_amp = float(rng.uniform(0.6, 2.4))

    def jitter() -> NDArray[np.float64]:  # people differ: each direction varies a little
        return rng.uniform(-0.3, 0.3, 3)

    dipoles = {
        "p": _unit(*(np.array([math.cos(p_axis), math.sin(p_axis), 0.2]) + jitter() / 2))
        * float(rng.uniform(0.05, 0.25)),
        "q": _unit(*(np.array([-0.6, 0.25, 0.8]) + jitter())) * r_amp * float(rng.uniform(0.05, 0.2)),
        "r": _unit(math.cos(qrs_axis), math.sin(qrs_axis), float(rng.uniform(-0.6, -0.1))) * r_amp,
        "s": _unit(*(np.array([-0.35, -0.45, -0.85]) + jitter())) * r_amp * float(rng.uniform(0.15, 0.6)),
        "t": _unit(*(np.array([math.cos(qrs_axis) + 0.3, math.sin(qrs_axis), 0.2]) + jitter()))
        * float(rng.uniform(0.1, 0.55)),
        # Ventricular ectopy: depolarisation from elsewhere, repolarisation opposite to it.
        "v": _unit(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))) * r_amp * 1.3,
    }
    pvc_qrs = float(rng.uniform(0.12, 0.16))
    vector = np.zeros((3, n))
    q_len, r_len = 0.18 * qrs, 0.47 * qrs
    for onset, is_pvc in zip(onsets, ectopic, strict=True):
        if is_pvc:
            vector += dipoles["v"][:, None] * _pulse(t, onset, pvc_qrs)[None]
            vector -= dipoles["v"][:, None] * 0.35 * _t_pulse(t, onset + pvc_qrs + 0.04, t_dur * 1.1)[None]
            continue
        if not af:
            vector += dipoles["p"][:, None] * _pulse(t, onset - pr, p_dur)[None]
        vector += dipoles["q"][:, None] * _pulse(t, onset, q_len)[None]
        vector += dipoles["r"][:, None] * _pulse(t, onset + q_len, r_len)[None]
        vector += dipoles["s"][:, None] * _pulse(t, onset + q_len + r_len, qrs - q_len - r_len)[None]
        vector += dipoles["t"][:, None] * _t_pulse(t, onset + qrs + st, t_dur)[None]
    if af:
        for _ in range(2):
            f_hz = float(rng.uniform(4.0, 8.0))
            drift = np.cumsum(rng.standard_normal(n)) / rate_hz * 0.8  # the f-waves' rate wanders
            wave = np.sin(2 * np.pi * f_hz * t + drift + float(rng.uniform(0, 2 * np.pi)))
            direction = _unit(float(rng.uniform(-0.5, 0.5)), 0.7, 0.8)
            vector += direction[:, None] * wave[None] * float(rng.uniform(0.02, 0.10))
    # Chest electrodes sit a little differently on everyone: each chest lead its own gain.
    leads_matrix = LEAD_MATRIX.copy()
    leads_matrix[6:] *= rng.uniform(0.7, 1.3, (6, 1))
    signals = leads_matrix @ vector
    mains = float(rng.choice([50.0, 60.0]))
    if noise > 0:
        for lead in range(12):
            for _ in range(2):
                f = float(rng.uniform(0.05, 0.5))
                signals[lead] += noise * float(rng.uniform(0, 0.15)) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
            signals[lead] += noise * float(rng.uniform(0, 0.05)) * np.sin(2 * np.pi * mains * t + rng.uniform(0, 6.3))
            signals[lead] += noise * float(rng.uniform(0, 0.025)) * rng.standard_normal(n)
    if rhythm == "unreadable":
        _ruin(signals, rng, rate_hz)
    # Truth: complete beats only (P onset or QRS onset to T offset inside the recording).
    lead_ii = LEAD_MATRIX[1] @ vector
    first = pr if not af else 0.0
    complete = [(o, e) for o, e in zip(onsets, ectopic, strict=True) if o - first >= 0 and o + qt < duration_s]
    r_peaks = []
    for o, e in complete:
        a, b = round(o * rate_hz), round((o + (pvc_qrs if e else qrs)) * rate_hz)
        r_peaks.append(a + int(np.argmax(np.abs(lead_ii[a:b]))))
    truth = EcgTruth(
        rhythm=rhythm,
        heart_rate_bpm=round(60.0 / true_rr, 2),
        rr_ms=round(true_rr * 1000, 2),
        pr_ms=None if af else round(pr * 1000, 2),
        qrs_ms=round(qrs * 1000, 2),
        qt_ms=round(qt * 1000, 2),
        qtc_ms=round(qt / math.sqrt(true_rr) * 1000, 2),
        p_ms=None if af else round(p_dur * 1000, 2),
        r_peaks=tuple(r_peaks),
        qrs_onsets=tuple(round(o * rate_hz) for o, _ in complete),
        pvc_count=sum(1 for _, e in complete if e),
        mains_hz=mains,
        seed=seed,
    )
    return SynthEcg((signals * 1000.0).astype(np.float32), rate_hz, truth)


def _ruin(signals: NDArray[np.float64], rng: np.random.Generator, rate_hz: float) -> None:
    """Make a recording unreadable, as a loose electrode or a moving patient does: heavy muscle noise,
    motion artefacts (steps and swings of several mV) and stretches where a lead is off."""
    leads, n = signals.shape
    signals += float(rng.uniform(0.3, 0.8)) * rng.standard_normal((leads, n))
    for _ in range(int(rng.integers(3, 8))):
        at, length = int(rng.integers(0, n)), int(rng.integers(int(0.2 * rate_hz), int(1.5 * rate_hz)))
        swing = np.sin(np.linspace(0, np.pi * float(rng.uniform(1, 4)), min(length, n - at)))
        signals[:, at : at + length] += float(rng.uniform(1.5, 5.0)) * swing * rng.choice([-1.0, 1.0], (leads, 1))
    for _ in range(int(rng.integers(1, 4))):
        lead, at = int(rng.integers(leads)), int(rng.integers(0, n))
        signals[lead, at : at + int(rng.integers(int(0.5 * rate_hz), int(3 * rate_hz)))] = 0.0
