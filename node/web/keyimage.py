"""A finding's key image: the source slice through its largest cross-section, as a PNG.

The slice is the one findings.json names (``key_slice.sop_instance_uid``, a spool file), windowed as the
model card's input says; the finding's outline comes from its own segment in the SEG (the frame of
``segment_number`` that derives from that slice, else the frame at the slice's position), drawn with
OpenCV in the label's colour; a 10 mm scale bar and the orientation letters of the image's edges (from
Image Orientation (Patient)) are drawn in white. A slice under 512 pixels is enlarged by a whole
factor (the PNG is that many times the source's rows and columns). Nothing of the patient's identity is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread

from node.errors import NodeError

WHITE = (255, 255, 255)
MIN_SIZE = 512  # pixels: a smaller slice is shown enlarged


class KeyImageError(NodeError):
    """The key image cannot be made: the finding names no key slice, or a file is missing or unreadable."""


def _letter(vector: NDArray[np.float64]) -> str:
    """The patient direction (LPS) a unit vector mostly points to: L/R, P/A, H/F."""
    axis = int(np.argmax(np.abs(vector)))
    pair = (("L", "R"), ("P", "A"), ("H", "F"))[axis]
    return pair[0] if vector[axis] > 0 else pair[1]


def orientation_letters(orientation: list[float]) -> dict[str, str]:
    """Letters for the image's right, left, bottom and top edges from Image Orientation (Patient)."""
    row = np.asarray(orientation[:3], float)  # direction of increasing column index (to the right)
    col = np.asarray(orientation[3:6], float)  # direction of increasing row index (downwards)
    return {"right": _letter(row), "left": _letter(-row), "bottom": _letter(col), "top": _letter(-col)}


def _segment_frame(seg_path: Path, segment: int, source_uid: str, z_mm: float | None) -> NDArray[np.bool_] | None:
    ds = dcmread(seg_path)
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    by_position: int | None = None
    # With one segment, the segment identification may sit in the shared functional groups instead.
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ident = item if "SegmentIdentificationSequence" in item else shared
        if ident is None or int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != segment:
            continue
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                if str(source.ReferencedSOPInstanceUID) == source_uid:
                    return np.asarray(frames[i], dtype=bool)
        position = item.PlanePositionSequence[0] if "PlanePositionSequence" in item else None
        if z_mm is not None and position is not None and abs(float(position.ImagePositionPatient[2]) - z_mm) < 1e-3:
            by_position = i
    return None if by_position is None else np.asarray(frames[by_position], dtype=bool)


def render(
    finding: dict[str, Any],
    source_path: Path,
    seg_path: Path | None,
    window: tuple[float, float],
    colour: tuple[int, int, int],
) -> bytes:
    """The PNG of one finding (see the module docstring).

    Raises
    ------
    KeyImageError
        No ``key_slice`` in the finding (results written before key slices existed) or unreadable files.
    """
    key = finding.get("key_slice")
    if not isinstance(key, dict) or "sop_instance_uid" not in key:
        raise KeyImageError("this finding names no key slice (results of an older node version)")
    try:
        ds = dcmread(source_path)
        pixels = ds.pixel_array.astype(np.float32)
    except (OSError, ValueError, AttributeError) as exc:
        raise KeyImageError(f"cannot read the key slice: {exc}") from None
    hu = pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    centre, width = window
    grey = np.clip((hu - (centre - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    source_shape = grey.shape
    # Small matrices are enlarged (by a whole factor) so that a few-pixel outline stays visible.
    scale = max(1, MIN_SIZE // max(source_shape))
    if scale > 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    bgr = (int(colour[2]), int(colour[1]), int(colour[0]))
    if seg_path is not None and seg_path.is_file():
        try:
            mask = _segment_frame(
                seg_path, int(finding.get("segment_number") or 0), str(key["sop_instance_uid"]), key.get("z_mm")
            )
        except (OSError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise KeyImageError(f"cannot read the finding's segment: {exc}") from None
        if mask is not None and mask.shape == source_shape:
            big = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(image, contours, -1, bgr, 1, lineType=cv2.LINE_8)
    rows, columns = grey.shape
    spacing = [float(v) for v in getattr(ds, "PixelSpacing", [1.0, 1.0])]
    bar = int(round(10.0 / spacing[1] * scale))  # 10 mm along a row
    y = rows - 12
    cv2.line(image, (10, y), (10 + bar, y), WHITE, 2)
    cv2.putText(image, "10 mm", (10, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, WHITE, 1, cv2.LINE_AA)
    orientation = [float(v) for v in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    letters = orientation_letters(orientation)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    cv2.putText(image, letters["top"], (columns // 2 - 4, 16), font, scale, WHITE, 1, cv2.LINE_AA)
    cv2.putText(image, letters["bottom"], (columns // 2 - 4, rows - 28), font, scale, WHITE, 1, cv2.LINE_AA)
    cv2.putText(image, letters["left"], (4, rows // 2), font, scale, WHITE, 1, cv2.LINE_AA)
    cv2.putText(image, letters["right"], (columns - 14, rows // 2), font, scale, WHITE, 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise KeyImageError("OpenCV could not encode the PNG")
    return bytes(png.tobytes())
