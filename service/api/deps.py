"""What a route may depend on, as typed FastAPI dependencies (``Annotated[..., Depends(...)]``).

The app factory (``service.api.app.create_app``) builds each once and keeps it on ``app.state``; a route names
the one it needs in its signature, e.g. ``upscaler: UpscalerDep``, and never reaches for the rest.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.jobs.manager import JobManager
from service.settings import Settings
from service.upscaling.prometheus import Metrics
from service.upscaling.upscaler import Upscaler


def get_upscaler(request: Request) -> Upscaler:
    return request.app.state.upscaler


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


def get_settings(request: Request) -> Settings:
    return get_upscaler(request).settings


def get_metrics(request: Request) -> Metrics:
    return get_upscaler(request).metrics


UpscalerDep = Annotated[Upscaler, Depends(get_upscaler)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
