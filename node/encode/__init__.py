"""Encode stage: an :class:`~node.analyse.types.AnalysisResult` becomes DICOM result objects.

- :func:`encode_results` builds what the model card's ``outputs`` ask for: SEG (binary segmentation,
  :mod:`node.encode.seg`), Comprehensive 3D SR with a TID 1500 measurement report
  (:mod:`node.encode.sr`) and an optional secondary capture overlay (:mod:`node.encode.sc`).
- :func:`write_datasets` writes them to a folder, each file complete or absent.

Every object is a new series of the source study and carries the algorithm's provenance
(:mod:`node.encode.provenance`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset

from node.analyse.card import ModelCard
from node.analyse.types import AnalysisResult
from node.encode import iod_lookup
from node.encode.provenance import Equipment, device_uid
from node.encode.sc import build_sc
from node.encode.seg import build_seg, segment_layout
from node.encode.sr import build_sr

__all__ = [
    "Equipment",
    "build_sc",
    "build_seg",
    "build_sr",
    "device_uid",
    "encode_results",
    "segment_layout",
    "write_datasets",
]

log = logging.getLogger(__name__)

iod_lookup.install()


def encode_results(
    result: AnalysisResult,
    card: ModelCard,
    *,
    equipment: Equipment | None = None,
    when: datetime | None = None,
) -> list[Dataset]:
    """Build the result objects that ``card.outputs`` asks for, in the order SEG, SR, SC.

    A SEG is skipped when no label is present at all (it would have no frame); the SR then reports
    every label as absent. The SR references the SEG when there is one.

    Raises
    ------
    EncodeError
        If any object cannot be created valid; nothing is returned then.
    """
    equipment = equipment or Equipment()
    when = when or datetime.now().astimezone()
    outputs = card.outputs
    datasets: list[Dataset] = []
    seg: Dataset | None = None
    if outputs.seg:
        if result.labels.any():
            seg = build_seg(result, card, equipment=equipment, when=when)
            datasets.append(seg)
        else:
            log.info("SEG skipped: no label present")
    if outputs.sr:
        datasets.append(build_sr(result, card, seg, equipment=equipment, when=when))
    if outputs.sc:
        datasets.extend(build_sc(result, card, equipment=equipment, when=when))
    return datasets


def file_name(dataset: Dataset) -> str:
    """``<Modality>_<SOP Instance UID>.dcm``: unique per instance, readable in a folder listing."""
    return f"{dataset.Modality}_{dataset.SOPInstanceUID}.dcm"


def write_datasets(datasets: Iterable[Dataset], out_dir: Path) -> list[Path]:
    """Write each dataset as a DICOM file (Part 10) in ``out_dir``; return the paths in order.

    Each file is written to a temporary name in the same folder, flushed to disk and renamed with
    :func:`os.replace`, so a reader never sees a half-written file and a crash leaves at most a
    temporary file (dot-prefixed, ``.tmp`` suffix) behind.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for dataset in datasets:
        target = out_dir / file_name(dataset)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                dcmwrite(fh, dataset, enforce_file_format=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            # OSError (disk full, permissions) stays an OSError: the caller may retry it later.
            Path(tmp_name).unlink(missing_ok=True)
            raise
        paths.append(target)
    _fsync_dir(out_dir)
    return paths


def _fsync_dir(path: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
