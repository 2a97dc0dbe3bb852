"""The send stage without a network: status classification, contexts, retry arithmetic, destinations, jobs."""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SegmentationStorage,
)
from pynetdicom.dsutils import decode, encode

from node.commands.echo import ae_title
from node.config import Limits, NodeConfig, parse_config
from node.dicom.status import Status
from node.jobs import JobState, JobStore, delay
from node.send import enqueue_send, send_kind
from node.send.contexts import Item as _Item
from node.send.contexts import groups as _groups
from node.send.contexts import inspect as _inspect
from node.send.destination import Destination, parse_host_port, resolve_destination
from node.send.errors import DestinationError
from node.send.scu import (
    MAX_CONTEXTS,
    ScuSettings,
    Verdict,
    classify,
    presentation_contexts,
    store_files,
)
from node.send.sender import Sender, lease_seconds, max_attempts_for, sender_job_store
from node.send.transcode import DECODED_SYNTAXES, TranscodeError, can_decode, decode_to


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_config(tmp_path: Path, port: int = 11113, extra: str = "") -> NodeConfig:
    text = f"""
[node]
ae_title = "NODE"
data_dir = "data"

[[peers]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = {port}

[[peers]]
name = "scanner"
ae_title = "SCANNER"
allow_store = true
{extra}
"""
    return parse_config(text, config_dir=tmp_path)


# -- classification --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (Status.SUCCESS, Verdict.SENT),
        (0x0001, Verdict.SENT),  # warning: requested optional attributes not supported
        (Status.COERCION_OF_DATA_ELEMENTS, Verdict.SENT),
        (Status.ELEMENTS_DISCARDED, Verdict.SENT),
        (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING, Verdict.SENT),
        (Status.OUT_OF_RESOURCES, Verdict.RETRY),
        (Status.OUT_OF_RESOURCES + 0x10, Verdict.RETRY),  # 0xA710: still out of resources
        (Status.PROCESSING_FAILURE, Verdict.RETRY),
        (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, Verdict.PARK),
        (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS + 0x42, Verdict.PARK),
        (Status.CANNOT_UNDERSTAND, Verdict.PARK),
        (Status.CANNOT_UNDERSTAND_INVALID_UID, Verdict.PARK),
        (Status.CANNOT_UNDERSTAND + 0xFFF, Verdict.PARK),  # 0xCFFF: the end of the range
        (Status.SOP_CLASS_NOT_SUPPORTED, Verdict.PARK),
        (Status.NOT_AUTHORIZED, Verdict.PARK),
    ],
)
def test_classify_follows_the_contract(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


# -- presentation contexts -------------------------------------------------------------------------------


def test_one_context_per_sop_class_and_syntax_stored_syntax_first() -> None:
    contexts = presentation_contexts(
        [
            (CTImageStorage, ExplicitVRLittleEndian),
            (CTImageStorage, JPEG2000Lossless),
            (CTImageStorage, ExplicitVRLittleEndian),
            (SegmentationStorage, ImplicitVRLittleEndian),
        ]
    )
    proposed = [(cx.abstract_syntax, list(cx.transfer_syntax)) for cx in contexts]
    assert proposed == [
        (CTImageStorage, [JPEG2000Lossless]),
        (CTImageStorage, [ExplicitVRLittleEndian]),
        (CTImageStorage, [ImplicitVRLittleEndian]),
        (SegmentationStorage, [ExplicitVRLittleEndian]),
        (SegmentationStorage, [ImplicitVRLittleEndian]),
    ]


def test_a_batch_needing_more_than_128_contexts_is_split_in_order() -> None:
    # 70 SOP classes x 2 contexts = 140 > 128: the first 64 classes fit in one association.
    items = [
        _Item(i, Path(f"{i}.dcm"), CTImageStorage if i == 0 else _uid(i), _uid(1000 + i), ExplicitVRLittleEndian)
        for i in range(70)
    ]
    groups = _groups(items)
    assert [len(g) for g in groups] == [MAX_CONTEXTS // 2, 70 - MAX_CONTEXTS // 2]
    assert [item.index for group in groups for item in group] == list(range(70))
    same_class = [_Item(i, Path(f"{i}.dcm"), CTImageStorage, _uid(i), ExplicitVRLittleEndian) for i in range(500)]
    assert len(_groups(same_class)) == 1
    # One class in 130 stored syntaxes: 2 + 126 contexts fill the first association.
    syntaxes = [_Item(i, Path(f"{i}.dcm"), CTImageStorage, _uid(i), _uid(5000 + i % 130)) for i in range(260)]
    groups = _groups(syntaxes)
    assert [len(g) for g in groups] == [126, 126, 8]
    assert [item.index for group in groups for item in group] == list(range(260))
    for group in groups:
        assert len(presentation_contexts((i.sop_class, i.transfer_syntax) for i in group)) <= MAX_CONTEXTS


def _uid(n: int) -> UID:
    return UID(f"1.2.826.0.1.3680043.8.498.{n}")


def test_inspect_reports_missing_and_non_dicom_files(tmp_path: Path) -> None:
    missing = _inspect(0, tmp_path / "gone.dcm")
    assert not isinstance(missing, _Item)
    assert missing.verdict is Verdict.PARK and "gone.dcm is missing" in missing.reason
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    junk = _inspect(1, text)
    assert not isinstance(junk, _Item)
    assert junk.verdict is Verdict.PARK and "not a DICOM Part-10 file" in junk.reason


def test_store_files_without_sendable_files_opens_no_association(tmp_path: Path) -> None:
    # Port 9 (discard) on 127.0.0.1 is never contacted: nothing can be sent, so no association is opened.
    outcomes = store_files(Destination("X", "127.0.0.1", 9), [tmp_path / "a.dcm"], ScuSettings("NODE"))
    assert [o.verdict for o in outcomes] == [Verdict.PARK]


# -- retry arithmetic -----------------------------------------------------------------------------------


def test_max_attempts_cover_the_give_up_time_with_the_defaults() -> None:
    assert max_attempts_for(30, 3600, 24) == 31
    assert max_attempts_for(30, 3600, 24) == max_attempts_for(30.0, 3600.0, 24.0)


@pytest.mark.parametrize(("initial", "maximum", "hours"), [(30, 3600, 24), (1, 1, 0.01), (60, 600, 2), (5, 100000, 48)])
def test_max_attempts_is_the_smallest_count_whose_delays_reach_the_give_up_time(
    initial: float, maximum: float, hours: float
) -> None:
    n = max_attempts_for(initial, maximum, hours)
    waited_before_last = sum(delay(k, initial, maximum) for k in range(1, n))
    assert waited_before_last >= hours * 3600
    assert sum(delay(k, initial, maximum) for k in range(1, n - 1)) < hours * 3600


def test_sender_job_store_has_the_sender_backoff(tmp_path: Path) -> None:
    config = make_config(tmp_path, extra="[sender]\nretry_initial_s = 10\nretry_max_s = 100\ngive_up_after_hours = 1")
    with sender_job_store(config) as store:
        assert store.path == str(config.node.jobs_path)
        assert (store.backoff_initial, store.backoff_max) == (10, 100)
        assert store.max_attempts == max_attempts_for(10, 100, 1)


def test_lease_covers_a_stall_and_a_new_association() -> None:
    assert lease_seconds(Limits()) == 300
    limits = Limits(acse_timeout_s=5, dimse_timeout_s=10, network_timeout_s=20)
    assert lease_seconds(limits) > limits.dimse_timeout_s * 2 + limits.acse_timeout_s * 2


# -- destinations ---------------------------------------------------------------------------------------


def test_destinations_from_peer_names_and_addresses(tmp_path: Path) -> None:
    peers = make_config(tmp_path).peers
    assert resolve_destination("pacs", peers) == Destination("PACS", "127.0.0.1", 11113, "pacs")
    assert str(resolve_destination("pacs", peers)) == "pacs (PACS@127.0.0.1:11113)"
    assert resolve_destination("pacs", peers, "OTHER").ae_title == "OTHER"
    assert resolve_destination("10.1.2.3:104", peers) == Destination("ANY-SCP", "10.1.2.3", 104)
    assert resolve_destination("host.example:4242", (), "ORTHANC") == Destination("ORTHANC", "host.example", 4242)
    assert parse_host_port("[::1]:104") == ("::1", 104)
    assert str(Destination("A", "::1", 104)) == "A@[::1]:104"
    assert parse_host_port("::1") is None and parse_host_port("pacs") is None


def test_unknown_destinations_say_what_would_work(tmp_path: Path) -> None:
    peers = make_config(tmp_path).peers
    with pytest.raises(DestinationError, match=r"'archive' is not a peer name .*peers we can send to: pacs"):
        resolve_destination("archive", peers)
    with pytest.raises(DestinationError, match="--config"):
        resolve_destination("archive", ())
    with pytest.raises(DestinationError, match="peer 'scanner' has no host and port"):
        resolve_destination("scanner", peers)
    with pytest.raises(DestinationError, match=r"port must be 1\.\.65535"):
        resolve_destination("host:70000", peers)


def test_ae_title_option_type() -> None:
    assert ae_title("ORTHANC") == "ORTHANC"
    for bad in ("", "A" * 17, "BACK\\SLASH"):
        with pytest.raises(argparse.ArgumentTypeError):
            ae_title(bad)


# -- the send-job contract --------------------------------------------------------------------------------


def test_enqueue_send_is_idempotent_per_instance_and_peer(tmp_path: Path) -> None:
    clock = Clock()
    with JobStore(tmp_path / "jobs.sqlite3", clock=clock) as jobs:
        first = enqueue_send(jobs, "pacs", "spool/a.dcm", "1.2.3", "1.2.840.10008.5.1.4.1.1.2", priority=1)
        assert enqueue_send(jobs, "pacs", "spool/a.dcm", "1.2.3", "1.2.840.10008.5.1.4.1.1.2") == first
        other_peer = enqueue_send(jobs, "archive", "spool/a.dcm", "1.2.3", "1.2.840.10008.5.1.4.1.1.2")
        assert other_peer != first
        job = jobs.get(first)
        assert job is not None and job.kind == send_kind("pacs") == "send:pacs"
        assert job.payload == {
            "peer": "pacs",
            "path": "spool/a.dcm",
            "sop": "1.2.3",
            "sop_class": "1.2.840.10008.5.1.4.1.1.2",
        }
        assert job.dedup_key == "pacs|1.2.3" and job.priority == 1
        claimed = jobs.claim("send:pacs", "t", 60)
        assert claimed is not None
        jobs.complete(claimed.id, "t")
        assert enqueue_send(jobs, "pacs", "spool/a.dcm", "1.2.3", "1.2.840.10008.5.1.4.1.1.2") == first
        assert jobs.counts()[("send:pacs", JobState.DONE)] == 1
        assert ("send:pacs", JobState.QUEUED) not in jobs.counts()


# -- the sender without a network ------------------------------------------------------------------------


def test_sender_parks_jobs_whose_file_is_missing_or_outside_the_data_folder(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    clock = Clock()
    with sender_job_store(config, clock=clock) as jobs:
        gone = enqueue_send(jobs, "pacs", "spool/gone.dcm", "1.2.3", "1.2.840.10008.5.1.4.1.1.2")
        outside = enqueue_send(jobs, "pacs", "../../etc/passwd", "1.2.4", "1.2.840.10008.5.1.4.1.1.2")
        sender = Sender(config, jobs, threading.Event(), clock)
        assert sender.run_once(config.peer("pacs")) == 2
        gone_job, outside_job = jobs.get(gone), jobs.get(outside)
        assert gone_job is not None and outside_job is not None
        assert gone_job.state is JobState.DEAD and outside_job.state is JobState.DEAD
        assert f"{config.node.data_dir / 'spool' / 'gone.dcm'} is missing" in (gone_job.last_error or "")
        assert "outside the data folder" in (outside_job.last_error or "")
        assert sender.run_once(config.peer("pacs")) == 0


def test_sender_serves_only_peers_that_can_receive(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with sender_job_store(config) as jobs:
        assert [p.name for p in Sender(config, jobs, threading.Event()).peers] == ["pacs"]


# -- decoding for the peer (node.send.transcode) -----------------------------------------------------------


def _testfile(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The uncompressed references: MR_small.dcm for the MR_small variants; the RLE copy of pydicom's RGB
# secondary capture for its other lossless encodings (the RLE decoder is pydicom's own, pure Python).
MR_REFERENCE = "MR_small.dcm"
RGB_REFERENCE = "SC_rgb_rle.dcm"


@pytest.mark.parametrize(
    ("name", "reference", "syntax"),
    [
        ("MR_small_jp2klossless.dcm", MR_REFERENCE, JPEG2000Lossless),
        ("MR_small_jpeg_ls_lossless.dcm", MR_REFERENCE, JPEGLSLossless),
        ("MR_small_RLE.dcm", MR_REFERENCE, RLELossless),
        ("MR_small_implicit.dcm", MR_REFERENCE, ImplicitVRLittleEndian),
        ("SC_rgb_jpeg_gdcm.dcm", RGB_REFERENCE, JPEGLosslessSV1),
        ("SC_rgb_gdcm_KY.dcm", RGB_REFERENCE, JPEG2000),  # JPEG 2000 (lossless content) from GDCM
        ("GDCMJ2K_TextGBR.dcm", None, JPEG2000Lossless),  # YBR_RCT: becomes RGB
    ],
)
@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_lossless_sources_decode_to_the_reference_pixels_and_survive_encoding(
    name: str, reference: str | None, syntax: UID, target: UID
) -> None:
    path = _testfile(name)
    before = _digest(path)
    stored = dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == syntax
    ds = decode_to(path, target)
    assert _digest(path) == before  # the stored file is never written
    # How the dataset is encoded in memory: pydicom converts it to ``target`` on encoding.
    assert ds.file_meta.TransferSyntaxUID == (syntax if syntax in DECODED_SYNTAXES else ExplicitVRLittleEndian)
    assert ds.SOPInstanceUID == stored.SOPInstanceUID  # the same instance in another syntax
    assert not ds["PixelData"].is_undefined_length
    # What pynetdicom puts on the wire for the accepted syntax, read back.
    wire = encode(ds, target.is_implicit_VR, True, False)
    assert wire is not None
    received = decode(io.BytesIO(wire), target.is_implicit_VR, True)
    received.file_meta = FileMetaDataset()
    received.file_meta.TransferSyntaxUID = target
    expected = dcmread(_testfile(reference)).pixel_array if reference else stored.pixel_array
    assert np.array_equal(received.pixel_array, expected)
    assert received.PhotometricInterpretation in ("MONOCHROME2", "RGB")
    if received.SamplesPerPixel == 3:
        assert received.PlanarConfiguration == 0


def test_multiframe_rle_decodes_every_frame() -> None:
    ds = decode_to(_testfile("SC_rgb_rle_2frame.dcm"), ExplicitVRLittleEndian)
    assert ds.NumberOfFrames == 2
    frames = ds.pixel_array
    assert frames.shape == (2, 100, 100, 3)
    assert np.array_equal(frames, dcmread(_testfile("SC_rgb_rle_2frame.dcm")).pixel_array)
    assert np.array_equal(frames[0], dcmread(_testfile(RGB_REFERENCE)).pixel_array)


def test_deflated_files_are_inflated_not_decoded() -> None:
    path = _testfile("image_dfl.dcm")
    assert dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    ds = decode_to(path, ExplicitVRLittleEndian)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    wire = encode(ds, False, True, False)
    assert wire is not None
    received = decode(io.BytesIO(wire), False, True)
    assert received.PixelData == dcmread(path).PixelData


def test_jpeg_baseline_ybr_full_422_becomes_rgb_and_is_marked_lossy(tmp_path: Path) -> None:
    source = dcmread(_testfile("SC_rgb_dcmtk_+eb+cy+np.dcm"))
    assert (source.file_meta.TransferSyntaxUID, source.PhotometricInterpretation) == (JPEGBaseline8Bit, "YBR_FULL_422")
    del source.LossyImageCompression  # a writer that forgot it: decoding must not pass the pixels for originals
    path = tmp_path / "baseline.dcm"
    source.save_as(path, enforce_file_format=True)
    ds = decode_to(path, ExplicitVRLittleEndian)
    assert ds.PhotometricInterpretation == "RGB" and ds.PlanarConfiguration == 0
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert len(ds.PixelData) == source.Rows * source.Columns * 3
    # Close to the RGB original (lossy, 4:2:2 subsampled): the colour conversion was done.
    original = dcmread(_testfile(RGB_REFERENCE)).pixel_array.astype(int)
    assert np.abs(ds.pixel_array.astype(int) - original).mean() < 8


def test_nested_encapsulated_pixel_data_is_decoded_too(tmp_path: Path) -> None:
    source = dcmread(_testfile("MR_small_jp2klossless.dcm"))
    icon = Dataset()
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated"):
        setattr(icon, keyword, source[keyword].value)
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        setattr(icon, keyword, source[keyword].value)
    icon["PixelData"] = copy.deepcopy(source["PixelData"])
    source.IconImageSequence = [icon]
    source.ExtendedOffsetTable = b"\x00" * 8
    source.ExtendedOffsetTableLengths = len(source.PixelData).to_bytes(8, "little")
    path = tmp_path / "icon.dcm"
    source.save_as(path, enforce_file_format=True)
    ds = decode_to(path, ImplicitVRLittleEndian)
    assert "ExtendedOffsetTable" not in ds and "ExtendedOffsetTableLengths" not in ds
    wire = encode(ds, True, True, False)
    assert wire is not None
    received = decode(io.BytesIO(wire), True, True)
    received.file_meta = FileMetaDataset()
    received.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    reference = dcmread(_testfile(MR_REFERENCE)).pixel_array
    assert np.array_equal(received.pixel_array, reference)
    nested = received.IconImageSequence[0]
    assert len(nested.PixelData) == reference.nbytes
    assert np.frombuffer(nested.PixelData, reference.dtype).reshape(reference.shape).tolist() == reference.tolist()


@pytest.mark.parametrize(
    ("syntax", "decodable"),
    [
        (ExplicitVRLittleEndian, True),
        (ImplicitVRLittleEndian, True),
        (DeflatedExplicitVRLittleEndian, True),
        (JPEGBaseline8Bit, True),
        (JPEGLosslessSV1, True),
        (JPEGLSLossless, True),
        (JPEG2000Lossless, True),
        (RLELossless, True),
        (ExplicitVRBigEndian, False),
        (MPEG2MPML, False),
        (UID("1.2.826.0.1.3680043.8.498.77"), False),
    ],
)
def test_can_decode(syntax: UID, decodable: bool) -> None:
    assert can_decode(syntax) is decodable


def test_what_cannot_be_decoded_raises_a_transcode_error_naming_file_and_syntax(tmp_path: Path) -> None:
    lossy12 = _testfile("JPEG-lossy.dcm")  # 12-bit JPEG extended that neither libjpeg nor Pillow decodes
    with pytest.raises(TranscodeError, match=rf"{lossy12}: its JPEG Extended \(Process 2 and 4\) pixel data cannot"):
        decode_to(lossy12, ExplicitVRLittleEndian)
    big = _testfile("MR_small_bigendian.dcm")
    with pytest.raises(TranscodeError, match=rf"{big} is stored in Explicit VR Big Endian \(a retired byte order"):
        decode_to(big, ExplicitVRLittleEndian)
    # Corrupt JPEG 2000: the codestream cut after its first bytes.
    ds = dcmread(_testfile("MR_small_jp2klossless.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:64]])
    corrupt = tmp_path / "corrupt.dcm"
    ds.save_as(corrupt, enforce_file_format=True)
    with pytest.raises(TranscodeError, match=r"corrupt\.dcm: its JPEG 2000 Image Compression \(Lossless Only\) pixel"):
        decode_to(corrupt, ExplicitVRLittleEndian)
    with pytest.raises(FileNotFoundError):
        decode_to(tmp_path / "gone.dcm", ExplicitVRLittleEndian)
    with pytest.raises(ValueError, match="not JPEG 2000"):
        decode_to(corrupt, JPEG2000)


def test_a_missing_decoder_plugin_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")})
    path = _testfile("MR_small_jp2klossless.dcm")
    with pytest.raises(TranscodeError, match=r"MR_small_jp2klossless\.dcm: .* missing dependencies: pylibjpeg"):
        decode_to(path, ExplicitVRLittleEndian)


def test_jpeg_ls_prefers_pyjpegls_and_falls_back_to_the_other_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = get_decoder(JPEGLSLossless)
    if "pyjpegls" not in decoder.available_plugins:
        pytest.skip("pyjpegls is not installed")
    path = _testfile("MR_small_jpeg_ls_lossless.dcm")
    reference = dcmread(_testfile(MR_REFERENCE)).pixel_array
    used: list[str] = []
    original = Dataset.decompress

    def spy(self: Dataset, *args: Any, **kwargs: Any) -> Dataset:
        used.append(kwargs.get("decoding_plugin", ""))
        if kwargs.get("decoding_plugin") == "pyjpegls" and fail:
            raise RuntimeError("simulated pyjpegls failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "decompress", spy)
    fail = False
    assert np.array_equal(decode_to(path, ExplicitVRLittleEndian).pixel_array, reference)
    assert used == ["pyjpegls"]
    fail, used[:] = True, []
    assert np.array_equal(decode_to(path, ExplicitVRLittleEndian).pixel_array, reference)
    assert used == ["pyjpegls", ""]
