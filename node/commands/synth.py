"""``pacs-node synth ct``: write a synthetic chest CT series with its ground truth."""

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
