"""Compare variants of the lung-nodule-ct model: input grid, context slices, seed, training length.

    python models/lung-nodule-ct/sweep.py --work /tmp/sweep --device cuda [--series 40] [--first-seed 50000]

Made for a machine with a GPU and many cores, where a variant trains in a minute or two: training
phantoms render once per input spec on every core (train.py's own functions), the variants train side by
side as ``train.py`` processes on the device, and each is scored by the node's own pipeline (ONNX Runtime,
one thread per process) on the same tuning phantoms (seeds from 50000: never the held-out range that
``pacs-node models evaluate`` reports). Writes ``report.txt`` (a table and every missed nodule) and each
variant's folder (model.onnx + model.toml) under ``--work``. Pick on tuning seeds, then report the chosen
model once on the held-out range.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from node.analyse import postprocess  # noqa: E402
from node.analyse.card import load_card  # noqa: E402
from node.analyse.evaluate import Scores, centre_voxel, score  # noqa: E402
from node.analyse.pipeline import analyse  # noqa: E402
from node.analyse.runtime import Model  # noqa: E402
from node.analyse.volume import load_series  # noqa: E402
from node.synth.phantom import make_phantom  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    spacing_mm: float = 1.5
    size: int = 256
    context_slices: int = 2
    context_spacing_mm: float = 3.0
    seed: int = 0
    steps: int = 3000
    base: int = 12

    @property
    def spec_key(self) -> tuple[float, int, int, float]:
        return (self.spacing_mm, self.size, self.context_slices, self.context_spacing_mm)


VARIANTS = {
    v.name: v
    for v in (
        Variant("ref"),  # today's card, retrained
        Variant("hires", spacing_mm=1.0, size=384),
        Variant("finez", context_slices=3, context_spacing_mm=2.0),
        Variant("hires-finez", spacing_mm=1.0, size=384, context_slices=3, context_spacing_mm=2.0),
        Variant("hires-finez-s1", spacing_mm=1.0, size=384, context_slices=3, context_spacing_mm=2.0, seed=1),
    )
}


def variant_card(text: str, v: Variant) -> str:
    """The shipped card's text with the variant's input spec."""
    for key, value in (
        ("size", f"[{v.size}, {v.size}]"),
        ("spacing_mm", f"[{v.spacing_mm}, {v.spacing_mm}]"),
        ("context_slices", str(v.context_slices)),
        ("context_spacing_mm", str(v.context_spacing_mm)),
    ):
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        if n != 1:
            raise SystemExit(f"model.toml has no '{key} =' line to change")
    return text


def render(
    variants: list[Variant], work: Path, anatomies: int, workers: int
) -> dict[tuple[float, int, int, float], Path]:
    import train  # needs torch: imported only where training data is made

    card = load_card(work / variants[0].name, verify=False)
    classes = 1 + len(card.labels)
    keys = sorted({v.spec_key for v in variants})
    specs = [load_card(work / next(v.name for v in variants if v.spec_key == k), verify=False).input for k in keys]
    started = time.monotonic()
    data = train.make_dataset(anatomies, 16, 0, specs, classes, workers)
    folders = {}
    for n, (key, (x, y)) in enumerate(zip(keys, data, strict=True)):
        folder = work / f"data{n}"
        folder.mkdir(exist_ok=True)
        np.save(folder / "x.npy", x)
        np.save(folder / "y.npy", y)
        folders[key] = folder
        print(f"dataset {n} {key}: x {x.shape}, y {y.shape}", flush=True)
    print(f"rendered {len(keys)} datasets in {time.monotonic() - started:.0f} s", flush=True)
    return folders


def train_all(variants: list[Variant], work: Path, data: dict, device: str) -> None:
    started = time.monotonic()
    procs = []
    for v in variants:
        log = (work / v.name / "train.log").open("w")
        cmd = [sys.executable, str(HERE / "train.py"), "--out", str(work / v.name), "--dataset", str(data[v.spec_key])]
        cmd += ["--device", device, "--seed", str(v.seed), "--steps", str(v.steps), "--base", str(v.base)]
        procs.append((v, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    for v, proc, log in procs:
        rc = proc.wait()
        log.close()
        tail = (work / v.name / "train.log").read_text().strip().splitlines()[-1:]
        print(f"trained {v.name}: rc {rc}, {tail}", flush=True)
    print(f"trained {len(variants)} variants in {time.monotonic() - started:.0f} s", flush=True)


_models: dict[str, Model] = {}


def score_seed(job: tuple[int, list[str], str]) -> tuple[int, dict[str, Scores], dict[str, list[str]]]:
    seed, names, work = job
    cv2.setNumThreads(1)  # one process per core
    for name in names:
        if name not in _models:
            _models[name] = Model(load_card(Path(work) / name, verify=True), threads=1)
    phantom = make_phantom(seed, slices=200, nodules=1 + seed % 6)
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
        phantom.write_dicom(Path(tmp))
        volume = load_series(Path(tmp))
    scores, misses = {}, {}
    for name in names:
        model = _models[name]
        result = analyse(volume, model)
        s = Scores()
        score(s, result.labels, phantom, volume, 2, 5.0)
        scores[name] = s
        comp, _ = postprocess.components(result.labels == 2)
        missed = []
        for nodule in phantom.nodules:
            k, j, i = centre_voxel(nodule, phantom)
            if 0 <= k < comp.shape[0] and nodule.diameter_mm >= 5.0 and not comp[k, j, i]:
                missed.append(f"seed {seed} {nodule.diameter_mm:.1f} mm {nodule.attached} dz {phantom.slice_spacing}")
        misses[name] = missed
    return seed, scores, misses


def merge(total: Scores, part: Scores) -> None:
    for label, values in part.dice.items():
        total.dice.setdefault(label, []).extend(values)
    for f in ("true_positives", "false_negatives", "false_positives", "correct_predictions", "scans"):
        setattr(total, f, getattr(total, f) + getattr(part, f))
    total.volume_errors.extend(part.volume_errors)


def report(names: list[str], totals: dict[str, Scores], misses: dict[str, list[str]], done: int) -> str:
    rows = [f"{done} series scored", f"{'variant':18s} found  sens   FP/scan prec   F1     dice-l dice-n volerr"]
    for name in names:
        s = totals[name]
        rows.append(
            f"{name:18s} {s.true_positives:3d}/{s.true_positives + s.false_negatives:<3d}{s.sensitivity:.3f}  "
            f"{s.fp_per_scan:5.2f}  {s.precision:.3f}  {s.f1:.3f}  {s.mean_dice(1):.3f}  {s.mean_dice(2):.3f}  "
            f"{s.median_volume_error:.3f}"
        )
    for name in names:
        rows.append(f"missed by {name}: " + "; ".join(sorted(misses[name])))
    return "\n".join(rows) + "\n"


def evaluate_all(names: list[str], work: Path, series: int, first_seed: int, workers: int, out: Path) -> None:
    started = time.monotonic()
    totals = {name: Scores() for name in names}
    misses: dict[str, list[str]] = {name: [] for name in names}
    jobs = [(first_seed + n, names, str(work)) for n in range(series)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, (_seed, scores, missed) in enumerate(pool.imap_unordered(score_seed, jobs), start=1):
            for name in names:
                merge(totals[name], scores[name])
                misses[name] += missed[name]
            text = report(names, totals, misses, done)
            (out / "report.txt").write_text(text)
            if done % 8 == 0 or done == series:
                print(f"[{time.monotonic() - started:.0f} s]\n{text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="where report.txt goes (default: --work)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--anatomies", type=int, default=100)
    parser.add_argument("--steps", type=int, help="override every variant's steps (for a quick try)")
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=50000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-train", action="store_true", help="score the variant folders already in --work")
    args = parser.parse_args()
    variants = [VARIANTS[n] for n in args.variants]
    if args.steps:
        variants = [dataclasses.replace(v, steps=args.steps) for v in variants]
    out = args.out or args.work
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_train:
        text = (HERE / "model.toml").read_text(encoding="utf-8")
        for v in variants:
            folder = args.work / v.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.toml").write_text(variant_card(text, v), encoding="utf-8")
        data = render(variants, args.work, args.anatomies, args.workers)
        train_all(variants, args.work, data, args.device)
        for key_folder in set(data.values()):
            shutil.rmtree(key_folder)
    evaluate_all([v.name for v in variants], args.work, args.series, args.first_seed, args.workers, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
