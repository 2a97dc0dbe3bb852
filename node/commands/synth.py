"""``pacs-node synth ct`` / ``synth ecg``: write synthetic CT series or 12-lead ECGs with their ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from node.commands.output import progress_bar, say


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("synth", help="generate synthetic test data (no patient data)")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    ct = kinds.add_parser(
        "ct",
        help="a chest CT phantom series with nodules",
        description="Write a CT Image Storage series of a synthetic chest (body, lungs with vessels, heart, "
        "spine, ribs, table, nodules of 3-30 mm) plus its ground truth: truth.json (nodule centres in patient "
        "mm, diameters, volumes) and labels.npz (label volume: 0 background, 1 lung, 2 nodule).",
        epilog="example: pacs-node synth ct --out demo/ct --slices 120 --seed 7",
    )
    ct.add_argument("--out", type=Path, required=True, help="folder for the DICOM files (created)")
    ct.add_argument("--slices", type=int, default=120, help="number of axial slices (default 120)")
    ct.add_argument("--seed", type=int, default=1, help="seed: same seed, same series (default 1)")
    ct.add_argument("--nodules", type=int, default=None, help="number of nodules (default: 0-6, by seed)")
    ct.add_argument("--size", type=int, default=512, help="rows and columns (default 512)")
    ct.set_defaults(func=run_ct)
    ecg = kinds.add_parser(
        "ecg",
        help="synthetic 12-lead ECGs with their ground truth",
        description="Write 12-Lead ECG Waveform Storage instances of synthetic recordings (sinus rhythm, sinus "
        "bradycardia, sinus tachycardia, atrial fibrillation; baseline wander, mains hum and muscle noise) plus "
        "truth.json per recording: rhythm, heart rate, RR, PR, QRS, QT, QTc and the R peaks.",
        epilog="example: pacs-node synth ecg --out demo/ecg --count 4 --seed 7",
    )
    ecg.add_argument("--out", type=Path, required=True, help="folder for the DICOM files (created)")
    ecg.add_argument("--count", type=int, default=1, help="number of recordings (default 1), seeds seed, seed+1, ...")
    ecg.add_argument("--seed", type=int, default=1, help="seed of the first recording (default 1)")
    ecg.add_argument(
        "--rhythm",
        default=None,
        help="sinus_rhythm, sinus_bradycardia, sinus_tachycardia or atrial_fibrillation (default: drawn by seed)",
    )
    ecg.add_argument("--rate", type=float, default=500.0, help="sampling rate in Hz (default 500)")
    ecg.add_argument("--noise", type=float, default=1.0, help="noise scale, 0 = clean (default 1)")
    ecg.set_defaults(func=run_ecg)


def run_ct(args: argparse.Namespace) -> int:
    if args.slices < 1 or args.size < 16:
        raise SystemExit("error: --slices must be >= 1 and --size >= 16")
    say(f"rendering {args.slices} slices of {args.size}x{args.size} (seed {args.seed}) ...")
    import numpy as np  # the phantom's imports load only when a phantom is made

    from node.synth.phantom import make_phantom

    phantom = make_phantom(args.seed, slices=args.slices, rows=args.size, columns=args.size, nodules=args.nodules)
    dicom_dir = args.out
    paths = phantom.write_dicom(
        dicom_dir,
        progress=progress_bar("writing"),
    )
    truth_dir = args.out.parent / f"{args.out.name}-truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    (truth_dir / "truth.json").write_text(json.dumps(phantom.truth_json(), indent=2) + "\n", encoding="utf-8")
    np.savez_compressed(truth_dir / "labels.npz", labels=phantom.labels)
    print(f"wrote {len(paths)} slices to {dicom_dir}")
    print(f"  pixel spacing {phantom.pixel_spacing:.3f} mm, slice spacing {phantom.slice_spacing:g} mm")
    for n in phantom.nodules:
        x, y, z = n.centre_mm
        print(f"  nodule {n.diameter_mm:5.1f} mm, {n.volume_mm3:7.0f} mm3 at ({x:.1f}, {y:.1f}, {z:.1f}), {n.attached}")
    print(f"ground truth in {truth_dir} (truth.json, labels.npz)")
    return 0


def run_ecg(args: argparse.Namespace) -> int:
    from node.synth.ecg import RHYTHMS, make_ecg

    if args.count < 1 or not 200 <= args.rate <= 1000:
        raise SystemExit("error: --count must be >= 1 and --rate 200..1000 Hz (the 12-lead ECG IOD's range)")
    if args.rhythm is not None and args.rhythm not in RHYTHMS:
        raise SystemExit(f"error: --rhythm must be one of {', '.join(RHYTHMS)}")
    truths = {}
    for seed in range(args.seed, args.seed + args.count):
        ecg = make_ecg(seed, args.rhythm, rate_hz=args.rate, noise=args.noise)
        path = ecg.write_dicom(args.out / f"ECG{seed:06d}.dcm")
        truths[path.name] = ecg.truth.to_json()
        t = ecg.truth
        pr = "-" if t.pr_ms is None else f"{t.pr_ms:.0f}"
        print(f"  {path.name}: {t.rhythm}, {t.heart_rate_bpm:.0f} bpm, PR {pr} QRS {t.qrs_ms:.0f} QT {t.qt_ms:.0f} ms")
    (args.out / "truth.json").write_text(json.dumps(truths, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.count} recordings and truth.json to {args.out}")
    return 0
