"""Write a Hounsfield-unit array as a valid, patient-free CT Image Storage series.

The files are what a scanner would send: Explicit VR Little Endian, one axial slice per file, every
Type 1 and Type 2 attribute of the CT Image IOD present (checked by ``dciodvfy`` in
``tests/interop``). Identity is synthetic (``PHANTOM^CT^<seed>``) and every UID, date and time is
derived from the seed, so the same call writes the same bytes.

Speed matters because tests and benchmarks write hundreds of slices: one template dataset is built,
then only the per-slice attributes and the Pixel Data bytes change.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from node.errors import InputError

__all__ = ["write_ct_series"]

# Identifies the software that wrote the files; the root is pydicom's, the suffix says "synthetic".
_IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1.2.3.4"
_IMPLEMENTATION_VERSION = "PACSNODE_SYNTH1"
# A fixed default date keeps files byte-identical across runs and obviously not a real study.
_DEFAULT_DATETIME = datetime(2000, 1, 1, 12, 0, 0)
# Stored value = HU + 1024, as most CT scanners do; HU below -1024 switch to signed storage.
_INTERCEPT = -1024


def _ds(value: float) -> str:
    """Format a Decimal String value within its 16-character limit, without float noise."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text[:16]


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_ct_series(
    hu: NDArray[np.int16],
    out_dir: Path,
    *,
    pixel_spacing: tuple[float, float],
    slice_thickness: float,
    slice_spacing: float | None = None,
    first_position: tuple[float, float, float] | None = None,
    seed: int = 0,
    series_description: str = "Synthetic chest phantom",
    study_instance_uid: str | None = None,
    body_part: str = "CHEST",
    kvp: float = 120.0,
    series_number: int = 1,
    study_datetime: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``hu`` as one CT Image Storage file per slice and return the paths in slice order.

    Parameters
    ----------
    hu
        int16 Hounsfield units, shape (slices, rows, columns). Slice 0 is written first, at the
        lowest z; slices go along +z (axial, ImageOrientationPatient ``1\\0\\0\\0\\1\\0``).
    out_dir
        Created if missing. Files are named ``CT000001.dcm`` ... after their Instance Number; each is
        written under a temporary name and renamed, so no half-written ``.dcm`` is ever visible.
    pixel_spacing
        (row spacing, column spacing) in mm, in DICOM PixelSpacing order.
    slice_thickness
        Nominal slice thickness in mm.
    slice_spacing
        Distance between slice centres in mm; defaults to ``slice_thickness``.
    first_position
        ImagePositionPatient (centre of the first voxel) of slice 0. ``None`` centres the image on
        x = y = 0 and puts slice 0 at z = 0.
    seed
        Names the synthetic patient (``PHANTOM^CT^<seed>``, ``PHANTOM-<seed>``) and seeds every UID.
    study_instance_uid
        Put the series in this study instead of the seed's own study.
    study_datetime
        Study, series, acquisition and content date/time; a fixed date by default so that output is
        reproducible.
    progress
        Called as ``progress(done, total)`` after each file.

    Returns
    -------
    list[Path]
        The written files, slice 0 first.

    Raises
    ------
    InputError
        ``hu`` is not a 3-D integer array with values representable in 16 bits, or a spacing is not
        positive.
    """
    if hu.ndim != 3 or 0 in hu.shape:
        raise InputError(f"write_ct_series: hu must have shape (slices, rows, columns), got {hu.shape}")
    if not np.issubdtype(hu.dtype, np.integer):
        raise InputError(f"write_ct_series: hu must hold integer HU, got dtype {hu.dtype}")
    spacing = slice_thickness if slice_spacing is None else slice_spacing
    if min(pixel_spacing[0], pixel_spacing[1], slice_thickness, spacing) <= 0:
        raise InputError("write_ct_series: pixel spacing, slice thickness and slice spacing must be > 0")
    lo, hi = int(hu.min()), int(hu.max())
    # Unsigned with intercept -1024 is what scanners send; values below -1024 (padding outside the
    # field of view, e.g. -2048) need signed storage with intercept 0 to stay exact.
    signed = lo < _INTERCEPT
    intercept = 0 if signed else _INTERCEPT
    if (signed and hi > 32767) or (not signed and hi - _INTERCEPT > 65535):
        raise InputError(f"write_ct_series: HU range {lo}..{hi} does not fit 16-bit storage")

    n, rows, cols = (int(s) for s in hu.shape)
    if first_position is None:
        first_position = (-(cols - 1) * pixel_spacing[1] / 2, -(rows - 1) * pixel_spacing[0] / 2, 0.0)
    when = study_datetime or _DEFAULT_DATETIME
    study_uid = study_instance_uid or _uid("pacs-node phantom study", seed)
    series_uid = _uid("pacs-node phantom series", study_uid, seed, series_number, series_description)
    template = _template(
        seed=seed,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_of_reference_uid=_uid("pacs-node phantom frame of reference", study_uid, seed),
        when=when,
        description=series_description,
        series_number=series_number,
        body_part=body_part,
        kvp=kvp,
        rows=rows,
        cols=cols,
        pixel_spacing=pixel_spacing,
        slice_thickness=slice_thickness,
        signed=signed,
        intercept=intercept,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    stored_dtype = np.dtype("<i2") if signed else np.dtype("<u2")
    paths: list[Path] = []
    for k in range(n):
        z = first_position[2] + k * spacing
        sop_uid = _uid("pacs-node phantom instance", series_uid, k)
        template.file_meta.MediaStorageSOPInstanceUID = sop_uid
        template.SOPInstanceUID = sop_uid
        template.InstanceNumber = k + 1
        template.ImagePositionPatient = [_ds(first_position[0]), _ds(first_position[1]), _ds(z)]
        template.SliceLocation = _ds(z)
        # int32 first so that hu + 1024 cannot wrap around in int16.
        stored = hu[k].astype(np.int32) - intercept
        template.PixelData = stored.astype(stored_dtype).tobytes()
        path = out_dir / f"CT{k + 1:06d}.dcm"
        tmp = out_dir / f".{path.name}.tmp"
        dcmwrite(tmp, template, enforce_file_format=True)
        os.replace(tmp, path)
        paths.append(path)
        if progress is not None:
            progress(k + 1, n)
    return paths


def _template(
    *,
    seed: int,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    when: datetime,
    description: str,
    series_number: int,
    body_part: str,
    kvp: float,
    rows: int,
    cols: int,
    pixel_spacing: tuple[float, float],
    slice_thickness: float,
    signed: bool,
    intercept: int,
) -> Dataset:
    """Build the attributes shared by every slice; the per-slice ones are set by the caller."""
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(_IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient: synthetic identity only; birth date is Type 2 and stays empty.
    ds.PatientName = f"PHANTOM^CT^{seed}"
    ds.PatientID = f"PHANTOM-{seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = f"PH{seed}"[:16]
    ds.AccessionNumber = ""
    ds.StudyDescription = "Synthetic phantom study"
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = description[:64]
    ds.BodyPartExamined = body_part
    ds.PatientPosition = "HFS"  # Type 2C for CT Image Storage without Patient Orientation Code Sequence
    # Frame of Reference
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = "pacs-node synthetic phantom"
    ds.ManufacturerModelName = "phantom"
    ds.SoftwareVersions = "1"
    # General Acquisition / General Image
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate, ds.AcquisitionTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]  # synthetic, so not ORIGINAL\PRIMARY
    ds.DerivationDescription = "Synthetic phantom generated by software"
    ds.BurnedInAnnotation = "NO"
    # Image Plane
    ds.PixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceThickness = _ds(slice_thickness)
    # Image Pixel + CT Image
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept = str(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.KVP = _ds(kvp)
    # VOI LUT: a soft-tissue window so that viewers open the phantom sensibly.
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds
