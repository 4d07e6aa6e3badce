#!/usr/bin/env python
"""Bounded load test of ``medclf serve`` (run by hand; never by the tests).

Starts the real command (``medclf serve RUN_DIR --port 0``) in a subprocess on 127.0.0.1, sends ``--requests``
``POST /predict`` uploads of one image with ``--concurrency`` requests in flight (httpx's async client), after
``--warmup`` requests that are not counted, then stops the server. It stops by itself: after the last request,
or after ``--max-seconds`` whatever is left. Prints p50 / p95 / p99 latency, requests per second, the error
count and the machine, and writes them as JSON with ``--out``. Only loopback: nothing leaves the machine.

Usage::

    python benchmarks/serve_load.py runs/demo                       # 500 requests, 8 concurrent
    python benchmarks/serve_load.py runs/demo --image scan.png --explain --requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from medclf.atomic import atomic_write_text


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder")
    parser.add_argument("--image", type=Path, help="the image to upload (default: a generated 64x64 grey PNG)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--explain", action="store_true", help="ask for the Grad-CAM overlay too")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    return parser.parse_args()


def _upload(path: Path | None) -> tuple[str, bytes]:
    if path is not None:
        return path.name, path.read_bytes()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "generated.png", buffer.getvalue()


def _start(run_dir: Path) -> tuple[subprocess.Popen, str]:
    """``medclf serve`` on a free loopback port, and its URL once uvicorn says it listens."""
    server = subprocess.Popen([sys.executable, "-m", "medclf", "serve", str(run_dir), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        if found := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line):
            # keep draining uvicorn's access log, or a full pipe would block the server
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server, found[1]
    server.wait()
    raise SystemExit(f"medclf serve did not start (exit {server.returncode}): {server.stdout.read()}")


async def _load(url: str, upload: tuple[str, bytes], args: argparse.Namespace) -> dict:
    params = {"explain": "true"} if args.explain else {}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + args.max_seconds
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        health = (await client.get("/health")).json()

        async def one(counted: bool) -> None:
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            try:
                response = await client.post("/predict", files={"file": upload}, params=params)
                ok = response.status_code == 200 and "predicted" in response.json()
                if not ok:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as error:
                ok = False
                errors.append(repr(error))
            if counted and ok:
                latencies.append(time.perf_counter() - start)

        gate = asyncio.Semaphore(args.concurrency)

        async def gated(counted: bool) -> None:
            async with gate:
                await one(counted)

        await asyncio.gather(*(gated(False) for _ in range(args.warmup)))
        errors.clear()
        started = time.perf_counter()
        await asyncio.gather(*(gated(True) for _ in range(args.requests)))
        elapsed = time.perf_counter() - started
    ms = sorted(1000 * t for t in latencies)
    pct = (lambda q: float(np.percentile(ms, q))) if ms else (lambda q: float("nan"))
    return {"model": health["model"], "classes": health["classes"], "folds": health["folds"],
            "input": health["input"], "operating_point": health["operating_point"]["name"],
            "requests": args.requests, "completed": len(ms), "concurrency": args.concurrency,
            "explain": args.explain, "errors": len(errors), "first_errors": errors[:3],
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_ms": statistics.fmean(ms) if ms else float("nan"),
            "requests_per_s": len(ms) / elapsed, "seconds": elapsed}


def _machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0], "python": platform.python_version(),
            "torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def main() -> None:
    args = _args()
    upload = _upload(args.image)
    machine = _machine()
    server, url = _start(args.run_dir)
    try:
        result = asyncio.run(_load(url, upload, args))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    result |= {"image": upload[0], "image_bytes": len(upload[1]), "machine": machine,
               "load_average_1m_after": os.getloadavg()[0]}
    print(f"model {result['model']} ({len(result['folds'])} fold(s), input {result['input']}), "
          f"image {result['image']} ({result['image_bytes']} bytes), explain={result['explain']}")
    print(f"{result['completed']}/{result['requests']} requests, {result['concurrency']} concurrent: "
          f"p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
          f"{result['requests_per_s']:.1f} requests/s, {result['errors']} errors")
    print(f"machine: {machine['processor']}, {machine['cpus']} CPUs, {machine['platform']}, torch "
          f"{machine['torch']} on {machine['device']}; load average {machine['load_average_1m']:.1f} before, "
          f"{result['load_average_1m_after']:.1f} after")
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
