"""Signal filters around the network (scipy.signal), all zero-phase so that no wave moves in time.

- :func:`remove_baseline`: baseline wander out by a 0.5 Hz high-pass (Butterworth, order 2, forward and
  backward). Two median filters (200 ms then 600 ms, de Chazal et al. 2004) were tried first: they took a
  third of a second per recording and, on slow rates whose T wave lasts over 200 ms, took part of the T
  wave for baseline and moved the measured T offset by up to 160 ms.
- :func:`notch`: mains hum at 50 and 60 Hz (IIR notch, Q = 30); the mains frequency of a recording is
  not in its header, and removing both costs nothing measurable.
- :func:`lowpass`: muscle noise above 40 Hz (Butterworth, order 4, forward and backward).
- :func:`clean` applies the three in that order; :func:`bandpass` gives the 5-15 Hz QRS band.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import signal

MAINS_HZ = (50.0, 60.0)


def remove_baseline(x: NDArray[np.float32], rate_hz: float, cutoff_hz: float = 0.5) -> NDArray[np.float32]:
    """``x`` (leads, samples) without its baseline wander (zero-phase high-pass at ``cutoff_hz``)."""
    sos = signal.butter(2, cutoff_hz, "highpass", fs=rate_hz, output="sos")
    return np.asarray(signal.sosfiltfilt(sos, x, axis=-1), dtype=np.float32)


def notch(x: NDArray[np.float32], rate_hz: float, mains: tuple[float, ...] = MAINS_HZ) -> NDArray[np.float32]:
    """Mains hum removed (each frequency below Nyquist), zero-phase."""
    out = np.asarray(x, dtype=np.float64)
    for hz in mains:
        if hz < rate_hz / 2:
            b, a = signal.iirnotch(hz, 30.0, fs=rate_hz)
            out = signal.filtfilt(b, a, out, axis=-1)
    return out.astype(np.float32)


def lowpass(x: NDArray[np.float32], rate_hz: float, cutoff_hz: float = 40.0) -> NDArray[np.float32]:
    sos = signal.butter(4, min(cutoff_hz, 0.45 * rate_hz), "lowpass", fs=rate_hz, output="sos")
    return np.asarray(signal.sosfiltfilt(sos, x, axis=-1), dtype=np.float32)


def bandpass(x: NDArray[np.float32], rate_hz: float, low_hz: float, high_hz: float) -> NDArray[np.float32]:
    sos = signal.butter(2, (low_hz, min(high_hz, 0.45 * rate_hz)), "bandpass", fs=rate_hz, output="sos")
    return np.asarray(signal.sosfiltfilt(sos, x, axis=-1), dtype=np.float32)


def clean(x: NDArray[np.float32], rate_hz: float) -> NDArray[np.float32]:
    """Baseline wander, mains hum and muscle noise removed: the signal every measurement reads."""
    return lowpass(notch(remove_baseline(x, rate_hz), rate_hz), rate_hz)
