"""The send stage without a network: status classification, contexts, retry arithmetic, destinations, jobs."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import pytest
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    SegmentationStorage,
)

from node.commands.echo import ae_title
from node.config import Limits, NodeConfig, parse_config
from node.dicom.status import Status
from node.jobs import JobState, JobStore, delay
from node.send import enqueue_send, send_kind
from node.send.destination import Destination, parse_host_port, resolve_destination
from node.send.errors import DestinationError
from node.send.scu import (
    MAX_CONTEXTS,
    ScuSettings,
    Verdict,
    _groups,
    _inspect,
    _Item,
    classify,
    presentation_contexts,
    store_files,
)
from node.send.sender import Sender, lease_seconds, max_attempts_for, sender_job_store


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
