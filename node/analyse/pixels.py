"""Pixel data of a sorted series -> one float32 volume in physical units, and safe reads for messages.

Any transfer syntax pydicom decodes (with pylibjpeg and its plugins) is accepted; a frame that cannot be
decoded, or whose rescale gives values that are not finite, is refused with an
:class:`~node.errors.UnreadableFileError` naming the file and what to do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID

from node.analyse.buffer import VoxelBuffer
from node.analyse.geometry import Slice
from node.errors import SeriesError, UnreadableFileError

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_pixels(
    slices: list[Slice], parsed: dict[Path, Dataset], buffer: VoxelBuffer | None
) -> tuple[NDArray[np.float32], list[Dataset]]:
    """Decode every slice into a preallocated float32 volume, one file at a time.

    ``parsed`` holds each file's dataset from the header scan; its deferred Pixel Data is read here.
    (Threads were measured slower: pydicom's pixel path holds the GIL for most of its time.)
    """
    rows, cols = slices[0].size
    shape = (len(slices), rows, cols)
    voxels = np.empty(shape, dtype=np.float32) if buffer is None else buffer.take(shape)
    by_file: dict[Path, list[int]] = {}
    for k, s in enumerate(slices):
        by_file.setdefault(s.path, []).append(k)

    for path, indices in by_file.items():
        decode_file(path, parsed[path], [(k, slices[k]) for k in indices], voxels)
    return voxels, [parsed[s.path] for s in slices]


def decode_file(path: Path, ds: Dataset, targets: list[tuple[int, Slice]], voxels: NDArray[np.float32]) -> None:
    """Decode the frames of one file into ``voxels[k]`` in physical units, then drop its Pixel Data."""
    rows, cols = voxels.shape[1:]
    present = [kw for kw in PIXEL_KEYWORDS if kw in ds]
    if not present:
        raise SeriesError(f"{path}: image without pixel data ({sop_name(ds)}); resend the file")
    lut = "ModalityLUTSequence" in ds
    for k, s in targets:
        try:
            arr = pixel_array(ds, index=s.frame)
            if arr.shape != (rows, cols):
                raise ValueError(f"decoded shape {arr.shape}, expected ({rows}, {cols})")
            if lut:  # a lookup table replaces Rescale Slope/Intercept
                voxels[k] = apply_modality_lut(arr, ds)
            else:
                with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are refused below
                    np.multiply(arr, s.slope, out=voxels[k], casting="unsafe")
                    voxels[k] += np.float32(s.intercept)
        except Exception as exc:  # codec plugins raise any type (RuntimeError, ValueError, ...)
            ts = UID(text(ds.file_meta, "TransferSyntaxUID"))
            raise UnreadableFileError(
                f"{path}: pixel data cannot be decoded ({ts.name}: {brief(exc)}); "
                "the file may be truncated, or convert it to an uncompressed transfer syntax"
            ) from exc
        # A slope or intercept of nan/inf, or one so large that the result overflows float32. Integer
        # pixels with a finite rescale small enough cannot give one: the scan of the slice is skipped.
        if (lut or not _finite_by_range(arr, s)) and not np.isfinite(voxels[k]).all():
            raise UnreadableFileError(
                f"{path}: pixel values are not finite numbers after the rescale (Rescale Slope {s.slope:g}, "
                f"Intercept {s.intercept:g}, or the Modality LUT); correct the file's rescale"
            )
    for kw in present:
        del ds[kw]


def _finite_by_range(arr: NDArray[Any], s: Slice) -> bool:
    """Whether ``arr * slope + intercept`` is finite in float32 for every value ``arr``'s type can hold."""
    if arr.dtype.kind not in "iu":
        return False
    info = np.iinfo(arr.dtype)
    bound = abs(s.slope) * max(abs(int(info.min)), int(info.max)) + abs(s.intercept)
    return math.isfinite(bound) and bound < float(np.finfo(np.float32).max)


def text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # a damaged value (parsed lazily, any type) reads as absent
        return ""
    return "" if value is None else str(value).strip()


def sop_name(ds: Dataset) -> str:
    uid = UID(text(ds, "SOPClassUID"))
    return uid.name if uid else "unknown SOP class"


def brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
