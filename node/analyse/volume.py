"""Series -> Volume: read the files of one series, sort them along the slice normal, check that they
form one regular grid and apply the rescale to physical units.

Tolerant about encoding, strict about geometry: any transfer syntax pydicom decodes (with pylibjpeg
and its plugins installed) is accepted, but a stack that is not one regular grid is refused with a
``SeriesError`` naming the series, the files that disagree and what to do (the grid checks live in
:mod:`node.analyse.geometry`, pixel decoding in :mod:`node.analyse.pixels`). Every problem with the
input surfaces as a ``NodeError`` subclass; messages carry file names and UIDs, never patient name, ID
or birth date (this module never reads those attributes).

A multi-frame object becomes several slices when it says where each frame is (per-frame Plane
Position in Enhanced objects, or Grid Frame Offset Vector in RT Dose); its dataset is then the header
of each of its slices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.analyse.buffer import VoxelBuffer
from node.analyse.geometry import Slice, arrange
from node.analyse.pixels import brief, read_pixels, sop_name, text
from node.analyse.types import Volume
from node.errors import InputError, SeriesError, UnreadableFileError

__all__ = ["SeriesScan", "group_by_series", "load_series", "scan_series"]

logger = logging.getLogger(__name__)

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Values larger than this stay in the file until read: the header scan then costs no pixel I/O and
# the pixel pass reuses the parsed header instead of parsing each file a second time.
_DEFER_BYTES = 64 * 1024


@dataclass(frozen=True)
class SeriesScan:
    """What a set of files holds, from their headers only.

    Attributes
    ----------
    series
        Series Instance UID -> files, in the order they were given.
    headers
        File -> its dataset, with Pixel Data and other large values deferred: read from the file only
        when a caller touches them, so a header scan followed by a load parses every file once.
    skipped
        File -> why it is not part of any series (not DICOM, DICOMDIR, damaged, no Series UID).
    """

    series: dict[str, list[Path]]
    headers: dict[Path, Dataset]
    skipped: dict[Path, str]

    def describe(self, uid: str) -> str:
        """One line for people choosing a series: UID, modality, description, number of files."""
        first = self.headers[self.series[uid][0]]
        modality, description = text(first, "Modality") or "?", text(first, "SeriesDescription")
        return f"{uid} ({modality}, '{description}', {len(self.series[uid])} files)"


def scan_series(paths: Iterable[Path]) -> SeriesScan:
    """Read the headers of ``paths`` and group them by Series Instance UID; never raises for bad files."""
    series: dict[str, list[Path]] = {}
    headers: dict[Path, Dataset] = {}
    skipped: dict[Path, str] = {}
    for path in paths:
        try:
            ds = _read(path)
        except UnreadableFileError as exc:
            skipped[path] = str(exc)
            logger.warning("skipped: %s", exc)
            continue
        uid = text(ds, "SeriesInstanceUID")
        if not uid:
            skipped[path] = f"{path}: no Series Instance UID"
            logger.warning("skipped: %s", skipped[path])
            continue
        series.setdefault(uid, []).append(path)
        headers[path] = ds
    return SeriesScan(series, headers, skipped)


def group_by_series(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Series Instance UID -> files; files that are not DICOM series members are logged and left out."""
    return scan_series(paths).series


def load_series(
    source: Path | Sequence[Path], series_instance_uid: str | None = None, *, buffer: VoxelBuffer | None = None
) -> Volume:
    """Read one series into a :class:`~node.analyse.types.Volume`.

    Parameters
    ----------
    source
        A folder (searched recursively; files that are not DICOM are logged and skipped), one file,
        or a list of files (every one must be readable DICOM).
    series_instance_uid
        The series to load; needed only when ``source`` holds several.
    buffer
        Where the voxels go (a worker's reused block, see :mod:`node.analyse.buffer`); the volume is then
        valid only until the next load into the same buffer. Default: memory of its own.

    Raises
    ------
    UnreadableFileError
        A file is not DICOM, is damaged, or its pixel data cannot be decoded.
    SeriesError
        The files are not one series of greyscale slices on one regular grid.
    InputError
        ``source`` does not exist or holds no DICOM series.
    """
    files, strict = _files(source)
    scan = scan_series(files)
    if strict and scan.skipped:
        raise UnreadableFileError(next(iter(scan.skipped.values())))
    if not scan.series:
        raise InputError(f"{source}: no DICOM series found ({len(scan.skipped)} files skipped)")
    if series_instance_uid is None and len(scan.series) > 1:
        listing = "\n  ".join(scan.describe(uid) for uid in scan.series)
        raise SeriesError(f"{source} holds {len(scan.series)} series; name one (series_instance_uid):\n  {listing}")
    uid = series_instance_uid or next(iter(scan.series))
    if uid not in scan.series:
        listing = "\n  ".join(scan.describe(u) for u in scan.series)
        raise SeriesError(f"series {uid} is not in {source}; it holds:\n  {listing}")

    paths = scan.series[uid]
    _check_frame_of_reference(scan, paths, uid)
    slices: list[Slice] = []
    for path in paths:
        try:
            slices += _slices_of(path, scan.headers[path])
        except InputError:
            raise
        except Exception as exc:  # pydicom parses values lazily: a damaged one raises any type on access
            raise UnreadableFileError(f"{path}: malformed image attribute ({brief(exc)})") from exc
    slices, slice_spacing = arrange(slices, uid)
    voxels, headers = read_pixels(slices, scan.headers, buffer)
    first = headers[0]
    if slices[0].assumed:
        logger.warning("%s: %s", slices[0].name, slices[0].assumed)
    volume = Volume(
        voxels=voxels,
        spacing=(slice_spacing, slices[0].pixel_spacing[0], slices[0].pixel_spacing[1]),
        orientation=slices[0].orientation,
        positions=np.array([s.position for s in slices], dtype=np.float64),
        headers=tuple(headers),
        study_instance_uid=text(first, "StudyInstanceUID"),
        series_instance_uid=uid,
        frame_of_reference_uid=text(first, "FrameOfReferenceUID"),
        modality=text(first, "Modality"),
        body_part=text(first, "BodyPartExamined"),
        slice_thickness=slices[0].thickness,
        source=os.fspath(source) if isinstance(source, Path) else os.fspath(paths[0]),
    )
    logger.info("loaded %d slices of %dx%d, spacing %.3g/%.3g/%.3g mm", *volume.shape, *volume.spacing)
    return volume


def _files(source: Path | Sequence[Path]) -> tuple[list[Path], bool]:
    """The files to scan and whether each must be readable (named explicitly rather than found)."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file()), False
        if path.is_file():
            return [path], True
        raise InputError(f"{path}: no such file or folder")
    files = [Path(p) for p in source]
    if not files:
        raise InputError("load_series: the list of files is empty")
    return files, True


def _read(path: Path) -> Dataset:
    """The dataset of ``path`` with values over ``_DEFER_BYTES`` (Pixel Data) left in the file until used."""
    try:
        try:
            ds = dcmread(path, defer_size=_DEFER_BYTES)
        except InvalidDicomError:
            if not _starts_like_dataset(path):
                raise
            # No preamble/meta but it starts with a group 0002/0008 tag: an old raw dataset.
            ds = dcmread(path, defer_size=_DEFER_BYTES, force=True)
        meta = getattr(ds, "file_meta", None)
        dicomdir = meta is not None and meta.get("MediaStorageSOPClassUID") == _DICOMDIR_SOP_CLASS
        _ensure_transfer_syntax(ds)
    except InvalidDicomError:
        raise UnreadableFileError(f"{path}: not a DICOM file (no 'DICM' prefix)") from None
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # pydicom raises many types on damaged files: bad input, not a bug here
        raise UnreadableFileError(f"{path}: damaged DICOM file ({brief(exc)})") from exc
    if dicomdir or "DirectoryRecordSequence" in ds:
        raise UnreadableFileError(f"{path}: a DICOMDIR (media index), not an image; load the files it lists")
    return ds


def _starts_like_dataset(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return head in (b"\x02\x00", b"\x08\x00", b"\x00\x08")


def _check_frame_of_reference(scan: SeriesScan, paths: list[Path], uid: str) -> None:
    by_frame: dict[str, Path] = {}
    for path in paths:
        by_frame.setdefault(text(scan.headers[path], "FrameOfReferenceUID") or "(none)", path)
    if len(by_frame) > 1:
        (fa, pa), (fb, pb) = list(by_frame.items())[:2]
        raise SeriesError(
            f"series {uid} mixes frames of reference ({pa.name}: {fa}, {pb.name}: {fb}); "
            "its slices do not share one coordinate system: split the series"
        )


def _slices_of(path: Path, ds: Dataset) -> list[Slice]:
    """The slices one file contributes, with their geometry, before any pixel is decoded."""
    kind = sop_name(ds)
    if "Rows" not in ds or "Columns" not in ds:
        raise SeriesError(f"{path}: a {kind} object, not an image (no Rows/Columns); choose an image series")
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = text(ds, "PhotometricInterpretation") or "MONOCHROME2"
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SeriesError(
            f"{path}: colour image ({photometric}, {samples} samples per pixel); "
            "analysis needs a greyscale (MONOCHROME1/2) series"
        )
    multi = "NumberOfFrames" in ds
    n_frames = int(ds.NumberOfFrames) if multi else 1
    if n_frames < 1:
        raise SeriesError(f"{path}: Number of Frames is {n_frames}: no image to load")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    offsets = ds.get("GridFrameOffsetVector")  # RT Dose: frame positions along the normal
    if multi and n_frames > 1 and per_frame is None and offsets is None:
        raise SeriesError(
            f"{path}: {kind} with {n_frames} frames but no per-frame positions (cine, multi-frame "
            "secondary capture?): not a stack of slices; export it as single-frame images with geometry"
        )
    if n_frames == 1:  # a single frame sits at Image Position (Patient), whatever the offsets say
        offsets = None
    if offsets is not None and len(offsets) != n_frames:
        raise SeriesError(f"{path}: Grid Frame Offset Vector has {len(offsets)} values for {n_frames} frames")
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    slices = []
    for f in range(n_frames):
        groups = [g for g in (_item(per_frame, f) if per_frame else None, shared) if g is not None]
        assumed = []
        orientation = _floats(_attr(ds, groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        if orientation is None:
            orientation = _IDENTITY
            assumed.append("orientation assumed axial (1\\0\\0\\0\\1\\0)")
        o = orientation
        position = _floats(_attr(ds, groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
        if position is None:
            position = (0.0, 0.0, 0.0)
            assumed.append("position assumed (0, 0, 0)")
        elif offsets is not None:
            shift = (float(offsets[f]) - float(offsets[0])) * np.cross(o[:3], o[3:])
            position = tuple(float(v) for v in np.asarray(position) + shift)
        spacing = _floats(_attr(ds, groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
        if spacing is None or min(spacing) <= 0:
            spacing = (1.0, 1.0)
            assumed.append("pixel spacing assumed 1 mm")
        slope = _attr(ds, groups, "PixelValueTransformationSequence", "RescaleSlope")
        if slope is None:  # RT Dose scales stored values to Gy with Dose Grid Scaling instead
            slope = ds.get("DoseGridScaling")
        intercept = _attr(ds, groups, "PixelValueTransformationSequence", "RescaleIntercept")
        slices.append(
            Slice(
                path=path,
                frame=f if multi else None,
                position=(position[0], position[1], position[2]),
                orientation=(o[0], o[1], o[2], o[3], o[4], o[5]),
                pixel_spacing=(spacing[0], spacing[1]),
                size=(int(ds.Rows), int(ds.Columns)),
                slope=1.0 if slope is None else float(slope),
                intercept=0.0 if intercept is None else float(intercept),
                acquisition=text(ds, "AcquisitionNumber"),
                localizer="LOCALIZER" in image_type,
                thickness=_positive(_attr(ds, groups, "PixelMeasuresSequence", "SliceThickness")),
                between=_positive(_attr(ds, groups, "PixelMeasuresSequence", "SpacingBetweenSlices")),
                assumed="; ".join(assumed) + " (not in the file)" if assumed else "",
            )
        )
    return slices


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Raw datasets (no meta) and damaged metas lack a Transfer Syntax UID; recover it from the read."""
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian if little is False else syntax


def _item(container: Any, key: str | int) -> Dataset | None:
    """First item of a sequence attribute (``key`` a keyword) or the ``key``-th item of a sequence."""
    seq = container.get(key) if isinstance(key, str) else container
    index = 0 if isinstance(key, str) else key
    return seq[index] if seq is not None and len(seq) > index else None


def _attr(ds: Dataset, groups: list[Dataset], sequence: str, keyword: str) -> Any:
    """A value from the per-frame or shared functional groups (Enhanced objects), else the top level."""
    for group in groups:
        item = _item(group, sequence)
        if item is not None and item.get(keyword) is not None:
            return item.get(keyword)
    return ds.get(keyword)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None or isinstance(value, str | bytes):
        return None
    numbers = tuple(float(v) for v in value)
    if len(numbers) != n or not all(np.isfinite(numbers)):
        raise ValueError(f"expected {n} finite numbers, got {len(numbers)}")
    return numbers


def _positive(value: Any) -> float | None:
    number = None if value is None or value == "" else float(value)
    return number if number is not None and np.isfinite(number) and number > 0 else None
