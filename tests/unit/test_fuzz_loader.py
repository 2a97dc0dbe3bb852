"""Property-based fuzzing of the series loader: a damaged series loads into a sane Volume or is refused with an
``InputError`` (``UnreadableFileError``, ``SeriesError``) and its message; any other exception is a bug.

Each example writes a small valid series (``tests.helpers.tiny_ct`` slices) to disk with a mutation drawn by
hypothesis: slices dropped, duplicated or moved; image attributes (position, orientation, spacing, rows and
columns, bits, photometric interpretation, samples, frames, rescale) replaced by odd or malformed values
(written as raw bytes, so anything a modality could send is possible); the transfer syntax relabelled or
really changed; bytes of a file overwritten, truncated or appended; stray files in the folder. Then
``load_series`` reads the folder (lenient) or the list of files (strict).

Outcomes are tallied by kind, printed and written to ``fuzz-loader.json`` in the test's tmp dir. The number
of examples is bounded for CI (``FUZZ_EXAMPLES``, default 300).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from node.analyse.types import Volume
from node.analyse.volume import load_series, scan_series
from node.errors import InputError, UnreadableFileError
from node.store import part10_header
from tests.helpers import encode_dataset, tiny_ct

# pydicom warns about every malformed value it reads: here they are made on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

STUDY, SERIES = "1.2.826.0.1.3680043.10.11", "1.2.826.0.1.3680043.10.11.1"
SLICES, SIZE = 4, 8
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))

# Values a damaged or odd file may carry, as the text of DS / IS / CS elements (backslash: several values).
_NUMBERS = ["0", "1", "-1", "0.5", "2.5", "1e-9", "1e9", "1e400", "nan", "inf", "-inf", "", " ", "abc", "1..2"]
_TEXT_VALUES: dict[str, st.SearchStrategy[str]] = {
    "ImagePositionPatient": st.lists(st.sampled_from(_NUMBERS), min_size=0, max_size=4).map("\\".join),
    "ImageOrientationPatient": st.one_of(
        st.lists(st.sampled_from(["0", "1", "-1", "0.7071068", "0.5", "nan", "2"]), min_size=6, max_size=6),
        st.lists(st.sampled_from(_NUMBERS), min_size=0, max_size=7),
    ).map("\\".join),
    "PixelSpacing": st.lists(st.sampled_from(_NUMBERS), min_size=0, max_size=3).map("\\".join),
    "SliceThickness": st.sampled_from(_NUMBERS),
    "SpacingBetweenSlices": st.sampled_from(_NUMBERS),
    "RescaleSlope": st.sampled_from(_NUMBERS),
    "RescaleIntercept": st.sampled_from(_NUMBERS),
    "NumberOfFrames": st.sampled_from(["0", "1", "2", "-1", "4", "x", "", "1.5", "99999999999"]),
    "PhotometricInterpretation": st.sampled_from(
        ["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "", "XYZ"]
    ),
    "ImageType": st.sampled_from(["ORIGINAL\\PRIMARY\\AXIAL", "ORIGINAL\\PRIMARY\\LOCALIZER", ""]),
    "AcquisitionNumber": st.sampled_from(["1", "2", "x", ""]),
    "FrameOfReferenceUID": st.sampled_from([STUDY + ".9", STUDY + ".8", "", "x"]),
    "SeriesInstanceUID": st.sampled_from([SERIES, SERIES + ".2", ""]),
    "SOPClassUID": st.sampled_from(["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.3.10", "1.2.3"]),
}
_US = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel"]
_US_VALUES = st.one_of(
    st.sampled_from([0, 1, 2, 3, 7, 8, 9, 12, 15, 16, 17, 32, 64, 65535]).map(lambda n: struct.pack("<H", n)),
    st.sampled_from([b"", b"\x01", b"\x08\x00\x08\x00"]),  # a short value, two values
)
_KEYWORDS = [*_TEXT_VALUES, *_US, "PixelData"]
_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,  # really re-encoded
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    "relabel:" + ImplicitVRLittleEndian,  # only the file meta says so
    "relabel:" + JPEGBaseline8Bit,
    "relabel:" + RLELossless,
    "relabel:" + JPEG2000Lossless,
    "relabel:1.2.3.4",
]


@st.composite
def edits(draw: st.DrawFn) -> tuple[str, bytes | None]:
    """One attribute edit: (keyword, raw value bytes), or (keyword, None) to delete the attribute."""
    keyword = draw(st.sampled_from(_KEYWORDS))
    if draw(st.integers(0, 9)) == 0:
        return keyword, None
    if keyword in _US:
        return keyword, draw(_US_VALUES)
    if keyword == "PixelData":
        n = SIZE * SIZE * 2
        return keyword, bytes(draw(st.sampled_from([0, 1, n // 2, n - 1, n - 2, n + 2, 2 * n, 3 * n])))
    text = draw(_TEXT_VALUES[keyword]).encode()
    return keyword, text + b" " * (len(text) % 2)


@st.composite
def series_mutations(draw: st.DrawFn) -> dict[str, object]:
    slice_index = st.integers(0, SLICES - 1)
    return {
        # Per slice: its position index along z (moved, duplicated, dropped).
        "z": draw(
            st.one_of(
                st.just(list(range(SLICES))),
                st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 2.5, -1]), min_size=SLICES, max_size=SLICES),
            )
        ),
        "keep": draw(st.lists(st.booleans(), min_size=SLICES, max_size=SLICES).filter(any)),
        "duplicate": draw(st.lists(slice_index, max_size=2)),
        "edits": draw(st.lists(st.tuples(st.one_of(slice_index, st.just(-1)), edits()), max_size=4)),
        "syntax": draw(st.lists(st.tuples(slice_index, st.sampled_from(_SYNTAXES)), max_size=2)),
        "bytes": draw(
            st.lists(
                st.tuples(
                    slice_index,
                    st.sampled_from(["truncate", "overwrite", "append", "zero"]),
                    st.floats(0, 1),
                    st.binary(min_size=1, max_size=16),
                ),
                max_size=2,
            )
        ),
        "stray": draw(st.sampled_from([None, b"", b"not dicom at all", b"\x08\x00\x05\x00CS"])),
        "as_folder": draw(st.booleans()),
    }


_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _element(tag: int, value: bytes) -> bytes:
    """One element in explicit VR little endian, its value exactly ``value`` (any length, any content)."""
    vr = "OW" if tag == Tag("PixelData") else dictionary_VR(tag)
    group, number = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHL", group, number, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr.encode(), len(value)) + value


def _encode(ds: Dataset, syntax: str, edits: dict[int, bytes | None]) -> tuple[bytes, str]:
    """The dataset's bytes and their syntax. Edited values are written as they are, element by element, in
    explicit VR little endian (pydicom would convert, and refuse, the malformed ones)."""
    if not edits:
        return encode_dataset(ds, syntax), syntax
    parts = []
    for tag in sorted(set(ds.keys()) | set(edits)):
        if tag in edits:
            value = edits[tag]
            if value is not None:
                parts.append(_element(tag, value))
        else:
            single = Dataset()
            single[tag] = ds[tag]
            parts.append(encode_dataset(single, ExplicitVRLittleEndian))
    return b"".join(parts), ExplicitVRLittleEndian


def write_series(folder: Path, recipe: dict[str, object]) -> list[Path]:
    """The mutated series as files in ``folder``; returns the files in the order load_series gets them."""
    z: list[float] = recipe["z"]  # type: ignore[assignment]
    keep: list[bool] = recipe["keep"]  # type: ignore[assignment]
    duplicate: list[int] = recipe["duplicate"]  # type: ignore[assignment]
    syntaxes = dict(recipe["syntax"])  # type: ignore[call-overload]
    paths = []
    for n, k in enumerate([*range(SLICES), *duplicate]):
        if n < SLICES and not keep[k]:
            continue
        ds = tiny_ct(STUDY, SERIES, f"{SERIES}.{n + 1}", index=k, size=SIZE)
        ds.ImagePositionPatient = [0.0, 0.0, float(z[k])]
        ds["PixelData"].VR = "OW"
        edits = {Tag(kw): value for target, (kw, value) in recipe["edits"] if target in (k, -1)}  # type: ignore[attr-defined]
        syntax = syntaxes.get(k, ExplicitVRLittleEndian)
        if syntax.startswith("relabel:"):  # the file meta names a syntax the dataset is not encoded in
            dataset, _ = _encode(ds, ExplicitVRLittleEndian, edits)
            label = syntax.removeprefix("relabel:")
        else:
            dataset, label = _encode(ds, syntax, edits)
        ds.file_meta.TransferSyntaxUID = label
        data = part10_header(ds.file_meta) + dataset
        for target, how, where, extra in recipe["bytes"]:  # type: ignore[attr-defined]
            if target == k:
                at = 132 + int(where * (len(data) - 132))  # the preamble and "DICM" are not worth fuzzing
                if how == "truncate":
                    data = data[:at]
                elif how == "overwrite":
                    data = data[:at] + extra + data[at + len(extra) :]
                elif how == "zero":
                    data = data[:at] + bytes(len(extra)) + data[at + len(extra) :]
                else:
                    data += extra
        path = folder / f"slice-{n:02d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    if recipe["stray"] is not None:
        (folder / "stray.bin").write_bytes(recipe["stray"])  # type: ignore[arg-type]
    return paths


def check_volume(volume: Volume, files: int) -> None:
    """What analysis relies on: a float32 stack, one header and position per slice, finite geometry."""
    n, rows, cols = volume.shape
    assert 1 <= n <= files and rows >= 1 and cols >= 1
    assert volume.voxels.dtype == np.float32
    assert len(volume.headers) == n and volume.positions.shape == (n, 3)
    assert all(np.isfinite(volume.spacing)) and min(volume.spacing) > 0, volume.spacing
    assert np.isfinite(volume.positions).all() and all(np.isfinite(volume.orientation))
    assert np.isfinite(volume.voxels).all(), "non-finite voxels (rescale slope or intercept)"


def test_fuzz_series_loader(tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    start = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(recipe=series_mutations())
    def one(recipe: dict[str, object]) -> None:
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        try:
            paths = write_series(folder, recipe)
            source: Path | list[Path] = folder if recipe["as_folder"] or not paths else paths
            scan = scan_series(sorted(folder.iterdir()))  # never raises for bad files
            assert set(scan.skipped) | {p for files in scan.series.values() for p in files} == set(folder.iterdir())
            try:
                volume = load_series(source, SERIES if len(scan.series) > 1 else None)
            except InputError as exc:
                assert str(exc).strip(), f"{type(exc).__name__} without a message"
                outcomes[type(exc).__name__] += 1
                reasons[_reason(str(exc))] += 1
                return
            check_volume(volume, len(paths))
            outcomes["Volume"] += 1
        finally:
            shutil.rmtree(folder)

    one()
    report = {
        "cases": sum(outcomes.values()),
        "crashes": 0,  # any exception outside InputError fails the test before this line
        "outcomes": dict(outcomes.most_common()),
        "reasons": dict(reasons.most_common(25)),
        "seconds": round(time.monotonic() - start, 1),
    }
    (tmp_path / "fuzz-loader.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nseries loader fuzzing: {json.dumps(report, indent=2)}")
    assert report["cases"] >= min(EXAMPLES, 50)
    assert outcomes["Volume"] and len(outcomes) >= 3  # both sides of the rule are reached


def _reason(message: str) -> str:
    """The kind of a refusal: its message without paths, numbers and UIDs."""
    words = []
    for word in message.split():
        if "/" in word or any(c.isdigit() for c in word):
            continue
        words.append(word.strip("(),;:'"))
    return " ".join(words[:8])


# -- regressions the fuzzing found ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("RescaleSlope", b"1e400 "), ("RescaleSlope", b"nan "), ("RescaleIntercept", b"-inf"), ("RescaleSlope", b"1e38")],
)
def test_a_rescale_that_makes_voxels_non_finite_is_refused(tmp_path: Path, keyword: str, value: bytes) -> None:
    recipe = _plain() | {"edits": [(-1, (keyword, value))]}
    paths = write_series(tmp_path, recipe)
    with pytest.raises(UnreadableFileError, match="finite"):
        load_series(paths)


def _plain() -> dict[str, object]:
    """A recipe that changes nothing: the valid series."""
    return {
        "z": list(range(SLICES)),
        "keep": [True] * SLICES,
        "duplicate": [],
        "edits": [],
        "syntax": [],
        "bytes": [],
        "stray": None,
        "as_folder": False,
    }


def test_the_plain_series_loads(tmp_path: Path) -> None:
    volume = load_series(write_series(tmp_path, _plain()))
    check_volume(volume, SLICES)
    assert volume.shape == (SLICES, SIZE, SIZE)
