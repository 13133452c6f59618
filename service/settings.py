"""Every service knob in one place: environment variables ``CSD_SR_*``, overridden by ``csd-sr serve`` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.rungs import PRECISIONS, Precision, Rung

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def shipped_weights(folder: Path = WEIGHTS_DIR) -> tuple[Path, ...]:
    """Every model in ``folder`` (``csd-edsr-x{scale}[-{noise}].safetensors``), the clean x4 first."""
    files = sorted(folder.glob("csd-edsr-x*.safetensors"))
    return tuple(sorted(files, key=lambda p: p.name != "csd-edsr-x4.safetensors"))


DEFAULT_WEIGHTS = WEIGHTS_DIR / "csd-edsr-x4.safetensors"  # the clean x4 model, the scripts' default


class Settings(BaseSettings):
    """Service configuration (env prefix ``CSD_SR_``, e.g. ``CSD_SR_LATENCY_TARGET_S=1.5``)."""

    model_config = SettingsConfigDict(env_prefix="CSD_SR_", extra="ignore")

    # NoDecode: the environment gives "a.safetensors,b.safetensors", not JSON.
    weights: Annotated[tuple[Path, ...], NoDecode] = Field(
        default_factory=shipped_weights,
        min_length=1,
        description="the models served: .safetensors files (model card beside each) or folders of them "
        "(every csd-edsr-x*.safetensors inside), comma-separated; one per scale and noise level; default: every "
        "shipped model (weights/csd-edsr-x*.safetensors)",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    latency_target_s: float = Field(2.0, gt=0, description="target for queue wait + processing of one request")
    policy: str = Field("auto", description="'auto' (rung from load) or 'fixed:<rung>', e.g. 'fixed:1', 'fixed:1-int8'")
    # 0.7: at 0.8, 2 closed-loop clients of the photo mix saw p95 2.34 s against the 2 s target (the other
    # worker's decode/encode slows the lane's tiles); at 0.7 1.60 s, for 0.02 dB less expected PSNR.
    planning_fraction: float = Field(
        0.7, gt=0, le=1, description="share of the target the policy plans to fill; the rest absorbs prediction error"
    )
    backend: Literal["openvino", "torch"] = Field(
        "openvino", description="inference runtime: 'openvino' (fast; built from the weights at start-up) or 'torch'"
    )
    # NoDecode: the environment gives "fp32,int8" or "fp32", not JSON.
    precisions: Annotated[tuple[Precision, ...], NoDecode] = Field(
        PRECISIONS,
        min_length=1,
        description="precisions of the rungs built and served, e.g. 'fp32' for the fp32-only ladder "
        "(int8 rungs need the files of `csd-sr quantize`)",
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="openvino: inference threads, one lane for all requests; default: usable CPUs"
    )
    workers: int = Field(2, ge=1, le=64, description="requests processed at once (decode, tiles, encode)")
    torch_threads: int = Field(1, ge=1, le=64, description="torch backend: intra-op threads per worker")
    max_queue: int = Field(8, ge=0, description="admitted requests waiting for a worker; more get 503")
    max_lane_price: float | None = Field(
        None,
        ge=0,
        description="most expected Set5 dB the policy trades for a lane-second; unset: no limit (past capacity the "
        "cheapest rung for all, the most answers); set: fewer answers past capacity, each of higher quality",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="a request still unfinished after this gets 503")

    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="request body limit (413 above)")
    max_pixels: int = Field(1_048_576, gt=0, description="input width x height limit (413 above)")
    tile_size: int = Field(256, ge=8, description="LR tile side; larger inputs run in overlapping tiles")
    tile_overlap: int | None = Field(
        12,
        ge=0,
        description="LR margin around each tile (12: tiled output within 1 level of the whole-image pass, "
        "bench/results/tiles.md); unset: the model's receptive radius (exact up to float rounding)",
    )
    png_compress_level: int = Field(
        1, ge=0, le=3, description="ISA-L deflate level of PNG responses: 0 fastest .. 3 smallest"
    )
    cost_ewma_alpha: float = Field(0.2, ge=0, le=1, description="weight of each new timing in the cost model")

    # Jobs (POST /v1/jobs): large images and batches, queued durably, run on the lane interactive requests leave.
    jobs_dir: Path = Field(
        Path("csd-sr-jobs"), description="job database (SQLite), inputs and results; relative to the working directory"
    )
    max_job_pixels: int = Field(16_777_216, gt=0, description="job input width x height limit (413 above)")
    max_job_output_pixels: int = Field(
        268_435_456, gt=0, description="job output width x height limit (413 above): 16 x MAX_JOB_PIXELS at x4"
    )
    max_job_body_bytes: int = Field(128 * 1024 * 1024, gt=0, description="job upload limit (413 above)")
    job_deadline_s: float = Field(
        600.0, gt=0, description="default deadline of a job: it gets the best rung predicted to finish within it"
    )
    job_timeout_s: float = Field(1800.0, gt=0, description="a job still running after this fails (timeout)")
    job_ttl_s: float = Field(86_400.0, gt=0, description="finished jobs and their results are removed after this")
    jobs_disk_bytes: int = Field(
        20 * 1024**3,
        gt=0,
        description="disk the jobs' inputs and results may use; a job that would pass it is refused up front (507)",
    )
    max_jobs_queued: int = Field(1000, ge=1, description="jobs waiting to run; more get 503")
    redis_url: SecretStr | None = Field(  # secret: a password in the URL stays out of logs and reprs
        None,
        description="when set, the jobs' state is in this Redis (e.g. redis://redis:6379/0), shared by replicas "
        "that also share JOBS_DIR (inputs and results); unset: SQLite in JOBS_DIR, one server's own",
    )
    redis_prefix: str = Field(
        "csd-sr",
        min_length=1,
        description="the prefix of every key in Redis; on Redis Cluster give it in braces ({csd-sr}) so that each "
        "script's keys share one hash slot",
    )

    api_key: SecretStr | None = Field(None, description="when set, /v1/* require it (Bearer or X-API-Key)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        parse_policy(value)
        return value

    @field_validator("weights", mode="before")
    @classmethod
    def _split_weights(cls, value: object) -> object:
        if isinstance(value, str | Path):
            value = [Path(p.strip()) for p in str(value).split(",") if p.strip()]
        if isinstance(value, list | tuple):  # a folder stands for the models in it
            return tuple(f for p in map(Path, value) for f in (shipped_weights(p) if p.is_dir() else (p,)))
        return value

    @field_validator("precisions", mode="before")
    @classmethod
    def _split_precisions(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @property
    def fixed_rung(self) -> Rung | None:
        """The rung of a ``fixed:<rung>`` policy, ``None`` for ``auto``."""
        return parse_policy(self.policy)


def parse_policy(text: str) -> Rung | None:
    """``auto`` -> None, ``fixed:0.5`` -> fp32 width 0.5, ``fixed:0.5-int8``; anything else is a ValueError."""
    if text == "auto":
        return None
    kind, _, value = text.partition(":")
    try:
        if kind == "fixed":
            return Rung.parse(value)
    except ValueError:
        pass
    raise ValueError(f"policy must be 'auto' or 'fixed:<rung>' (e.g. fixed:1, fixed:1-int8), got {text!r}")
