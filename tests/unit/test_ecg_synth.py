"""The synthetic ECG generator: reproducible, physiologically consistent, with exact ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from node.synth.ecg import LEADS, RHYTHMS, make_ecg


def test_same_seed_same_recording() -> None:
    a, b, c = make_ecg(7), make_ecg(7), make_ecg(8)
    assert np.array_equal(a.signals, b.signals) and a.truth == b.truth
    assert not np.array_equal(a.signals, c.signals)


@pytest.mark.parametrize("rhythm", RHYTHMS)
def test_truth_is_consistent(rhythm: str) -> None:
    ecg = make_ecg(11, rhythm)
    t = ecg.truth
    assert ecg.signals.shape == (12, 5000) and ecg.leads == LEADS and ecg.rate_hz == 500.0
    assert t.rhythm == rhythm
    if rhythm == "unreadable":
        return
    assert abs(t.heart_rate_bpm - 60000 / t.rr_ms) < 0.1
    assert abs(t.qtc_ms - t.qt_ms / math.sqrt(t.rr_ms / 1000)) < 0.1
    low, high = {"sinus_bradycardia": (30, 60), "sinus_tachycardia": (100, 165), "sinus_rhythm": (60, 100)}.get(
        rhythm, (50, 165)
    )
    assert low <= t.heart_rate_bpm <= high
    assert (t.pr_ms is None) == (rhythm == "atrial_fibrillation")
    # R peaks follow their QRS onsets within the QRS.
    for onset, peak in zip(t.qrs_onsets, t.r_peaks, strict=True):
        assert 0 <= (peak - onset) / ecg.rate_hz * 1000 <= t.qrs_ms
    rr = np.diff(t.r_peaks) / ecg.rate_hz
    irregular = float(np.std(np.diff(rr)) / np.mean(rr))
    assert (irregular > 0.1) == (rhythm == "atrial_fibrillation" or t.pvc_count > 0), irregular


def test_limb_leads_keep_einthoven_without_noise() -> None:
    s = make_ecg(2, noise=0.0).signals
    assert np.allclose(s[2], s[1] - s[0], atol=1e-2)
    assert np.allclose(s[5], s[1] - s[0] / 2, atol=1e-2)


def test_premature_ventricular_beats_come_early_and_are_counted() -> None:
    with_pvcs = [e for e in (make_ecg(s, "sinus_rhythm") for s in range(40)) if e.truth.pvc_count]
    assert len(with_pvcs) >= 5
    t = with_pvcs[0].truth
    rr = np.diff(t.r_peaks)
    assert rr.min() < 0.8 * np.median(rr) and rr.max() > 1.2 * np.median(rr)  # early beat, then the pause


def test_unreadable_recordings_are_mostly_noise() -> None:
    clean, ruined = make_ecg(3, "sinus_rhythm"), make_ecg(3, "unreadable")
    assert np.std(np.diff(ruined.signals, axis=1)) > 5 * np.std(np.diff(clean.signals, axis=1))


def test_sinus_labels_follow_the_recordings_own_rate() -> None:
    for seed in range(30):
        t = make_ecg(seed, "sinus_rhythm", heart_rate_bpm=60.2).truth
        assert t.rhythm == ("sinus_bradycardia" if t.heart_rate_bpm < 60 else "sinus_rhythm")


def test_a_fixed_heart_rate() -> None:
    assert abs(make_ecg(1, "sinus_rhythm", heart_rate_bpm=72).truth.heart_rate_bpm - 72) < 2
