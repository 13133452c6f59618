"""How many requests at once, with how many torch threads each? Measures throughput and latency per layout.

Each layout ``WORKERSxTHREADS`` runs WORKERS closed-loop threads, each calling the
dense sub-network with ``torch.set_num_threads(THREADS)`` on LR inputs of
``--side`` pixels for ``--seconds``; the compute the service's workers do.

    python -m bench.concurrency --layouts 1x1 1x2 2x1 --seconds 20
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from model.edsr import EDSR, EDSRConfig
from model.weights import load_weights


def run_layout(net: torch.nn.Module, x: torch.Tensor, workers: int, threads: int, seconds: float) -> dict:
    """Closed loop: ``workers`` threads, each running back-to-back inferences until the time is up."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    @torch.inference_mode()
    def loop() -> None:
        torch.set_num_threads(threads)  # per thread, as the service's worker initializer does
        net(x)  # warm this thread
        while (start := time.perf_counter()) < stop_at:
            net(x)
            with lock:
                latencies.append(time.perf_counter() - start)

    pool = [threading.Thread(target=loop) for _ in range(workers)]
    began = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - began
    return {
        "images_per_s": len(latencies) / elapsed,
        "latency_ms_p50": 1000 * statistics.median(latencies),
        "latency_ms_mean": 1000 * statistics.fmean(latencies),
        "images": len(latencies),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="a .safetensors file (default: random EDSR-baseline; timing is the same)")
    ap.add_argument("--layouts", nargs="+", default=["1x1", "1x2", "2x1"], help="WORKERSxTHREADS")
    ap.add_argument("--widths", nargs="+", type=float, default=[0.25, 1.0])
    ap.add_argument("--side", type=int, default=128, help="LR input side in pixels")
    ap.add_argument("--seconds", type=float, default=10.0, help="per layout and width")
    args = ap.parse_args()
    model = load_weights(args.weights)[0] if args.weights else EDSR(EDSRConfig()).eval()
    x = torch.rand(1, 3, args.side, args.side) * 255
    print(f"LR {args.side}x{args.side}, {args.seconds:g} s per row, {torch.get_num_threads()} cores visible to torch")
    print("| width | workers x threads | images/s | p50 latency ms | mean latency ms |")
    print("|---|---|---|---|---|")
    for width in args.widths:
        net = model.dense(width)
        for layout in args.layouts:
            workers, threads = (int(v) for v in layout.split("x"))
            r = run_layout(net, x, workers, threads, args.seconds)
            print(
                f"| {width:g} | {workers}x{threads} | {r['images_per_s']:.2f} | {r['latency_ms_p50']:.0f} "
                f"| {r['latency_ms_mean']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
