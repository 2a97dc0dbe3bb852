"""``/metrics``: every process's counters and histograms (prometheus-client's multiprocess files) plus the
gauges read from the stores at scrape time: jobs per kind and state, the oldest queued job's age, free
disk, and feedback agreement per model version."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from node.jobs import JobState
from node.metrics import MULTIPROC_ENV, PREFIX
from node.store.disk import free_mb
from node.web.context import WebContext


class StoreCollector:
    """Gauges computed when Prometheus scrapes (cached with the overview's figures)."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def describe(self) -> list[Any]:
        return []  # unchecked: the families depend on what the stores hold

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        ctx = self.ctx
        p = PREFIX
        jobs = GaugeMetricFamily(f"{p}jobs", "Jobs in the job store, by kind and state", labels=["kind", "state"])
        counts = ctx.cache.get("metrics/jobs", ctx.jobs.counts)
        kinds = sorted({kind for kind, _ in counts})
        for kind in kinds:
            for state in JobState:
                jobs.add_metric([kind, str(state)], counts.get((kind, state), 0))
        yield jobs
        oldest = ctx.jobs.oldest_queued_created()
        age = GaugeMetricFamily(f"{p}oldest_queued_job_age_seconds", "Age of the oldest queued job (0: none queued)")
        age.add_metric([], 0.0 if oldest is None else max(0.0, ctx.clock() - oldest))
        yield age
        disk = GaugeMetricFamily(f"{p}disk_free_bytes", "Free disk space under the data dir")
        disk.add_metric([], free_mb(ctx.data_dir) * 1024 * 1024)
        yield disk
        floor = GaugeMetricFamily(f"{p}disk_free_floor_bytes", "Free space below which stores are refused")
        floor.add_metric([], ctx.config.limits.min_free_disk_mb * 1024 * 1024)
        yield floor
        ratio = GaugeMetricFamily(
            f"{p}feedback_agreement_ratio",
            "Findings confirmed of those rated, per model version",
            labels=["model", "version"],
        )
        rated = GaugeMetricFamily(
            f"{p}feedback_rated_findings",
            "Findings with a radiologist's verdict, per model version",
            labels=["model", "version"],
        )
        for agreement in ctx.feedback.agreement():
            if agreement.ratio is not None:
                ratio.add_metric([agreement.model, agreement.version], agreement.ratio)
            rated.add_metric([agreement.model, agreement.version], agreement.rated)
        yield ratio
        yield rated


def analysis_seconds() -> dict[str, tuple[int, float]]:
    """Per model: analyse jobs and their summed seconds since serve started (the workers' histogram)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    folder = os.environ.get(MULTIPROC_ENV)
    if not folder or not os.path.isdir(folder):
        return {}
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    found: dict[str, list[float]] = {}
    for family in registry.collect():
        if family.name != f"{PREFIX}analysis_seconds":
            continue
        for sample in family.samples:
            model = sample.labels.get("model", "")
            if sample.name.endswith("_count"):
                found.setdefault(model, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_sum"):
                found.setdefault(model, [0.0, 0.0])[1] = sample.value
    return {model: (int(count), total) for model, (count, total) in found.items()}


def exposition(ctx: WebContext) -> tuple[bytes, str]:
    """The text Prometheus scrapes, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    folder = os.environ.get(MULTIPROC_ENV)
    if folder and os.path.isdir(folder):
        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    registry.register(StoreCollector(ctx))
    return generate_latest(registry), CONTENT_TYPE_LATEST
