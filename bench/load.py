"""Load benchmark: N concurrent predict clients against a service on 127.0.0.1, bounded in time.

    python bench/load.py --spawn                 # starts `atelier serve` on a free port itself
    python bench/load.py --url http://127.0.0.1:8000 --clients 8 --duration 30

Reports throughput, latency percentiles, errors by status, the latency of `/health/live` polled
while the load runs, and (with --spawn) the server's peak RSS. Stops by itself after
`--duration` seconds or `--max-requests` requests, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "swagger-samples" / "astronaut.jpg"


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.image = Path(args.image).read_bytes()
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.health: list[float] = []
        self.sent = 0

    async def client(self, http: httpx.AsyncClient, deadline: float) -> None:
        url = f"{self.args.url}/model/predict"
        params = {"style": self.args.style, "max_size": str(self.args.max_size)}
        while time.monotonic() < deadline and self.sent < self.args.max_requests:
            self.sent += 1
            started = time.perf_counter()
            try:
                response = await http.post(
                    url, params=params, files={"image": ("photo.jpg", self.image, "image/jpeg")}
                )
                self.statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    self.latencies.append(time.perf_counter() - started)
                elif response.status_code == 503:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")) / 4)
            except httpx.HTTPError as exc:
                self.statuses[type(exc).__name__] += 1

    async def poll_health(self, http: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await http.get(f"{self.args.url}/health/live")
            self.health.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)

    async def run(self) -> float:
        limits = httpx.Limits(max_connections=self.args.clients + 2)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            started = time.monotonic()
            deadline = started + self.args.duration
            tasks = [self.client(http, deadline) for _ in range(self.args.clients)]
            await asyncio.gather(self.poll_health(http, deadline), *tasks)
            return time.monotonic() - started


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become ready in {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--spawn", action="store_true", help="start a server on a free port")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--image", default=str(DEFAULT_IMAGE))
    parser.add_argument("--style", default="starry-swirls")
    parser.add_argument("--max-size", type=int, default=512)
    args = parser.parse_args()

    server: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory() as data_dir:
        if args.spawn:
            port = free_port()
            args.url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "ATELIER_DATA_DIR": data_dir, "ATELIER_LOG_LEVEL": "WARNING"}
            server = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                cwd=ROOT,
                env=env,
            )
        try:
            wait_ready(args.url)
            load = Load(args)
            elapsed = asyncio.run(load.run())
        finally:
            rss = peak_rss_mib(server.pid) if server is not None else None
            if server is not None:
                server.terminate()
                server.wait(timeout=30)

    ok = load.latencies
    print(f"# bench/load.py  {args.clients} clients, {elapsed:.1f} s, max_size {args.max_size}")
    print("\n| metric | value |\n|---|---|")
    print(f"| requests sent | {load.sent} |")
    print(f"| succeeded | {len(ok)} |")
    print(f"| throughput (ok/s) | {len(ok) / elapsed:.2f} |")
    for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        print(f"| predict {name} (ms) | {percentile(ok, fraction) * 1000:.0f} |")
    print(f"| responses by status | {dict(sorted(load.statuses.items()))} |")
    print(f"| /health/live polls | {len(load.health)} |")
    print(f"| /health/live p50 (ms) | {percentile(load.health, 0.5) * 1000:.1f} |")
    print(f"| /health/live p99 (ms) | {percentile(load.health, 0.99) * 1000:.1f} |")
    if rss is not None:
        print(f"| server peak RSS (MiB) | {rss:.0f} |")


if __name__ == "__main__":
    main()
