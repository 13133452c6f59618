"""``csd-sr serve`` / ``csd-sr upscale``, settings from the environment, and failing clearly at start-up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from csd_sr.cli import build_parser
from csd_sr.cli import main as cli_main
from model.edsr import EDSR, EDSRConfig
from model.rungs import Rung
from model.weights import save_weights
from service.api.app import create_app
from service.settings import Settings
from tests.conftest import synthetic_image, write_png
from tests.service.conftest import CARD, client_for, png_bytes, wait_ready

ROOT = Path(__file__).resolve().parents[2]


def test_one_command_joins_model_and_service() -> None:
    """``csd-sr`` (csd_sr.cli, above both packages) has every subcommand; ``model.cli`` only the model's."""
    from model.cli import build_parser as model_parser

    def subcommands(parser) -> set[str]:
        return set(next(a for a in parser._actions if a.dest == "command").choices)

    assert subcommands(build_parser()) == {
        "train",
        "evaluate",
        "export",
        "quantize",
        "average",
        "teacher-targets",
        "evaluate-sharp",
        "serve",
        "upscale",
    }
    model_commands = {"train", "evaluate", "export", "quantize", "average", "teacher-targets", "evaluate-sharp"}
    assert subcommands(model_parser()) == model_commands
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"csd-sr": "csd_sr.cli:main"}
    help_text = subprocess.run(
        [sys.executable, "-m", "csd_sr", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert help_text.returncode == 0 and "serve,upscale}" in help_text.stdout


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CSD_SR_LATENCY_TARGET_S", "0.75")
    monkeypatch.setenv("CSD_SR_POLICY", "fixed:0.5")
    monkeypatch.setenv("CSD_SR_API_KEY", "hunter2-key")
    s = Settings()
    assert s.latency_target_s == 0.75 and s.fixed_rung == Rung(0.5)
    assert s.api_key.get_secret_value() == "hunter2-key" and "hunter2" not in repr(s)  # never in reprs
    assert Settings(latency_target_s=3).latency_target_s == 3  # arguments (flags) override the environment
    with pytest.raises(ValidationError, match="policy"):
        Settings(policy="fastest")
    assert Settings(policy="fixed:1-int8").fixed_rung == Rung(1.0, "int8")
    monkeypatch.setenv("CSD_SR_PRECISIONS", "fp32")  # the fp32-only ladder
    assert Settings().precisions == ("fp32",)
    assert Settings(precisions="fp32, int8").precisions == ("fp32", "int8")
    with pytest.raises(ValidationError, match="precisions"):
        Settings(precisions="fp16")


def test_serve_has_a_flag_per_setting_and_parses_it_as_the_field_does() -> None:
    """The ``serve`` flags come from ``Settings`` (secrets stay in the environment), typed as its fields."""
    serve = next(a for a in build_parser()._actions if a.dest == "command").choices["serve"]
    flags = {a.dest for a in serve._actions} - {"help", "func"}
    secrets = {"api_key", "redis_url"}
    assert flags == set(Settings.model_fields) - secrets
    args = build_parser().parse_args(["serve", "--max-queue", "3", "--precisions", "fp32", "--latency-target-s", "1.5"])
    assert (args.max_queue, args.precisions, args.latency_target_s) == (3, "fp32", 1.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--backend", "cuda"])


def test_missing_weights_fail_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        create_app(Settings(weights=missing))
    with pytest.raises(SystemExit, match="weights file not found"):
        cli_main(["serve", "--weights", str(missing)])


def test_fixed_policy_must_be_on_the_ladder(tiny_weights: Path) -> None:
    for policy in ("fixed:0.3", "fixed:0.5-int8"):  # no such width; no int8 files beside these weights
        with pytest.raises(ValueError, match="not a rung model x4 runs"):
            create_app(Settings(weights=tiny_weights, policy=policy))


def test_upscale_command(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_png(tmp_path / "in.png", synthetic_image(20, 30))
    cli_main(["upscale", str(src), str(tmp_path / "out.webp"), "--weights", str(tiny_weights), "--width", "0.5"])
    assert "20" in capsys.readouterr().out
    with Image.open(tmp_path / "out.webp") as out:
        assert out.size == (120, 80)
    with pytest.raises(SystemExit, match="--width"):
        cli_main(["upscale", str(src), str(tmp_path / "o.png"), "--weights", str(tiny_weights), "--width", "0.3"])
    with pytest.raises(SystemExit, match="int8"):  # no int8 files beside these weights
        cli_main(["upscale", str(src), str(tmp_path / "o.png"), "--weights", str(tiny_weights), "--precision", "int8"])
    with pytest.raises(SystemExit, match="suffix"):
        cli_main(["upscale", str(src), str(tmp_path / "o.gif"), "--weights", str(tiny_weights)])
    with pytest.raises(SystemExit, match="need a server"):
        cli_main(["upscale", str(src), str(tmp_path / "o.png"), "--weights", str(tiny_weights), "--out-width", "50"])


def test_upscale_command_picks_the_model_as_the_service_does(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = []
    for name, scale, card in [("x4", 4, CARD), ("x4-jpeg", 4, {**CARD, "noise": "jpeg"}), ("x2", 2, CARD)]:
        files.append(tmp_path / f"csd-edsr-{name}.safetensors")
        save_weights(EDSR(EDSRConfig(scale=scale, n_resblocks=2, n_feats=16)), files[-1], card)
    weights = ",".join(map(str, files))
    png = write_png(tmp_path / "in.png", synthetic_image(20, 30))
    jpeg = tmp_path / "in.jpg"
    Image.open(png).save(jpeg, quality=50)

    def upscale(src: Path, *flags: str) -> tuple[str, tuple[int, int]]:
        out = tmp_path / "out.png"
        cli_main(["upscale", str(src), str(out), "--weights", weights, "--backend", "torch", *flags])
        with Image.open(out) as img:
            return capsys.readouterr().out, img.size

    said, size = upscale(png, "--scale", "2")
    assert "model csd-edsr-x2.safetensors (noise none; lossless png)" in said and size == (60, 40)
    # no x2 model for JPEG artifacts: x4-jpeg's output, downscaled to the asked size (the service's route)
    said, size = upscale(jpeg, "--scale", "2")
    assert "model csd-edsr-x4-jpeg.safetensors + lanczos (noise jpeg; jpeg q~50" in said and size == (60, 40)
    said, size = upscale(jpeg)
    assert "model csd-edsr-x4-jpeg.safetensors (noise jpeg;" in said and size == (120, 80)
    with pytest.raises(SystemExit, match=r"--noise must be auto or one of \['jpeg', 'none'\] at x2"):
        upscale(png, "--scale", "2", "--noise", "real")
    with pytest.raises(SystemExit, match="no model of x3 or more"):
        upscale(png, "--scale", "3", "--weights", str(files[2]))


def test_serve_command_runs_the_service(tiny_weights: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CSD_SR_WORKERS": "1", "CSD_SR_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "csd_sr", "serve", "--weights", str(tiny_weights), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        with client_for(url) as c:
            r = c.post("/v1/upscale", files={"file": ("a.png", png_bytes(), "image/png")})
            assert r.status_code == 200 and r.headers["x-width"] == "1"
            assert c.get("/v1/model").json()["policy"]["workers"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in output, output
