"""Building and running the project's image with a real Docker engine (scripts/docker-engine.sh)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGE = "local/python:3.11-bookworm"  # what scripts/docker-engine.sh builds with debootstrap


@dataclass(frozen=True)
class Build:
    tag: str
    seconds: float
    size_bytes: int


def docker(client: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([client, *args], capture_output=True, text=True, timeout=timeout, check=check)


def local_torch_wheels(wheels_dir: Path, pip: Path) -> bool:
    """Put the CPU torch wheel into the build context when pip finds one on this disk (no index asked)."""
    if not any(wheels_dir.glob("torch-*.whl")):
        cmd = [str(pip), "download", "--quiet", "--no-deps", "--no-index", "-d", str(wheels_dir), "torch==2.13.0"]
        subprocess.run(cmd, capture_output=True, check=False)
    return any(wheels_dir.glob("torch-*.whl"))


def build_image(client: str, context: Path, tag: str, offline_torch: bool) -> Build:
    args = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", tag]
    if offline_torch:  # the wheel in docker/wheels/, not PyTorch's index (unreachable here)
        args += ["--build-arg", "TORCH_INDEX_URL="]
    start = time.monotonic()
    result = docker(client, *args, str(context), timeout=1500, check=False)
    seconds = time.monotonic() - start
    assert result.returncode == 0, f"docker build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    size = int(docker(client, "image", "inspect", "--format", "{{.Size}}", tag).stdout)
    return Build(tag, seconds, size)


def health(client: str, container: str) -> str:
    state = json.loads(docker(client, "inspect", "--format", "{{json .State}}", container).stdout)
    if not state.get("Running"):
        return "exited"
    return state.get("Health", {}).get("Status", "none")


def main_pid(client: str, container: str) -> int:
    return int(docker(client, "inspect", "--format", "{{.State.Pid}}", container).stdout)


def proc_uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a host process (/proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")
