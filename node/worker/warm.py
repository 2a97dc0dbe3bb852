"""Ready an analysis process for steady work: the garbage collector and threads, one small warm-up series.

Both are measured (``bench/analyse.py``), not folklore:

- An analysis allocates a few hundred thousand small container objects (pydicom elements and
  datasets, highdicom content items). With CPython's default threshold of 700 net allocations, the
  collector runs hundreds of times per series and its older generations walk every live dataset: about
  0.1 s of a 300-slice series' 0.5 s encode. The volume itself is a few numpy arrays, which the collector
  does not track, so a higher threshold costs no memory worth counting; reference counting still frees
  everything that is not in a cycle at once. ``gc.freeze`` moves what start-up made (modules, the model,
  highdicom's tables) out of the collector's way for good.
- The first series a process analyses pays one-time costs that no later one does: pydicom's pixel
  decoders and highdicom's standard tables load on first use, ONNX Runtime sizes its buffers on its
  first run. A worker pays them at start, on a small phantom of our own, instead of on the first study.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import cv2

from node.analyse.pipeline import analyse
from node.analyse.runtime import Model
from node.analyse.volume import load_series
from node.encode import encode_results, write_datasets
from node.synth.ecg import make_ecg
from node.synth.phantom import make_phantom
from node.worker.waveforms import analyse_recordings

log = logging.getLogger(__name__)

# Net allocations of container objects between young-generation collections (CPython's default: 700).
GC_THRESHOLD = 50_000
WARM_UP_SLICES = 16
WARM_UP_SEED = 900_000  # far from training (0..), tuning (50000..) and evaluation (100000..) seeds


def tune_process(threshold: int = GC_THRESHOLD) -> None:
    """Set up this process for analyses: the garbage collector, and OpenCV's own threads off.

    Freezes what exists now and collects the young generation every ``threshold`` allocations.
    OpenCV's internal threads are turned off because the runtime already splits its OpenCV work by
    slice over a thread per core; both at once oversubscribe the cores (label decision 0.36 -> 0.27 s
    on 300 slices and 2 cores with OpenCV single-threaded).
    """
    cv2.setNumThreads(1)
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(max(threshold, 1), older, oldest)


def warm_up(models: Iterable[Model], slices: int = WARM_UP_SLICES) -> float:
    """Run a small synthetic CT (a synthetic ECG for a waveform model) through load, analysis, encoding and
    writing once per model.

    Returns the seconds it took. A model that cannot analyse the phantom (another modality's input
    size, say) is logged and left cold: warming up is an optimisation, never a reason not to start.
    Timings the models collected during the warm-up are cleared.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pacs-node-warm-up-") as tmp:
        series = Path(tmp) / "ct"
        make_phantom(WARM_UP_SEED, slices=slices, nodules=1).write_dicom(series)
        for model in models:
            name = model.card.model.name
            try:
                if model.card.input.kind == "waveform":  # an ECG model warms up on a synthetic ECG
                    ecg = make_ecg(WARM_UP_SEED, rate_hz=model.card.input.sampling_rate_hz).write_dicom(
                        Path(tmp) / "ecg" / "ecg.dcm"
                    )
                    analyse_recordings([ecg], model, Path(tmp) / "out" / name)
                    continue
                result = analyse(load_series(series), model)
                write_datasets(encode_results(result, model.card), Path(tmp) / "out" / name)
            except Exception as exc:  # any failure only means a slower first study
                log.warning("warm-up of model %s on a %d-slice phantom failed (%s); it starts cold", name, slices, exc)
            finally:
                model.timings.clear()
    return time.perf_counter() - started
