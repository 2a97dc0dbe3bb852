"""Decoding on send against DCMTK: a compressed series to a ``storescp`` that accepts only uncompressed syntaxes.

The series: phantom CT slices compressed by pydicom's encoders, alternately JPEG 2000 lossless
(pylibjpeg-openjpeg) and JPEG-LS lossless (pyjpegls), plus pydicom's MR_small in JPEG 2000, JPEG-LS and
RLE lossless (third-party encoders), each with a new SOP Instance UID. ``store_files`` sends them to
``storescp`` accepting only uncompressed syntaxes: every file must arrive as Explicit VR Little Endian with
exactly the pixel values that were compressed, and must pass dciodvfy as well as the uncompressed source.
The same files to a ``storescp`` accepting every syntax go as stored (the fast path), for the timings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from node.send.destination import Destination
from node.send.scu import ScuSettings, Verdict, store_files
from node.synth.phantom import make_phantom
from tests.nodeproc import NodeProcess
from tests.peers import StoreSCP, storescu, wait_for
from tests.tools import dciodvfy

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
SLICES, SIZE = 8, 512
SETTINGS = ScuSettings("NODE", acse_timeout=10.0, dimse_timeout=30.0, network_timeout=30.0)
MR_FILES = {
    "MR_small_jp2klossless.dcm": JPEG2000Lossless,
    "MR_small_jpeg_ls_lossless.dcm": JPEGLSLossless,
    "MR_small_RLE.dcm": RLELossless,
}


class Series:
    """The compressed files, and per SOP Instance UID the pixels they were compressed from."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.syntax: dict[str, UID] = {}
        self.pixels: dict[str, np.ndarray] = {}
        self.uncompressed: dict[str, Path] = {}  # the phantom slice before compression, for dciodvfy


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    for syntax in (JPEG2000Lossless, JPEGLSLossless):
        if not get_encoder(syntax).is_available:
            pytest.skip(f"no pydicom encoder for {syntax.name} is installed")
    folder = tmp_path_factory.mktemp("compressed")
    built = Series()
    plain = make_phantom(5, slices=SLICES, rows=SIZE, columns=SIZE).write_dicom(folder / "plain")
    for n, path in enumerate(plain):
        ds = dcmread(path)
        pixels = ds.pixel_array.copy()
        syntax = JPEG2000Lossless if n % 2 == 0 else JPEGLSLossless
        ds.compress(syntax, generate_instance_uid=False)
        out = folder / f"ct{n:03d}.dcm"
        ds.save_as(out, enforce_file_format=True)
        sop = str(ds.SOPInstanceUID)
        built.files.append(out)
        built.syntax[sop], built.pixels[sop], built.uncompressed[sop] = syntax, pixels, path
    reference = dcmread(get_testdata_file("MR_small.dcm", download=False)).pixel_array
    mr_series = generate_uid()
    for n, (name, syntax) in enumerate(MR_FILES.items()):
        ds = dcmread(get_testdata_file(name, download=False))
        assert ds.file_meta.TransferSyntaxUID == syntax
        sop = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SeriesInstanceUID, ds.InstanceNumber = mr_series, n + 1
        out = folder / f"mr{n}.dcm"
        ds.save_as(out, enforce_file_format=True)
        built.files.append(out)
        built.syntax[sop], built.pixels[sop] = syntax, reference
    return built


def _send(scp: StoreSCP, files: list[Path]) -> float:
    started = time.perf_counter()
    outcomes = store_files(Destination(scp.aet, HOST, scp.port), files, SETTINGS)
    elapsed = time.perf_counter() - started
    assert [o.verdict for o in outcomes] == [Verdict.SENT] * len(files), [o.reason for o in outcomes if o.reason]
    return elapsed


def test_a_compressed_series_arrives_decoded_and_pixel_identical_at_an_uncompressed_only_storescp(
    series: Series,
) -> None:
    before = {path: path.read_bytes() for path in series.files}
    with StoreSCP(transfer_syntaxes="uncompressed") as scp:
        transcoded = _send(scp, series.files)
        received = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.files()}
        assert "error" not in scp.log().lower(), scp.log()
    assert set(received) == set(series.syntax)  # nothing missing, nothing extra
    assert {path: path.read_bytes() for path in series.files} == before  # the stored files are untouched
    for sop, ds in received.items():
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian, series.syntax[sop].name
        assert not ds["PixelData"].is_undefined_length
        assert np.array_equal(ds.pixel_array, series.pixels[sop]), f"{series.syntax[sop].name}: pixels differ"
    # The decoded CT passes dciodvfy with no more errors than the uncompressed slice it was compressed from.
    with StoreSCP(transfer_syntaxes="uncompressed") as scp:
        _send(scp, series.files[:2])  # one JPEG 2000, one JPEG-LS slice
        for path in scp.files():
            sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            errors, lines = dciodvfy(path)
            source_errors, _ = dciodvfy(series.uncompressed[sop])
            assert errors == source_errors, "\n".join(lines)

    with StoreSCP(transfer_syntaxes="all") as scp:
        as_stored = _send(scp, series.files)
        stored = {str(dcmread(p).SOPInstanceUID): dcmread(p).file_meta.TransferSyntaxUID for p in scp.files()}
    assert stored == series.syntax  # a peer that accepts the stored syntax gets it as stored
    count = len(series.files)
    print(
        f"{count} files ({SLICES} CT slices {SIZE}x{SIZE} in JPEG 2000 / JPEG-LS lossless, {len(MR_FILES)} MR): "
        f"decoded for storescp in {transcoded:.2f} s ({count / transcoded:.1f}/s), "
        f"as stored in {as_stored:.2f} s ({count / as_stored:.1f}/s)"
    )


def test_a_compressed_series_forwarded_by_the_node_arrives_decoded_at_an_uncompressed_only_storescp(
    series: Series, tmp_path: Path
) -> None:
    """storescu -> pacs-node serve (stored compressed, as received) -> instance rule -> storescp (uncompressed)."""
    with StoreSCP(transfer_syntaxes="uncompressed") as scp:
        config = f"""
[limits]
min_free_disk_mb = 0
[workers]
count = 0
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
[[peers]]
name = "scp"
ae_title = "{scp.aet}"
host = "127.0.0.1"
port = {scp.port}
[[rules]]
name = "everything"
level = "instance"
forward = ["scp"]
"""
        # DCMTK storescu proposes one compressed syntax per run: JPEG 2000 lossless (-xv), then JPEG-LS (-xt).
        groups = {JPEG2000Lossless: "-xv", JPEGLSLossless: "-xt"}
        sent = [p for p in series.files if p.name.startswith("ct")]
        with NodeProcess(tmp_path / "node", config) as node:
            for syntax, option in groups.items():
                folder = tmp_path / option
                folder.mkdir()
                for path in sent:
                    if series.syntax[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] == syntax:
                        (folder / path.name).symlink_to(path)
                storescu(folder, node.port, aec="PACSNODE", extra=[option])
            wait_for(lambda: len(scp.files()) == len(sent) or None, timeout=60, what="all forwarded")
            assert node.stop() == 0
        stored = {p.name: dcmread(p, stop_before_pixels=True) for p in (node.data_dir / "spool").rglob("*.dcm")}
        received = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.files()}
    expected = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sent}
    # Stored as received (compressed), forwarded decoded.
    assert {str(ds.SOPInstanceUID): ds.file_meta.TransferSyntaxUID for ds in stored.values()} == {
        sop: series.syntax[sop] for sop in expected
    }
    assert set(received) == expected
    for sop, ds in received.items():
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(ds.pixel_array, series.pixels[sop]), f"{series.syntax[sop].name}: pixels differ"
