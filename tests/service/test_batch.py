"""``csd-sr upscale --server URL IN... --out DIR`` against a real server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from csd_sr.cli import main as cli_main
from tests.service.conftest import decode, png_bytes, running_server, settings


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
