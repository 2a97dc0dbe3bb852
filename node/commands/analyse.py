"""``pacs-node analyse``: run a model on a series folder and write SEG + SR, the offline face of the worker."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from node.commands.output import progress_bar, say
from node.errors import InputError

if TYPE_CHECKING:
    from node.analyse.runtime import Model
    from node.analyse.types import AnalysisResult


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "analyse",
        help="analyse a series folder offline and write SEG + SR",
        description="Load every series in IN_DIR, run the model on each series its card accepts, and write "
        "the DICOM SEG, the Comprehensive 3D SR (TID 1500) and findings.json into OUT_DIR. With an ECG model "
        "(--model ecg-rhythm) every 12-lead ECG file in IN_DIR gets an ECG report (Comprehensive SR, TID 3700).",
        epilog="example: pacs-node synth ct --out demo/ct && pacs-node analyse demo/ct --out demo/results",
    )
    p.add_argument("in_dir", type=Path, metavar="IN_DIR", help="folder with the DICOM files of a study or series")
    p.add_argument("--out", type=Path, required=True, metavar="OUT_DIR", help="folder for the results")
    p.add_argument("--model", default="lung-nodule-ct", help="model name, a folder in the models directory")
    p.add_argument("--models-dir", type=Path, default=None, help="where model folders live (default: ./models)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all cores)")
    p.set_defaults(func=run)


def _summary(result: AnalysisResult, seconds: float) -> list[str]:
    v = result.volume
    lines = [f"series {v.series_instance_uid}: {v.shape[0]} slices analysed in {seconds:.1f} s"]
    if not result.findings:
        lines.append("  no findings")
    for f in result.findings:
        x, y, z = f.centroid_mm
        confidence = f", confidence {f.confidence_mean:.2f}" if f.confidence_mean is not None else ""
        lines.append(
            f"  {f.tracking_id}: {f.longest_axial_diameter_mm:.1f} mm, {f.volume_mm3:.0f} mm3, "
            f"mean {f.mean_value:.0f} HU, at ({x:.1f}, {y:.1f}, {z:.1f}) mm, key slice {f.key_slice + 1}{confidence}"
        )
    lines.append(f"  suggested priority: {result.priority} ({result.priority_reason})")
    return lines


def run(args: argparse.Namespace) -> int:
    # Imported here: ONNX Runtime, OpenCV and highdicom load only for the commands that use them.
    from node.analyse.card import find_card
    from node.analyse.pipeline import analyse, refusal
    from node.analyse.runtime import Model
    from node.analyse.volume import group_by_series, load_series
    from node.encode import encode_results, write_datasets
    from node.encode.findings import findings_json

    if not args.in_dir.exists():
        raise InputError(f"{args.in_dir}: no such file or folder")
    card = find_card(args.model, args.models_dir)
    say(f"model {card.model.name} {card.model.version} (sha256 {card.model.sha256[:12]}... verified)")
    model = Model(card, threads=args.threads)
    files = [args.in_dir] if args.in_dir.is_file() else sorted(p for p in args.in_dir.rglob("*") if p.is_file())
    if card.input.kind == "waveform":
        return _run_waveforms(args, model, files)
    series = group_by_series(files)
    if not series:
        raise InputError(f"{args.in_dir}: no DICOM image series found")
    say(f"found {len(series)} series in {args.in_dir}")
    written: list[Path] = []
    analysed = 0
    for uid, paths in series.items():
        started = time.monotonic()
        say(f"loading series {uid} ({len(paths)} files) ...")
        volume = load_series(paths, uid)
        sp = volume.spacing
        say(
            f"  {volume.shape[0]} slices of {volume.shape[1]}x{volume.shape[2]}, "
            f"{sp[1]:.2f} x {sp[2]:.2f} x {sp[0]:.2f} mm ({time.monotonic() - started:.1f} s)"
        )
        reason = refusal(volume, card)
        if reason:
            say(f"  skipped: {reason}")
            continue
        result = analyse(volume, model, progress_bar("inference"))
        say(f"  post-processed: {len(result.findings)} findings; encoding SEG + SR ...")
        datasets = encode_results(result, card)
        out_dir = args.out / uid
        paths_out = write_datasets(datasets, out_dir)
        summary_path = out_dir / "findings.json"
        summary_path.write_text(
            json.dumps(findings_json(result, card, datasets, paths_out), indent=2) + "\n", encoding="utf-8"
        )
        for line in _summary(result, time.monotonic() - started):
            print(line)
        for path in [*paths_out, summary_path]:
            print(f"  wrote {path}")
        written += paths_out
        analysed += 1
    if not analysed:
        raise InputError(f"{args.in_dir}: no series that model {card.model.name} accepts (see the reasons above)")
    return 0


def _run_waveforms(args: argparse.Namespace, model: Model, files: list[Path]) -> int:
    """ECG recordings: each waveform file becomes an ECG report (TID 3700) and findings.json."""
    from node.analyse.ecg.analysis import analyse_ecg, load, refusal
    from node.encode import write_datasets
    from node.encode.ecg_sr import build_ecg_sr, ecg_findings_json
    from node.encode.ecg_strip import write_strip

    card = model.card
    analysed = 0
    for path in files:
        if path.name.startswith(".") or path.suffix.lower() in (".json", ".npz", ".txt"):
            continue
        try:
            wave = load(path, card)
        except InputError as exc:
            say(f"{path.name}: skipped: {exc}")
            continue
        reason = refusal(wave, card)
        if reason:
            say(f"{path.name}: skipped: {reason}")
            continue
        result = analyse_ecg(wave, model)
        out_dir = args.out / wave.series_instance_uid
        written = write_datasets([build_ecg_sr(result, card)], out_dir)
        strip = write_strip(result, out_dir / "ecg_strip.png")
        summary = {**ecg_findings_json(result, card, [p.name for p in written]), "strip": strip.name}
        (out_dir / "findings.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        m = result.measurements
        print(
            f"{path.name}: {result.rhythm} (p {result.confidence:.2f}; rules: {result.rule_rhythm}), "
            f"HR {m.heart_rate_bpm} bpm, PR {m.pr_ms} QRS {m.qrs_ms} QT {m.qt_ms} QTc {m.qtc_bazett_ms} ms (Bazett)"
        )
        print(f"  suggested priority: {result.priority} ({result.priority_reason})")
        for written_path in [*written, strip, out_dir / "findings.json"]:
            print(f"  wrote {written_path}")
        analysed += 1
    if not analysed:
        raise InputError(
            f"{args.in_dir}: no ECG recording that model {card.model.name} accepts (see the reasons above)"
        )
    return 0
