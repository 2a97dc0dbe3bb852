"""ECG analysis: a waveform instance becomes leads in millivolts, filtered signals, beats, measurements
and a rhythm from a recurrent network.

::

    waveform.load_waveform ──▶ filters.clean ──▶ beats.detect_qrs ──▶ beats.delineate ──▶ measure.measurements
            (mV per lead,                          (R peaks)          (P/QRS/T on the      (HR, RR, PR, QRS,
             card's rate)                                               median beat)         QT, QTc in ms/bpm)
                         ──▶ rhythm.classify (ONNX, card) beside rhythm rules (the baseline) ──▶ EcgResult

Nothing here reads the cart's own annotations (Waveform Annotation Sequence): they are the recording
device's measurements, never an input of ours.
"""
