"""Bounded load generator against the real service on loopback: throughput, latency, rung mix, quality.

For each backend (``openvino``, ``torch``; ``--baseline-root`` adds another
checkout's server, e.g. an earlier commit, as ``baseline``), ladder (the
servers' ``CSD_SR_PRECISIONS``: ``--ladders fp32,int8 fp32`` compares the full
ladder with the fp32-only one in one run) and policy (``auto``, ``fixed:1``,
``fixed:<narrowest>``) a server is started as a subprocess (``csd-sr serve``)
on 127.0.0.1; for each concurrency level, that many closed-loop clients send a
mix of images until the level's time or request budget is spent. A 503 makes a
client wait its ``Retry-After`` (capped by the time left), as a well-behaved
client would. Each answer is scored with its ``X-Expected-PSNR`` Set5 figure:
the model card's PSNR of the rung served at the factor served (the expected
quality of what was served). Mixes: ``photo`` (BSD200 photos from ../shared/data resized to LR long
sides 128/256/384/512, landscape and portrait) and ``squares`` (textured 64/128/256
squares, 50/30/20 %). After the load levels, one ``--doomed`` request (a forced
full width on a large input) shows whether work that cannot finish in time is
refused at once. ``--rounds N`` runs every server's levels N times, servers in
turn, and pools each level's answers: the machine's drift during the run then
falls on every server alike. Writes OUT/bench.md, OUT/bench.json and OUT/bench.png.

    python -m bench.service --out bench/results/service --baseline-root /tmp/main-before
    python -m bench.service --backends openvino --ladders fp32,int8 fp32 --policies auto --concurrency 4 16 \
        --seconds-per-level 40 --rounds 3
    python -m bench.service --random-weights --seconds-per-level 5 --concurrency 1 4   # smoke run
    python -m bench.service --weights weights --scales 2 3 4 --backends openvino --policies auto   # every model
    python -m bench.service --backends openvino --ladders fp32,bf16,int8 fp32,int8 --policies auto  # bf16?
"""

from __future__ import annotations

import argparse
import os
import random
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

from bench.common import (
    OUT,
    PHOTOS,
    ROOT,
    cpu_description,
    free_port,
    photo_inputs,
    png,
    rss_mb,
    wait_ready,
)
from model.edsr import EDSR, EDSRConfig
from model.report import write_report
from model.rungs import Rung
from model.weights import read_config, save_weights
from service.settings import DEFAULT_WEIGHTS, shipped_weights

BASELINE = "baseline"  # the server of --baseline-root
DOOMED_SIDE = 1000  # the doomed-work probe's input side (also the servers' MAX_PIXELS side)
IDLE_SIZES = ((320, 240), (480, 360), (640, 480))  # LR inputs sent one at a time to an idle server


@dataclass
class Level:
    backend: str
    ladder: str  # the server's CSD_SR_PRECISIONS
    policy: str
    concurrency: int
    seconds: float = 0.0
    ok: int = 0
    rejected_503: int = 0
    errors_5xx: int = 0
    errors_other: int = 0
    input_megapixels: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    rungs: dict[str, int] = field(default_factory=dict)  # rung key ("0.5", "0.5-int8") -> answers
    psnr_sum: float = 0.0
    psnr_n: int = 0  # answers with an X-Expected-PSNR Set5 figure (none from a card without figures)

    def summary(self) -> dict:
        lat = sorted(self.latencies_s)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        return {
            "backend": self.backend,
            "ladder": self.ladder,
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
            "rung_mix": {k: self.rungs[k] / max(self.ok, 1) for k in sorted(self.rungs, key=_rung_order)},
            "mean_set5_psnr": self.psnr_sum / self.psnr_n if self.psnr_n else None,
        }


def _rung_order(key: str) -> tuple[str, Rung]:
    """``x2/0.5-int8``: by model, then rung."""
    model, _, rung = key.rpartition("/")
    return model, Rung.parse(rung)


def rung_key(r: httpx.Response) -> str:
    """The served rung's key, as the card names it (no X-Precision: a server from before int8, so fp32)."""
    return Rung(float(r.headers["x-width"]), r.headers.get("x-precision", "fp32")).key


def served_key(r: httpx.Response) -> str:
    """The rung with its model when the server names it: ``x2/1-int8``, ``x3 (x4 + lanczos)/1-int8`` for a factor
    served by a downscale; a server before scales: ``1-int8``."""
    scale = r.headers.get("x-scale", "")
    noise = r.headers.get("x-noise", "none").split(";")[0]
    model = "" if not scale else f"x{scale}" + ("" if noise == "none" else f"-{noise}") + "/"
    return model + rung_key(r)


def expected_set5(r: httpx.Response) -> float | None:
    """The answer's ``X-Expected-PSNR`` on Set5: its card's figure for the rung at the factor served (a scale
    served by a larger model's downscale reads that model's figures there); ``None`` without one."""
    figures = r.headers.get("x-expected-psnr", "").rpartition(": ")[2]
    values = dict(item.split("=", 1) for item in figures.split("; ") if "=" in item)
    return float(values["Set5"]) if "Set5" in values else None


def square_inputs(seed: int = 0) -> list[tuple[bytes, int, float]]:
    """Textured squares (encoding costs what a photo costs): (PNG, pixels, weight)."""
    rng = np.random.default_rng(seed)
    out = []
    for side, weight in ((64, 0.5), (128, 0.3), (256, 0.2)):
        y, x = np.mgrid[0:side, 0:side].astype(np.float32)
        base = 128 + 100 * (np.sin(x / 6.0) * np.cos(y / 9.0))[..., None]
        img = np.clip(base + rng.normal(0, 10, (side, side, 3)), 0, 255).astype(np.uint8)
        out.append((png(img), side * side, weight))
    return out


def start_server(
    root: Path, backend: str, ladder: str, weights: Path, policy: str, port: int, args
) -> subprocess.Popen:
    # An earlier checkout may predate the csd_sr package (model.cli served then) or the --backend flag.
    entry = "model.cli" if backend == BASELINE and not (root / "csd_sr").is_dir() else "csd_sr"
    cmd = [sys.executable, "-m", entry, "serve", "--weights", str(weights), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--policy", policy, "--latency-target-s", str(args.latency_target_s)]
    cmd += ["--workers", str(args.workers), "--torch-threads", str(args.torch_threads), "--log-level", "warning"]
    cmd += ["--max-queue", str(args.max_queue)]
    if backend != BASELINE:
        cmd += ["--backend", backend]
    env = {"CSD_SR_MAX_PIXELS": str(DOOMED_SIDE**2), "CSD_SR_REQUEST_TIMEOUT_S": str(args.request_timeout_s)}
    env["CSD_SR_PRECISIONS"] = ladder  # an earlier checkout ignores it (fp32 only)
    if args.max_lane_price is not None:
        env["CSD_SR_MAX_LANE_PRICE"] = str(args.max_lane_price)
    return subprocess.Popen(cmd, cwd=root, env={**os.environ, **env})


def idle_probe(client: httpx.Client, folder: Path | None) -> list[dict]:
    """One request at a time on the idle server per IDLE_SIZES input: the rung it gets, why, and how fast."""
    out = []
    for w, h in IDLE_SIZES:
        body = png(photo(folder, w, h)) if folder else square_inputs()[-1][0]
        start = time.monotonic()
        r = client.post("/v1/upscale", content=body, headers={"content-type": "image/png"})
        seconds = time.monotonic() - start
        out.append(
            {
                "input": f"{w}x{h}",
                "status": r.status_code,
                "rung": rung_key(r) if r.status_code == 200 else None,
                "reason": r.headers.get("x-width-reason"),
                "seconds": seconds,
            }
        )
        time.sleep(0.5)  # idle again
    return out


def photo(folder: Path, w: int, h: int) -> Image.Image:
    """A landscape photo of the folder resized to ``w`` x ``h``."""
    path = next(p for p in sorted(folder.glob("*.png")) if Image.open(p).width > Image.open(p).height)
    return Image.open(path).convert("RGB").resize((w, h), Image.BICUBIC)


def fitted_costs(client: httpx.Client) -> dict[str, float]:
    """Seconds per LR megapixel per rung as the server's warm-up fitted them (``/v1/model``)."""
    info = client.get("/v1/model").json()
    if "rungs" in info:
        return {r["key"]: r["cost"]["s_per_megapixel"] for r in info["rungs"]}
    return {f"{w['width']:g}": w["cost"]["s_per_megapixel"] for w in info["per_width"]}  # a server before rungs


def doomed_probe(client: httpx.Client) -> dict:
    """A forced full width on a DOOMED_SIDE^2 input: refused at once if it cannot finish within the timeout."""
    rng = np.random.default_rng(1)
    body = png(rng.integers(0, 256, (DOOMED_SIDE, DOOMED_SIDE, 3), dtype=np.uint8))
    start = time.monotonic()
    r = client.post("/v1/upscale?width=1", content=body, headers={"content-type": "image/png"}, timeout=600)
    error = r.json().get("error") if r.headers.get("content-type") == "application/json" else None
    return {"status": r.status_code, "error": error, "seconds": time.monotonic() - start}


def run_level(client: httpx.Client, level: Level, inputs: list, args) -> None:
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
            data, pixels, _ = rng.choices(inputs, [w for *_, w in inputs])[0]
            query = {"scale": f"{rng.choice(args.scales):g}"}
            start = time.monotonic()
            try:
                r = client.post("/v1/upscale", params=query, content=data, headers={"content-type": "image/png"})
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
                    key = served_key(r) if len(args.scales) > 1 else rung_key(r)
                    level.rungs[key] = level.rungs.get(key, 0) + 1
                    set5 = expected_set5(r)
                    if set5 is not None:
                        level.psnr_sum += set5
                        level.psnr_n += 1
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
    level.seconds += time.monotonic() - began  # rounds add up


def verdict(rows: list[dict], target_s: float, doomed: dict[str, dict]) -> list[str]:
    """The issues' targets, checked on this run."""
    lines = []
    servers = list(dict.fromkeys((r["backend"], r["ladder"]) for r in rows))
    auto = {(r["backend"], r["ladder"], r["concurrency"]): r for r in rows if r["policy"] == "auto"}
    for backend, ladder in servers:
        mine = [r for (b, lad, _), r in auto.items() if (b, lad) == (backend, ladder)]
        if mine:
            ok = all((r["p95_s"] or 0) <= target_s and r["errors_5xx"] == 0 for r in mine)
            lines.append(
                f"- {backend} ({ladder}) auto: p95 within {target_s:g} s, no 5xx besides 503, every concurrency: "
                f"{_yn(ok)}"
            )
    backends = list(dict.fromkeys(b for b, _ in servers))
    reference = BASELINE if BASELINE in backends else "torch"
    top = max((r["concurrency"] for r in rows), default=0)
    first: dict[tuple[str, int], dict] = {}  # each backend's first ladder
    for (backend, _, n), r in auto.items():
        first.setdefault((backend, n), r)
    new, old = first.get((backends[0], top)) if rows else None, first.get((reference, top))
    if new and old and reference != backends[0]:
        ratio = new["megapixels_per_s"] / max(old["megapixels_per_s"], 1e-9)
        dq = (new["mean_set5_psnr"] or 0) - (old["mean_set5_psnr"] or 0)
        lines.append(
            f"- auto at {top} clients, {backends[0]} / {reference}: {ratio:.2f}x MP/s, "
            f"mean expected Set5 PSNR {dq:+.2f} dB"
        )
    # The int8 target: the full ladder's auto >= 0.2 dB of expected Set5 PSNR over the fp32-only one, p95 no worse.
    for backend in backends:
        for (b, lad, n), full in auto.items():
            fp32 = auto.get((backend, "fp32", n))
            if b != backend or lad == "fp32" or fp32 is None:
                continue
            dq = (full["mean_set5_psnr"] or 0) - (fp32["mean_set5_psnr"] or 0)
            p95, p95_fp32 = full["p95_s"] or 0, fp32["p95_s"] or 0
            lines.append(
                f"- {backend} auto at {n} clients, ladder {lad} / fp32: mean expected Set5 PSNR {dq:+.2f} dB, "
                f"p95 {p95:.2f} / {p95_fp32:.2f} s: {_yn(dq >= 0.2 and p95 <= p95_fp32)}"
            )
    for server, probe in doomed.items():
        lines.append(
            f"- {server}: forced width 1 on a {DOOMED_SIDE}x{DOOMED_SIDE} input: {probe['status']} "
            f"{probe['error'] or ''} after {probe['seconds']:.2f} s"
        )
    return lines


def _yn(ok: bool) -> str:
    return "yes" if ok else "NO"


def to_markdown(rows: list[dict], header: str, checks: list[str]) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [
        header,
        "",
        "| backend | ladder | policy | clients | req/s | MP/s (input) | p50 s | p95 s | ok | 503 | other 5xx "
        "| rung mix | Set5 dB (expected) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mix = ", ".join(f"{k}: {share:.0%}" for k, share in r["rung_mix"].items())
        lines.append(
            f"| {r['backend']} | {r['ladder']} | {r['policy']} | {r['concurrency']} | {r['requests_per_s']:.2f} "
            f"| {r['megapixels_per_s']:.3f} | {fmt(r['p50_s'])} | {fmt(r['p95_s'])} | {r['ok']} "
            f"| {r['rejected_503']} | {r['errors_5xx']} | {mix} | {fmt(r['mean_set5_psnr'])} |"
        )
    return "\n".join([*lines, "", *checks, ""])


def probes_markdown(idle: dict[str, list[dict]], costs: dict[str, dict[str, float]]) -> str:
    lines = ["", "Idle server, one request at a time (auto):", "", "| server | input | status | rung | reason | s |"]
    lines.append("|---|---|---|---|---|---|")
    for server, probes in idle.items():
        for p in probes:
            lines.append(
                f"| {server} | {p['input']} | {p['status']} | {p['rung']} | {p['reason']} | {p['seconds']:.2f} |"
            )
    keys = sorted({k for c in costs.values() for k in c}, key=Rung.parse)
    lines += ["", "Seconds per LR megapixel as each server's warm-up fitted them:", ""]
    lines += ["| server | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    first = next(iter(costs.values()), {})
    for server, c in costs.items():
        cells = [
            "-" if k not in c else f"{c[k]:.2f} ({c[k] / first[k]:.2f}x)" if k in first else f"{c[k]:.2f}" for k in keys
        ]
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], target_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    levels = sorted({r["concurrency"] for r in rows})
    for key in dict.fromkeys((r["backend"], r["ladder"], r["policy"]) for r in rows):
        mine = [r for r in rows if (r["backend"], r["ladder"], r["policy"]) == key]
        xs = [r["concurrency"] for r in mine]
        style = {"marker": "o", "label": " ".join(key), "linestyle": "-" if key[0] == "openvino" else "--"}
        axes[0].plot(xs, [r["megapixels_per_s"] for r in mine], **style)
        axes[1].plot(xs, [r["p95_s"] or float("nan") for r in mine], **style)
        axes[2].plot(xs, [r["mean_set5_psnr"] or float("nan") for r in mine], **style)
    axes[1].axhline(target_s, color="gray", linestyle=":", label="latency target")
    titles = ("throughput (input MP/s)", "p95 latency (s)", "expected Set5 PSNR of what was served (dB)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, labels=[str(n) for n in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@dataclass
class Results:
    """What the run measured: levels pooled over rounds, and each auto server's probes."""

    levels: dict[tuple, Level] = field(default_factory=dict)
    doomed: dict[str, dict] = field(default_factory=dict)
    idle: dict[str, list] = field(default_factory=dict)
    costs: dict[str, dict] = field(default_factory=dict)
    peak_rss: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        return [level.summary() for level in self.levels.values()]


def session(
    run: Results, backend: str, root: Path, ladder: str, policy: str, round_: int, weights: Path, inputs, args
) -> None:
    """One server up for one round: its levels (added to the run's), probes in the first and last rounds."""
    server = f"{backend} ({ladder})"
    port = free_port()
    proc = start_server(root, backend, ladder, weights, policy, port, args)
    try:
        limits = httpx.Limits(max_connections=max(args.concurrency, default=1) + 4)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, trust_env=False, limits=limits) as c:
            wait_ready(c, proc)
            if policy == "auto" and round_ == 0:
                run.costs[server] = fitted_costs(c)
                run.idle[server] = idle_probe(c, args.photos if args.mix == "photo" else None)
                print(f"{server} warm-up costs {run.costs[server]} idle {run.idle[server]}", flush=True)
            for n in args.concurrency:
                level = run.levels.setdefault((backend, ladder, policy, n), Level(backend, ladder, policy, n))
                run_level(c, level, inputs, args)
                r = level.summary()
                print(
                    f"round {round_ + 1} {server:>20} {policy:>10} x{n:<3} {r['requests_per_s']:6.2f} req/s "
                    f"{r['megapixels_per_s']:6.3f} MP/s p95 {r['p95_s'] or float('nan'):.2f} s  ok {r['ok']} "
                    f"503 {r['rejected_503']} 5xx {r['errors_5xx']}  {r['rung_mix']} "
                    f"{r['mean_set5_psnr'] or float('nan'):.2f} dB",
                    flush=True,
                )
            if policy == "auto" and round_ == args.rounds - 1:
                run.doomed[server] = doomed_probe(c)
                print(f"{server} doomed-work probe: {run.doomed[server]}", flush=True)
        if policy == "auto":
            run.peak_rss[server] = max(run.peak_rss.get(server, 0.0), rss_mb(proc.pid)["VmHWM"])
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="a model file, or a folder of models")
    ap.add_argument(
        "--scales",
        nargs="+",
        type=float,
        default=[4.0],
        help="each request's scale, drawn uniformly (e.g. 2 3 4 with --weights weights); PSNR is then each "
        "answer's Set5 figure at its own scale, so it compares servers, not scales",
    )
    ap.add_argument("--random-weights", action="store_true", help="time a random EDSR-baseline (no trained file)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--backends", nargs="+", default=["openvino", "torch"])
    ap.add_argument("--baseline-root", type=Path, help="another checkout whose server runs as backend 'baseline'")
    ap.add_argument(
        "--baseline-ladder", default="fp32", help="the baseline server's CSD_SR_PRECISIONS (a checkout with int8 rungs)"
    )
    ap.add_argument(
        "--ladders",
        nargs="+",
        default=["fp32,int8"],
        help="the servers' CSD_SR_PRECISIONS, one server each: 'fp32,int8' 'fp32' compares with the fp32-only ladder",
    )
    ap.add_argument("--policies", nargs="+", help="default: auto, fixed:1 and fixed:<narrowest>")
    ap.add_argument("--concurrency", nargs="*", type=int, default=[1, 2, 4, 8, 16], help="none: the probes only")
    ap.add_argument("--request-timeout-s", type=float, default=60.0, help="the servers' REQUEST_TIMEOUT_S")
    ap.add_argument("--mix", choices=["photo", "squares"], default="photo")
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--seconds-per-level", type=float, default=20.0)
    ap.add_argument(
        "--rounds", type=int, default=1, help="run every server's levels this many times, in turn, and pool them"
    )
    ap.add_argument("--max-requests-per-level", type=int, default=2000)
    ap.add_argument("--latency-target-s", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--max-lane-price", type=float, help="the servers' MAX_LANE_PRICE (dB per lane-second)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights.resolve()
        if args.random_weights:
            weights = Path(tmp) / "random-edsr-baseline.safetensors"
            save_weights(EDSR(EDSRConfig()).eval(), weights, {"note": "random weights: timing only"})
        narrowest = min(read_config(shipped_weights(weights)[0] if weights.is_dir() else weights).widths)
        policies = args.policies or ["auto", "fixed:1", f"fixed:{narrowest:g}"]
        inputs = photo_inputs(args.photos) if args.mix == "photo" else square_inputs()
        servers = [(b, ROOT, ladder) for b in args.backends for ladder in args.ladders]
        if args.baseline_root:
            servers.append((BASELINE, args.baseline_root.resolve(), args.baseline_ladder))
        run = Results()
        for round_ in range(args.rounds):  # every server once per round: slow drift of the machine hits all alike
            for backend, root, ladder in servers:
                for policy in policies:
                    session(run, backend, root, ladder, policy, round_, weights, inputs, args)
        rows = run.rows()

    args.out.mkdir(parents=True, exist_ok=True)
    sizes = ", ".join(f"{len(data) // 1024} KiB/{pixels / 1e6:.3f} MP" for data, pixels, _ in inputs)
    header = (
        f"{args.mix} mix ({sizes}), target {args.latency_target_s:g} s, {args.workers} workers "
        f"(torch: x {args.torch_threads} threads), max queue {args.max_queue}, "
        f"max lane price {'none' if args.max_lane_price is None else f'{args.max_lane_price:g} dB/s'}, "
        f"{args.seconds_per_level:g} s per level x {args.rounds} round(s), "
        f"CPU {cpu_description()}, weights {Path(weights).name}, scales {' '.join(f'{s:g}' for s in args.scales)}"
    )
    checks = verdict(rows, args.latency_target_s, run.doomed)
    markdown = to_markdown(rows, header, checks) + probes_markdown(run.idle, run.costs)
    markdown += (
        "\nPeak resident memory of each auto server: "
        + ", ".join(f"{b} {mb:.0f} MB" for b, mb in run.peak_rss.items())
        + "\n"
    )
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results = {"args": meta, "rows": rows, "doomed": run.doomed, "idle": run.idle, "costs": run.costs}
    write_report(args.out / "bench", {**results, "peak_rss_mb": run.peak_rss}, markdown)
    if rows:
        plot(rows, args.latency_target_s, args.out / "bench.png")
    print(markdown)
    print(f"wrote {args.out}/bench.md, bench.json, bench.png")


if __name__ == "__main__":
    main()
