"""``pacs-node models``: list, verify and evaluate the models in the models directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from node.analyse.card import find_card, load_card, replace_table
from node.commands.output import say
from node.errors import NodeError
from node.paths import default_models_dir

if TYPE_CHECKING:
    from node.analyse.evaluate import Report
    from node.analyse.runtime import Model


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list, verify and evaluate models")
    p.add_argument("--models-dir", type=Path, default=None, help="where model folders live (default: ./models)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("list", help="each model with its version, status and intended use").set_defaults(func=run_list)
    v = verbs.add_parser("verify", help="check a model's card and its ONNX file's sha256")
    v.add_argument("name")
    v.set_defaults(func=run_verify)
    e = verbs.add_parser(
        "evaluate",
        help="score a model on held-out phantom series (or ECG recordings) beside a classical baseline",
        description="Generate held-out phantom series (seeds never used in training), run the whole pipeline and "
        "a classical OpenCV baseline on each, and print Dice per label and per-nodule sensitivity, precision, "
        "F1, false positives per scan and median volume error, side by side.",
    )
    e.add_argument("name")
    e.add_argument(
        "--series", type=int, default=10, help="number of held-out series, or recordings for an ECG model (default 10)"
    )
    e.add_argument(
        "--first-seed",
        type=int,
        default=None,
        help="seed of the first series (default 100000; any seed from 100000 is held out: training uses 0..99, "
        "card tuning 50000..50079); another range gives an independent check of figures already reported",
    )
    e.add_argument("--slices", type=int, default=200, help="slices per series (default 200)")
    e.add_argument("--min-diameter", type=float, default=5.0, help="nodule size counted, mm (default 5)")
    e.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all cores)")
    e.add_argument("--write-card", action="store_true", help="record the figures in the card's [evaluation]")
    e.set_defaults(func=run_evaluate)


def run_list(args: argparse.Namespace) -> int:
    base = args.models_dir or default_models_dir()
    folders = sorted(p for p in base.iterdir() if (p / "model.toml").is_file()) if base.is_dir() else []
    if not folders:
        print(f"no models in {base}")
        return 1
    for folder in folders:
        try:
            card = load_card(folder)
            status = "ok"
        except NodeError as exc:
            status = str(exc)
            try:
                card = load_card(folder, verify=False)
            except NodeError:
                print(f"{folder.name}: {status}")
                continue
        print(f"{card.model.name} {card.model.version}: {status}")
        print(f"  {card.model.description}")
        print(f"  intended use: {card.model.intended_use}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    card = find_card(args.name, args.models_dir)
    print(f"{card.model.name} {card.model.version}: card valid, {card.onnx_path} sha256 {card.model.sha256} matches")
    return 0


def _card_section(report: Report) -> str:
    m = report.model
    lines = ["[evaluation]", f"held_out_series = {report.series}", f"held_out_first_seed = {report.first_seed}"]
    for index, name in sorted(report.labels.items()):
        lines.append(f"dice_{name.lower()} = {m.mean_dice(index):.4f}")
    lines += [
        f"nodule_min_diameter_mm = {report.min_diameter_mm:g}",
        f"nodule_sensitivity = {m.sensitivity:.4f}",
        f"nodule_precision = {m.precision:.4f}",
        f"nodule_f1 = {m.f1:.4f}",
        f"false_positives_per_scan = {m.fp_per_scan:.3f}",
        f"median_volume_error = {m.median_volume_error:.4f}",
        f"baseline_nodule_f1 = {report.baseline.f1:.4f}",
        f"baseline_dice_lung = {report.baseline.mean_dice(1):.4f}",
    ]
    return "\n".join(lines) + "\n"


def run_evaluate(args: argparse.Namespace) -> int:
    from node.analyse.evaluate import HELD_OUT_SEED, evaluate, format_report
    from node.analyse.runtime import Model

    first = HELD_OUT_SEED if args.first_seed is None else args.first_seed
    if first < HELD_OUT_SEED:
        raise NodeError(
            f"--first-seed {first}: seeds below {HELD_OUT_SEED} are not held out (training and tuning use them); "
            f"give a seed of {HELD_OUT_SEED} or more"
        )
    card = find_card(args.name, args.models_dir)
    model = Model(card, threads=args.threads)
    if card.input.kind == "waveform":
        return _evaluate_waveform(args, model, first)
    say(
        f"evaluating {card.model.name} {card.model.version} on {args.series} held-out series "
        f"(seeds {first}..{first + args.series - 1}, {args.slices} slices each) ..."
    )
    report = evaluate(
        model, args.series, args.slices, args.min_diameter, first_seed=first, progress=lambda line: say("  " + line)
    )
    print(format_report(report))
    if args.write_card:
        assert card.directory is not None
        path = card.directory / "model.toml"
        text = replace_table(path.read_text(encoding="utf-8"), "evaluation", _card_section(report))
        path.write_text(text, encoding="utf-8")
        print(f"figures recorded in {path}")
    return 0


def _evaluate_waveform(args: argparse.Namespace, model: Model, first: int) -> int:
    """``models evaluate`` for a waveform (ECG rhythm) model: ``--series`` held-out recordings."""
    from node.analyse.ecg.evaluate import card_section, evaluate_ecg, format_ecg_report

    card = model.card
    say(
        f"evaluating {card.model.name} {card.model.version} on {args.series} held-out recordings "
        f"(seeds {first}..{first + args.series - 1}) beside the rule-based classifier ..."
    )
    report = evaluate_ecg(model, args.series, first, progress=lambda line: say("  " + line))
    print(format_ecg_report(report))
    if args.write_card:
        assert card.directory is not None
        path = card.directory / "model.toml"
        path.write_text(
            replace_table(path.read_text(encoding="utf-8"), "evaluation", card_section(report, card.model.name))
        )
        print(f"figures recorded in {path}")
    return 0
