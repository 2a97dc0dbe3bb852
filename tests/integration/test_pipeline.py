"""Completion with an injected clock over real associations; a worker's expired lease; results reused once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from node.children import load_models
from node.config import NodeConfig, parse_config
from node.jobs import JobState, JobStore
from node.jobs.kinds import ANALYSE
from node.receive import Receiver, StoreHandler
from node.routing import Router
from node.routing.log import RoutingLog
from node.send import enqueue_send, send_kind
from node.store import DiskGuard, Index, Spool
from node.store.completion import CompletionTimer
from node.synth.phantom import make_phantom
from node.worker import Worker, analyse_study
from tests.helpers import node_toml, tiny_ct
from tests.integration.test_receive import SERIES, STUDY
from tests.peers import free_port

PEERS = """
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
[[peers]]
name = "pacs"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
"""


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Pipeline:
    """Receiver, index, job store, router and completion timer on one injected clock."""

    ANALYSIS = '\n[analysis]\nmodels = ["lung-nodule-ct"]\nsend_results_to = ["pacs"]\n'

    def __init__(
        self, tmp: Path, extra: str = "", *, peers: str = PEERS, analysis: str = ANALYSIS, rules: str = ""
    ) -> None:
        self.clock = Clock()
        self.port = free_port()
        text = node_toml(tmp / "data", self.port, peers=peers, extra=extra) + analysis + "\n" + rules
        self._build(parse_config(text))

    def fresh_router(self) -> Router:
        return Router(self.config, self.index, self.jobs, RoutingLog(self.config.node.data_dir / "routing.sqlite3"))

    def _build(self, config: NodeConfig) -> None:
        self.config = config
        node = self.config.node
        self.spool = Spool(node.spool_dir)
        self.index = Index(node.index_path, clock=self.clock)
        self.jobs = JobStore(node.jobs_path, clock=self.clock)
        self.router = self.fresh_router()
        self.timer = CompletionTimer(self.index, self.config.completion, self.router.study_complete, clock=self.clock)
        reanalyse = self.config.completion.late_instances == "reanalyse"
        guard = DiskGuard(node.data_dir, 0)
        handler = StoreHandler(self.spool, self.index, guard, reanalyse_late=reanalyse, clock=self.clock)
        self.receiver = Receiver(self.config, handler)
        self.receiver.start()

    def close(self) -> None:
        self.receiver.stop()
        self.jobs.close()
        self.index.close()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, "[completion]\nquiet_seconds = 10\nmax_wait_seconds = 600")
    yield p
    p.close()


def associate(port: int):  # type: ignore[no-untyped-def]
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
    assert assoc.is_established
    return assoc


def analyse_jobs(jobs: JobStore) -> list[dict[str, object]]:
    return [job.payload for job in jobs.list(kind=ANALYSE)]


def test_a_study_completes_after_release_and_the_quiet_period(pipeline: Pipeline) -> None:
    assoc = associate(pipeline.port)
    for i in range(3):
        assert assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.{i}", index=i)).Status == 0
    pipeline.clock.now += 100  # long quiet, but the association is still open
    assert pipeline.timer.check() == []
    assoc.release()
    # The quiet period starts at the release.
    pipeline.clock.now += 9
    assert pipeline.timer.check() == []
    pipeline.clock.now += 1
    assert pipeline.timer.check() == [STUDY]
    assert analyse_jobs(pipeline.jobs) == [
        {"study": STUDY, "series": None, "model": "lung-nodule-ct", "results_to": ["pacs"]}
    ]
    pipeline.clock.now += 100
    assert pipeline.timer.check() == []  # complete once


def test_a_late_instance_reopens_the_study_and_analyses_it_again(pipeline: Pipeline) -> None:
    assoc = associate(pipeline.port)
    assert assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.1")).Status == 0
    assoc.release()
    pipeline.clock.now += 10
    assert pipeline.timer.check() == [STUDY]
    assoc = associate(pipeline.port)
    assert assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.2", index=1)).Status == 0
    assert assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.1")).Status == 0  # a duplicate changes nothing
    assoc.release()
    pipeline.clock.now += 10
    assert pipeline.timer.check() == [STUDY]
    assert len(analyse_jobs(pipeline.jobs)) == 2


def test_late_instances_ignored_when_configured(tmp_path: Path) -> None:
    p = Pipeline(tmp_path, '[completion]\nquiet_seconds = 10\nlate_instances = "ignore"')
    try:
        assoc = associate(p.port)
        assert assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.1")).Status == 0
        assoc.release()
        p.clock.now += 10
        assert p.timer.check() == [STUDY]
        assoc = associate(p.port)
        assert assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.2", index=1)).Status == 0
        assoc.release()
        p.clock.now += 100
        assert p.timer.check() == []
        assert len(analyse_jobs(p.jobs)) == 1
    finally:
        p.close()


def test_max_wait_completes_a_study_whose_association_never_ends(pipeline: Pipeline) -> None:
    assoc = associate(pipeline.port)
    assert assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.1")).Status == 0
    pipeline.clock.now += 599
    assert pipeline.timer.check() == []
    pipeline.clock.now += 1
    assert pipeline.timer.check() == [STUDY]
    assoc.release()


@pytest.mark.slow
def test_a_dead_workers_job_comes_back_after_its_lease_and_its_results_are_made_once(tmp_path: Path) -> None:
    p = Pipeline(tmp_path)
    try:
        folder = tmp_path / "ct"
        make_phantom(3, slices=12, rows=128, columns=128).write_dicom(folder)
        assoc = associate(p.port)
        for path in sorted(folder.iterdir()):
            assert assoc.send_c_store(path).Status == 0
        assoc.release()
        study = str(dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)
        assert p.router.study_complete(study) == ["analyse with lung-nodule-ct (results to pacs)"]
        (job,) = p.jobs.list(kind=ANALYSE)
        job_id = job.id
        lease = p.config.workers.lease_seconds
        # Worker A claims the job and dies without a word.
        claimed = p.jobs.claim(ANALYSE, "worker-A", lease)
        assert claimed is not None and claimed.id == job_id
        p.clock.now += lease - 1
        assert p.jobs.requeue_expired() == 0
        p.clock.now += 1
        assert p.jobs.requeue_expired() == 1
        # Worker B takes it over and finishes it.
        worker = Worker(p.config, p.jobs, p.index, load_models(p.config), threading.Event())
        assert worker.run_once()
        job = p.jobs.get(job_id)
        assert job is not None and job.state is JobState.DONE and job.attempts == 2
        sends = p.jobs.list(kind=send_kind("pacs"))
        assert len(sends) == 2 and {s.payload["sop_class"] for s in sends} == {
            "1.2.840.10008.5.1.4.1.1.66.4",
            "1.2.840.10008.5.1.4.1.1.88.34",
        }
        for send in sends:
            assert dcmread(p.config.node.data_dir / str(send.payload["path"])).StudyInstanceUID == study
        # A rerun of the same job (a crash between its sends and its completion) reuses the results:
        # same files, same UIDs, and enqueueing their sends again finds the same jobs.
        folder_out = p.config.node.outbox_dir / f"analyse-{job_id}"
        model = load_models(p.config)["lung-nodule-ct"]
        again = analyse_study(study, model, p.index, p.config.node.spool_dir, p.config.node.data_dir, folder_out)
        assert {f.sop_instance_uid for f in again.files} == {str(s.payload["sop"]) for s in sends}
        for f in again.files:
            enqueue_send(p.jobs, "pacs", f.path, f.sop_instance_uid, f.sop_class_uid)
        assert len(p.jobs.list(kind=send_kind("pacs"))) == 2
    finally:
        p.close()
