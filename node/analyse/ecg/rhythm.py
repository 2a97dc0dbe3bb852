"""The recurrent network's input and output: what the card's ``input.kind = "waveform"`` means.

Input, shape (1, channels, window_s x sampling_rate_hz), float32:

- one channel per card lead, in the card's order: the cleaned signal (:func:`filters.clean`) divided by
  the recording's scale (the 99th percentile of its absolute value over all leads: about the QRS
  height), clipped to +-5, so that the rhythm, not a person's or a cart's amplitude, decides (a network
  fed millivolts called the real test ECG sinus at half and atrial fibrillation at full amplitude);
- with ``beat_channel``, two more from the QRS detector the network is measured beside, so it reads the
  ventricular rhythm instead of learning to find beats again: a Gaussian bump (sigma 20 ms, height 1)
  at each detected QRS, and the tachogram: between two beats the instantaneous rate 60000 / RR in bpm,
  standardised as (rate - 90) / 30 (about the training rates' mean and spread; held before the first
  and after the last beat). Between the first and last beat its time average is the heart rate: the
  rate classes' limits at 60 and 100 bpm are thresholds on it. (With the bumps alone, the network called
  the real test ECG, 61 bpm, sinus bradycardia: a GRU at 80 ms a step cannot time RR to the 2 % that
  separates 59 from 61 bpm. The network splits its sinus class at those limits by this channel's mean:
  models/ecg-rhythm/train.py.)

The first ``window_s`` seconds are used (the loader refuses shorter recordings). Output: one score per
card label (no background class: a recording has exactly one rhythm), logits or log-probabilities,
turned into probabilities by a softmax here (for log-probabilities that changes nothing). The training
script (``models/ecg-rhythm/train.py``) builds its batches with the same function, so the node and the
training cannot drift apart.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

from node.analyse.card import InputSpec
from node.analyse.ecg.measure import Analysed, analyse_signals

BEAT_SIGMA_S = 0.02
RATE_CENTRE_BPM = 90.0
RATE_SPREAD_BPM = 30.0
CLIP = 5.0
MIN_SCALE_UV = 50.0  # a flat recording is not blown up to full scale


def rhythm_key(label_name: str) -> str:
    """A card label's name as the synthetic generator names rhythms ("Sinus rhythm" -> "sinus_rhythm")."""
    return label_name.strip().lower().replace(" ", "_")


def network_input(cleaned_uv: NDArray[np.float32], peaks: NDArray[np.int64], spec: InputSpec) -> NDArray[np.float32]:
    """The batch of one for a cleaned recording (card leads, samples) in uV at the card's rate."""
    length = round(spec.window_s * spec.sampling_rate_hz)
    channels = spec.channels
    out = np.zeros((1, channels, length), np.float32)
    have = min(length, cleaned_uv.shape[1])
    leads = len(spec.leads)
    scale = max(float(np.percentile(np.abs(cleaned_uv[:leads, :have]), 99)), MIN_SCALE_UV)
    np.clip(cleaned_uv[:leads, :have] / scale, -CLIP, CLIP, out=out[0, :leads, :have])
    if spec.beat_channel:
        t = np.arange(length, dtype=np.float32)
        sigma = BEAT_SIGMA_S * spec.sampling_rate_hz
        reach = int(4 * sigma)
        inside = [int(p) for p in peaks if 0 <= p < length]
        for p in inside:
            a, b = max(0, p - reach), min(length, p + reach + 1)
            out[0, leads, a:b] = np.maximum(out[0, leads, a:b], np.exp(-0.5 * ((t[a:b] - p) / sigma) ** 2))
        if len(inside) >= 2:
            rates = (60.0 * spec.sampling_rate_hz / np.diff(inside) - RATE_CENTRE_BPM) / RATE_SPREAD_BPM
            out[0, leads + 1, : inside[0]] = rates[0]
            for (a, b), rate in zip(itertools.pairwise(inside), rates, strict=True):
                out[0, leads + 1, a:b] = rate
            out[0, leads + 1, inside[-1] :] = rates[-1]
    return out


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    """Probabilities over the last axis."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)


def prepare(signals_uv: NDArray[np.float32], spec: InputSpec) -> tuple[Analysed, NDArray[np.float32]]:
    """Signal processing and the network's input for one recording (card leads, in uV, at the card's
    rate): what the node runs on every ECG and the training script on every synthetic one."""
    analysed = analyse_signals(signals_uv, spec.sampling_rate_hz)
    return analysed, network_input(analysed.cleaned, analysed.peaks, spec)
