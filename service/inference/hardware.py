"""What the CPU offers: usable cores (affinity and cgroup quota) and the instruction sets runtimes use."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

# Feature name -> the /proc/cpuinfo flags that provide it (any of them).
FEATURE_FLAGS = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "BF16": ("avx512_bf16", "amx_bf16"),
    "AMX": ("amx_tile",),
}


def available_cpus() -> int:
    """Cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_info() -> dict[str, object]:
    """CPU model, usable cores and which of AVX2, AVX-512, VNNI, BF16, AMX it has (logged and benchmarked)."""
    flags = cpu_flags()
    return {
        "model": cpu_model(),
        "cpus": available_cpus(),
        "features": [name for name, any_of in FEATURE_FLAGS.items() if flags.intersection(any_of)],
    }
