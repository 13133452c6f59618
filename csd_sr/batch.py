"""``csd-sr upscale --server URL IN... --out DIR``: files and folders through a running service, as jobs.

Each file is a job (``POST /v1/jobs``) with an ``Idempotency-Key`` from its bytes and the options, so a
rerun after the client died picks up the same jobs instead of submitting them again; at most
``--concurrency`` jobs are in flight. A 503 or 507 is retried after its ``Retry-After``. Results are
written beside nothing: ``DIR/<path relative to its folder>.<format>``, through a ``.part`` file, so a
file that exists is complete and is skipped when rerun. Exits 1 listing the files that failed and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
RETRIED = (503, 507)
MAX_RETRIES = 20
POLL_S = 0.5


@dataclass(frozen=True)
class Item:
    source: Path
    target: Path


class Failed(Exception):
    """A file that will not be upscaled: the reason is the message."""


def collect(inputs: Iterable[Path], out_dir: Path, suffix: str) -> list[Item]:
    """Every image of ``inputs`` (files, and folders searched recursively) and its output path."""
    items = []
    for path in inputs:
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                items.append(Item(f, (out_dir / f.relative_to(path)).with_suffix(suffix)))
        else:  # a file given by name is sent whatever its suffix: the server says what it is not
            items.append(Item(path, (out_dir / path.name).with_suffix(suffix)))
    return items


class BatchClient:
    def __init__(self, server: str, params: dict[str, str], api_key: str | None, concurrency: int) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency + 1)
        self.http = httpx.Client(base_url=server, headers=headers, timeout=120, trust_env=False, limits=limits)
        self.params = params
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._tiles: dict[Path, tuple[int, int]] = {}

    def run(self, items: list[Item]) -> dict[Path, str]:
        """Upscale ``items`` not done yet; returns the failures (source -> why)."""
        todo = [i for i in items if not i.target.exists()]
        if len(todo) < len(items):
            print(f"{len(items) - len(todo)} of {len(items)} already done (skipped)", file=sys.stderr)
        failures: dict[Path, str] = {}
        files = tqdm(total=len(todo), desc="files", unit="file", position=0)
        tiles = tqdm(total=0, desc="tiles", unit="tile", position=1)
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._one, item, tiles): item for item in todo}
            for future in as_completed(futures):
                item = futures[future]
                try:
                    future.result()
                except Failed as exc:
                    failures[item.source] = str(exc)
                except httpx.HTTPError as exc:
                    failures[item.source] = f"{type(exc).__name__}: {exc}"
                files.update()
        files.close()
        tiles.close()
        return failures

    def _one(self, item: Item, bar: tqdm) -> None:
        data = item.source.read_bytes()
        key = hashlib.sha256(data + json.dumps(self.params, sort_keys=True).encode()).hexdigest()
        headers = {"Idempotency-Key": key, "Content-Type": "application/octet-stream"}  # the server sniffs the type
        job = self._request("POST", "/v1/jobs", params=self.params, content=data, headers=headers)
        url = f"/v1/jobs/{job.json()['id']}"
        for status in self._statuses(url):
            self._progress(item, status["progress"], bar)
            if status["state"] == "done":
                break
            if status["state"] in ("failed", "cancelled"):
                error = status.get("error") or {}
                raise Failed(f"{status['state']}: {error.get('error')} ({error.get('detail')})")
        result = self._request("GET", f"{url}/result")
        item.target.parent.mkdir(parents=True, exist_ok=True)
        part = item.target.with_name(item.target.name + ".part")
        part.write_bytes(result.content)
        part.replace(item.target)
        self._request("DELETE", url)  # the server need not keep it: the file is here

    def _statuses(self, url: str) -> Iterator[dict]:
        while True:
            yield self._request("GET", url).json()
            time.sleep(POLL_S)

    def _progress(self, item: Item, progress: dict, bar: tqdm) -> None:
        with self._lock:
            done_before, total_before = self._tiles.get(item, (0, 0))
            done, total = progress["tiles_done"], progress["tiles_total"]
            self._tiles[item] = (done, total)
            if total != total_before:
                bar.total += total - total_before
                bar.refresh()
            bar.update(done - done_before)

    def _request(self, method: str, url: str, **kw: object) -> httpx.Response:
        """One call, retried after ``Retry-After`` on 503/507; ``Failed`` with the server's error otherwise."""
        for _ in range(MAX_RETRIES):
            r = self.http.request(method, url, **kw)
            if r.status_code not in RETRIED:
                break
            time.sleep(float(r.headers.get("retry-after", "5")))
        if r.is_success:
            return r
        try:
            body = r.json()
            raise Failed(f"{r.status_code} {body.get('error')}: {body.get('detail')}")
        except ValueError:
            raise Failed(f"{r.status_code}: {r.text[:200]}") from None


def main(args: argparse.Namespace) -> None:
    """`csd-sr upscale --server`: the parsed flags of `csd-sr upscale`."""
    if args.out is None:
        sys.exit("csd-sr upscale --server: --out DIR is required")
    asked = ("scale", args.scale), ("out_width", args.out_width), ("out_height", args.out_height), ("noise", args.noise)
    params = {k: str(v) for k, v in asked if v is not None}
    if args.width is not None:
        params["width"] = f"{args.width:g}"
    if args.precision is not None:
        params["precision"] = args.precision
    if args.quality is not None:
        params["quality"] = str(args.quality)
    if args.deadline_s is not None:
        params["deadline_s"] = f"{args.deadline_s:g}"
    fmt = args.format or "png"
    params["format"] = fmt
    suffix = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}[fmt]
    items = collect(map(Path, args.inputs), Path(args.out), suffix)
    if not items:
        sys.exit("csd-sr upscale: no images in " + ", ".join(args.inputs))
    client = BatchClient(args.server.rstrip("/"), params, args.api_key, args.concurrency)
    failures = client.run(items)
    if failures:
        print(f"{len(failures)} of {len(items)} failed:", file=sys.stderr)
        for source, why in failures.items():
            print(f"  {source}: {why}", file=sys.stderr)
        sys.exit(1)
    print(f"{len(items)} files in {args.out}")
