"""Bounded load generator against the real service on loopback: throughput, latency and width mix.

For each policy (``auto``, ``fixed:1``, ``fixed:<narrowest>``) a server is started as
a subprocess (``csd-sr serve``) on 127.0.0.1; for each concurrency level, that many
closed-loop clients send a mix of image sizes until the level's time or request
budget is spent. A 503 makes a client wait its ``Retry-After`` (capped by the
time left), as a well-behaved client would. Writes OUT/bench.md, OUT/bench.json
and OUT/bench.png.

    python scripts/bench_service.py --weights weights/csd-edsr-x4.safetensors --out bench/out
    python scripts/bench_service.py --random-weights --seconds-per-level 5 --concurrency 1 4   # smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from model.edsr import EDSR, EDSRConfig
from model.weights import read_config, save_weights
from service.settings import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Level:
    policy: str
    concurrency: int
    seconds: float = 0.0
    ok: int = 0
    rejected_503: int = 0
    errors_5xx: int = 0
    errors_other: int = 0
    input_megapixels: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    widths: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        lat = sorted(self.latencies_s)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        return {
            "policy": self.policy,
            "concurrency": self.concurrency,
            "requests_per_s": self.ok / self.seconds,
            "megapixels_per_s": self.input_megapixels / self.seconds,
            "p50_s": pct(0.50),
            "p95_s": pct(0.95),
            "p99_s": pct(0.99),
            "ok": self.ok,
            "rejected_503": self.rejected_503,
            "errors_5xx": self.errors_5xx,
            "errors_other": self.errors_other,
            "width_mix": {w: n / max(self.ok, 1) for w, n in sorted(self.widths.items())},
        }


def make_inputs(sides: list[int], seed: int = 0) -> list[tuple[bytes, int]]:
    """One PNG per LR side (textured, so encoding costs what a photo costs) with its pixel count."""
    rng = np.random.default_rng(seed)
    out = []
    for side in sides:
        y, x = np.mgrid[0:side, 0:side].astype(np.float32)
        base = 128 + 100 * (np.sin(x / 6.0) * np.cos(y / 9.0))[..., None]
        img = np.clip(base + rng.normal(0, 10, (side, side, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append((buf.getvalue(), side * side))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(weights: Path, policy: str, port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "model.cli", "serve", "--weights", str(weights), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--policy", policy, "--latency-target-s", str(args.latency_target_s)]
    cmd += ["--workers", str(args.workers), "--torch-threads", str(args.torch_threads), "--log-level", "warning"]
    cmd += ["--max-queue", str(args.max_queue)]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "CSD_SR_MAX_PIXELS": str(max(args.sizes) ** 2)})


def wait_ready(client: httpx.Client, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in time")


def run_level(client: httpx.Client, level: Level, inputs: list, weights: list[float], args: argparse.Namespace) -> None:
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds_per_level
    budget = [args.max_requests_per_level]

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            data, pixels = rng.choices(inputs, weights)[0]
            start = time.monotonic()
            try:
                r = client.post("/v1/upscale", content=data, headers={"content-type": "image/png"})
            except httpx.TransportError:
                with lock:
                    level.errors_other += 1
                continue
            elapsed = time.monotonic() - start
            with lock:
                if r.status_code == 200:
                    level.ok += 1
                    level.latencies_s.append(elapsed)
                    level.input_megapixels += pixels / 1e6
                    w = r.headers["x-width"]
                    level.widths[w] = level.widths.get(w, 0) + 1
                elif r.status_code == 503:
                    level.rejected_503 += 1
                elif r.status_code >= 500:
                    level.errors_5xx += 1
                else:
                    level.errors_other += 1
            if r.status_code == 503:  # back off as told, within the level's time
                time.sleep(max(0.0, min(float(r.headers.get("retry-after", 1)), stop_at - time.monotonic())))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(level.concurrency)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    level.seconds = time.monotonic() - began


def verdict(rows: list[dict], target_s: float, full: str) -> list[str]:
    """The issue's targets, checked on this run."""
    auto = [r for r in rows if r["policy"] == "auto"]
    fixed_full = [r for r in rows if r["policy"] == full]
    lines = []
    if auto:
        ok = all((r["p95_s"] or 0) <= target_s and r["errors_5xx"] == 0 for r in auto)
        lines.append(f"- auto: p95 within {target_s:g} s and no 5xx besides 503 at every concurrency: {_yn(ok)}")
    if fixed_full:
        misses = [r["concurrency"] for r in fixed_full if (r["p95_s"] or 0) > target_s]
        lines.append(f"- {full}: p95 misses the target at concurrency {misses or 'none'}")
    if auto and fixed_full:
        a, f = max(auto, key=lambda r: r["concurrency"]), max(fixed_full, key=lambda r: r["concurrency"])
        ratio = a["megapixels_per_s"] / max(f["megapixels_per_s"], 1e-9)
        lines.append(f"- auto / {full} throughput (MP/s) at concurrency {a['concurrency']}: {ratio:.1f}x")
    return lines


def _yn(ok: bool) -> str:
    return "yes" if ok else "NO"


def to_markdown(rows: list[dict], header: str, checks: list[str]) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [
        header,
        "",
        "| policy | clients | req/s | MP/s (input) | p50 s | p95 s | p99 s | ok | 503 | other 5xx | width mix |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mix = ", ".join(f"{w}: {share:.0%}" for w, share in r["width_mix"].items())
        lines.append(
            f"| {r['policy']} | {r['concurrency']} | {r['requests_per_s']:.2f} | {r['megapixels_per_s']:.3f} "
            f"| {fmt(r['p50_s'])} | {fmt(r['p95_s'])} | {fmt(r['p99_s'])} | {r['ok']} | {r['rejected_503']} "
            f"| {r['errors_5xx']} | {mix} |"
        )
    return "\n".join([*lines, "", *checks, ""])


def plot(rows: list[dict], target_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        xs = [r["concurrency"] for r in mine]
        ax1.plot(xs, [r["megapixels_per_s"] for r in mine], marker="o", label=policy)
        ax2.plot(xs, [r["p95_s"] or float("nan") for r in mine], marker="o", label=policy)
    ax2.axhline(target_s, color="gray", linestyle="--", label="latency target")
    for ax, title in ((ax1, "throughput (input MP/s)"), (ax2, "p95 latency (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(
            sorted({r["concurrency"] for r in rows}), labels=[str(n) for n in sorted({r["concurrency"] for r in rows})]
        )
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--random-weights", action="store_true", help="time a random EDSR-baseline (no trained file)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--policies", nargs="+", help="default: auto, fixed:1 and fixed:<narrowest>")
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256], help="LR sides of the image mix")
    ap.add_argument("--size-weights", nargs="+", type=float, default=[0.5, 0.3, 0.2])
    ap.add_argument("--seconds-per-level", type=float, default=30.0)
    ap.add_argument("--max-requests-per-level", type=int, default=2000)
    ap.add_argument("--latency-target-s", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--max-queue", type=int, default=8)
    args = ap.parse_args()
    if len(args.sizes) != len(args.size_weights):
        raise SystemExit("--sizes and --size-weights need the same length")

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if args.random_weights:
            weights = Path(tmp) / "random-edsr-baseline.safetensors"
            save_weights(EDSR(EDSRConfig()).eval(), weights, {"note": "random weights: timing only"})
        narrowest = min(read_config(weights).widths)
        policies = args.policies or ["auto", "fixed:1", f"fixed:{narrowest:g}"]
        inputs = make_inputs(args.sizes)
        rows = []
        for policy in policies:
            port = free_port()
            proc = start_server(weights, policy, port, args)
            try:
                limits = httpx.Limits(max_connections=max(args.concurrency) + 4)
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{port}", timeout=300, trust_env=False, limits=limits
                ) as c:
                    wait_ready(c, proc)
                    for n in args.concurrency:
                        level = Level(policy, n)
                        run_level(c, level, inputs, args.size_weights, args)
                        rows.append(level.summary())
                        r = rows[-1]
                        print(
                            f"{policy:>10} x{n:<3} {r['requests_per_s']:6.2f} req/s {r['megapixels_per_s']:6.3f} MP/s "
                            f"p95 {r['p95_s'] or float('nan'):.2f} s  ok {r['ok']} 503 {r['rejected_503']} "
                            f"5xx {r['errors_5xx']}  {r['width_mix']}",
                            flush=True,
                        )
            finally:
                proc.terminate()
                proc.wait(timeout=60)

    args.out.mkdir(parents=True, exist_ok=True)
    full = "fixed:1"
    header = (
        f"LR sizes {args.sizes} (weights {args.size_weights}), target {args.latency_target_s:g} s, "
        f"{args.workers} workers x {args.torch_threads} torch threads, max queue {args.max_queue}, "
        f"{args.seconds_per_level:g} s per level, {os.cpu_count()} CPUs, weights {Path(weights).name}"
    )
    checks = verdict(rows, args.latency_target_s, full)
    markdown = to_markdown(rows, header, checks)
    (args.out / "bench.md").write_text(markdown)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "bench.json").write_text(json.dumps({"args": meta, "rows": rows}, indent=2) + "\n")
    plot(rows, args.latency_target_s, args.out / "bench.png")
    print(markdown)
    print(f"wrote {args.out}/bench.md, bench.json, bench.png")


if __name__ == "__main__":
    main()
