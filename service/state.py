"""What the routes share: settings, the model registry, scheduler, metrics and readiness."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.metrics import Metrics
from service.registry import Registry
from service.scheduler import Scheduler
from service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    registry: Registry
    scheduler: Scheduler
    metrics: Metrics
    ready: bool = False
    warmup_error: str | None = None


def get_state(request: Request) -> ServiceState:
    return request.app.state.service
