"""The router: rules turn stored instances and complete studies into sends and analyses.

Two entry points, both in the serve process:

- :meth:`Router.route_new` follows the index in arrival order (a durable cursor in the routing log)
  and applies the ``instance``-level rules to each new instance: forwards are queued as instances
  arrive, not at completion. It also gives a study the quiet period of the series/study rules that
  match its instances. It runs on the router thread, never in a C-STORE handler.
- :meth:`Router.study_complete` (the completion timer's callback) applies ``series``-level rules to each
  series (its first instance stands for it) and ``study``-level rules to the study (its first instance),
  and ``[fallback]`` when none of them matched.

Every action is a job: a forward is one ``send:<peer>`` job per instance (idempotent per SOP Instance
UID and peer, so re-routing after a crash or a re-completion never sends an instance twice), an analysis
is one ``analyse`` job per model. Every decision is kept in the routing log for ``rules explain``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.audit import AuditTrail
from node.config import NodeConfig, Rule
from node.jobs import JobStore, NewJob
from node.jobs.kinds import ANALYSE, PRIORITY, analyse_key
from node.jobs.sends import send_job
from node.routing.log import Decision, RoutingLog
from node.routing.match import Facts, Verdict, evaluate, evaluate_all, required_tags
from node.store import Index, Instance

log = logging.getLogger(__name__)

CALLER = "@caller"


def facts_of(row: Instance) -> Facts:
    return Facts(calling_ae=row.calling_ae, called_ae=row.called_ae, source_address=row.source_address)


class Router:
    """Applies the config's rules (see :meth:`NodeConfig.effective_rules`) to instances and studies."""

    def __init__(
        self,
        config: NodeConfig,
        index: Index,
        jobs: JobStore,
        routing_log: RoutingLog,
        *,
        clock: Callable[[], float] = time.time,
        audit: AuditTrail | None = None,
    ) -> None:
        self.config = config
        self.audit = audit
        self.index = index
        self.jobs = jobs
        self.log = routing_log
        self._clock = clock
        rules = config.effective_rules()
        self.rules = rules
        self._instance_rules = [r for r in rules if r.level == "instance"]
        self._quiet_rules = [r for r in rules if r.level != "instance" and r.quiet_seconds is not None]
        self._later_rules = [r for r in rules if r.level != "instance"]
        self._tags = list(required_tags(rules))
        self._quiet_given: dict[str, float] = {}  # study -> quiet period already written to the index
        self.wake = threading.Event()  # set by the C-STORE handler: new rows to route
        # Called after new jobs are committed (serve rings the sender process's bell: it sends at once).
        self.on_jobs: Callable[[], object] | None = None

    # -- helpers -----------------------------------------------------------------------------------

    def _header(self, row: Instance) -> Dataset | None:
        path = self.config.node.spool_dir / row.path
        try:
            return dcmread(path, stop_before_pixels=True, specific_tags=self._tags)
        except (OSError, InvalidDicomError, ValueError, EOFError) as exc:
            log.warning("cannot read a stored instance's header for routing (%s)", type(exc).__name__)
            return None

    def _peers(self, names: Sequence[str], facts: Facts) -> tuple[list[str], list[str]]:
        """Peer names to send to, with ``@caller`` resolved; and the problems (named peers that cannot receive)."""
        peers: list[str] = []
        problems: list[str] = []
        for name in names:
            if name == CALLER:
                caller = [p for p in self.config.peers if p.ae_title == facts.calling_ae and p.can_receive]
                if caller:
                    peers.append(caller[0].name)
                else:
                    problems.append(f"@caller: no peer with AE title '{facts.calling_ae}' and a host and port")
            else:
                peers.append(name)
        return list(dict.fromkeys(peers)), problems

    def _forward(
        self, names: Sequence[str], rows: Sequence[Instance], facts: Facts, priority: int, jobs: list[NewJob]
    ) -> str:
        peers, problems = self._peers(names, facts)
        for peer in peers:
            for row in rows:
                jobs.append(send_job(peer, f"spool/{row.path}", row.sop_instance_uid, row.sop_class_uid, priority))
        done = f"forward to {', '.join(peers)}" if peers else ""
        return "; ".join([done, *problems]).strip("; ")

    def _analyse(
        self,
        rule: Rule | None,
        study: str,
        series: str | None,
        facts: Facts,
        models: Sequence[str],
        priority: int,
        jobs: list[NewJob],
    ) -> str:
        results = rule.results_to if rule is not None else self.config.fallback.results_to
        if results is None:
            results = self.config.analysis.send_results_to
        peers, problems = self._peers(results, facts)
        summary = self.index.study_summary(study)
        count = summary.instances if summary is not None else 0
        for model in models:
            payload = {"study": study, "series": series, "model": model, "results_to": peers}
            key = analyse_key(model, study, series, count)
            jobs.append(NewJob(ANALYSE, payload, dedup_key=key, priority=priority, once=True))
        done = f"analyse with {', '.join(models)} (results to {', '.join(peers) or 'nobody'})" if models else ""
        return "; ".join([done, *problems]).strip("; ")

    def _act(
        self,
        verdict: Verdict,
        study: str,
        series: str | None,
        rows: Sequence[Instance],
        facts: Facts,
        jobs: list[NewJob],
    ) -> str:
        """Add the jobs of a matched rule to ``jobs``; return what they do, in words."""
        rule = verdict.rule
        if rule.discard:
            return "discard"
        priority = PRIORITY[rule.priority]
        actions = [self._forward(rule.forward, rows, facts, priority, jobs) if rule.forward else ""]
        if rule.analyse:
            actions.append(self._analyse(rule, study, series, facts, rule.analyse, priority, jobs))
        return "; ".join(a for a in actions if a) or "nothing"

    @staticmethod
    def _decision(study: str, series: str, level: str, verdict: Verdict, actions: str, at: float) -> Decision:
        return Decision(study, series, level, verdict.rule.name, verdict.matched, verdict.explain(), actions, at)

    # -- instance feed -----------------------------------------------------------------------------

    def route_new(self, limit: int = 500) -> int:
        """Route the instances stored since the cursor; return how many.

        One batch is one transaction per store (jobs, routing log), not one per instance: the cursor
        moves after the batch's jobs are committed, and routing a batch again after a crash finds the
        same jobs (dedup keys) instead of adding new ones.
        """
        rows = self.index.instances_after(self.log.cursor(), limit)
        if not rows:
            return 0
        if self._instance_rules or self._quiet_rules:
            now = self._clock()
            jobs: list[NewJob] = []
            decisions: list[Decision] = []
            for _, row in rows:
                ds = self._header(row)
                if ds is not None:
                    self._route_instance(row, ds, now, jobs, decisions)
            self.jobs.enqueue_many(jobs)
            if jobs and self.on_jobs is not None:
                self.on_jobs()
            if decisions:
                self.log.record(decisions, first_only=True)
        self.log.advance(rows[-1][0])
        return len(rows)

    def _route_instance(
        self, row: Instance, ds: Dataset, now: float, jobs: list[NewJob], decisions: list[Decision]
    ) -> None:
        facts = facts_of(row)
        study, series = row.study_instance_uid, row.series_instance_uid
        for verdict in evaluate_all(self._instance_rules, ds, facts, level="instance"):
            actions = self._act(verdict, study, series, [row], facts, jobs) if verdict.matched else ""
            decisions.append(self._decision(study, series, "instance", verdict, actions, now))
        for rule in self._quiet_rules:
            seconds = rule.quiet_seconds
            if seconds is None or self._quiet_given.get(study, float("inf")) <= seconds:
                continue
            if evaluate(rule, ds, facts).matched:
                self.index.set_quiet_seconds(study, seconds)
                if len(self._quiet_given) > 10_000:  # a cache of what is written, not a record: keep it small
                    self._quiet_given.clear()
                self._quiet_given[study] = seconds

    def run(self, stop: threading.Event, poll_s: float = 0.5, gather_s: float = 0.05) -> None:
        """The router thread: route new instances whenever woken (or every ``poll_s``) until ``stop``.

        After a wake-up it waits ``gather_s`` so that instances arriving together are routed as one batch
        (one commit per store for the batch instead of three per instance); forwarding starts at most
        ``gather_s`` later.
        """
        while not stop.is_set():
            if self.wake.wait(poll_s):
                stop.wait(gather_s)
            self.wake.clear()
            try:
                while self.route_new() and not stop.is_set():
                    pass
            except Exception:  # the thread's boundary: log, keep routing later (the cursor did not move)
                log.exception("routing new instances failed; retrying")
                stop.wait(1.0)

    def forget(self, study_uid: str) -> None:
        """Retention deleted the study: drop its decisions and cached quiet period (it may arrive again)."""
        self._quiet_given.pop(study_uid, None)
        self.log.forget(study_uid)

    # -- completion --------------------------------------------------------------------------------

    def study_complete(self, study_uid: str) -> list[str]:
        """Apply series- and study-level rules (or the fallback) to a complete study; return the actions."""
        self.route_new()  # first the instances of this study that the feed has not seen yet
        rows = self.index.instances(study_uid)
        if not rows:
            return []
        now = self._clock()
        by_series: dict[str, list[Instance]] = {}
        for row in rows:
            by_series.setdefault(row.series_instance_uid, []).append(row)
        decisions: list[Decision] = []
        actions: list[str] = []
        jobs: list[NewJob] = []
        matched = False
        series_rules = [r for r in self._later_rules if r.level == "series"]
        for series_uid, members in by_series.items():
            ds = self._header(members[0]) if series_rules else None
            if ds is None:
                continue
            facts = facts_of(members[0])
            for verdict in evaluate_all(series_rules, ds, facts, level="series"):
                done = self._act(verdict, study_uid, series_uid, members, facts, jobs) if verdict.matched else ""
                matched |= verdict.matched
                actions += [done] if done else []
                decisions.append(self._decision(study_uid, series_uid, "series", verdict, done, now))
        study_rules = [r for r in self._later_rules if r.level == "study"]
        first = self._header(rows[0]) if study_rules else None
        facts = facts_of(rows[0])
        if first is not None:
            for verdict in evaluate_all(study_rules, first, facts, level="study"):
                done = self._act(verdict, study_uid, None, rows, facts, jobs) if verdict.matched else ""
                matched |= verdict.matched
                actions += [done] if done else []
                decisions.append(self._decision(study_uid, "*", "study", verdict, done, now))
        if not matched:
            actions.append(self._fallback(study_uid, rows, facts, decisions, now, jobs))
        self.jobs.enqueue_many(jobs)
        if jobs and self.on_jobs is not None:
            self.on_jobs()
        self.log.record(decisions)
        self._audit_received(study_uid, rows, len(by_series))
        log.info(
            "study complete (%d instances, %d series): %s",
            len(rows),
            len(by_series),
            "; ".join(a for a in actions if a) or "no action",
        )
        return [a for a in actions if a]

    def _audit_received(self, study: str, rows: Sequence[Instance], series: int) -> None:
        if self.audit is None:
            return
        senders: dict[str, int] = {}
        for row in rows:
            key = f"{row.calling_ae}@{row.source_address}"
            senders[key] = senders.get(key, 0) + 1
        try:
            self.audit.record("study-received", study=study, instances=len(rows), series=series, sent_by=senders)
        except OSError as exc:  # the study is stored and routed; a lost audit record is reported
            log.error("cannot write the audit trail %s: %s", self.audit.path, exc)

    def _fallback(
        self,
        study: str,
        rows: Sequence[Instance],
        facts: Facts,
        decisions: list[Decision],
        now: float,
        jobs: list[NewJob],
    ) -> str:
        fallback = self.config.fallback
        parts = []
        if fallback.forward:
            parts.append(self._forward(fallback.forward, rows, facts, PRIORITY["normal"], jobs))
        if fallback.analyse:
            parts.append(self._analyse(None, study, None, facts, fallback.analyse, PRIORITY["normal"], jobs))
        done = "; ".join(p for p in parts if p) or "nothing (no rule matched; [fallback] is empty)"
        decisions.append(
            Decision(study, "*", "study", "[fallback]", True, "no series or study rule matched", done, now)
        )
        return done
