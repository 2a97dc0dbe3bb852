"""A de-identified forward on real associations: the SCU and the sender send to a pynetdicom SCP peer whose
``deidentify`` is set; what the peer receives is checked attribute by attribute against PS3.15 Table E.1-1
(Basic Profile column and the options: tests.unit.test_deidentify.check_profile), while the spool files
stay byte for byte what they were and the jobs stay keyed by the original SOP Instance UIDs.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, MRImageStorage

from node.config import parse_config
from node.config.deid import Deidentify
from node.jobs import JobState
from node.send import enqueue_send
from node.send.deidentify import Deidentifier
from node.send.destination import Destination
from node.send.scu import Verdict, store_files
from node.send.sender import Sender, sender_job_store
from node.send.transcode import decode_to
from tests.helpers import tiny_ct
from tests.integration.test_send_network import FAST, HOST, Clock, PeerSCP
from tests.unit.test_deidentify import SALT, check_profile

CT_SMALL = Path(get_testdata_file("CT_small.dcm", download=False))
MR_SMALL = Path(get_testdata_file("MR_small.dcm", download=False))
MR_JPEG_LS = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False))
STUDY, SERIES = "1.2.826.0.1.3680043.8.498.7", "1.2.826.0.1.3680043.8.498.7.1"
CLASSES = (CTImageStorage, MRImageStorage)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spool(folder: Path) -> list[Path]:
    """CT_small, MR_small and two instances of one tiny_ct study, as Part-10 files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "ct_small.dcm", folder / "mr_small.dcm"]
    shutil.copyfile(CT_SMALL, paths[0])
    shutil.copyfile(MR_SMALL, paths[1])
    for n in (1, 2):
        ds = tiny_ct(STUDY, SERIES, f"{SERIES}.{n}", index=n)
        ds.StudyDate, ds.StudyTime = "20240315", "101500"
        paths.append(folder / f"tiny{n}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def test_a_deidentified_forward_checked_attribute_by_attribute(tmp_path: Path) -> None:
    files = spool(tmp_path / "spool")
    hashes = [sha256(path) for path in files]
    settings = Deidentify.model_validate({"salt": SALT})
    deid = Deidentifier(settings)
    with PeerSCP(sop_classes=CLASSES) as peer:
        destination = Destination("PEER", HOST, peer.port, "research", deidentify=settings)
        outcomes = store_files(destination, files, FAST)
    assert [o.verdict for o in outcomes] == [Verdict.SENT] * 4
    assert [o.path for o in outcomes] == files  # each outcome is the stored file's (the job's) own
    assert [sha256(path) for path in files] == hashes  # the spool is never written to
    assert len(peer.received) == 4
    for path, got in zip(files, peer.received, strict=True):
        before = dcmread(path)
        after = got.dataset()
        assert check_profile(before, after, deid, meta=False) == [], path.name
        assert got.sop == after.SOPInstanceUID == deid.uid(before.SOPInstanceUID) != before.SOPInstanceUID
        assert UID(got.transfer_syntax) == before.file_meta.TransferSyntaxUID  # sent in the stored syntax
        assert after.PatientIdentityRemoved == "YES"
        assert [i.CodeValue for i in after.DeidentificationMethodCodeSequence] == ["113100"]
        assert after.PixelData == before.PixelData
    first, second = (r.dataset() for r in peer.received[2:])
    assert first.StudyInstanceUID == second.StudyInstanceUID == deid.uid(STUDY)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID == deid.uid(SERIES)
    assert first.PatientID == second.PatientID != "PHANTOM"


def test_decoded_for_the_peer_then_deidentified_with_shifted_dates_and_kept_uids(tmp_path: Path) -> None:
    path = tmp_path / "mr_jpeg_ls.dcm"
    shutil.copyfile(MR_JPEG_LS, path)
    digest = sha256(path)
    settings = Deidentify.model_validate({"salt": SALT, "uids": "retain", "dates": "shift", "max_shift_days": 90})
    deid = Deidentifier(settings)
    with PeerSCP(sop_classes=CLASSES) as peer:  # uncompressed only: the JPEG-LS file is decoded first
        destination = Destination("PEER", HOST, peer.port, "research", deidentify=settings)
        [outcome] = store_files(destination, [path], FAST)
    assert outcome.verdict is Verdict.SENT and sha256(path) == digest
    [got] = peer.received
    assert UID(got.transfer_syntax) == ExplicitVRLittleEndian
    before, after = decode_to(path, ExplicitVRLittleEndian), got.dataset()  # what was de-identified
    assert check_profile(before, after, deid, dates="shift", meta=False) == []
    assert got.sop == after.SOPInstanceUID == before.SOPInstanceUID  # Retain UIDs Option
    assert [i.CodeValue for i in after.DeidentificationMethodCodeSequence] == ["113100", "113110", "113107"]
    assert after.pixel_array.tolist() == dcmread(MR_SMALL).pixel_array.tolist()  # lossless: the same pixels


def test_a_peer_that_accepts_the_stored_compressed_syntax_gets_it_deidentified(tmp_path: Path) -> None:
    path = tmp_path / "mr_jpeg_ls.dcm"
    shutil.copyfile(MR_JPEG_LS, path)
    settings = Deidentify.model_validate({"salt": SALT})
    with PeerSCP(sop_classes=CLASSES, syntaxes=(JPEGLSLossless,)) as peer:
        destination = Destination("PEER", HOST, peer.port, "research", deidentify=settings)
        [outcome] = store_files(destination, [path], FAST)
    assert outcome.verdict is Verdict.SENT
    [got] = peer.received
    assert UID(got.transfer_syntax) == JPEGLSLossless  # not decoded: pixel data as stored
    after = got.dataset()
    assert after.PatientName != dcmread(path).PatientName and after.PatientIdentityRemoved == "YES"
    assert after.PixelData == dcmread(path).PixelData


def test_burned_in_annotation_is_parked_and_nothing_is_sent(tmp_path: Path) -> None:
    ds = tiny_ct(STUDY, SERIES, SERIES + ".9")
    ds.BurnedInAnnotation = "YES"
    path = tmp_path / "burned.dcm"
    ds.save_as(path, enforce_file_format=True)
    with PeerSCP(sop_classes=CLASSES) as peer:
        deidentify = Deidentify.model_validate({"salt": SALT})
        destination = Destination("PEER", HOST, peer.port, "research", deidentify=deidentify)
        [outcome] = store_files(destination, [path], FAST)
    assert outcome.verdict is Verdict.PARK and peer.received == []
    assert "Burned In Annotation is YES" in outcome.reason and "research (PEER@127.0.0.1" in outcome.reason


def test_the_sender_forwards_deidentified_and_keeps_the_jobs_on_the_original_uids(tmp_path: Path) -> None:
    with PeerSCP(sop_classes=CLASSES) as peer:
        text = (
            f'[node]\nae_title = "NODE"\ndata_dir = "data"\n'
            f"[limits]\nacse_timeout_s = 2\ndimse_timeout_s = 2\nnetwork_timeout_s = 5\n"
            f'[[peers]]\nname = "research"\nae_title = "PEER"\nhost = "{HOST}"\nport = {peer.port}\n'
            f'deidentify = {{ salt = "{SALT}", dates = "shift" }}\n'
        )
        config = parse_config(text, config_dir=tmp_path)
        research = config.peer("research")
        assert research.deidentify is not None
        files = spool(config.node.spool_dir / "study")
        hashes = [sha256(path) for path in files]
        clock = Clock()
        with sender_job_store(config, clock=clock) as jobs:
            queued = {}
            for path in files:
                ds = dcmread(path, stop_before_pixels=True)
                rel = path.relative_to(config.node.data_dir).as_posix()
                queued[enqueue_send(jobs, "research", rel, ds.SOPInstanceUID, ds.SOPClassUID)] = ds.SOPInstanceUID
            sender = Sender(config, jobs, threading.Event(), clock)
            assert sender.run_once(research) == 4
            for job_id, sop in queued.items():
                job = jobs.get(job_id)
                assert job is not None and job.state is JobState.DONE and job.payload["sop"] == sop
    deid = Deidentifier(research.deidentify)
    assert sorted(peer.sops()) == sorted(deid.uid(sop) for sop in queued.values())
    assert not set(peer.sops()) & set(queued.values())
    for path, got in zip(files, peer.received, strict=True):
        assert check_profile(dcmread(path), got.dataset(), deid, dates="shift", meta=False) == [], path.name
    assert [sha256(path) for path in files] == hashes
