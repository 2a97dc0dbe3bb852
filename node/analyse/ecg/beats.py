"""QRS detection on all leads at once, and delineation of P, QRS and T on the median beat.

Detection (after Pan and Tompkins, 1985, over twelve leads): 5-15 Hz band, derivative, squared and summed
over the leads, integrated over 120 ms; peaks at least 200 ms apart above a quarter of the recording's
typical beat energy, less those within 360 ms of a beat with under half its energy (its T wave). Each
beat's fiducial point is the maximum of the spatial magnitude (the length of the twelve-lead vector)
within 80 ms of its energy peak.

Delineation is global, on the median beat, as carts do it: beats aligned on their fiducial points, those
that do not resemble the others (premature ventricular beats: correlation under 0.9 over the QRS) left
out, the median taken sample by sample per lead. On it, with ``v(t)`` the spatial velocity (length of
the twelve-lead derivative) and ``m(t)`` the spatial magnitude relative to the PR segment:

- QRS onset and offset: where ``v`` first and last exceeds 10 % of its QRS maximum, within the span where
  ``v`` (max-filtered over 30 ms, to bridge the R peak's zero slope) stays above that level;
- T offset: the tangent at the steepest descent of ``m`` after the T peak, where it meets zero (it ends
  the synthetic T waves, which fade as a half cosine, 5-25 ms early; a threshold at 5 % of the T peak
  instead fitted them better but ran 180 ms late on the real ECG, whose T wave fades into a U wave);
- P wave: the largest hump of ``m`` between 300 ms before the QRS and the QRS; present when it stands out
  from the PR segment's noise (over 4 times it, and at least 20 uV) and the stretch repeats beat after
  beat (mean correlation with the median over 0.5: fibrillatory waves do not), searched after the
  previous beat's T peak; its onset where ``m`` comes within 2 % of the P peak's height (or the
  stretch's noise: its median less its 10th percentile) above the stretch's floor going back from the
  peak, or at the valley before it climbs again by 15 % (a P wave on the previous T wave at fast rates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, signal

from node.analyse.ecg.filters import bandpass


@dataclass(frozen=True)
class Delineation:
    """Fiducial points on the median beat, in samples from its start; ``p_onset`` None when no P wave."""

    median: NDArray[np.float32]  # (leads, samples)
    r: int  # the fiducial point in the median beat
    qrs_onset: int
    qrs_offset: int
    t_offset: int
    p_onset: int | None
    p_amplitude_uv: float
    beats_used: int


def detect_qrs(x: NDArray[np.float32], rate_hz: float) -> NDArray[np.int64]:
    """Sample indices of the beats' fiducial points in ``x`` (leads, samples), cleaned by filters.clean."""
    band = bandpass(x, rate_hz, 5.0, 15.0)
    energy = (np.diff(band, axis=1, prepend=band[:, :1]) ** 2).sum(axis=0)
    width = max(1, round(0.12 * rate_hz))
    integrated = np.convolve(energy, np.ones(width) / width, mode="same")
    candidates, props = signal.find_peaks(integrated, distance=round(0.2 * rate_hz), height=0)
    if len(candidates) == 0:
        return np.zeros(0, np.int64)
    heights = props["peak_heights"]
    # A typical beat's energy: the median of the largest peaks that a rate of 30 bpm would give.
    top = max(3, round(x.shape[1] / rate_hz / 2))
    typical = float(np.median(np.sort(heights)[::-1][:top]))
    peaks: list[int] = []
    last_height = 0.0
    for p, h in zip(candidates, heights, strict=True):
        if h <= typical / 4:
            continue
        # Within 360 ms of a beat, a peak under half its energy is that beat's T wave (Pan-Tompkins).
        if peaks and p - peaks[-1] < 0.36 * rate_hz and h < 0.5 * last_height:
            continue
        peaks.append(int(p))
        last_height = float(h)
    magnitude = np.sqrt((x.astype(np.float64) ** 2).sum(axis=0))
    half = round(0.08 * rate_hz)
    fiducials = []
    for p in peaks:
        a, b = max(0, p - half), min(x.shape[1], p + half + 1)
        fiducials.append(a + int(np.argmax(magnitude[a:b])))
    out = np.unique(np.asarray(fiducials, np.int64))
    # Two energy peaks of one wide beat can land on one fiducial point, or on two very close ones.
    keep = np.concatenate([[True], np.diff(out) > 0.2 * rate_hz]) if len(out) else np.zeros(0, bool)
    kept: NDArray[np.int64] = out[keep]
    return kept


def median_beat(
    x: NDArray[np.float32], peaks: NDArray[np.int64], rate_hz: float
) -> tuple[NDArray[np.float32], int, NDArray[np.float32]] | None:
    """(median beat (leads, samples), index of the fiducial point in it, the beats it is the median of
    (beats, leads, samples)), or None with under 2 usable beats. The window runs from 350 ms before each
    fiducial to 700 ms after it, shortened at fast rates so it never reaches the next beat's QRS."""
    if len(peaks) < 2:
        return None
    rr = float(np.median(np.diff(peaks)))
    before = min(round(0.35 * rate_hz), round(0.6 * rr))
    after = min(round(0.70 * rate_hz), round(0.85 * rr))
    usable = [p for p in peaks if p - before >= 0 and p + after <= x.shape[1]]
    if len(usable) < 2:
        return None
    beats = np.stack([x[:, p - before : p + after] for p in usable])  # (beats, leads, samples)
    template = np.median(beats, axis=0)
    q = round(0.06 * rate_hz)
    core = slice(before - q, before + q)
    ref = template[:, core].ravel()
    scores = np.array([np.corrcoef(b[:, core].ravel(), ref)[0, 1] for b in beats])
    similar = beats[scores > 0.9]
    if len(similar) >= 2:
        template = np.median(similar, axis=0)
    else:
        similar = beats
    return template.astype(np.float32), before, similar.astype(np.float32)


def _first_above(v: NDArray[np.float64], level: float, start: int, stop: int) -> int:
    hits = np.nonzero(v[start:stop] > level)[0]
    return start + int(hits[0]) if len(hits) else start


def _last_above(v: NDArray[np.float64], level: float, start: int, stop: int) -> int:
    hits = np.nonzero(v[start:stop] > level)[0]
    return start + int(hits[-1]) if len(hits) else stop - 1


def _repeats(beats: NDArray[np.float32], med: NDArray[np.float32], a: int, b: int) -> bool:
    """Whether the beats' stretch ``a:b`` repeats beat after beat (a P wave does; fibrillatory waves and
    noise do not): the beats' mean correlation with the median there, over all leads, above 0.5."""
    ref = med[:, a:b] - med[:, a:b].mean(axis=1, keepdims=True)
    scores = []
    for beat in beats:
        part = beat[:, a:b] - beat[:, a:b].mean(axis=1, keepdims=True)
        denominator = float(np.sqrt((part**2).sum() * (ref**2).sum())) + 1e-9
        scores.append(float((part * ref).sum()) / denominator)
    return float(np.mean(scores)) > 0.5


def delineate(x: NDArray[np.float32], peaks: NDArray[np.int64], rate_hz: float) -> Delineation | None:
    """P, QRS and T on the median beat of ``x`` (cleaned) around ``peaks``; None with under 2 beats."""
    rr_s = float(np.median(np.diff(peaks))) / rate_hz if len(peaks) >= 2 else 1.0
    made = median_beat(x, peaks, rate_hz)
    if made is None:
        return None
    med, r, beats = made
    used = len(beats)
    n = med.shape[1]
    ms = rate_hz / 1000.0
    v = np.sqrt((np.gradient(med.astype(np.float64), axis=1) ** 2).sum(axis=0))
    # QRS: the span around R where the velocity, bridged over 30 ms, stays above 8 % of its peak.
    zone = slice(max(0, r - round(100 * ms)), min(n, r + round(100 * ms)))
    level = 0.10 * float(v[zone].max())
    bridged = ndimage.maximum_filter1d(v, size=max(3, round(30 * ms)))
    lo = r
    while lo > 0 and bridged[lo - 1] > level and r - lo < 150 * ms:
        lo -= 1
    hi = r
    while hi < n - 1 and bridged[hi + 1] > level and hi - r < 150 * ms:
        hi += 1
    qrs_on = _first_above(v, level, lo, r + 1)
    qrs_off = _last_above(v, level, r, hi + 1)
    # Isoelectric level per lead: the 10 ms just before the QRS (the PR segment).
    iso_a = max(0, qrs_on - round(12 * ms))
    iso = med[:, iso_a : max(iso_a + 1, qrs_on - round(2 * ms))].mean(axis=1, keepdims=True)
    m = np.sqrt(((med - iso).astype(np.float64) ** 2).sum(axis=0))
    rr = round(rr_s * rate_hz)
    t_start = min(n - 2, qrs_off + round(60 * ms))
    # A first look for the T peak, before the next P wave could start (60 % of RR): the previous beat's
    # T peak, one RR earlier, bounds the P search at fast rates, where the P wave rides on that T wave.
    t_first = min(n, qrs_on + round(0.6 * rr))
    prev_t = t_start + int(np.argmax(m[t_start:t_first])) - rr if t_start < t_first - 1 else -n
    # P: the largest hump between 300 ms before the QRS (or the previous T peak) and 20 ms before it;
    # a peak at the very start of that stretch is the previous T wave's tail, not a P wave.
    p_a = max(0, qrs_on - round(300 * ms), prev_t + round(40 * ms))
    p_b = max(1, qrs_on - round(20 * ms))
    p_onset: int | None = None
    p_amp = 0.0
    if p_b - p_a > round(40 * ms):
        p_peak = p_a + int(np.argmax(m[p_a:p_b]))
        p_amp = float(m[p_peak])
        pr_noise = float(np.std(m[iso_a : qrs_on + 1])) + 1e-6
        floor = float(np.percentile(m[p_a : p_peak + 1], 10))
        rising = p_peak > p_a + round(10 * ms)
        if p_amp - floor > max(20.0, 4 * pr_noise) and rising and _repeats(beats, med, p_a, p_b):
            # Back from the peak until the magnitude is near the floor; at fast rates the P wave rides on
            # the previous T wave: once it climbs well above the lowest point passed, that valley is it.
            height = p_amp - floor
            # Near the floor, noise decides: stop within the stretch's own spread of it.
            spread = float(np.percentile(m[p_a : p_peak + 1], 50)) - floor
            level = floor + max(0.02 * height, spread)
            k = best = p_peak
            while k > p_a:
                if m[k] <= level:
                    best = k
                    break
                if m[k] < m[best]:
                    best = k
                elif m[k] > m[best] + 0.15 * height:
                    break
                k -= 1
            p_onset = best
    # T: the largest hump of the magnitude after the QRS (from 60 ms past it, and no later than a QT
    # whose Bazett correction would be 600 ms: beyond lies the next P wave at fast rates), then its end.
    t_stop = min(n, qrs_on + round(600 * ms * np.sqrt(rr_s)))
    if p_onset is not None:  # nor past the next beat's P onset
        t_stop = min(t_stop, p_onset + rr)
    t_peak = t_start + int(np.argmax(m[t_start:t_stop])) if t_start < t_stop - 1 else n - 2
    slope = np.gradient(m)
    # The descent: from the peak to 20 ms past where it has lost half its height (not into a next wave).
    half = np.nonzero(m[t_peak:] < 0.5 * m[t_peak])[0]
    half_at = t_peak + int(half[0]) if len(half) else n - 1
    fall = slice(t_peak, max(t_peak + 2, min(n, half_at + round(20 * ms))))
    steep = t_peak + int(np.argmin(slope[fall]))
    t_off = steep + int(round(m[steep] / -slope[steep])) if slope[steep] < 0 else n - 1
    t_off = int(min(max(t_off, t_peak), n - 1))
    return Delineation(med, r, int(qrs_on), int(qrs_off), t_off, p_onset, p_amp, used)
