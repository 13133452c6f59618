"""What the routes share: settings, model, scheduler, metrics and readiness."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from service.engine import Engine
from service.metrics import Metrics
from service.scheduler import Scheduler
from service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    engine: Engine
    card: dict
    weights_sha256: str
    scheduler: Scheduler
    metrics: Metrics
    ready: bool = False
    warmup_error: str | None = None

    @property
    def weights_name(self) -> str:
        return Path(self.settings.weights).name


def get_state(request: Request) -> ServiceState:
    return request.app.state.service
