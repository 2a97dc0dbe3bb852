"""Benchmark the ECG pipeline: recordings per second on one core, and pipeline / raw inference.

    .venv/bin/python bench/ecg.py [--recordings 50] [--seed 900000] [--repeat 3]

Writes ``--recordings`` synthetic 12-lead ECGs (500 Hz, 10 s, mixed rhythms) to a temporary folder, then,
pinned to one core (ONNX Runtime with one thread, BLAS/OpenMP limited to one), runs each recording through
the whole pipeline as a worker does: load (file -> microvolts at the card's rate), signal processing
(filters, QRS detection, delineation, measurements) and the network's input, ONNX inference, and the ECG
report (build + write). It then times raw ONNX Runtime inference on the same prepared inputs (only
``session.run``). Figures are medians of ``--repeat`` runs over all recordings: recordings per second,
milliseconds per step, and the ratio of the whole pipeline to raw inference. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.analyse.card import find_card  # noqa: E402
from node.analyse.ecg.analysis import analyse_ecg, load  # noqa: E402
from node.analyse.ecg.rhythm import prepare  # noqa: E402
from node.analyse.runtime import Model  # noqa: E402
from node.encode import write_datasets  # noqa: E402
from node.encode.ecg_sr import build_ecg_sr  # noqa: E402
from node.synth.ecg import make_ecg  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=50)
    parser.add_argument("--seed", type=int, default=900_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    card = find_card("ecg-rhythm")
    model = Model(card, threads=1)
    with tempfile.TemporaryDirectory(prefix="bench-ecg-") as tmp:
        paths = [
            make_ecg(seed).write_dicom(Path(tmp) / "in" / f"{seed}.dcm")
            for seed in range(args.seed, args.seed + args.recordings)
        ]
        analyse_ecg(load(paths[0], card), model)  # warm-up: first-run costs of ONNX Runtime and scipy
        runs: list[dict[str, float]] = []
        for _ in range(args.repeat):
            steps = {"load": 0.0, "signal": 0.0, "inference": 0.0, "encode": 0.0}
            started = time.perf_counter()
            for n, path in enumerate(paths):
                t0 = time.perf_counter()
                wave = load(path, card)
                steps["load"] += time.perf_counter() - t0
                result = analyse_ecg(wave, model)
                steps["signal"] += result.timings["signal"]
                steps["inference"] += result.timings["inference"]
                t0 = time.perf_counter()
                write_datasets([build_ecg_sr(result, card)], Path(tmp) / "out" / str(n))
                steps["encode"] += time.perf_counter() - t0
            steps["pipeline"] = time.perf_counter() - started
            inputs = [prepare(load(p, card).signals, card.input)[1] for p in paths]
            t0 = time.perf_counter()
            for batch in inputs:
                model.session.run([model.output_name], {model.input_name: batch})
            steps["raw_inference"] = time.perf_counter() - t0
            runs.append(steps)
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    ratios = [run["pipeline"] / run["raw_inference"] for run in runs]
    count = args.recordings
    print(f"{count} recordings x {args.repeat} runs, one core (ONNX Runtime 1 thread), medians:")
    print(
        f"  pipeline: {count / median['pipeline']:.1f} recordings/s ({1000 * median['pipeline'] / count:.1f} ms each)"
    )
    for key in ("load", "signal", "inference", "encode"):
        print(f"    {key:<10}{1000 * median[key] / count:7.2f} ms per recording")
    print(f"  raw inference: {1000 * median['raw_inference'] / count:.2f} ms per recording")
    print(f"  pipeline / raw inference: {statistics.median(ratios):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
