"""Load one ECG waveform instance as a float array per lead in microvolts, or refuse it with the reason.

What is accepted: a Waveform Storage instance (12-Lead, General or Ambulatory ECG) whose rhythm group
(of the multiplex groups with at least as many channels as asked, an ORIGINAL one before a DERIVED one
such as a cart's median beats, then the longest) holds 8/16-bit signed or unsigned samples, each channel coded by its
Channel Source (SCP-ECG or MDC lead codes, or a recognisable Code Meaning). Each channel becomes
physical units as PS3.3 C.10.9.1 defines them:

    value = stored sample x Channel Sensitivity x Channel Sensitivity Correction Factor + Channel Baseline

in the Channel Sensitivity Units (uV, mV or V; converted to uV). The Waveform Annotation Sequence is
never read: it holds the recording cart's own measurements.

Every refusal is an :class:`~node.errors.InputError` whose message says what is wrong and where.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.errors import InputError, UnreadableFileError

# The standard 12 leads in display order.
STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# Channel Source codes of the 12 leads: SCP-ECG (PS3.16 CID 3001's older scheme) and MDC (ISO/IEEE 11073).
_LEAD_CODES = {
    "SCPECG": {
        "5.6.3-9-1": "I", "5.6.3-9-2": "II", "5.6.3-9-61": "III", "5.6.3-9-62": "aVR", "5.6.3-9-63": "aVL",
        "5.6.3-9-64": "aVF", "5.6.3-9-3": "V1", "5.6.3-9-4": "V2", "5.6.3-9-5": "V3", "5.6.3-9-6": "V4",
        "5.6.3-9-7": "V5", "5.6.3-9-8": "V6",
    },
    "MDC": {
        "2:1": "I", "2:2": "II", "2:61": "III", "2:62": "aVR", "2:63": "aVL", "2:64": "aVF", "2:3": "V1",
        "2:4": "V2", "2:5": "V3", "2:6": "V4", "2:7": "V5", "2:8": "V6",
    },
}  # fmt: skip
_MEANING = re.compile(r"^\s*(?:lead\s+)?(I{1,3}|aV[RLF]|V[1-6])\b", re.IGNORECASE)
_TO_UV = {"uV": 1.0, "mV": 1e3, "V": 1e6}
_DTYPES: dict[tuple[int, str], type[np.integer[Any]]] = {
    (8, "SB"): np.int8,
    (8, "UB"): np.uint8,
    (16, "SS"): np.int16,
    (16, "US"): np.uint16,
}
# Sampling rates an ECG analysis can use (the 12-lead IOD allows 200-1000 Hz; Holters record lower).
MIN_RATE_HZ = 100.0
MAX_RATE_HZ = 10_000.0


@dataclass(frozen=True, eq=False)
class Waveform:
    """One ECG recording: ``signals`` (leads, samples) float32 in uV at ``sampling_rate_hz``.

    ``header`` is the instance without its waveform data (for references and the result's patient,
    study and equipment modules).
    """

    signals: NDArray[np.float32]
    sampling_rate_hz: float
    leads: tuple[str, ...]
    header: Dataset
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    source: str = ""

    @property
    def duration_s(self) -> float:
        return float(self.signals.shape[1] / self.sampling_rate_hz)

    def lead(self, name: str) -> NDArray[np.float32]:
        row: NDArray[np.float32] = self.signals[self.leads.index(name)]
        return row

    def select(self, leads: tuple[str, ...]) -> Waveform:
        """The same recording with only ``leads``, in that order (refused if one is missing)."""
        missing = [name for name in leads if name not in self.leads]
        if missing:
            raise InputError(
                f"{self.source or 'waveform'}: lead(s) {', '.join(missing)} missing (recording has "
                f"{', '.join(self.leads)})"
            )
        rows = [self.leads.index(name) for name in leads]
        return _replace(self, self.signals[rows], self.sampling_rate_hz, leads)

    def resampled(self, rate_hz: float) -> Waveform:
        """The recording at ``rate_hz`` (polyphase resampling with its anti-aliasing filter)."""
        if abs(rate_hz - self.sampling_rate_hz) < 1e-6:
            return self
        from scipy.signal import resample_poly

        ratio = Fraction(rate_hz / self.sampling_rate_hz).limit_denominator(1000)
        out = resample_poly(self.signals, ratio.numerator, ratio.denominator, axis=1)
        return _replace(self, np.ascontiguousarray(out, dtype=np.float32), rate_hz, self.leads)


def _replace(w: Waveform, signals: NDArray[np.float32], rate: float, leads: tuple[str, ...]) -> Waveform:
    return Waveform(
        signals,
        rate,
        leads,
        w.header,
        w.study_instance_uid,
        w.series_instance_uid,
        w.sop_instance_uid,
        w.sop_class_uid,
        w.modality,
        w.source,
    )


def lead_name(channel: Dataset) -> str | None:
    """The standard lead a channel definition carries, from its Channel Source code or meaning."""
    source = channel.get("ChannelSourceSequence")
    if not source:
        return None
    code = source[0]
    scheme = str(code.get("CodingSchemeDesignator", "") or "")
    value = str(code.get("CodeValue", "") or "").replace(" ", "")
    known = _LEAD_CODES.get(scheme, {}).get(value)
    if known:
        return known
    match = _MEANING.match(str(code.get("CodeMeaning", "") or ""))
    if match is None:
        return None
    text = match.group(1)
    return text.upper() if text.upper().startswith(("I", "V")) else "aV" + text[2].upper()


def _units_to_uv(channel: Dataset, where: str) -> float:
    units = channel.get("ChannelSensitivityUnitsSequence")
    if not units:
        raise InputError(f"{where}: Channel Sensitivity Units Sequence missing (cannot tell uV from mV)")
    unit = str(units[0].get("CodeValue", "") or "")
    if unit not in _TO_UV:
        raise InputError(f"{where}: Channel Sensitivity unit '{unit}' is not a voltage (uV, mV or V)")
    return _TO_UV[unit]


def _number(channel: Dataset, keyword: str, default: float, where: str) -> float:
    value = channel.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {keyword} '{value}' is not a number") from exc
    if not np.isfinite(number):
        raise InputError(f"{where}: {keyword} is not finite")
    return number


def _group(ds: Dataset, min_channels: int, where: str) -> tuple[int, Dataset]:
    groups = ds.get("WaveformSequence")
    if not groups:
        raise InputError(f"{where}: no Waveform Sequence: not a waveform instance (SOP class {ds.get('SOPClassUID')})")
    # The rhythm group: enough channels, ORIGINAL before DERIVED (a cart's median beats), then the longest.
    usable = [(n, g) for n, g in enumerate(groups) if int(g.get("NumberOfWaveformChannels", 0) or 0) >= min_channels]
    if usable:

        def rank(item: tuple[int, Dataset]) -> tuple[bool, int]:
            group = item[1]
            return (
                str(group.get("WaveformOriginality", "")) == "ORIGINAL",
                int(group.get("NumberOfWaveformSamples", 0) or 0),
            )

        return max(usable, key=rank)
    counts = [int(g.get("NumberOfWaveformChannels", 0) or 0) for g in groups]
    raise InputError(f"{where}: needs a multiplex group of at least {min_channels} channels, groups have {counts}")


def decode(ds: Dataset, source: str = "", min_leads: int = 1) -> Waveform:
    """The first multiplex group of ``ds`` with at least ``min_leads`` channels, in uV per named lead."""
    where = source or "waveform"
    index, group = _group(ds, min_leads, where)
    where = f"{where}, multiplex group {index + 1}"
    channels = int(group.NumberOfWaveformChannels)
    samples = int(group.get("NumberOfWaveformSamples", 0) or 0)
    rate = _number(group, "SamplingFrequency", 0.0, where)
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise InputError(f"{where}: sampling frequency {rate:g} Hz outside {MIN_RATE_HZ:g}-{MAX_RATE_HZ:g} Hz")
    bits = int(group.get("WaveformBitsAllocated", 0) or 0)
    interpretation = str(group.get("WaveformSampleInterpretation", "") or "")
    dtype = _DTYPES.get((bits, interpretation))
    if dtype is None:
        raise InputError(f"{where}: {bits}-bit '{interpretation}' samples are not supported (8/16-bit SB/UB/SS/US)")
    definitions = group.get("ChannelDefinitionSequence") or []
    if len(definitions) != channels:
        raise InputError(f"{where}: {len(definitions)} channel definitions for {channels} channels")
    data = group.get("WaveformData")
    itemsize = np.dtype(dtype).itemsize
    if samples < 1 or data is None or len(data) < samples * channels * itemsize:
        have = 0 if data is None else len(data)
        raise InputError(f"{where}: Waveform Data holds {have} bytes, {samples} x {channels} samples need more")
    raw = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=samples * channels)
    raw = raw.reshape(samples, channels).T
    names: list[str] = []
    saturated: list[str] = []
    info = np.iinfo(dtype)
    limits = (info.min, info.max)
    signals = np.empty((channels, samples), np.float32)
    for c, channel in enumerate(definitions):
        at = f"{where}, channel {c + 1}"
        name = lead_name(channel)
        if name is None:
            raise InputError(f"{at}: Channel Source is not a lead we know (need I, II, III, aVR, aVL, aVF, V1-V6)")
        if name in names:
            raise InputError(f"{at}: lead {name} appears twice")
        sensitivity = _number(channel, "ChannelSensitivity", float("nan"), at)
        if not np.isfinite(sensitivity) or sensitivity == 0:
            raise InputError(f"{at}: Channel Sensitivity missing or zero")
        scale = sensitivity * _number(channel, "ChannelSensitivityCorrectionFactor", 1.0, at)
        baseline = _number(channel, "ChannelBaseline", 0.0, at)
        to_uv = _units_to_uv(channel, at)
        signals[c] = ((raw[c].astype(np.float64) * scale + baseline) * to_uv).astype(np.float32)
        if len(raw[c]) and np.mean((raw[c] == limits[0]) | (raw[c] == limits[1])) > 0.02:
            saturated.append(name)
        names.append(name)
    if saturated:
        raise InputError(
            f"{where}: lead(s) {', '.join(saturated)} saturated (over 2 % of samples at the converter's limit)"
        )
    header = Dataset()
    for element in ds:
        if element.keyword != "WaveformSequence":
            header.add(element)
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    return Waveform(
        signals=signals,
        sampling_rate_hz=rate,
        leads=tuple(names),
        header=header,
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        modality=str(ds.get("Modality", "") or ""),
        source=source,
    )


def load_waveform(
    path: Path,
    leads: tuple[str, ...] = STANDARD_LEADS,
    rate_hz: float | None = None,
    min_duration_s: float = 0.0,
    min_rate_hz: float = MIN_RATE_HZ,
) -> Waveform:
    """Read ``path`` and return ``leads`` in uV at ``rate_hz`` (the file's own rate when None).

    Raises
    ------
    UnreadableFileError
        The file is not DICOM.
    InputError
        It is not a waveform, a lead the caller needs is missing, the samples cannot be converted,
        the recording is shorter than ``min_duration_s`` or sampled below ``min_rate_hz``, or a needed
        lead is flat, saturated or not finite.
    """
    try:
        ds = dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise UnreadableFileError(f"{path.name}: not a readable DICOM file: {exc}") from exc
    wave = decode(ds, path.name, min_leads=len(leads)).select(leads)
    if wave.sampling_rate_hz < min_rate_hz:
        raise InputError(
            f"{path.name}: sampled at {wave.sampling_rate_hz:g} Hz, the analysis needs at least {min_rate_hz:g} Hz"
        )
    if wave.duration_s + 1e-9 < min_duration_s:
        raise InputError(
            f"{path.name}: recording lasts {wave.duration_s:.2f} s, the analysis needs {min_duration_s:g} s"
        )
    for name, signal in zip(wave.leads, wave.signals, strict=True):
        if not np.isfinite(signal).all():
            raise InputError(f"{path.name}: lead {name} holds values that are not finite")
        if float(np.ptp(signal)) < 10.0:  # under 10 uV peak to peak: an electrode off, not a heart
            raise InputError(f"{path.name}: lead {name} is flat (under 10 uV peak to peak): electrode off?")
    return wave if rate_hz is None else wave.resampled(rate_hz)
