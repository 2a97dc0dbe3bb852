"""ECG waveform loading: physical units per lead, resampling, and every refusal with its reason."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from node.analyse.ecg.waveform import STANDARD_LEADS, decode, lead_name, load_waveform
from node.errors import InputError, UnreadableFileError
from node.synth.ecg import make_ecg
from node.synth.ecg_dicom import ecg_dataset

REAL_ECG = Path(get_testdata_file("waveform_ecg.dcm", download=False))


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_real_ecg_loads_twelve_leads_in_millivolts() -> None:
    w = load_waveform(REAL_ECG)
    assert w.leads == STANDARD_LEADS
    assert w.signals.shape == (12, 10_000) and w.sampling_rate_hz == 1000.0 and w.duration_s == 10.0
    # 1.25 uV per step: a resting ECG spans a few mV (thousands of uV).
    assert 1000 < float(np.ptp(w.lead("II"))) < 6000
    # Einthoven and Goldberger hold on the cart's own leads once they are in physical units.
    assert np.allclose(w.lead("III"), w.lead("II") - w.lead("I"), atol=10)
    assert np.allclose(w.lead("aVR"), -(w.lead("I") + w.lead("II")) / 2, atol=10)
    assert w.modality == "ECG" and w.sop_instance_uid and "WaveformSequence" not in w.header


def test_the_carts_annotations_are_never_read() -> None:
    ds = dcmread(REAL_ECG)
    plain = copy.deepcopy(ds)
    del plain.WaveformAnnotationSequence
    assert np.array_equal(decode(ds, min_leads=12).signals, decode(plain, min_leads=12).signals)


def test_resampling_to_the_cards_rate(tmp_path: Path) -> None:
    w = load_waveform(REAL_ECG, rate_hz=500.0)
    assert w.signals.shape == (12, 5000) and w.sampling_rate_hz == 500.0
    full = load_waveform(REAL_ECG)
    # The QRS peaks stay where they were (the anti-aliasing filter keeps a 10 Hz-wide complex).
    assert abs(int(np.argmax(w.lead("II"))) * 2 - int(np.argmax(full.lead("II")))) <= 2


def test_sensitivity_correction_and_baseline_give_physical_values(tmp_path: Path) -> None:
    ecg = make_ecg(3, "sinus_rhythm")
    ds = ecg_dataset(ecg, sensitivity_uv=5.0, baseline_uv=100.0)
    for ch in ds.WaveformSequence[0].ChannelDefinitionSequence:
        ch.ChannelSensitivity = "10"
        ch.ChannelSensitivityCorrectionFactor = "0.5"  # 10 x 0.5 = the 5 uV per step written
    w = load_waveform(_write(ds, tmp_path / "e.dcm"))
    assert np.abs(w.signals - ecg.signals).max() <= 2.6  # half a step (2.5 uV) plus float rounding
    ds.WaveformSequence[0].ChannelDefinitionSequence[0].ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
    assert np.allclose(load_waveform(_write(ds, tmp_path / "mv.dcm")).lead("I"), ecg.signals[0] * 1000, atol=3000)


def test_lead_names_from_mdc_scpecg_and_meaning() -> None:
    def channel(value: str, scheme: str, meaning: str) -> Dataset:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
        ch = Dataset()
        ch.ChannelSourceSequence = [code]
        return ch

    assert lead_name(channel("2:62", "MDC", "x")) == "aVR"
    assert lead_name(channel("5.6.3-9-61", "SCPECG", "x")) == "III"
    assert lead_name(channel("99", "99LOCAL", "Lead aVL")) == "aVL"
    assert lead_name(channel("99", "99LOCAL", "V4")) == "V4"
    assert lead_name(channel("99", "99LOCAL", "Respiration")) is None


def _refusal(tmp_path: Path, change: object) -> str:
    ds = ecg_dataset(make_ecg(4, "sinus_rhythm"))
    change(ds)  # type: ignore[operator]
    with pytest.raises(InputError) as info:
        load_waveform(_write(ds, tmp_path / "bad.dcm"), min_duration_s=10.0)
    return str(info.value)


def _group(ds: Dataset) -> Dataset:
    return ds.WaveformSequence[0]


def test_refusals_name_the_reason(tmp_path: Path) -> None:
    def drop_v3(ds: Dataset) -> None:
        g = _group(ds)
        keep = [c for c in range(12) if c != 8]
        raw = np.frombuffer(g.WaveformData, "<i2").reshape(-1, 12)[:, keep]
        g.WaveformData = np.ascontiguousarray(raw).tobytes()
        g.ChannelDefinitionSequence = [g.ChannelDefinitionSequence[c] for c in keep]
        g.NumberOfWaveformChannels = 11

    assert "at least 12 channels" in _refusal(tmp_path, drop_v3)

    def v3_as_v2(ds: Dataset) -> None:
        _group(ds).ChannelDefinitionSequence[8].ChannelSourceSequence[0].CodeValue = "2:4"

    assert "lead V2 appears twice" in _refusal(tmp_path, v3_as_v2)

    def short(ds: Dataset) -> None:
        g = _group(ds)
        g.NumberOfWaveformSamples = 2000
        g.WaveformData = g.WaveformData[: 2000 * 12 * 2]

    assert "lasts 4.00 s" in _refusal(tmp_path, short)

    def truncated(ds: Dataset) -> None:
        _group(ds).WaveformData = _group(ds).WaveformData[:1000]

    assert "Waveform Data holds 1000 bytes" in _refusal(tmp_path, truncated)

    def flat_v5(ds: Dataset) -> None:
        g = _group(ds)
        raw = np.frombuffer(g.WaveformData, "<i2").reshape(-1, 12).copy()
        raw[:, 10] = 7
        g.WaveformData = raw.tobytes()

    assert "lead V5 is flat" in _refusal(tmp_path, flat_v5)

    def slow(ds: Dataset) -> None:
        _group(ds).SamplingFrequency = "50"

    assert "sampling frequency 50 Hz" in _refusal(tmp_path, slow)

    def bits32(ds: Dataset) -> None:
        _group(ds).WaveformBitsAllocated = 32

    assert "32-bit 'SS' samples are not supported" in _refusal(tmp_path, bits32)

    def clipped_v1(ds: Dataset) -> None:
        g = _group(ds)
        raw = np.frombuffer(g.WaveformData, "<i2").reshape(-1, 12).copy()
        raw[::10, 6] = 32767
        g.WaveformData = raw.tobytes()

    assert "lead(s) V1 saturated" in _refusal(tmp_path, clipped_v1)

    def degrees(ds: Dataset) -> None:
        _group(ds).ChannelDefinitionSequence[0].ChannelSensitivityUnitsSequence[0].CodeValue = "deg"

    assert "'deg' is not a voltage" in _refusal(tmp_path, degrees)

    def respiration(ds: Dataset) -> None:
        _group(ds).ChannelDefinitionSequence[0].ChannelSourceSequence[0].CodeValue = "2:999"
        _group(ds).ChannelDefinitionSequence[0].ChannelSourceSequence[0].CodeMeaning = "Respiration"

    assert "not a lead we know" in _refusal(tmp_path, respiration)


def test_a_rate_below_the_cards_minimum_is_refused() -> None:
    with pytest.raises(InputError, match="sampled at 1000 Hz, the analysis needs at least 2000 Hz"):
        load_waveform(REAL_ECG, min_rate_hz=2000)


def test_general_ecg_storage_loads_like_twelve_lead(tmp_path: Path) -> None:
    ecg = make_ecg(6, "atrial_fibrillation")
    ds = ecg_dataset(ecg)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.2"  # General ECG
    w = load_waveform(_write(ds, tmp_path / "general.dcm"))
    assert w.sop_class_uid.endswith(".9.1.2") and np.abs(w.signals - ecg.signals).max() <= 1.3


def test_the_median_beat_group_is_not_analysed(tmp_path: Path) -> None:
    """A cart's median-beat group (DERIVED) is passed over, whether it comes after the rhythm group or first."""
    ds = ecg_dataset(make_ecg(8, "sinus_rhythm"))
    median = copy.deepcopy(ds.WaveformSequence[0])
    median.WaveformOriginality, median.MultiplexGroupLabel = "DERIVED", "MEDIAN BEAT"
    median.NumberOfWaveformSamples = 600
    median.WaveformData = median.WaveformData[: 600 * 12 * 2]
    ds.WaveformSequence.append(median)
    assert load_waveform(_write(ds, tmp_path / "two.dcm")).signals.shape == (12, 5000)
    ds.WaveformSequence = [median, ds.WaveformSequence[0]]
    assert load_waveform(_write(ds, tmp_path / "first.dcm")).signals.shape == (12, 5000)


def test_images_and_non_dicom_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a waveform instance"):
        load_waveform(Path(get_testdata_file("CT_small.dcm", download=False)))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 10)
    with pytest.raises(UnreadableFileError):
        load_waveform(junk)


def test_a_subset_of_leads_in_the_order_asked() -> None:
    w = load_waveform(REAL_ECG, leads=("V1", "II"))
    full = load_waveform(REAL_ECG)
    assert w.leads == ("V1", "II") and np.array_equal(w.signals[1], full.lead("II"))
