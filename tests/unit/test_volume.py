"""Series -> Volume: round trips through the phantom writer, every geometry refusal, pydicom's own files."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom.data
import pytest
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.data import get_testdata_file

from node.analyse.types import Volume
from node.analyse.volume import group_by_series, load_series, scan_series
from node.errors import InputError, NodeError, SeriesError, UnreadableFileError
from node.synth.dicom_writer import write_ct_series

SPACING = (0.7, 0.8)  # (row spacing, column spacing)
FIRST = (-10.0, -20.0, -100.0)


def _hu(slices: int = 5, rows: int = 16, cols: int = 20, low: int = -1024, seed: int = 0) -> NDArray[np.int16]:
    return np.random.default_rng(seed).integers(low, 3000, (slices, rows, cols)).astype(np.int16)


def _write(out: Path, hu: NDArray[np.int16], **kwargs: Any) -> list[Path]:
    kwargs = {"pixel_spacing": SPACING, "slice_thickness": 2.0, "slice_spacing": 2.5, "first_position": FIRST} | kwargs
    return write_ct_series(hu, out, **kwargs)


def _edit(path: Path, **attributes: Any) -> None:
    ds = dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def _refused(source: Path | list[Path], error: type[NodeError], *fragments: str) -> str:
    with pytest.raises(error) as info:
        load_series(source)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert "PHANTOM" not in message  # patient name / ID never appear in messages
    return message


# --- round trip -------------------------------------------------------------------------------------


def test_round_trip_gives_back_exact_hu_and_geometry(tmp_path: Path) -> None:
    hu = _hu()
    paths = _write(tmp_path, hu, seed=7)
    volume = load_series(tmp_path)

    assert volume.voxels.dtype == np.float32
    np.testing.assert_array_equal(volume.voxels, hu.astype(np.float32))
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert volume.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    np.testing.assert_allclose(volume.positions[:, 2], [-100.0, -97.5, -95.0, -92.5, -90.0])
    np.testing.assert_allclose(volume.positions[:, :2], [FIRST[:2]] * 5)
    assert volume.modality == "CT" and volume.body_part == "CHEST" and volume.slice_thickness == 2.0
    first = dcmread(paths[0], stop_before_pixels=True)
    assert volume.study_instance_uid == first.StudyInstanceUID
    assert volume.series_instance_uid == first.SeriesInstanceUID
    assert volume.frame_of_reference_uid == first.FrameOfReferenceUID
    assert len(volume.headers) == 5
    assert all("PixelData" not in h for h in volume.headers)
    assert [int(h.InstanceNumber) for h in volume.headers] == [1, 2, 3, 4, 5]
    assert volume.headers[0].PatientName == "PHANTOM^CT^7"


def test_to_patient_maps_indices_to_millimetres(tmp_path: Path) -> None:
    _write(tmp_path, _hu())
    volume = load_series(tmp_path)
    # (slice, row, column): columns run along +x by column spacing, rows along +y by row spacing.
    np.testing.assert_allclose(volume.to_patient([2, 3, 4]), [-10 + 4 * 0.8, -20 + 3 * 0.7, -100 + 2 * 2.5])
    np.testing.assert_allclose(volume.to_patient([[0.5, 0, 0]]), [[-10, -20, -98.75]])


def test_shuffled_and_renamed_files_are_sorted_by_position(tmp_path: Path) -> None:
    hu = _hu(slices=7)
    paths = _write(tmp_path / "written", hu)
    shuffled = tmp_path / "shuffled" / "nested"
    shuffled.mkdir(parents=True)
    order = list(range(7))
    random.Random(3).shuffle(order)
    copies = []
    for name, k in enumerate(order):
        copies.append(Path(shutil.copy(paths[k], shuffled / f"img{name:02d}")))

    from_folder = load_series(tmp_path / "shuffled")
    from_list = load_series(copies[::-1])
    for volume in (from_folder, from_list):
        np.testing.assert_array_equal(volume.voxels, hu.astype(np.float32))
        assert np.all(np.diff(volume.positions[:, 2]) == pytest.approx(2.5))


def test_signed_storage_keeps_hu_below_minus_1024(tmp_path: Path) -> None:
    hu = _hu(low=-3024)
    hu[0, 0, 0] = -32768
    hu[0, 0, 1] = 32767
    _write(tmp_path, hu)
    assert dcmread(tmp_path / "CT000001.dcm").PixelRepresentation == 1
    np.testing.assert_array_equal(load_series(tmp_path).voxels, hu.astype(np.float32))


def test_writer_is_deterministic_and_atomic(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    a = _write(tmp_path / "a", _hu(slices=3), seed=5, progress=lambda done, total: calls.append((done, total)))
    b = _write(tmp_path / "b", _hu(slices=3), seed=5)
    c = _write(tmp_path / "c", _hu(slices=3), seed=6, study_instance_uid="1.2.3.4")
    assert [p.name for p in a] == ["CT000001.dcm", "CT000002.dcm", "CT000003.dcm"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in a]  # no temp files left
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert a[0].read_bytes() == b[0].read_bytes()
    da, dc = dcmread(a[0]), dcmread(c[0])
    assert dc.StudyInstanceUID == "1.2.3.4"
    assert dc.SeriesInstanceUID != da.SeriesInstanceUID and dc.SOPInstanceUID != da.SOPInstanceUID
    assert (dc.PatientName, dc.PatientID, dc.PatientBirthDate) == ("PHANTOM^CT^6", "PHANTOM-6", "")


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        write_ct_series(np.zeros((4, 4), np.int16), tmp_path, pixel_spacing=(1, 1), slice_thickness=1)
    with pytest.raises(InputError):
        write_ct_series(np.zeros((1, 4, 4), np.int16), tmp_path, pixel_spacing=(0, 1), slice_thickness=1)


def test_single_slice_takes_its_spacing_from_the_thickness(tmp_path: Path) -> None:
    _write(tmp_path, _hu(slices=1))
    volume = load_series(tmp_path / "CT000001.dcm")
    assert volume.shape == (1, 16, 20)
    assert volume.spacing == pytest.approx((2.0, 0.7, 0.8))


def test_single_image_without_geometry_gets_identity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, _hu(slices=1))[0]
    _edit(path, ImagePositionPatient=None, ImageOrientationPatient=None)
    with caplog.at_level(logging.WARNING, logger="node.analyse.volume"):
        volume = load_series(path)
    assert volume.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    np.testing.assert_array_equal(volume.positions, [[0.0, 0.0, 0.0]])
    assert "assumed" in caplog.text and "PHANTOM" not in caplog.text


# --- refusals -----------------------------------------------------------------------------------------


def test_duplicate_position_is_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path, _hu())
    _edit(paths[3], ImagePositionPatient=[-10, -20, -95])
    _refused(tmp_path, SeriesError, "share position z = -95.0 mm", "CT000003.dcm", "CT000004.dcm")


def test_two_phases_in_one_series_are_refused_with_a_hint(tmp_path: Path) -> None:
    paths = _write(tmp_path, _hu())
    _edit(paths[3], ImagePositionPatient=[-10, -20, -95], AcquisitionNumber=2)
    _refused(tmp_path, SeriesError, "multi-phase? split by AcquisitionNumber")


def test_missing_slice_is_refused_as_inconsistent_spacing(tmp_path: Path) -> None:
    paths = _write(tmp_path, _hu(slices=6))
    paths[2].unlink()
    _refused(tmp_path, SeriesError, "inconsistent slice spacing", "biggest gap 5.000 mm", "CT000002.dcm")


def test_mixed_orientation_is_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path, _hu())
    _edit(paths[1], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    _refused(tmp_path, SeriesError, "mixed orientations")


def test_mixed_sizes_are_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path, _hu())
    _edit(paths[2], Rows=8, Columns=10, PixelData=bytes(8 * 10 * 2))
    _refused(tmp_path, SeriesError, "mixed image sizes", "16x20", "8x10")


def test_mixed_pixel_spacing_and_frame_of_reference_are_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path / "a", _hu())
    _edit(paths[2], PixelSpacing=[0.5, 0.5])
    _refused(tmp_path / "a", SeriesError, "mixed pixel spacings")
    paths = _write(tmp_path / "b", _hu())
    _edit(paths[2], FrameOfReferenceUID="1.2.3.4.5")
    _refused(tmp_path / "b", SeriesError, "frames of reference", "1.2.3.4.5")


def test_gantry_tilt_is_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path, _hu())
    for k, path in enumerate(paths):
        _edit(path, ImagePositionPatient=[-10, -20 + 0.5 * k, -100 + 2.5 * k])
    _refused(tmp_path, SeriesError, "shift in-plane", "gantry tilt")


def test_missing_geometry_in_a_stack_is_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path, _hu())
    _edit(paths[1], ImagePositionPatient=None)
    _refused(tmp_path, SeriesError, "lacks its geometry", "CT000002.dcm")


def test_image_without_pixel_data_is_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path, _hu())
    _edit(paths[4], PixelData=None)
    _refused(tmp_path, SeriesError, "without pixel data", "CT000005.dcm")


def test_several_series_in_one_folder(tmp_path: Path) -> None:
    a = _write(tmp_path / "one", _hu(slices=3), series_description="Lung")
    b = _write(tmp_path / "two", _hu(slices=2), series_description="Mediastinum", series_number=2)
    uid_a, uid_b = (dcmread(p[0]).SeriesInstanceUID for p in (a, b))
    message = _refused(tmp_path, SeriesError, "holds 2 series", uid_a, uid_b, "'Lung'", "3 files", "CT")
    assert "Mediastinum" in message
    assert load_series(tmp_path, series_instance_uid=uid_b).shape == (2, 16, 20)
    with pytest.raises(SeriesError, match="is not in"):
        load_series(tmp_path, series_instance_uid="1.2.3")
    assert {k: len(v) for k, v in group_by_series(a + b).items()} == {uid_a: 3, uid_b: 2}


def test_non_dicom_files_are_reported_not_fatal(tmp_path: Path) -> None:
    hu = _hu(slices=3)
    _write(tmp_path, hu)
    junk = tmp_path / "README.txt"
    junk.write_text("not a DICOM file\n")
    (tmp_path / "empty.dcm").write_bytes(b"")
    scan = scan_series(sorted(tmp_path.iterdir()))
    assert len(scan.series) == 1 and set(scan.skipped) == {junk, tmp_path / "empty.dcm"}
    np.testing.assert_array_equal(load_series(tmp_path).voxels, hu.astype(np.float32))
    _refused(junk, UnreadableFileError, "README.txt", "not a DICOM file")
    _refused([*sorted(tmp_path.glob("CT*.dcm")), junk], UnreadableFileError, "README.txt")


def test_empty_or_missing_source(tmp_path: Path) -> None:
    _refused(tmp_path, InputError, "no DICOM series")
    _refused(tmp_path / "missing", InputError, "no such file")
    _refused([], InputError, "empty")


def test_dicomdir_is_skipped_with_a_reason() -> None:
    path = get_testdata_file("DICOMDIR", download=False)
    if path is None:
        pytest.skip("pydicom's DICOMDIR test file is not installed")
    _refused(Path(path), UnreadableFileError, "DICOMDIR")


# --- pydicom's own files ------------------------------------------------------------------------------

# Every file the installed pydicom ships in its test data folder (the wheel's own files, never the
# online-only ones: nothing here downloads). Images must load or be refused with a NodeError; the
# non-image files (SR, RT Plan, waveforms, JSON, ICC) must be refused cleanly too.
_PYDICOM_DATA = Path(pydicom.data.__file__).parent / "test_files"
PYDICOM_FILES = sorted(p.name for p in _PYDICOM_DATA.iterdir() if p.is_file() and not p.name.startswith("."))

# Greyscale images with geometry or none at all: these must load, not merely fail cleanly.
MUST_LOAD = {
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
    "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm", "JPGExtended.dcm", "JPEG2000.dcm", "image_dfl.dcm", "liver_1frame.dcm",
    "rtdose.dcm", "rtdose_rle.dcm",
}  # fmt: skip


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} listed from pydicom's folder but not found by get_testdata_file"
    return Path(str(path))


def test_pydicom_ships_the_images_we_rely_on() -> None:
    assert {"CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"} <= set(PYDICOM_FILES)
    assert len(PYDICOM_FILES) > 60


@pytest.mark.filterwarnings("ignore")  # several of these files are deliberately malformed
@pytest.mark.parametrize("name", PYDICOM_FILES)
def test_pydicom_file_loads_or_is_refused_cleanly(name: str) -> None:
    path = _testdata(name)
    try:
        volume = load_series(path)
    except NodeError as exc:
        assert name not in MUST_LOAD, f"{name} should load: {exc}"
        assert str(exc).strip()
        return
    assert isinstance(volume, Volume)
    assert volume.voxels.dtype == np.float32 and volume.voxels.ndim == 3
    assert len(volume.headers) == volume.shape[0] == len(volume.positions)
    assert all(sp > 0 for sp in volume.spacing)
    assert np.isfinite(volume.voxels).all()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm",
    ],
)  # fmt: skip
def test_lossless_transfer_syntaxes_decode_to_the_same_voxels(name: str) -> None:
    reference = load_series(_testdata("MR_small.dcm"))
    np.testing.assert_array_equal(load_series(_testdata(name)).voxels, reference.voxels)


@pytest.mark.filterwarnings("ignore")
def test_rt_dose_frames_become_slices() -> None:
    volume = load_series(_testdata("rtdose.dcm"))
    assert volume.shape == (15, 10, 10)
    assert np.all(np.diff(volume.positions @ volume.normal) > 0)
    assert volume.voxels.max() < 10  # Dose Grid Scaling applied: Gy, not stored integers


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm", "examples_palette.dcm"])
def test_colour_is_refused_with_the_reason(name: str) -> None:
    with pytest.raises(SeriesError, match="colour image"):
        load_series(_testdata(name))
