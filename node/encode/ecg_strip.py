"""A 12-lead ECG drawn as on paper: the 3 x 4 layout and a lead II rhythm strip, on a millimetre grid.

25 mm/s and 10 mm/mV at 4 pixels per millimetre (100 pixels a second, 40 a millivolt), the usual
layout: rows I-aVR-V1-V4, II-aVL-V2-V5, III-aVF-V3-V6 (2.5 s each, one after the other in time), then
lead II over the whole 10 s. A line above the grid gives the rhythm and the measurements; the image
carries no patient data. The triage page and people without an ECG viewer read it as a PNG.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from node.analyse.ecg.analysis import EcgResult
from node.analyse.ecg.filters import clean

PX_PER_MM = 4
PX_PER_S = 25 * PX_PER_MM
PX_PER_UV = 10 * PX_PER_MM / 1000.0
ROW_MM = 30
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
HEADER_PX = 40
_MINOR = (220, 220, 255)  # BGR: light pink
_MAJOR = (170, 170, 240)
_TRACE = (0, 0, 0)


def _grid(height: int, width: int) -> NDArray[np.uint8]:
    image = np.full((height, width, 3), 255, np.uint8)
    for x in range(0, width, PX_PER_MM):
        image[:, x] = _MAJOR if x % (5 * PX_PER_MM) == 0 else _MINOR
    for y in range(0, height, PX_PER_MM):
        image[y, :] = _MAJOR if y % (5 * PX_PER_MM) == 0 else _MINOR
    return image


def _trace(image: NDArray[np.uint8], signal: NDArray[np.float32], x0: int, baseline: int, rate: float) -> None:
    """Draw ``signal`` (uV at ``rate``) from ``x0`` with its zero at ``baseline`` (sub-pixel, anti-aliased)."""
    step = max(1, round(rate / (2 * PX_PER_S)))  # two points per pixel are plenty
    t = np.arange(0, len(signal), step)
    xs = x0 + t / rate * PX_PER_S
    ys = baseline - np.clip(signal[t], -2500, 2500) * PX_PER_UV
    points = np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(image, [points], False, _TRACE, 1, cv2.LINE_AA, shift=4)


def render_strip(result: EcgResult) -> NDArray[np.uint8]:
    """The strip as a BGR image."""
    wave = result.waveform
    rate = wave.sampling_rate_hz
    signals = clean(wave.signals, rate)
    seconds = min(10.0, wave.duration_s)
    width = int(seconds * PX_PER_S) + 2 * 5 * PX_PER_MM
    row = ROW_MM * PX_PER_MM
    height = HEADER_PX + 4 * row
    image = np.full((height, width, 3), 255, np.uint8)
    image[HEADER_PX:] = _grid(height - HEADER_PX, width)
    quarter = seconds / 4
    left = 5 * PX_PER_MM
    for r, names in enumerate((*LAYOUT, ("II",))):
        baseline = HEADER_PX + r * row + row // 2
        span = seconds if len(names) == 1 else quarter
        for c, name in enumerate(names):
            if name not in wave.leads:
                continue
            a, b = round(c * quarter * rate), round((c * quarter + span) * rate)
            x0 = left + round(c * quarter * PX_PER_S)
            _trace(image, signals[wave.leads.index(name), a:b], x0, baseline, rate)
            cv2.putText(image, name, (x0 + 4, baseline - row // 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 160), 1)
    m = result.measurements

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    text = (
        f"{result.rhythm} (p {result.confidence:.2f})  HR {ms(m.heart_rate_bpm)} bpm  PR {ms(m.pr_ms)}  "
        f"QRS {ms(m.qrs_ms)}  QT {ms(m.qt_ms)}  QTc {ms(m.qtc_bazett_ms)} ms (Bazett)  25 mm/s  10 mm/mV"
    )
    cv2.putText(image, text, (left, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def write_strip(result: EcgResult, path: Path) -> Path:
    """Write the strip as a PNG at ``path`` (temp name, then rename) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(temp), render_strip(result)):
        raise OSError(f"{path}: the ECG strip could not be written")
    temp.replace(path)
    return path
