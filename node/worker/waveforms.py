"""The analyse job's step for a waveform model: each ECG instance of a series becomes an ECG report.

:func:`node.worker.study.analyse_study` calls :func:`analyse_recordings` for a series when the model's
card has ``input.kind = "waveform"``; loading, measuring and encoding are the ECG modules' (analyse/ecg,
encode/ecg_sr), and the job, the manifest, routing and sending stay the ones every model uses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from node.analyse.ecg.analysis import EcgResult, analyse_ecg, load, refusal
from node.analyse.runtime import Model
from node.encode import write_datasets
from node.encode.ecg_sr import build_ecg_sr, ecg_findings_json
from node.encode.ecg_strip import write_strip
from node.errors import InputError

log = logging.getLogger(__name__)


def strip_name(n: int) -> str:
    """The PNG strip of the series' recording ``n`` (0-based): ``ecg_strip.png``, ``ecg_strip_2.png``, ..."""
    return "ecg_strip.png" if n == 0 else f"ecg_strip_{n + 1}.png"


def analyse_recordings(
    paths: Sequence[Path], model: Model, out: Path, say: Callable[[str], None] = log.info
) -> tuple[list[tuple[Path, Dataset]], str]:
    """Analyse every recording in ``paths`` (one series); write the reports and findings.json to ``out``.

    Returns the written DICOM files with their datasets and the series' outcome line for the manifest
    ("priority HIGH: ..." or "skipped: ..."). The series' findings.json is the most urgent recording's
    summary, with every recording's summary under "recordings"; each recording's 12-lead strip
    (node.encode.ecg_strip) is a PNG beside them, named by its summary's "strip".

    Raises
    ------
    InputError
        No recording of the series could be loaded (the reasons joined).
    """
    card = model.card
    results: list[tuple[EcgResult, list[tuple[Path, Dataset]]]] = []
    problems: list[str] = []
    skipped: list[str] = []
    for path in paths:
        try:
            wave = load(path, card)
        except InputError as exc:
            problems.append(str(exc))
            continue
        reason = refusal(wave, card)
        if reason is not None:
            skipped.append(reason)
            continue
        result = analyse_ecg(wave, model)
        sr = build_ecg_sr(result, card, instance_number=len(results) + 1)
        written = write_datasets([sr], out)
        write_strip(result, out / strip_name(len(results)))
        results.append((result, list(zip(written, [sr], strict=True))))
    if not results:
        if problems:
            raise InputError("; ".join(problems))
        return [], f"skipped: {'; '.join(skipped) or 'no recording'}"
    summaries = [
        {**ecg_findings_json(r, card, [p.name for p, _ in files]), "strip": strip_name(n)}
        for n, (r, files) in enumerate(results)
    ]
    urgent = max(range(len(results)), key=lambda i: results[i][0].priority.rank)
    (out / "findings.json").write_text(json.dumps({**summaries[urgent], "recordings": summaries}, indent=2) + "\n")
    top = results[urgent][0]
    for problem in problems:
        say(f"  a recording could not be analysed: {problem}")
    return [f for _, files in results for f in files], f"priority {top.priority}: {top.priority_reason}"
