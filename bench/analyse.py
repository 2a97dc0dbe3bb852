"""Benchmark the analysis pipeline on a 300-slice phantom series.

    .venv/bin/python bench/analyse.py [--slices 300] [--seed 4242] [--repeat 3] [--threads 0]

Writes a phantom series to a temporary folder, then runs the pipeline in a fresh child process (so the
peak RSS is the pipeline's alone, not the generator's): load, segment (preprocess, ONNX inference, resize
back), post-process + measure, encode + write SEG and SR. In the same child it times raw ONNX Runtime
inference of the same slices (inputs prepared beforehand, only ``session.run`` timed), and reports the
ratio of the whole pipeline to it, run by run. Each figure is the median of ``--repeat`` runs (the ratio
is the median of the runs' own ratios); the peak RSS is the child's maximum resident set at the end of
the first pipeline run (model loaded, Python and libraries included), before the raw-inference
comparison allocates anything. Before the runs, the child does what a worker does once at start
(node.worker.warm: a warm-up series, then the garbage collector's thresholds), so the runs measure a
worker's steady state; the warm-up's time is printed on its own. Run it on a quiet machine: the
pipeline's single-threaded steps and ONNX Runtime's two threads suffer differently from a busy neighbour.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.analyse import measure, postprocess
from node.analyse.buffer import VoxelBuffer
from node.analyse.card import find_card
from node.analyse.preprocess import plan_2d, to_model
from node.analyse.runtime import Model, context_stack
from node.analyse.types import AnalysisResult
from node.analyse.volume import load_series
from node.encode import encode_results, write_datasets
from node.synth.phantom import make_phantom
from node.worker.warm import tune_process, warm_up


def child(series_dir: Path, out_dir: Path, repeat: int, threads: int) -> dict[str, object]:
    """Run the pipeline ``repeat`` times in this process; return per-stage medians and the peak RSS."""
    card = find_card("lung-nodule-ct")
    started = time.perf_counter()
    model = Model(card, threads=threads)
    model_load = time.perf_counter() - started
    # What a worker does once at start (node.children.run_worker): the runs below are its steady state.
    warm_up_s = warm_up([model])
    tune_process()
    voxels = VoxelBuffer()  # as the worker keeps one (node.analyse.buffer)
    runs: list[dict[str, float]] = []
    peak_rss_mb = 0.0
    volume_bytes = 0
    slices = 0
    for n in range(repeat):
        model.timings.clear()
        t = {}
        t0 = time.perf_counter()
        volume = load_series(series_dir, buffer=voxels)
        t["load"] = time.perf_counter() - t0
        volume_bytes, slices = volume.voxels.nbytes, volume.shape[0]
        t0 = time.perf_counter()
        labels = model.segment(volume)
        t["segment"] = time.perf_counter() - t0
        t["preprocess"] = model.timings["preprocess"]
        t["inference"] = model.timings["inference"]
        t["resize_back"] = model.timings["resize_back"]
        t0 = time.perf_counter()
        postprocess.clean(labels, card, volume)
        found = measure.findings(labels, card, volume)
        priority, reason = measure.triage(found, card)
        present = {label.index: bool((labels == label.index).any()) for label in card.labels}
        t["postprocess"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = AnalysisResult(volume, labels, found, priority, reason, present)
        write_datasets(encode_results(result, card), out_dir / f"run{n}")
        t["encode"] = time.perf_counter() - t0
        t["pipeline"] = t["load"] + t["segment"] + t["postprocess"] + t["encode"]

        # Raw ONNX Runtime on the same slices: inputs made beforehand, only session.run timed.
        spec = card.input
        plan = plan_2d(volume.shape[1:], (volume.spacing[1], volume.spacing[2]), spec)
        prepared = np.stack([to_model(volume.voxels[k], plan, spec) for k in range(slices)])
        spacing = volume.spacing[0]
        del volume, labels, result
        if n == 0:  # the pipeline's own peak, before the raw-inference inputs below
            peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        raw = 0.0
        for start in range(0, slices, spec.batch_size):
            stop = min(slices, start + spec.batch_size)
            batch = np.stack([context_stack(prepared, k, spacing, spec) for k in range(start, stop)])
            t0 = time.perf_counter()
            model.session.run([model.output_name], {model.input_name: batch})
            raw += time.perf_counter() - t0
        t["raw_inference"] = raw
        del prepared
        runs.append(t)
    for n, r in enumerate(runs):
        r["ratio"] = r["pipeline"] / r["raw_inference"]
        print(
            f"  run {n}: pipeline {r['pipeline']:.2f} s, raw {r['raw_inference']:.2f} s, ratio {r['ratio']:.2f}",
            file=sys.stderr,
        )
    medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return {
        "slices": slices,
        "volume_mb": volume_bytes / 1e6,
        "model_load_s": model_load,
        "warm_up_s": warm_up_s,
        "median_s": medians,
        "peak_rss_mb": peak_rss_mb,
        "findings": len(found),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all cores)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("SERIES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.repeat, args.threads)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-analyse-") as tmp:
        series_dir, out_dir = Path(tmp) / "ct", Path(tmp) / "out"
        print(f"writing a {args.slices}-slice phantom series (seed {args.seed}) ...", file=sys.stderr, flush=True)
        p = make_phantom(args.seed, slices=args.slices, nodules=4)
        p.write_dicom(series_dir)
        del p
        print(f"running the pipeline {args.repeat} times in a fresh process ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(series_dir),
                str(out_dir),
                "--repeat",
                str(args.repeat),
                "--threads",
                str(args.threads),
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    m = figures["median_s"]
    slices = figures["slices"]
    print(
        f"analysis pipeline, {slices} slices of 512x512 ({figures['volume_mb']:.0f} MB as float32), "
        f"median of {args.repeat}:"
    )
    for key in ("load", "preprocess", "inference", "resize_back", "postprocess", "encode", "pipeline"):
        print(f"  {key:14s} {m[key]:7.2f} s")
    print(f"  {'raw inference':14s} {m['raw_inference']:7.2f} s  (onnxruntime alone, same slices)")
    print(f"slices per second (pipeline): {slices / m['pipeline']:.1f}")
    print(f"pipeline / raw inference:     {m['ratio']:.2f}  (target <= 1.3; median of the runs' own ratios)")
    ratio = figures["peak_rss_mb"] / figures["volume_mb"]
    print(f"peak RSS: {figures['peak_rss_mb']:.0f} MB = {ratio:.1f} x the volume  (target <= 4)")
    print(
        f"model load {figures['model_load_s']:.2f} s, worker warm-up {figures['warm_up_s']:.2f} s (once per start); "
        f"{figures['findings']} findings"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
