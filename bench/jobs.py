"""A phone-sized photo as a job: the jobs issue's targets (peak RSS <= 3 GB, progress at least once per tile,
ETA within 30 % of the truth at the halfway point).

python -m bench.jobs [--size 4000x3000] [--scale 2] [--deadline-s 600] [--clients 4] [--out bench/results/jobs]

One ``csd-sr serve`` subprocess on loopback with every shipped model (or ``--weights``). The input: a Wiki49
photograph resized (Lanczos) to ``--size`` and saved as JPEG q 90. Measured: submission to done, the rung the
deadline chose, how often the status moved (distinct ``tiles_done`` seen, polled every 0.2 s, against the
tile count), the ETA reported at the first status past half the tiles against the time it really took from
there, and the server's RSS (ready, and its peak VmHWM after the job). With ``--clients N``, N closed-loop
clients send the photo mix of bench/service.py to ``/v1/upscale`` while the job runs (a 503 waits its
Retry-After): their p95 against the latency target, and how the job fares beside them. Prints the CPU flags.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.common import DATA, OUT, PHOTOS, ROOT, cpu_info, free_port, photo_inputs, rss_mb, wait_ready
from model.report import write_report

PHOTO = sorted((DATA / "train" / "Wiki49" / "HR").glob("*"))[0]


def photo_jpeg(size: tuple[int, int]) -> bytes:
    img = Image.open(PHOTO).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Interactive:
    """Closed-loop clients of ``/v1/upscale`` on the photo mix, in threads, until ``stop``."""

    def __init__(self, client: httpx.Client, n: int) -> None:
        self.client, self.latencies, self.statuses = client, [], {}
        self.inputs = photo_inputs(PHOTOS) if n else []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            data = rng.choice(self.inputs)[0]
            start = time.monotonic()
            r = self.client.post("/v1/upscale", content=data, headers={"content-type": "image/png"})
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                self.latencies.append(time.monotonic() - start)
            elif r.status_code == 503:
                self._stop.wait(float(r.headers.get("retry-after", 1)))

    def stop(self, target_s: float) -> dict:
        self._stop.set()
        for t in self.threads:
            t.join()
        if not self.threads:
            return {}
        p95 = float(np.percentile(self.latencies, 95)) if self.latencies else None
        return {
            "clients": len(self.threads),
            "interactive_ok": len(self.latencies),
            "interactive_p95_s": None if p95 is None else round(p95, 2),
            "latency_target_s": target_s,
            "interactive_statuses": dict(sorted(self.statuses.items())),
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=str(ROOT / "weights"), help="CSD_SR_WEIGHTS: files or folders")
    ap.add_argument("--size", default="4000x3000", help="input WxH")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--deadline-s", type=float, default=600.0, help="the job's deadline (chooses its rung)")
    ap.add_argument("--clients", type=int, default=0, help="closed-loop /v1/upscale clients during the job")
    ap.add_argument("--latency-target-s", type=float, default=2.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    data = photo_jpeg(size)
    port = free_port()
    cmd = [sys.executable, "-m", "csd_sr", "serve", "--port", str(port), "--weights", args.weights]
    cmd += ["--log-level", "warning", "--latency-target-s", str(args.latency_target_s)]
    jobs_dir = OUT / "jobs"  # ignored by git
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "CSD_SR_JOBS_DIR": str(jobs_dir)})
    report: dict = {"cpu": cpu_info(), "input": args.size, "input_bytes": len(data), "scale": args.scale}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600, trust_env=False) as c:
            wait_ready(c, proc)
            report["rss_ready_mb"] = round(rss_mb(proc.pid)["VmRSS"])
            load = Interactive(c, args.clients)
            if args.clients:  # the interactive load first: the job's rung is chosen under it
                time.sleep(10)
            submitted = time.monotonic()
            query = {"scale": args.scale, "deadline_s": args.deadline_s}
            r = c.post("/v1/jobs", params=query, content=data, headers={"content-type": "image/jpeg"})
            r.raise_for_status()
            job = r.json()
            report.update(planned_rung=job["rung"], predicted_eta_s=job["eta_s"], output=job["output"])
            seen: list[tuple[float, dict]] = []
            while job["state"] in ("queued", "running"):
                time.sleep(0.2)
                job = c.get(f"/v1/jobs/{job['id']}").json()
                seen.append((time.monotonic(), job))
            done_at = time.monotonic()
            report.update(load.stop(args.latency_target_s))
            if job["state"] != "done":
                raise SystemExit(f"job {job['state']}: {job.get('error')}")
            total = job["progress"]["tiles_total"]
            half_t, half = next((t, s) for t, s in seen if s["progress"]["tiles_done"] >= total / 2)
            truth = done_at - half_t
            result = c.get(f"/v1/jobs/{job['id']}/result")
            report.update(
                rung=job["rung"],
                reason=job["reason"],
                seconds=round(done_at - submitted, 1),
                tiles=total,
                progress_values_seen=len({s["progress"]["tiles_done"] for _, s in seen}),
                polls=len(seen),
                eta_at_half_s=half["eta_s"],
                remaining_at_half_s=round(truth, 1),
                eta_error=round(abs(half["eta_s"] - truth) / truth, 3),
                result_bytes=len(result.content),
                rss_peak_mb=round(rss_mb(proc.pid)["VmHWM"]),
                rss_after_mb=round(rss_mb(proc.pid)["VmRSS"]),
            )
            c.delete(f"/v1/jobs/{job['id']}")
    finally:
        proc.terminate()
        proc.wait(30)
    print(json.dumps(report, indent=2))
    if args.out:
        write_report(args.out, report)


if __name__ == "__main__":
    main()
