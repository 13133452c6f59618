"""What the routes share: settings, the model registry, scheduler, metrics, jobs and readiness."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from service.metrics import Metrics
from service.registry import Registry
from service.scheduler import Scheduler
from service.settings import Settings

if TYPE_CHECKING:
    from service.jobs.manager import JobManager


@dataclass
class ServiceState:
    settings: Settings
    registry: Registry
    scheduler: Scheduler
    metrics: Metrics
    ready: bool = False
    warmup_error: str | None = None
    jobs: JobManager | None = None  # set by create_app; a field here so the routes reach it like the rest


def get_state(request: Request) -> ServiceState:
    return request.app.state.service
