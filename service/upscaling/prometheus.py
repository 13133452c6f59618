"""Prometheus metrics on the app's own registry (base units, ``_total`` counters, bounded labels).

Labels only take values from fixed sets: route templates, HTTP status codes,
the served rungs (``scale``, ``noise`` and ``style`` of the model, ``width`` and ``precision``; a sharpness step
below 1 is in the style: ``sharp-0.5``),
the policy's reasons and the jobs' final states. Jobs count in ``csd_sr_jobs_*`` and the pixel counters,
never in the interactive latency histograms.
"""

from __future__ import annotations

import math

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from service.catalog.registry import LadderKey, ServedRung
from service.scheduling.policy import EXCEEDS_TIMEOUT, OVERLOADED, QUEUE_FULL, REASONS, CostModel
from service.scheduling.scheduler import Scheduler

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
REJECTION_REASONS = (
    QUEUE_FULL,
    OVERLOADED,
    EXCEEDS_TIMEOUT,
    "timeout",
    "cancelled",
    "not_ready",
    "body_too_large",
    "too_many_pixels",
)


def width_label(width: float) -> str:
    return f"{width:g}"


RUNG_LABELS = ["scale", "noise", "style", "width", "precision"]


def rung_labels(rung: ServedRung) -> tuple[str, str, str, str, str]:
    """The ``scale``, ``noise``, ``style``, ``width`` and ``precision`` label values of a served rung."""
    m = rung.model
    return str(m.scale), m.noise, m.look, width_label(rung.width), rung.precision


class Metrics:
    def __init__(self, rungs: tuple[ServedRung, ...], latency_target_s: float) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        buckets = sorted({*LATENCY_BUCKETS, latency_target_s})  # so "share within target" is one bucket
        self.http_requests = Counter(
            "csd_sr_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "csd_sr_upscale_duration_seconds",
            "Upscale latency, request received to response ready, by rung.",
            RUNG_LABELS,
            buckets=buckets,
            registry=r,
        )
        self.inference = Histogram(
            "csd_sr_inference_duration_seconds",
            "Model time of one upscale, by rung.",
            RUNG_LABELS,
            buckets=buckets,
            registry=r,
        )
        self.queue_wait = Histogram(
            "csd_sr_queue_wait_seconds",
            "Time admitted requests waited for a worker and the inference lane.",
            buckets=buckets,
            registry=r,
        )
        self.queue_depth = Gauge("csd_sr_queue_depth", "Admitted requests waiting for a worker.", registry=r)
        self.busy_workers = Gauge("csd_sr_busy_workers", "Inference workers running a request.", registry=r)
        self.workers = Gauge("csd_sr_workers", "Inference workers (requests processed at once).", registry=r)
        self.inflight = Gauge("csd_sr_inflight_requests", "Upscale requests being handled.", registry=r)
        self.decisions = Counter(
            "csd_sr_width_decisions",
            "Rungs chosen by the policy, by reason.",
            [*RUNG_LABELS, "reason"],
            registry=r,
        )
        self.rejections = Counter("csd_sr_rejections", "Refused upscale requests by reason.", ["reason"], registry=r)
        self.input_pixels = Counter("csd_sr_input_pixels", "Input pixels upscaled.", registry=r)
        self.output_pixels = Counter("csd_sr_output_pixels", "Output pixels produced.", registry=r)
        self._add_cost_metrics(r)
        self.latency_target = Gauge("csd_sr_latency_target_seconds", "Configured latency target.", registry=r)
        self.ready = Gauge("csd_sr_ready", "1 once the model is loaded and warmed up.", registry=r)
        self.model = Info("csd_sr_model", "The served model.", registry=r)
        self._add_job_metrics(r)

        self.latency_target.set(latency_target_s)
        for labels in map(rung_labels, rungs):  # zero-valued series exist from the start
            self.request_duration.labels(*labels)
            self.inference.labels(*labels)
            for reason in REASONS:
                self.decisions.labels(*labels, reason)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)

    def _add_cost_metrics(self, r: CollectorRegistry) -> None:
        """The live cost model per rung and the lane price (read at scrape time: ``bind``)."""
        self.cost = Gauge(
            "csd_sr_cost_seconds_per_megapixel",
            "Live cost model: worker seconds per LR megapixel, by rung.",
            RUNG_LABELS,
            registry=r,
        )
        self.cost_overhead = Gauge(
            "csd_sr_cost_overhead_seconds",
            "Live cost model: fixed worker seconds per request, by rung.",
            RUNG_LABELS,
            registry=r,
        )
        self.lane_price = Gauge(
            "csd_sr_lane_price",
            "What a second of inference lane time costs in expected Set5 dB for the reference input "
            "(0: every request may have its best rung; +Inf: past capacity, the cheapest rung is served).",
            registry=r,
        )

    def _add_job_metrics(self, r: CollectorRegistry) -> None:
        """The jobs' own series (``service.jobs``), never in the interactive latency histograms."""
        self.jobs_queued = Gauge("csd_sr_jobs_queued", "Jobs waiting to run.", registry=r)
        self.jobs_running = Gauge("csd_sr_jobs_running", "Jobs running.", registry=r)
        self.jobs_submitted = Counter("csd_sr_jobs_submitted", "Jobs accepted.", registry=r)
        self.jobs_finished = Counter(
            "csd_sr_jobs_finished", "Jobs finished, by final state (done, failed, cancelled).", ["state"], registry=r
        )
        self.job_seconds = Histogram(
            "csd_sr_job_duration_seconds",
            "Run time of a done job, start to result written.",
            buckets=JOB_BUCKETS,
            registry=r,
        )

    def bind(
        self, scheduler: Scheduler, cost: CostModel, ladder: LadderKey, reference_pixels: int, target_s: float
    ) -> None:
        """Gauges read live state at scrape time, so they are never stale (the lane price: for ``ladder``)."""
        self.lane_price.set_function(lambda: scheduler.lane_price(ladder, reference_pixels, target_s))
        self.queue_depth.set_function(lambda: scheduler.load().queued)
        self.busy_workers.set_function(lambda: scheduler.load().running)
        self.workers.set(scheduler.workers)
        for rung in cost.rungs:
            labels = rung_labels(rung)
            self.cost.labels(*labels).set_function(lambda r=rung: _field(cost, r, "s_per_megapixel"))
            self.cost_overhead.labels(*labels).set_function(lambda r=rung: _field(cost, r, "overhead_s"))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _field(cost: CostModel, rung: ServedRung, name: str) -> float:
    entry = cost.snapshot().get(rung)
    return math.nan if entry is None else getattr(entry, name)
