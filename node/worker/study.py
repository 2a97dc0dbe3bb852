"""One ``analyse`` job: a study and a model become SEG + SR files and a manifest in the outbox.

Exactly-once results: the files of job N go to ``outbox/analyse-N/`` and, after all of them are durable,
``manifest.json`` is written (temp, fsync, rename). A retry of the same job (crash, expired lease) that
finds the manifest reuses those files instead of analysing again, so the result UIDs never change and
the sends, idempotent per (SOP Instance UID, peer), deliver each result once. A retry without a manifest
removes the folder (partial results, temp files) and starts again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from node.analyse.buffer import VoxelBuffer
from node.analyse.pipeline import analyse, refusal
from node.analyse.runtime import Model, Progress
from node.analyse.volume import load_series
from node.encode import encode_results, write_datasets
from node.encode.findings import findings_json
from node.errors import InputError
from node.store import Index, Instance
from node.worker.waveforms import analyse_recordings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ResultFile:
    """A result instance waiting in the outbox."""

    path: str  # relative to the data dir
    sop_instance_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class Manifest:
    """What one analyse job produced: result files, and per series what happened."""

    files: tuple[ResultFile, ...]
    series: dict[str, str]  # Series Instance UID -> "priority HIGH: ...", "skipped: ...", "failed: ..."

    def to_json(self) -> str:
        files = [f.__dict__ for f in self.files]
        return json.dumps({"files": files, "series": self.series}, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(tuple(ResultFile(**f) for f in data["files"]), dict(data["series"]))


def _write_manifest(manifest: Manifest, folder: Path) -> None:
    fd, temp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(manifest.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, folder / MANIFEST)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _header_refusal(first: Path, count: int, model: Model) -> str | None:
    """Why the card refuses the series, from one header and the file count (before loading any pixels)."""
    accepts = model.card.accepts
    ds = dcmread(first, stop_before_pixels=True, specific_tags=["Modality"])
    modality = str(ds.get("Modality", "") or "")
    if accepts.modality and modality not in accepts.modality:
        return (
            f"model {model.card.model.name} accepts modality {'/'.join(accepts.modality)}, series is {modality or '?'}"
        )
    if count < accepts.min_slices:
        return f"model {model.card.model.name} needs at least {accepts.min_slices} slices, series has {count}"
    return None


def analyse_study(
    study_uid: str,
    model: Model,
    index: Index,
    spool_dir: Path,
    data_dir: Path,
    folder: Path,
    progress: Progress | None = None,
    say: Callable[[str], None] = log.info,
    *,
    series_uid: str | None = None,
    buffer: VoxelBuffer | None = None,
) -> Manifest:
    """Analyse every series of the study that the model accepts (or only ``series_uid``); return the
    (possibly reused) manifest.

    ``buffer``, when given, receives each series' voxels in turn (see :mod:`node.analyse.buffer`): a
    series' volume is not used after its results are written.

    Raises
    ------
    InputError
        No series could be analysed and at least one the model accepts failed to load (the reasons
        joined); another attempt would fail the same way.
    """
    if (folder / MANIFEST).is_file():
        say("results of an earlier attempt are complete: reusing them")
        return Manifest.read(folder / MANIFEST)
    if folder.exists():
        shutil.rmtree(folder)  # a partial earlier attempt
    folder.mkdir(parents=True)
    by_series: dict[str, list[Instance]] = defaultdict(list)
    for row in index.instances(study_uid, series_uid):
        by_series[row.series_instance_uid].append(row)
    files: list[ResultFile] = []
    outcome: dict[str, str] = {}
    failures: list[str] = []
    for n, (series_uid, rows) in enumerate(by_series.items(), 1):
        paths = [spool_dir / row.path for row in rows]
        where = f"series {n} of {len(by_series)} ({len(paths)} instances)"
        reason = _header_refusal(paths[0], len(paths), model)
        if reason is None and model.card.input.kind == "waveform":  # ECG: each instance is a recording
            try:
                made, outcome[series_uid] = analyse_recordings(paths, model, folder / series_uid, say)
            except InputError as exc:
                failures.append(f"{where}: {exc}")
                outcome[series_uid] = f"failed: {exc}"
                say(f"{where}: cannot be analysed (the reason is in the job's last error)")
                continue
            files += [
                ResultFile(str(p.relative_to(data_dir)), str(d.SOPInstanceUID), str(d.SOPClassUID)) for p, d in made
            ]
            say(f"{where}: {outcome[series_uid]}")
            continue
        if reason is None:
            try:
                volume = load_series(paths, series_uid, buffer=buffer)
            except InputError as exc:
                failures.append(f"{where}: {exc}")
                outcome[series_uid] = f"failed: {exc}"
                say(f"{where}: cannot be analysed (the reason is in the job's last error)")
                continue
            reason = refusal(volume, model.card)
        if reason is not None:
            outcome[series_uid] = f"skipped: {reason}"
            say(f"{where}: skipped: {reason}")
            continue
        result = analyse(volume, model, progress)
        datasets = encode_results(result, model.card)
        out = folder / series_uid
        written = write_datasets(datasets, out)
        (out / "findings.json").write_text(
            json.dumps(findings_json(result, model.card, datasets, written), indent=2) + "\n"
        )
        for ds, path in zip(datasets, written, strict=True):
            files.append(ResultFile(str(path.relative_to(data_dir)), str(ds.SOPInstanceUID), str(ds.SOPClassUID)))
        outcome[series_uid] = f"priority {result.priority}: {result.priority_reason}"
        say(f"{where}: {len(result.findings)} findings, suggested priority {result.priority}, {len(written)} results")
    if not files and failures:
        raise InputError("; ".join(failures))
    manifest = Manifest(tuple(files), outcome)
    _write_manifest(manifest, folder)
    return manifest
