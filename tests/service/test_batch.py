"""``csd-sr upscale --server URL IN... --out DIR`` against a real server on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from csd_sr.cli import main as cli_main
from tests.service.conftest import client_for, decode, png_bytes, running_server, settings


def metric(c: httpx.Client, name: str) -> float:
    families = text_string_to_metric_families(c.get("/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


def test_a_folder_through_the_server(tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "photos", tmp_path / "out"
    (src / "trip").mkdir(parents=True)
    (src / "a.png").write_bytes(png_bytes(20, 30, seed=1))
    (src / "trip" / "b.png").write_bytes(png_bytes(24, 16, seed=2))
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    argv = ["upscale", "--server", "", str(src), "--out", str(out), "--scale", "2"]
    with running_server(settings(tiny_weights)) as url:
        argv[2] = url
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert "1 of 3 failed" in err and "broken.png: 400 bad_image" in err
        assert decode((out / "a.png").read_bytes()).size == (60, 40)  # x2 from the x4 model and a downscale
        assert decode((out / "trip" / "b.png").read_bytes()).size == (32, 48)
        assert not list(out.rglob("*.part"))
        with pytest.raises(SystemExit):  # rerun: the done files are skipped, the broken one fails again
            cli_main(argv)
        err = capsys.readouterr().err
        assert "2 of 3 already done (skipped)" in err and "1 of 1 failed" not in err and "1 of 3 failed" in err


def test_a_target_size_goes_to_the_server(tiny_weights: Path, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(20, 30, seed=1))  # 30 wide, 20 high
    with running_server(settings(tiny_weights)) as url:
        cli_main(
            ["upscale", "--server", url, str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--out-height", "50"]
        )
    assert decode((tmp_path / "out" / "a.png").read_bytes()).size == (75, 50)


def test_an_interrupted_batch_finishes_the_rest_without_redoing_any(tiny_weights: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(50):
        (src / f"{i:02d}.png").write_bytes(png_bytes(40, 40, seed=i))
    with running_server(settings(tiny_weights, tile_size=16)) as url:
        cmd = [str(Path(sys.executable).with_name("csd-sr")), "upscale", "--server", url, str(src), "--out", str(out)]
        client = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.png"))) < 10:
            assert time.monotonic() < deadline and client.poll() is None
            time.sleep(0.05)
        client.send_signal(signal.SIGKILL)  # mid-batch: some done, some in flight, most not sent
        client.wait(10)
        done_before = {p.name for p in out.glob("*.png")}
        assert 10 <= len(done_before) < 50
        cli_main(["upscale", "--server", url, str(src), "--out", str(out), "--concurrency", "4"])
        assert {p.name for p in out.glob("*.png")} == {f"{i:02d}.png" for i in range(50)}
        assert not list(out.glob("*.part"))
        with client_for(url) as c:  # the jobs in flight when it died were picked up again, not resubmitted
            assert metric(c, "csd_sr_jobs_submitted_total") == 50
